"""Strict JSON: what the readers here (msgspec, pydantic, Python's json) take silently and
the service refuses: a byte order mark, UTF-16 or UTF-32 text, a repeated key.

>>> encoding_problem(b'{"a": 1}') is None, duplicate_key(b'{"a": 1, "b": {"c": 1, "c": 2}}')
(True, 'c')
"""

from __future__ import annotations

import json
from typing import Any

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_ESCAPED_COLON = b"\\u003"  # \u003a, \u003A (and, to keep it one search, \u0030-\u003f)


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def encoding_problem(body: bytes) -> str | None:
    """Why ``body`` is not UTF-8 JSON though a reader may take it, or None: a byte order mark,
    or a NUL byte (UTF-16 or UTF-32 text; JSON allows none outside strings, nor raw inside).
    Python's JSON reader decodes all of these silently."""
    if body.startswith(_BOMS):
        return "it starts with a byte order mark (UTF-16 or UTF-8 with BOM); send plain UTF-8"
    at = body.find(b"\x00")
    if at >= 0:
        return f"NUL byte at byte {at} (UTF-16 or UTF-32?); send UTF-8"
    return None


def keys_unique(body: bytes, again: bytes) -> bool:
    """Whether the JSON ``body`` surely has no duplicate key, from ``again``: what a reader
    made of it, written back with only the members the body had. msgspec and pydantic keep the
    last of duplicate keys silently. Each member has one colon, strings may hold more: with a
    duplicate dropped, ``body`` has more colons than ``again`` (unless an escaped colon in a
    string made up for it), and without one as many (unless a member equal to its default was
    not written back). So equal counts (no escaped colon) prove no duplicate; anything else is
    for ``duplicate_key`` to settle. Two byte counts: cheap enough for every request."""
    return body.count(b":") == again.count(b":") and _ESCAPED_COLON not in body


def duplicate_key(body: bytes) -> str | None:
    """The first duplicate key of the JSON ``body`` (innermost objects first), or None; the
    exact check (a second read of the body by Python's JSON reader). ``body`` is JSON that
    another reader took."""
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _Duplicate as duplicate:
        return duplicate.key
    return None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
