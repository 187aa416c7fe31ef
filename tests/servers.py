"""A real HTTP server for tests: the app under uvicorn on a free 127.0.0.1 port, in a thread."""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def live(app: Any, sock: socket.socket | None = None) -> Iterator[httpx.Client]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port until the block ends; or on ``sock``,
    a socket bound (not listening: connections to it are refused until the server starts)."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        assert client.get("/healthz").json() == {"status": "ok"}
        while client.get("/readyz").status_code != 200:  # the lifespan warms the engine up
            assert time.monotonic() < deadline, "engine did not become ready"
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
