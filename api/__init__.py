"""REST API: views are thin; they validate input, call a service and shape the reply."""
