"""Request size: bodies over ``max_body_bytes`` refused before they are read whole, and the
rows of a batch decision body counted while it arrives."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit.service.errors import ServiceError, error_body
from bandit.wire.batch import MAX_JSON_REQUESTS


class _BodyTooLarge(HTTPException):
    # An HTTPException, because FastAPI turns any other error raised while it reads a body
    # into a bare 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (setting max_body_bytes)")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes: at once from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, limit: int, refused: Callable[[], None]) -> None:
        self.app, self.limit, self.refused = app, limit, refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                message = str(_BodyTooLarge(self.limit).detail)
                self.refused()
                response = Response(error_body("payload_too_large", message), 413,
                                    media_type="application/json", headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


# -- rows of a batch body, counted as it arrives ------------------------------------------------

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{},')
_ESCAPE = re.compile(rb"\\.", re.S)


class JsonItems:
    """Counts the items at the first two levels of a JSON body as its chunks arrive: the
    commas outside strings at depth 1 and 2, which for a BatchDecisionRequest is its number of
    requests (one between its two fields, one fewer than the requests between them).

    Escapes are dropped first (a backslash and the byte after it, which may come in the next
    chunk), so every quote left opens or closes a string; then only quotes, brackets and commas
    are kept, and numpy follows string parity and depth over those.

    >>> items = JsonItems()
    >>> items.feed(b'{"campaign": "a,[", "requests": [{"x": [1, 2]}, {"u": "\\\\\\\\"}, {}]')
    >>> items.count
    3
    """

    def __init__(self) -> None:
        self.count = 0
        self._depth = 0
        self._in_string = 0
        self._escaped = False  # the chunk ended in a string's backslash

    def feed(self, chunk: bytes) -> None:
        if self._escaped and chunk:
            chunk, self._escaped = chunk[1:], False
        if b"\\" in chunk:
            chunk = _ESCAPE.sub(b"", chunk)
            if chunk.endswith(b"\\"):
                chunk, self._escaped = chunk[:-1], True
        a = np.frombuffer(chunk.translate(None, _NOT_STRUCTURE), np.uint8)
        if not len(a):
            return
        quote = a == ord('"')
        outside = ((np.cumsum(quote, dtype=np.int64) + self._in_string) & 1 == 0) & ~quote
        step = ((outside & ((a == ord("{")) | (a == ord("[")))).astype(np.int64)
                - (outside & ((a == ord("}")) | (a == ord("]")))))
        depth = self._depth + np.cumsum(step)
        self.count += int(np.count_nonzero(outside & (a == ord(",")) & (depth >= 1)
                                           & (depth <= 2)))
        self._depth = int(depth[-1])
        self._in_string = (self._in_string + int(np.count_nonzero(quote))) & 1


class NdjsonLines:
    """Counts the non-blank lines of an NDJSON body (as ``reading.lines`` numbers them) as its
    chunks arrive.

    >>> lines = NdjsonLines()
    >>> lines.feed(b'{"a": 1}\\n\\n  \\n{"a"'); lines.feed(b': 2}'); lines.count
    1
    >>> lines.finish(); lines.count
    2
    """

    def __init__(self) -> None:
        self.count = 0
        self._open = False  # the line the last chunk ended in has a non-blank byte

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            self._open = self._open or bool(parts[0].strip())
            return
        self.count += (self._open or bool(parts[0].strip())) + sum(
            1 for line in parts[1:-1] if line.strip())
        self._open = bool(parts[-1].strip())

    def finish(self) -> None:
        self.count += self._open
        self._open = False


async def read_rows(request: Request, ndjson: bool, limit: int) -> bytes:
    """The body of a batch decision request, refused (413) as soon as it has more than
    ``limit`` requests: lines of NDJSON, or requests of a JSON body (at most the schema's
    100,000 there), so that an oversized batch is never parsed, nor held whole."""
    counter = NdjsonLines() if ndjson else JsonItems()
    if not ndjson:
        limit = min(limit, MAX_JSON_REQUESTS)
    chunks = []
    try:
        async for chunk in request.stream():
            counter.feed(chunk)
            chunks.append(chunk)
            if counter.count > limit:
                break
    except ClientDisconnect:  # or the server's body deadline: nobody reads the answer
        raise ServiceError(408, "request_timeout", "the body did not arrive") from None
    if isinstance(counter, NdjsonLines):
        counter.finish()
    if counter.count > limit:
        what = f"{limit:,} lines" if ndjson else f"{limit:,} requests"
        raise ServiceError(413, "payload_too_large", f"{'' if ndjson else 'requests: '}more "
                           f"than {what} in one batch (setting max_batch_rows"
                           f"{'' if ndjson else '; a JSON batch at most 100,000'})",
                           field=None if ndjson else "requests",
                           headers={"Connection": "close"})
    return b"".join(chunks)
