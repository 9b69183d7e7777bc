"""One module per blueprint; the app factory registers each one."""
