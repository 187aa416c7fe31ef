"""Moved to ``bandit.wire.batch``; this name stays for the modules that still import it."""

from bandit.wire.batch import MAX_JSON_REQUESTS, json_columns, ndjson_columns

__all__ = ["MAX_JSON_REQUESTS", "json_columns", "ndjson_columns"]
