"""Live chat machinery shared by the chat blueprint's sockets and REST endpoints."""
