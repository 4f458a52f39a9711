"""Session stores: the protocol, an in-memory store and the SQLite store."""
