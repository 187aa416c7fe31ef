"""The single-decision fast path: ``POST /v1/decisions`` read by msgspec and decided on the
event loop, answering byte for byte what the FastAPI route answers."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import msgspec
from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit import tracing, wire
from bandit.engine import Engine, OneDecision
from bandit.errors import BanditError
from bandit.service.errors import bandit_error
from bandit.service.metrics import Metrics
from bandit.service.singles import Singles, answer_all
from bandit.wire.decisions import DecisionRequest

_FAST_PATH = "/v1/decisions"
_FAST_MAX_BYTES = 64 * 1024  # larger single requests (512 context features) take the route
# Up to this many requests that arrive together are decided one by one (``Engine.decide_one``,
# fused per slot); more share one ``decide_batch`` with its answers' JSON, whose fixed cost is
# then smaller than theirs one by one.
_ONE_BY_ONE = 12
_FAST_DECODE = msgspec.json.Decoder(DecisionRequest).decode
_FAST_ENCODE = msgspec.json.Encoder().encode


def fast_request(body: bytes) -> DecisionRequest | None:
    """The request when msgspec takes the body, every name fits the pattern and no key is
    repeated, else None: whatever msgspec refuses, pydantic is asked for the verdict (the
    route's 400/422 bodies)."""
    try:
        request = _FAST_DECODE(body)
    except msgspec.DecodeError:
        return None
    if not wire.names_fit([request.campaign, *request.context, *request.segments]):
        return None
    if not wire.keys_unique(body, _FAST_ENCODE(request)) and wire.duplicate_key(body):
        return None
    return request


class SingleFastPath:
    """``POST /v1/decisions`` without FastAPI for the common request: a JSON body (plain
    ``application/json`` with a Content-Length) that msgspec reads and the engine decides on
    the event loop, its JSON written by the engine. Anything else (another content type, a
    body msgspec or the name pattern refuses) goes on to the FastAPI route with the body it
    read, so pydantic gives the verdict and the route's answers (and OpenAPI) stay the route's;
    engine errors are answered by the app's own handler. Kept beside the route for the
    benchmark row ``POST /v1/decisions / bare route (req/s)`` (benchmarks/bench_http.py).

    Requests that arrive together (read in the same turn of the event loop) are decided
    together, after that turn: a few one by one by ``Engine.decide_one``, more by
    ``Singles.decide_all``'s one ``decide_batch`` per campaign, whose fixed cost they then
    share. On the event loop only when the engine's lock is free: deciding is short, but
    waiting for the lock could be long (recording a large batch of events holds it for every
    event), so a busy engine sends the requests to ``Singles``' thread."""

    def __init__(self, app: ASGIApp, engine: Engine, singles: Singles, metrics: Metrics) -> None:
        self.app, self.engine, self.singles = app, engine, singles
        self.latency = metrics.latency.labels("decision")
        self.counters: dict[tuple[str, str, str], Any] = {}
        self.decisions = metrics.decisions
        self.waiting: list[tuple[DecisionRequest, asyncio.Future[bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != _FAST_PATH
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        length = content_type = trace_parent = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"traceparent":
                trace_parent = value
        if (content_type != b"application/json" or length is None or not length.isdigit()
                or int(length) > _FAST_MAX_BYTES):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nobody to answer
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = fast_request(body)
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self.waiting:
            loop.call_soon(self.decide_waiting)
        self.waiting.append((request, future))
        span = tracing.start("cmab.decide", trace_parent)
        try:
            answer = await future
        except BanditError as error:
            response = await bandit_error(Request(scope), error)
        else:
            self.latency.observe(time.perf_counter() - start)
            response = Response(answer, media_type="application/json",
                                headers=tracing.decided(span, request.campaign, 1, None, answer))
        finally:
            span.end()
        await response(scope, receive, send)

    def decide_waiting(self) -> None:
        """Decide the requests that arrived since the last call, on the event loop if the
        engine is free, else in ``Singles``' thread."""
        group, self.waiting = self.waiting, []
        if not self.engine.lock.acquire(blocking=False):
            for request, future in group:
                task = asyncio.ensure_future(self.singles.decide(request))
                task.add_done_callback(partial(_settle, future))
            return
        try:
            if len(group) <= _ONE_BY_ONE:
                answers = [self.decide_one(request) for request, _ in group]
            else:
                answers = self.singles.decide_all([r for r, _ in group])
        except Exception as error:  # a bug of ours: fail these requests, never hang them
            answers = [error] * len(group)
        finally:
            self.engine.lock.release()
        answer_all(group, answers)

    def decide_one(self, request: DecisionRequest) -> bytes | BaseException:
        """One request's JSON, or its BanditError; the caller holds the engine's lock."""
        try:
            one = self.engine.decide_one(request)
        except BanditError as error:
            return error
        self.count(one)
        return one.json.encode()

    def count(self, one: OneDecision) -> None:
        """``Metrics.count`` for one decision, with the labelled counters kept at hand."""
        for slot, arm in zip(one.slots, one.arms, strict=True):
            key = (one.campaign, slot, arm)
            counter = self.counters.get(key)
            if counter is None:
                counter = self.counters[key] = self.decisions.labels(*key)
            counter.inc()


def _settle(future: asyncio.Future[bytes], task: asyncio.Future[bytes]) -> None:
    """Pass a task's outcome on to ``future`` (unless its client went away)."""
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        future.set_result(task.result())


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app after the body was read: the body, then the client's messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
