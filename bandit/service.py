"""The HTTP decision service: a FastAPI app over one in-process :class:`~bandit.engine.Engine`.

Bodies are validated by the strict models of :mod:`bandit.models` at the edge; the engine checks
what only it knows (campaign names, context schema). Every 4xx answer has the same shape,
``{"error": {"code", "message", "field"?, "errors"?}}``, and every status a route can answer is
declared in the OpenAPI document:

- 400 ``malformed_body``: the body is not JSON as the service reads it, whatever the route: a
  syntax error or nesting deeper than 200 (named by line and column), not UTF-8 (UTF-16, a byte
  order mark), or a key repeated in an object (JSON readers keep one of them silently);
- 401 / 403: management routes, when a token is configured (``api_token``), and ``POST
  /v1/events`` when an ingest token is (``ingest_token``): missing or malformed header / wrong
  token;
- 404 ``not_found``: unknown campaign or slot (``unknown_arm``: the arm the path names); a
  campaign named in a body too, events included (the whole batch is refused);
- 405 ``method_not_allowed``: a method the path does not have;
- 409 ``conflict``: the campaign or arm exists, or the arm is a default or a slot's last;
- 408 ``request_timeout``: the headers did not arrive within ``header_timeout_s`` or the body
  within ``body_timeout_s`` (answered by the server, which then closes the connection:
  ``deadline_protocol``);
- 413 ``payload_too_large``: the body exceeds ``max_body_bytes``, or a batch decision body has
  more than ``max_batch_rows`` requests (a JSON one more than 100,000), refused while it
  arrives;
- 415 ``unsupported_media_type``: a body on the events or decision routes whose Content-Type
  is not ``application/json`` (or ``application/x-ndjson`` where the route takes it): a web
  page cannot post JSON to another site without the browser asking first, but it can post
  ``text/plain``;
- 422 ``invalid_input``: valid JSON that breaks the schema (each error's location and reason), a
  context the campaign does not accept, ``NaN`` or ``Infinity`` (Python's JSON reader takes these
  tokens, so they are refused by value, as non-finite numbers);
- 503 ``unavailable``: not ready yet; retry. ``over_capacity``: the events would leave more
  than ``max_pending`` decisions of a campaign waiting for their attribution windows; nothing
  of the request was recorded; retry after ``Retry-After`` seconds, once windows have closed
  (a 503, not a 429: the limit is the service's, shared by every sender, not one client's
  rate). Counted in ``cmab_pending_refused_total`` by campaign.

``POST /v1/decisions/batch`` and ``POST /v1/events`` also take ``application/x-ndjson`` (one
object per line); a bad line is a 422 that names its line number.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np
import pydantic_core
from fastapi import Body, Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bandit import wire
from bandit.batch_wire import MAX_JSON_REQUESTS, json_columns, ndjson_columns
from bandit.engine import DecisionBatch, Engine, OneDecision, RequestColumns, strip_consentless
from bandit.errors import BanditError, InvalidInputError, NotFoundError, OverCapacityError
from bandit.models import (
    Arm,
    BatchDecisionRequest,
    BatchDecisionResponse,
    CampaignReport,
    CampaignSpec,
    Click,
    Decision,
    DecisionRequest,
    Event,
    Impression,
    Name,
    Strict,
)
from bandit.settings import Settings

__all__ = ["EXAMPLE_CAMPAIGN", "NDJSON", "create_app", "tune_gc"]

if TYPE_CHECKING:
    from streams.link import StreamLink

log = logging.getLogger("bandit.service")

NDJSON = "application/x-ndjson"
# Engine calls for a large batch are cut into chunks, so a batch never holds the engine's lock
# for long and single decisions interleave with it.
BATCH_CHUNK = 4096

# -- bodies the service adds to bandit.models -----------------------------------------------


class AddArmRequest(Strict):
    slot: Name
    arm: Arm


class PauseRequest(Strict):
    paused: bool = Field(True, description="True pauses (default arms for everyone); False "
                         "resumes.")


class PauseState(Strict):
    campaign: str
    paused: bool


class Accepted(Strict):
    accepted: int = Field(description="Events the engine took in.")


class Erased(Strict):
    erased: int = Field(description="Pending decisions of the subject this process dropped "
                        "(0 in stream mode: the workers hold them).")
    forwarded: bool = Field(description="The erasure was written to the stream (stream mode) "
                            "before this answer: every worker applies it, also after a "
                            "restart.")


class Health(Strict):
    status: Literal["ok", "ready"]


class Readiness(Health):
    state_age_s: float | None = Field(
        None, description="Seconds since the model last followed the stream's state topic "
        "(stream mode only; null before the first state).")


class ErrorDetail(Strict):
    field: str | None = Field(None, description="Location of the value, e.g. `slots[0].arms`.")
    message: str


class ErrorInfo(Strict):
    code: str = Field(description="Stable code: malformed_body, unauthorized, forbidden, "
                      "not_found, method_not_allowed, conflict, request_timeout, "
                      "payload_too_large, unsupported_media_type, invalid_input, unknown_arm, "
                      "incompatible_state, unavailable, over_capacity.")
    message: str
    field: str | None = Field(None, description="The (first) offending field, when known.")
    errors: list[ErrorDetail] | None = Field(None, description="Every validation error.")


class ErrorResponse(Strict):
    error: ErrorInfo


# -- examples in the OpenAPI document (/docs; schemathesis replays them) -----------------------

EXAMPLE_CAMPAIGN: dict[str, Any] = {
    "name": "weekly-newsletter",
    "holdout": 0.05,
    "attribution_window_ms": 3 * 24 * 3600 * 1000,
    "context": {
        "features": [{"kind": "numeric", "name": "engagement", "default": 0.0},
                     {"kind": "categorical", "name": "plan", "values": ["free", "pro"]}],
        "segments": ["region"],
    },
    "slots": [
        {"name": "subject_line", "arms": [{"id": "plain"}, {"id": "urgent"}, {"id": "question"}],
         "default_arm": "plain", "policy": {"kind": "lin_ucb", "alpha": 0.5}},
        {"name": "artwork", "default_arm": "calm", "policy": {"kind": "hybrid_lin_ucb"},
         "arms": [{"id": "action", "features": {"scene": "action"}},
                  {"id": "calm", "features": {"scene": "calm"}}],
         "arm_features": [{"kind": "categorical", "name": "scene",
                           "values": ["action", "calm", "comedy"]}]},
    ],
}
_EXAMPLE_REQUESTS = [
    {"campaign": "weekly-newsletter", "user_id": "subscriber-42",
     "context": {"engagement": 0.7, "plan": "pro"}, "segments": {"region": "eu"}},
    {"campaign": "weekly-newsletter", "user_id": "subscriber-43", "consent": False},
]
_EXAMPLE_EVENTS = [
    {"type": "impression", "event_id": "imp-1", "decision_id": "5" * 32,
     "campaign": "weekly-newsletter", "user_id": "subscriber-42", "ts": 1_700_000_000_000,
     "slots": {"subject_line": {"arm": "urgent", "propensity": 0.4},
               "artwork": {"arm": "calm", "propensity": 0.6}},
     "context": {"engagement": 0.7, "plan": "pro"}, "segments": {"region": "eu"}},
    {"type": "click", "event_id": "click-1", "decision_id": "5" * 32,
     "campaign": "weekly-newsletter", "ts": 1_700_000_060_000},
]


def _example(value: Any, summary: str) -> dict[str, Any]:
    return {"newsletter": {"summary": summary, "value": value}}


CampaignName = Annotated[str, Path(
    description="Campaign name.",
    openapi_examples=_example("weekly-newsletter", "The example campaign"))]
SlotName = Annotated[str, Path(description="Slot name.",
                               openapi_examples=_example("subject_line", "A slot"))]
ArmId = Annotated[str, Path(description="Arm id.",
                            openapi_examples=_example("question", "A non-default arm"))]
UserIdPath = Annotated[str, Path(description="Subscriber id.",
                                 openapi_examples=_example("subscriber-42", "A subscriber"))]


# -- errors ----------------------------------------------------------------------------------

_STATUS = {
    "invalid_input": 422,
    "unknown_arm": 422,
    "incompatible_state": 422,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "over_capacity": 503,
}
_HTTP_CODES = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_input", 503: "unavailable"}
_DESCRIPTIONS = {
    400: "The body is not JSON: a syntax error (with its line and column), not UTF-8 (UTF-16, "
         "a byte order mark), or a repeated key.",
    401: "Missing or malformed `Authorization: Bearer <token>` (only when a token is configured).",
    403: "Wrong token.",
    404: "No such campaign, slot or arm.",
    409: "Conflicts with the current state.",
    413: "The body exceeds the configured maximum size (bytes, or rows of a batch).",
    415: "The body is not `application/json` (or `application/x-ndjson` where accepted).",
    422: "Valid JSON that breaks the schema, or a context the campaign does not accept.",
    503: "Not ready yet (kernels compiling, state loading), or too many decisions waiting for "
         "their attribution windows (`over_capacity`): retry after `Retry-After` seconds.",
}


class ServiceError(Exception):
    """An HTTP-level refusal (bad body, auth, size) in the service's error shape."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 errors: list[ErrorDetail] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.errors, self.headers = field, errors, headers


class _BodyTooLarge(HTTPException):
    # An HTTPException, because FastAPI turns any other error raised while it reads a body
    # into a bare 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (setting max_body_bytes)")


def _error_body(code: str, message: str, field: str | None = None,
                errors: list[ErrorDetail] | None = None) -> bytes:
    info = ErrorInfo(code=code, message=message, field=field, errors=errors)
    return ErrorResponse(error=info).model_dump_json(exclude_none=True).encode()


# pydantic names the member of a union it tried (`context.x.float`); users named none of them.
_UNION_MEMBER = re.compile(
    r"^(float|int|str|bool|none|constrained-\w+|function-\w+\[.*\]|(list|dict|set|union|"
    r"tagged-union|nullable|json-or-python|lax-or-strict)\[.*\])$"
)


# Event types: pydantic puts the tag of a tagged union in the location (`[0].impression.ts`).
_EVENT_TAGS = frozenset({"impression", "click"})


def _path(loc: Sequence[int | str], tags: frozenset[str] = frozenset()) -> str | None:
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in tags and (i == 0 or isinstance(loc[i - 1], int)):
            continue  # the item's type, not a field of it
        elif not _UNION_MEMBER.match(part):
            path += f".{part}" if path else part
    return path or None


# The engine names a context value it refuses as "context row <i>: ... '<feature>' ...".
_ENGINE_CONTEXT = re.compile(r"^context row \d+: (?P<reason>[^']*'(?P<feature>[^']+)'.*)$", re.S)


def _refused(where: str, error: BanditError, *, ndjson: bool, prefix: str = "") -> ServiceError:
    """The engine's refusal of one item of a batch, named as the caller knows it: ``where`` is
    ``requests[6]`` / ``[6]`` (JSON) or ``line 7`` (NDJSON); a context value it refuses becomes
    the field ``requests[6].context.age`` (in NDJSON: ``line 7: context.age``)."""
    reason, inner = str(error), None
    if match := _ENGINE_CONTEXT.match(reason):
        reason, inner = match["reason"], f"context.{match['feature']}"
    if ndjson:
        field, message = inner, f"{where}: " + (f"{inner}: " if inner else "")
    else:
        field = f"{where}.{inner}" if inner else where
        message = f"{field}: "
    return ServiceError(422, "invalid_input", message + prefix + reason, field=field)


def _invalid(errors: Iterable[Mapping[str, Any]], *, line: int | None = None,
             tags: frozenset[str] = frozenset()) -> ServiceError:
    """One 400 (not JSON) or 422 (breaks the schema) from pydantic's error list."""
    where = f"line {line}: " if line is not None else ""
    errors = list(errors)
    for error in errors:
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error") or error["msg"]
            what = f"line {line}" if line is not None else "body"
            return ServiceError(400, "malformed_body", f"{what} is not valid JSON: {reason}")
    details: dict[str | None, list[str]] = {}
    for error in errors:
        # Members of one union fail together at one place: one entry, their reasons joined.
        details.setdefault(_path(error["loc"], tags), []).append(error["msg"])
    listed = [ErrorDetail(field=f, message=" or ".join(dict.fromkeys(m)))
              for f, m in details.items()]
    message = "; ".join(f"{d.field or 'body'}: {d.message}" for d in listed)
    return ServiceError(422, "invalid_input", where + message, field=listed[0].field,
                        errors=listed)


# -- request size ----------------------------------------------------------------------------


class _BodyLimit:
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
                response = Response(_error_body("payload_too_large", message), 413,
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


class _JsonItems:
    """Counts the items at the first two levels of a JSON body as its chunks arrive: the
    commas outside strings at depth 1 and 2, which for a BatchDecisionRequest is its number of
    requests (one between its two fields, one fewer than the requests between them).

    Escapes are dropped first (a backslash and the byte after it, which may come in the next
    chunk), so every quote left opens or closes a string; then only quotes, brackets and commas
    are kept, and numpy follows string parity and depth over those.

    >>> items = _JsonItems()
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


class _NdjsonLines:
    """Counts the non-blank lines of an NDJSON body (as ``_lines`` numbers them) as its chunks
    arrive.

    >>> lines = _NdjsonLines()
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


async def _read_rows(request: Request, ndjson: bool, limit: int) -> bytes:
    """The body of a batch decision request, refused (413) as soon as it has more than
    ``limit`` requests: lines of NDJSON, or requests of a JSON body (at most the schema's
    100,000 there), so that an oversized batch is never parsed, nor held whole."""
    counter = _NdjsonLines() if ndjson else _JsonItems()
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
    if isinstance(counter, _NdjsonLines):
        counter.finish()
    if counter.count > limit:
        what = f"{limit:,} lines" if ndjson else f"{limit:,} requests"
        raise ServiceError(413, "payload_too_large", f"{'' if ndjson else 'requests: '}more "
                           f"than {what} in one batch (setting max_batch_rows"
                           f"{'' if ndjson else '; a JSON batch at most 100,000'})",
                           field=None if ndjson else "requests",
                           headers={"Connection": "close"})
    return b"".join(chunks)


# -- metrics ---------------------------------------------------------------------------------


class _Metrics:
    """Per-app registry, so several apps (tests, one process) never share or clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "cmab_decisions", "Slot decisions served, by campaign, slot and arm.",
            ["campaign", "slot", "arm"], registry=self.registry)
        self.latency = Histogram(
            "cmab_decision_latency_seconds", "Time to answer a decision request (whole batch "
            "for batches).", ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10, 60))
        self.errors = Counter("cmab_errors", "Error answers, by code.", ["code"],
                              registry=self.registry)
        self.stripped = Counter(
            "cmab_impressions_stripped", "Impressions posted with context or segments for a "
            "decision made without consent: accepted without them.", registry=self.registry)
        self.pending_refused = Counter(
            "cmab_pending_refused", "Impressions refused because their campaign had "
            "max_pending decisions waiting for their attribution windows (each in a request "
            "refused whole), by campaign.", ["campaign"], registry=self.registry)

    def count(self, batch: DecisionBatch) -> None:
        for slot in batch.slots:
            counts = np.bincount(slot.arms, minlength=len(slot.arm_ids))
            for arm, n in zip(slot.arm_ids, counts.tolist(), strict=True):
                if n:  # one labelled increment per arm, not per decision
                    self.decisions.labels(batch.campaign, slot.slot, arm).inc(n)


class _StreamCounts:
    """What the stream follower counts, read at each scrape (stream mode only): the
    checkpoints it ignored because it had absorbed a newer one of the same partition."""

    def __init__(self, stream: list[StreamLink]) -> None:
        self._stream = stream

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family(0)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self._stream:
            yield self._family(self._stream[0].follower.stale)

    @staticmethod
    def _family(value: int) -> CounterMetricFamily:
        return CounterMetricFamily(
            "cmab_stale_checkpoints", "State-topic checkpoints the model did not step back "
            "to: behind the one absorbed for their partition (written by a worker that "
            "stalled past its session timeout).", value=value)


def _answer_all(group: list[tuple[Any, asyncio.Future]], answers: list[Any]) -> None:
    """Hand each waiting request (request, future) its answer, or its error."""
    for (_, future), answer in zip(group, answers, strict=True):
        if future.done():  # the client went away
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


class _Singles:
    """Single decisions, coalesced: requests that arrive while the engine is deciding earlier
    ones wait for that call to end and are then decided together, one ``decide_batch`` per
    campaign. The policies' per-call cost (~0.25 ms for 4 slots) is then shared by every
    waiting request, so under concurrent load throughput grows instead of queueing; a request
    that arrives alone is decided at once. A decision's draws come from its own id, so a
    coalesced decision is distributed exactly as one decided alone."""

    def __init__(self, engine: Engine, metrics: _Metrics) -> None:
        self._engine, self._metrics = engine, metrics
        self._waiting: list[tuple[DecisionRequest, asyncio.Future[bytes]]] = []
        self._drain_task: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    async def decide(self, request: DecisionRequest) -> bytes:
        """The decision's JSON; a BanditError (unknown campaign, bad context) is raised."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                answers = await run_in_threadpool(self._decide, [r for r, _ in group])
            except Exception as error:  # a bug of ours: fail these requests, never hang them
                answers = [error] * len(group)
            _answer_all(group, answers)

    def _decide(self, requests: list[DecisionRequest]) -> list[bytes | BaseException]:
        by_campaign: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_campaign.setdefault(r.campaign, []).append(i)
        answers: list[bytes | BaseException] = [b""] * len(requests)
        for campaign, rows in by_campaign.items():
            try:
                batch = self._engine.decide_batch(campaign, [requests[i] for i in rows])
            except InvalidInputError as error:
                if len(rows) == 1:
                    answers[rows[0]] = error
                else:  # one bad context must not fail the others: decide them apart
                    for i in rows:
                        answers[i] = self._decide([requests[i]])[0]
                continue
            except BanditError as error:  # the campaign's: unknown, ...
                for i in rows:
                    answers[i] = error
                continue
            self._metrics.count(batch)
            for i, line in zip(rows, batch.lines(), strict=True):
                answers[i] = line
        return answers


# -- single decisions: the fast path ----------------------------------------------------------

_FAST_PATH = "/v1/decisions"
_FAST_MAX_BYTES = 64 * 1024  # larger single requests (512 context features) take the route
# Up to this many requests that arrive together are decided one by one (~25 us each for 4
# slots, fused per slot); more share one decide_batch with its answers' JSON (~235 us alone,
# 305 at 8, 349 at 16, against 198 and 402 one by one): the same cost at about 13.
_ONE_BY_ONE = 12
_NameText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_LabelText = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class _FastRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """``DecisionRequest`` as msgspec reads it: the same fields, defaults and constraints but
    the pattern of names, which ``_fast_request`` checks. The engine reads requests by
    attribute, which both kinds provide. (Defaults are omitted when one is written back, for
    ``wire.keys_unique``.)"""

    campaign: _NameText
    user_id: _LabelText
    context: Annotated[dict[_NameText, float | _LabelText], msgspec.Meta(max_length=512)] = {}
    segments: Annotated[dict[_NameText, _LabelText], msgspec.Meta(max_length=16)] = {}
    consent: bool = True
    explain: bool = False


_FAST_DECODE = msgspec.json.Decoder(_FastRequest).decode
_FAST_ENCODE = msgspec.json.Encoder().encode


def _fast_request(body: bytes) -> _FastRequest | None:
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


class _SingleFastPath:
    """``POST /v1/decisions`` without FastAPI for the common request: a JSON body (plain
    ``application/json`` with a Content-Length) that msgspec reads and the engine decides on
    the event loop, its JSON written by the engine. Anything else (another content type, a
    body msgspec or the name pattern refuses) goes on to the FastAPI route with the body it
    read, so pydantic gives the verdict and the route's answers (and OpenAPI) stay the route's;
    engine errors are answered by the app's own handler.

    Requests that arrive together (read in the same turn of the event loop) are decided
    together, after that turn: a few one by one by ``Engine.decide_one`` (~25 us each for 4
    slots), more by ``_Singles``' one ``decide_batch`` per campaign, whose fixed cost (~0.2 ms)
    they then share. On the event loop only when the engine's lock is free: deciding is short,
    but waiting for the lock could be long (recording a large batch of events holds it ~15 us
    per event), so a busy engine sends the requests to ``_Singles``' thread."""

    def __init__(self, app: ASGIApp, engine: Engine, singles: _Singles, metrics: _Metrics,
                 refused: Callable[[Scope, BanditError], Any]) -> None:
        self.app, self.engine, self.singles, self.refused = app, engine, singles, refused
        self.latency = metrics.latency.labels("decision")
        self.counters: dict[tuple[str, str, str], Any] = {}
        self.decisions = metrics.decisions
        self.waiting: list[tuple[_FastRequest, asyncio.Future[bytes]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != _FAST_PATH
                or scope["method"] != "POST"):
            await self.app(scope, receive, send)
            return
        length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
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
        request = _fast_request(body)
        if request is None:
            await self.app(scope, _replay(body, receive), send)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self.waiting:
            loop.call_soon(self.decide_waiting)
        self.waiting.append((request, future))
        try:
            answer = await future
        except BanditError as error:
            response = await self.refused(scope, error)
        else:
            self.latency.observe(time.perf_counter() - start)
            response = Response(answer, media_type="application/json")
        await response(scope, receive, send)

    def decide_waiting(self) -> None:
        """Decide the requests that arrived since the last call, on the event loop if the
        engine is free, else in ``_Singles``' thread."""
        group, self.waiting = self.waiting, []
        if not self.engine.lock.acquire(blocking=False):
            for request, future in group:
                task = asyncio.ensure_future(self.singles.decide(request))  # type: ignore[arg-type]
                task.add_done_callback(partial(_settle, future))
            return
        try:
            if len(group) <= _ONE_BY_ONE:
                answers = [self.decide_one(request) for request, _ in group]
            else:
                answers = self.singles._decide([r for r, _ in group])  # type: ignore[misc]
        except Exception as error:  # a bug of ours: fail these requests, never hang them
            answers = [error] * len(group)
        finally:
            self.engine.lock.release()
        _answer_all(group, answers)

    def decide_one(self, request: _FastRequest) -> bytes | BaseException:
        """One request's JSON, or its BanditError; the caller holds the engine's lock."""
        try:
            one = self.engine.decide_one(request)
        except BanditError as error:
            return error
        self.count(one)
        return one.json.encode()

    def count(self, one: OneDecision) -> None:
        """``_Metrics.count`` for one decision, with the labelled counters kept at hand."""
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


# -- strict JSON bodies ----------------------------------------------------------------------


def _strict_json(body: bytes, what: str) -> None:
    """ServiceError 400 unless ``body`` is JSON as the service reads it: UTF-8 without a byte
    order mark, valid (the reason with its line and column, as pydantic gives it on the other
    routes), no duplicate key."""
    problem = wire.encoding_problem(body)
    if problem is None:
        try:
            pydantic_core.from_json(body)
        except ValueError as error:
            problem = str(error)
        else:
            key = wire.duplicate_key(body)
            problem = None if key is None else f"duplicate key {key!r}"
    if problem is not None:
        raise ServiceError(400, "malformed_body", f"{what} is not valid JSON: {problem}")


def _read(body: bytes, validate: Callable[[bytes], _T], written: Callable[[_T], bytes],
          line: int | None = None, tags: frozenset[str] = frozenset()) -> _T:
    """``validate(body)`` (a pydantic reader of JSON) with its errors in the service's shape,
    and a repeated key refused as on the routes FastAPI reads (``_strict_json``): after syntax
    errors, before schema errors. ``written(item)`` writes the item back with only the fields
    the body gave (``wire.keys_unique``); ``line`` names an NDJSON line."""
    what = "body" if line is None else f"line {line}"
    try:
        item = validate(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if errors[0]["type"] != "json_invalid":
            _unique(body, b"", what)  # no item to compare with: the exact check
        raise _invalid(errors, line=line, tags=tags) from None
    _unique(body, written(item), what)
    return item


def _unique(body: bytes, again: bytes, what: str) -> None:
    """ServiceError 400 if the JSON ``body`` repeats a key (``again``: see wire.keys_unique)."""
    if not wire.keys_unique(body, again) and (key := wire.duplicate_key(body)) is not None:
        raise ServiceError(400, "malformed_body",
                           f"{what} is not valid JSON: duplicate key {key!r}")


def _encoded(body: bytes) -> None:
    """ServiceError 400 if ``body`` is not UTF-8 (a byte order mark, UTF-16 or UTF-32)."""
    if (problem := wire.encoding_problem(body)) is not None:
        raise ServiceError(400, "malformed_body", f"body is not valid JSON: {problem}")


class _StrictRoute(APIRoute):
    """A route whose JSON body FastAPI reads is read strictly first (``_strict_json``): Python's
    JSON reader, FastAPI's, takes UTF-16 and duplicate keys silently and names no position for
    a body too deep or not UTF-8. Routes that read their bodies themselves check them there."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await request.body()
            if body and (kind in ("", "application/json") or kind.endswith("+json")):
                _strict_json(body, "body")
            return await handler(request)

        return strict


# -- the app ---------------------------------------------------------------------------------

_T = TypeVar("_T")
_SPECS = TypeAdapter(list[CampaignSpec])
_EVENT: TypeAdapter[Impression | Click] = TypeAdapter(Event)
_EVENTS: TypeAdapter[list[Impression | Click]] = TypeAdapter(
    Annotated[list[Event], Field(min_length=1)])
# The security scheme is named after its setting (tests send each scheme its setting's token).
_bearer = HTTPBearer(auto_error=False, scheme_name="api_token",
                     description="The configured API token (setting api_token).")
_ingest_bearer = HTTPBearer(auto_error=False, scheme_name="ingest_token",
                            description="The configured ingest token (setting ingest_token).")


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


def _json(model: BaseModel, status: int = 200) -> Response:
    # pydantic writes the bytes: no dict round trip.
    return Response(model.model_dump_json(), status, media_type="application/json")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _is_ndjson(request: Request) -> bool:
    return _media_type(request) == NDJSON


def _body_of(*media_types: str) -> Callable[[Request], None]:
    """A dependency refusing (415) a body of any other Content-Type, a missing one included."""
    def check(request: Request) -> None:
        if _media_type(request) not in media_types:
            got = request.headers.get("content-type")
            raise ServiceError(415, "unsupported_media_type", f"expected Content-Type "
                               f"{' or '.join(media_types)}, got {got or 'none'}")
    return check


_JSON_BODY = Depends(_body_of("application/json"))
_JSON_OR_NDJSON_BODY = Depends(_body_of("application/json", NDJSON))


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of an NDJSON body, numbered from 1."""
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            yield number, line


def _ndjson_items(body: bytes, adapter: Callable[[bytes], _T],
                  tags: frozenset[str] = frozenset()) -> Iterator[tuple[int, _T]]:
    """(line number, validated item) per non-blank line; a bad line is an error naming it."""
    empty = True
    for number, line in _lines(body):
        item = _read(line, adapter, lambda item: item.model_dump_json(exclude_unset=True).encode(),
                     number, tags)
        yield number, item
        empty = False
    if empty:
        raise ServiceError(422, "invalid_input", "expected at least one line")


def _allowed(routes: Iterable[Any], scope: Scope) -> str:
    """The Allow header of a 405: the methods of every route whose path matches."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine warm-up failed; /readyz stays 503", exc_info=task.exception())


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def tune_gc() -> None:
    """For a process that serves, once the app is built (``cmab serve`` calls it): what is alive
    then (modules, the engine, compiled kernels) leaves the cyclic collector's view, and young
    collections come every 50,000 allocations instead of 700. Parsing and deciding a
    280,000-line NDJSON batch spent 1.3 s of 3.9 s in collections that freed nothing; 0 after.
    Process-wide, hence not done by ``create_app``."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """The decision service over ``engine``.

    Without an engine the app makes one: loaded from ``settings.snapshot_path`` when that file
    exists, else ``Engine(seed=settings.seed)``; either issues decision ids from the operating
    system's randomness unless ``settings.id_seed`` is set (reproducible runs only). At start-up an engine that is not ready is
    warmed up in the background (``/readyz`` answers 503 until it is done); at shutdown the
    engine is saved to ``settings.snapshot_path`` when one is set.
    """
    settings = settings if settings is not None else Settings()
    snapshot = settings.snapshot_path
    if engine is None:
        seeds = {"seed": settings.seed, "id_seed": settings.id_seed}
        engine = (Engine.load(snapshot, **seeds)
                  if snapshot is not None and snapshot.exists() else Engine(**seeds))
    token = settings.api_token.get_secret_value().encode() if settings.api_token else None
    ingest_token = (settings.ingest_token.get_secret_value().encode()
                    if settings.ingest_token else None)
    engine.limit_pending(settings.max_pending)
    metrics = _Metrics()
    stream: list[StreamLink] = []  # the link to Kafka, made at start-up when configured
    metrics.registry.register(_StreamCounts(stream))

    async def published(campaign: str) -> None:
        if stream:
            await off_loop(stream[0].campaign_changed, campaign)

    singles = _Singles(engine, metrics)  # concurrent single decisions, decided together

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_up = None  # referenced until shutdown: the event loop holds tasks only weakly
        if settings.bootstrap_servers:
            from streams.link import StreamLink
            from streams.topics import Topics

            stream.append(await run_in_threadpool(
                StreamLink, engine, settings.bootstrap_servers, Topics(settings.topic_prefix)))
        if not engine.ready:
            # In the background, so /healthz answers while the kernels compile or load.
            warm_up = asyncio.create_task(run_in_threadpool(engine.warm_up))
            warm_up.add_done_callback(_log_failure)
        yield
        if stream:
            await run_in_threadpool(stream.pop().close)
        if snapshot is not None:
            await run_in_threadpool(engine.save, snapshot)
            log.info("engine saved to %s", snapshot)

    app = FastAPI(
        title="bandit-engine decision service",
        version="1",
        summary="Contextual bandit decisions with propensities, campaign management, events.",
        lifespan=lifespan,
    )
    app.router.route_class = _StrictRoute
    app.add_middleware(_SingleFastPath, engine=engine, singles=singles, metrics=metrics,
                       refused=lambda scope, error: bandit_error(Request(scope), error))
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes,
                       refused=metrics.errors.labels("payload_too_large").inc)

    # -- error handlers: the only place where errors become statuses --------------------------

    def answer(status: int, code: str, message: str, *, field: str | None = None,
               errors: list[ErrorDetail] | None = None,
               headers: Mapping[str, str] | None = None) -> Response:
        metrics.errors.labels(code).inc()
        return Response(_error_body(code, message, field, errors), status, headers=headers,
                        media_type="application/json")

    @app.exception_handler(BanditError)
    async def bandit_error(request: Request, error: BanditError) -> Response:
        status = _STATUS.get(error.code, 500)  # an unmapped code is our bug, not the caller's
        if error.code == "unknown_arm" and "arm" in request.path_params:
            status = 404  # the path names the arm: the resource does not exist
        headers = {"Retry-After": "1"} if error.retriable else None
        return answer(status, error.code, str(error), headers=headers)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> Response:
        return answer(error.status, error.code, error.message, field=error.field,
                      errors=error.errors, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        # FastAPI's locations start with where the value was (body, path, query, header).
        invalid = _invalid({**e, "loc": tuple(e["loc"])[1:]} for e in error.errors())
        return await service_error(request, invalid)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        message, headers = str(error.detail), error.headers
        if error.status_code == 400:  # FastAPI's words for a body that is not UTF-8
            message = f"body is not valid JSON: {message}"
        if error.status_code == 405:  # Starlette's Allow names the first route of the path only
            headers = {**(headers or {}), "Allow": _allowed(app.routes, request.scope)}
        return answer(error.status_code, _HTTP_CODES.get(error.status_code, "http_error"),
                      message, headers=headers)

    # -- dependencies and helpers ------------------------------------------------------------

    def authorize(credentials: HTTPAuthorizationCredentials | None, expected: bytes | None,
                  which: str) -> None:
        if expected is None:
            return
        if credentials is None:
            raise ServiceError(401, "unauthorized", "expected an 'Authorization: Bearer <token>' "
                               "header", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ServiceError(403, "forbidden", f"the bearer token is not the configured "
                               f"{which} token")

    async def management(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        """Require the bearer token on management routes, when one is configured."""
        authorize(credentials, token, "management")

    async def ingest(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_ingest_bearer)],
    ) -> None:
        """Require the ingest token on the events route, when one is configured."""
        authorize(credentials, ingest_token, "ingest")

    # Without a token the management routes are open, and the OpenAPI says so: no security.
    managed = [Security(management)] if token is not None else []
    ingested = [Security(ingest)] if ingest_token is not None else []

    async def off_loop(function: Callable[..., _T], *args: Any) -> _T:
        # Engine calls hold its lock and may take a while: in a thread, /healthz and the other
        # requests keep being answered.
        return await run_in_threadpool(function, *args)

    def decide_labelled(campaign: str | None,
                        labelled: Iterable[tuple[str, DecisionRequest]]) -> list[DecisionBatch]:
        """Decide ``(label, request)`` pairs a chunk at a time, so that a big batch never holds
        the engine's lock for long nor keeps every request alive at once. The label (``line
        7``, ``requests[6]``) names the request in errors; ``campaign`` defaults to the first
        request's."""
        batches = []
        for chunk in _chunks(labelled, BATCH_CHUNK):
            campaign = campaign or chunk[0][1].campaign
            for label, request in chunk:
                if request.campaign != campaign:
                    field = "campaign" if label.startswith("line") else f"{label}.campaign"
                    raise ServiceError(422, "invalid_input", f"{label}: campaign "
                                       f"{request.campaign!r} is not the batch's {campaign!r}",
                                       field=field)
            requests = [request for _, request in chunk]
            try:
                batches.append(engine.decide_batch(campaign, requests))
            except InvalidInputError:
                # The engine names the row inside the chunk only: decide the chunk's requests
                # alone (deciding has no side effect but drawing ids) to name the first bad one
                # as the caller knows it.
                for label, request in chunk:
                    try:
                        engine.decide_batch(campaign, [request])
                    except InvalidInputError as error:
                        raise _refused(label, error, ndjson=label.startswith("line")) from None
                raise
            metrics.count(batches[-1])
        return batches

    # -- campaigns ---------------------------------------------------------------------------

    @app.post("/v1/campaigns", status_code=201, response_model=CampaignSpec, tags=["campaigns"],
              dependencies=managed, responses=_responses(400, 401, 403, 409, 413, 422, 503))
    async def create_campaign(
        spec: Annotated[CampaignSpec, Body(openapi_examples=_example(
            EXAMPLE_CAMPAIGN, "Subject line (LinUCB) and artwork (hybrid LinUCB)"))],
    ) -> Response:
        """Create a campaign: context schema, holdout, attribution window, ordered slots."""
        created = await off_loop(engine.create_campaign, spec)
        await published(spec.name)
        return _json(created, 201)

    @app.get("/v1/campaigns", response_model=list[CampaignSpec], tags=["campaigns"])
    async def list_campaigns() -> Response:
        """Every campaign's spec, with the arms added since it was created."""
        specs = await off_loop(engine.campaigns)
        return Response(_SPECS.dump_json(specs), media_type="application/json")

    @app.get("/v1/campaigns/{campaign}", response_model=CampaignSpec, tags=["campaigns"],
             responses=_responses(404))
    async def get_campaign(campaign: CampaignName) -> Response:
        """One campaign's spec, with the arms added since it was created."""
        return _json(await off_loop(engine.campaign, campaign))

    @app.post("/v1/campaigns/{campaign}/arms", status_code=201, response_model=CampaignSpec,
              tags=["campaigns"], dependencies=managed,
              responses=_responses(400, 401, 403, 404, 409, 413, 422, 503))
    async def add_arm(
        campaign: CampaignName,
        body: Annotated[AddArmRequest, Body(openapi_examples=_example(
            {"slot": "artwork", "arm": {"id": "comedy", "features": {"scene": "comedy"}}},
            "A new artwork, scored from its features"))],
    ) -> Response:
        """Add an arm to a slot; hybrid policies score it from its features at once."""
        try:
            changed = await off_loop(engine.add_arm, campaign, body.slot, body.arm)
        except NotFoundError as error:
            if not any(spec.name == campaign for spec in engine.campaigns()):
                raise
            # The campaign exists: what is missing is the slot the body names.
            raise ServiceError(404, "not_found", str(error), field="slot") from None
        await published(campaign)
        return _json(changed, 201)

    @app.delete("/v1/campaigns/{campaign}/slots/{slot}/arms/{arm}", response_model=CampaignSpec,
                tags=["campaigns"], dependencies=managed,
                responses=_responses(401, 403, 404, 409, 503))
    async def retire_arm(campaign: CampaignName, slot: SlotName, arm: ArmId) -> Response:
        """Retire an arm: never chosen again. Its statistics stay; retiring twice is a no-op."""
        changed = await off_loop(engine.retire_arm, campaign, slot, arm)
        await published(campaign)
        return _json(changed)

    @app.post("/v1/campaigns/{campaign}/pause", response_model=PauseState, tags=["campaigns"],
              dependencies=managed, responses=_responses(400, 401, 403, 404, 413, 422, 503))
    async def pause(
        campaign: CampaignName,
        body: Annotated[PauseRequest | None, Body(
            openapi_examples=_example({"paused": False}, "Resume"))] = None,
    ) -> PauseState:
        """Kill switch: while paused everyone gets the default arms. Without a body: pause."""
        paused = True if body is None else body.paused
        await off_loop(engine.pause, campaign, paused)
        await published(campaign)
        return PauseState(campaign=campaign, paused=paused)

    @app.get("/v1/campaigns/{campaign}/report", response_model=CampaignReport,
             tags=["campaigns"], responses=_responses(404, 503))
    async def report(campaign: CampaignName) -> Response:
        """Per-arm statistics, holdout lift with its interval, bias audit by segment."""
        return _json(await off_loop(engine.report, campaign))

    # -- decisions ---------------------------------------------------------------------------

    @app.post("/v1/decisions", response_model=Decision, tags=["decisions"],
              dependencies=[_JSON_BODY], responses=_responses(400, 404, 413, 415, 422, 503))
    async def decide(
        request: Annotated[DecisionRequest, Body(openapi_examples=_example(
            _EXAMPLE_REQUESTS[0], "A subscriber with context and segment"))],
    ) -> Response:
        """Decide every slot for one subscriber: arms, propensities, expected rewards."""
        start = time.perf_counter()
        # In a thread (with the requests that arrived meanwhile): waiting on the engine's lock
        # (a large events batch holds it ~15 us per event) must not stall the event loop.
        body = await singles.decide(request)
        metrics.latency.labels("decision").observe(time.perf_counter() - start)
        return Response(body, media_type="application/json")

    batch_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/BatchDecisionRequest"},
                "examples": _example({"campaign": "weekly-newsletter",
                                      "requests": _EXAMPLE_REQUESTS}, "Two subscribers")},
            NDJSON: {"schema": {"type": "array", "minItems": 1,
                                "items": {"$ref": "#/components/schemas/DecisionRequest"}},
                     "examples": _example(_EXAMPLE_REQUESTS, "Two lines"),
                     "x-description": "One DecisionRequest per line, all for one campaign."},
        },
    }
    batch_ok: dict[int | str, dict[str, Any]] = {200: {
        "description": "Decisions in request order: a BatchDecisionResponse, or one Decision "
                       "per line when the request was NDJSON.",
        "content": {NDJSON: {"schema": {
            "type": "array", "items": {"$ref": "#/components/schemas/Decision"}}}}}}

    @app.post("/v1/decisions/batch", response_model=BatchDecisionResponse, tags=["decisions"],
              openapi_extra={"requestBody": batch_body}, dependencies=[_JSON_OR_NDJSON_BODY],
              responses={**batch_ok, **_responses(400, 404, 413, 415, 422, 503)})
    async def decide_batch(request: Request) -> Response:
        """Decide for many subscribers of one campaign, answers in request order.

        JSON in and out (up to 100,000 requests), or ``application/x-ndjson`` in and out (one
        request or decision per line, up to the setting ``max_batch_rows`` lines, all for one
        campaign); a body with more is refused (413) while it arrives. Every request is
        validated before the first byte goes out, so that a bad one is a 422 naming its line
        (NDJSON) or index (JSON) rather than a broken stream.
        """
        start = time.perf_counter()
        ndjson = _is_ndjson(request)
        body = await _read_rows(request, ndjson, settings.max_batch_rows)
        _encoded(body)
        media_type = NDJSON if ndjson else "application/json"
        # Parsing and serializing 100,000 rows takes a while too: all of it off the event loop.
        columns = await off_loop(ndjson_columns if ndjson else json_columns, body, engine)
        if columns is not None:
            # A good body (msgspec, bandit.batch_wire): nothing left to refuse, so each chunk
            # goes out once decided, while the next one is decided.
            return StreamingResponse(decided(columns, ndjson, start), media_type=media_type)
        batches = await off_loop(decide_body, body, ndjson)
        metrics.latency.labels("batch").observe(time.perf_counter() - start)
        if ndjson:
            return StreamingResponse(_ndjson_chunks(batches), media_type=NDJSON)
        return Response(await off_loop(_json_decisions, batches), media_type=media_type)

    def decided(columns: RequestColumns, ndjson: bool, start: float) -> Iterator[bytes]:
        """The answer to a batch that passed as columns, a chunk at a time (``decide_labelled``'s
        chunks, so the decisions are the same): NDJSON, or a BatchDecisionResponse's JSON."""
        end = b"\n" if ndjson else b","
        for first in range(0, len(columns), BATCH_CHUNK):
            batch = engine.decide_columns(columns.rows(first, first + BATCH_CHUNK))
            metrics.count(batch)
            text = batch.ndjson(end)
            if not ndjson:
                head = b'{"decisions":[' if first == 0 else b","
                text = head + text[:-1] + (b"]}" if first + BATCH_CHUNK >= len(columns) else b"")
            yield text
        metrics.latency.labels("batch").observe(time.perf_counter() - start)

    def decide_body(body: bytes, ndjson: bool) -> list[DecisionBatch]:
        """Validate a batch body, JSON or NDJSON, with the pydantic models, whose errors name
        the line or index and the field, and decide it."""
        if ndjson:
            lines = _ndjson_items(body, DecisionRequest.model_validate_json)
            return decide_labelled(None, ((f"line {n}", r) for n, r in lines))
        parsed = _read(body, BatchDecisionRequest.model_validate_json,
                       lambda batch: batch.model_dump_json(exclude_unset=True).encode())
        return decide_labelled(parsed.campaign,
                               ((f"requests[{i}]", r) for i, r in enumerate(parsed.requests)))

    # -- events and subjects -----------------------------------------------------------------

    event_list = {"type": "array", "minItems": 1, "items": {"oneOf": [
        {"$ref": "#/components/schemas/Impression"}, {"$ref": "#/components/schemas/Click"}],
        "discriminator": {"propertyName": "type", "mapping": {
            "impression": "#/components/schemas/Impression",
            "click": "#/components/schemas/Click"}}}}
    events_body = {"required": True, "content": {
        "application/json": {"schema": event_list,
                             "examples": _example(_EXAMPLE_EVENTS, "An impression, a click")},
        NDJSON: {"schema": event_list, "x-description": "One event per line.",
                 "examples": _example(_EXAMPLE_EVENTS, "An impression, a click")}}}

    @app.post("/v1/events", response_model=Accepted, tags=["events"],
              openapi_extra={"requestBody": events_body},
              dependencies=[*ingested, _JSON_OR_NDJSON_BODY],
              responses=_responses(400, 401, 403, 404, 413, 415, 422, 503))
    async def record(request: Request) -> Response:
        """Impressions and clicks, for senders that cannot write to Kafka: a JSON list of
        events, or ``application/x-ndjson`` with one event per line. An unknown campaign is a
        404, as on the decision routes (a campaign a body names is a resource, whichever the
        route; the item is named, ``[3]`` or ``line 4``), unknown slots, arms or context
        features a 422, and an impression that would leave more than ``max_pending`` decisions
        of its campaign waiting a 503 ``over_capacity``: each refuses the whole request before
        anything is learned, so a batch is never half recorded. Duplicates, late and orphan
        clicks are dropped and not counted as accepted. An impression of a decision made
        without consent (its id's last hex digit is even) is accepted without its context and
        segments (metric ``cmab_impressions_stripped``). Needs the ingest token when one is
        configured."""
        body, ndjson = await request.body(), _is_ndjson(request)
        _encoded(body)
        try:
            accepted = await off_loop(record_body, body, ndjson)
        except OverCapacityError as error:
            for campaign, n in error.refused.items():
                metrics.pending_refused.labels(campaign).inc(n)
            raise
        return _json(Accepted(accepted=accepted))

    def record_body(body: bytes, ndjson: bool) -> int:
        events: list[Impression | Click]
        if ndjson:
            numbered = list(_ndjson_items(body, _EVENT.validate_json, _EVENT_TAGS))
            events, where = [e for _, e in numbered], [f"line {n}" for n, _ in numbered]
        else:
            events = _read(body, _EVENTS.validate_json,
                           partial(_EVENTS.dump_json, exclude_unset=True), tags=_EVENT_TAGS)
            where = [f"[{i}]" for i in range(len(events))]
        known: set[str] = set()
        for label, event in zip(where, events, strict=True):
            if event.campaign not in known:
                try:
                    engine.campaign(event.campaign)
                except NotFoundError as error:
                    raise ServiceError(
                        404, "not_found", f"{label}: event {event.event_id!r}: {error}",
                        field="campaign" if ndjson else f"{label}.campaign") from None
                known.add(event.campaign)
        # Here, so that a consent-less decision's context does not reach the stream either.
        events, stripped = strip_consentless(events)
        try:
            accepted = stream[0].events(events) if stream else engine.record(events)
        except InvalidInputError as error:
            # The engine says "event <i> (<event id>): <reason>": name the item as sent.
            match = re.match(r"event (\d+) ", str(error))
            if match is None:
                raise
            i = int(match[1])
            inner = InvalidInputError(str(error)[len(f"event {i} ({events[i].event_id}): "):])
            raise _refused(where[i], inner, ndjson=ndjson,
                           prefix=f"event {events[i].event_id!r}: ") from None
        metrics.stripped.inc(stripped)
        return accepted

    @app.delete("/v1/subjects/{user_id}", response_model=Erased, tags=["subjects"],
                dependencies=managed, responses=_responses(401, 403, 503))
    async def erase(user_id: UserIdPath) -> Erased:
        """Erasure: the subscriber's decisions with an impression at or before now (this
        server's clock) are dropped and refused if their impression comes again; a later
        impression is a new decision. Their user id and string values leave the state;
        learned sums and report tallies are aggregates and stay."""
        at_ms = int(time.time() * 1000)
        if stream:
            await off_loop(stream[0].erase, user_id, at_ms)
        return Erased(erased=await off_loop(engine.erase, user_id, at_ms),
                      forwarded=bool(stream))

    # -- operations --------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process answers."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
             tags=["operations"], responses=_responses(503))
    async def readyz() -> Readiness:
        """Ready to decide at full speed: kernels compiled or loaded from the cache."""
        if not engine.ready:
            raise ServiceError(503, "unavailable", "warming up: kernels are compiling",
                               headers={"Retry-After": "1"})
        age = stream[0].state_age_s() if stream else None
        return Readiness(status="ready", state_age_s=age)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"description": "Prometheus text exposition format 0.0.4.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        """Decisions by campaign, slot and arm; decision latency; errors by code; in stream
        mode, stale checkpoints ignored."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    def openapi() -> dict[str, Any]:
        # The NDJSON-capable routes read their bodies themselves, so FastAPI does not know the
        # models their bodies refer to: add them to the components.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # FastAPI declares its own 422 shape on routes with parameters; ours is
            # ErrorResponse, declared where a 422 can happen (plain path strings cannot fail).
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if "HTTPValidationError" in str(operation["responses"].get("422")):
                        del operation["responses"]["422"]
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            for model in (BatchDecisionRequest, DecisionRequest, Decision, Impression, Click):
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in extra.pop("$defs", {}).items():
                    components.setdefault(name, definition)
                components.setdefault(model.__name__, extra)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _json_decisions(batches: list[DecisionBatch]) -> bytes:
    items = b"".join(batch.ndjson(b",") for batch in batches)
    return b'{"decisions":[' + items[:-1] + b"]}"


def _ndjson_chunks(batches: list[DecisionBatch]) -> Iterator[bytes]:
    for batch in batches:  # serialized a chunk at a time: the bytes of one chunk in memory
        yield batch.ndjson()
