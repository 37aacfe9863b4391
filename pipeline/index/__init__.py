"""Search index: the analysis shared by all backends, the backend protocol, the SQLite backend."""
