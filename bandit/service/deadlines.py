"""Read deadlines for uvicorn's HTTP/1.1 connections, against slow clients (slowloris).

uvicorn closes a connection idle between requests (``timeout_keep_alive``) but waits for ever
for the rest of a request once its first byte came, and for the first byte of a new
connection: a client that dribbles a header line every few seconds, or a body a byte at a
time, holds its connection (and what the request has buffered) as long as it likes. An ASGI
middleware cannot help with headers, since the app is called only once they are complete, so
the deadlines live in the protocol: ``deadline_protocol`` returns uvicorn's httptools protocol
with two timers,

- headers: from the connection's opening, or from a request's first byte, its headers must
  be complete within ``header_timeout_s``;
- body: from the end of the headers, the whole body must arrive within ``body_timeout_s``.

When one fires the server answers 408 (unless the app already began its answer) and closes
the connection; the app, if it was reading the body, sees the client leave.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = (b'{"error":{"code":"request_timeout","message":"the request did not arrive '
                 b'in time"}}')
_TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                   b"connection: close\r\ncontent-length: " + str(len(_TIMEOUT_BODY)).encode()
                   + b"\r\n\r\n" + _TIMEOUT_BODY)


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools HTTP/1.1 protocol with header and body deadlines, for
    ``uvicorn.Config(http=...)``."""

    class DeadlineProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle  # the request whose body is late, or the one before
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_TIMEOUT_ANSWER)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(header_timeout_s)

        def on_headers_complete(self) -> None:
            self._arm(body_timeout_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    return DeadlineProtocol
