"""Socket.IO: the server, its namespaces and the room naming they share."""
