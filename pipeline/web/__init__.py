"""Web: the HTTP API (api.py) and the pages for searchers and QA staff."""
