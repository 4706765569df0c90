"""Live delivery of notifications to the sockets connected to this node, in ``seq`` order."""
