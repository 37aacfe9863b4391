"""Archive Capture: scanned paper archives to validated, searchable PDF/A items."""

__version__ = "0.1.0"
