"""A Python client of the decision service: ``Client`` (sync) and ``AsyncClient`` (asyncio), on
httpx, with the contract's own models (:mod:`bandit.models`) as results.

- Decisions: one (``decide``), a JSON batch (``decide_batch``, up to 100,000), or a stream
  (``decide_stream``): rows from any iterable go out as NDJSON from a generator, in requests
  of at most ``rows_per_request`` lines (the service's ``max_batch_rows`` caps one body), and
  the decisions are yielded as they come back, so a 280,000-row list is never held twice.
- Events: ``record`` posts them in batches of ``batch_size`` and returns how many were
  accepted (duplicates, late and orphan events are not counted).
- Campaigns: create, get, list, add and retire arms, ``pause``/``resume``, ``report``;
  ``erase`` a subject; ``health`` and ``readiness``.
- Tokens: the management token (``CMAB_API_TOKEN``, the service's setting ``api_token``) goes
  on management routes only, the ingest token (``CMAB_INGEST_TOKEN``) on ``POST /v1/events``
  only; both read from the environment unless given. The default URL is the service's own
  ``CMAB_HOST``/``CMAB_PORT`` (127.0.0.1:8000).
- Retries (``Retry``): a 503 (not ready, ``over_capacity``) and connection errors are retried
  with exponential backoff and full jitter, at least ``Retry-After`` apart, a bounded number of
  times; a 4xx never. A request that may have reached the service is retried only where a
  repeat is harmless: reads, pause/resume, erasure, and events, which carry their
  ``event_id`` (the service drops a duplicate, so a batch whose answer was lost may be sent
  again; it then counts the repeated events as not accepted). A decision or a campaign
  creation is retried only when the connection failed before anything was sent (a repeat
  would make a second decision, or a 409), and a stream only before its first row was read.
- Errors: a refusal raises ``ServiceRefused`` (a ``BanditError``) or a subclass by status,
  carrying the service's ``code``, ``message`` and ``field`` (e.g. ``line 7``'s
  ``context.age``); a service still unreachable after the retries raises ``Unreachable``.

>>> with Client("http://127.0.0.1:8000", retry=Retry(attempts=1)) as client:
...     client.url
'http://127.0.0.1:8000'
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

import httpx
import orjson
from pydantic import BaseModel, TypeAdapter

from bandit.errors import (
    BanditError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from bandit.models import Arm, BatchDecisionResponse, CampaignReport, CampaignSpec, Decision
from bandit.models.answers import Accepted, AddArmRequest, Erased, Health, PauseState, Readiness

__all__ = ["AsyncClient", "Client", "Conflict", "Forbidden", "Invalid", "NotFound", "Retry",
           "RetryEvent", "ServiceRefused", "Unavailable", "Unreachable"]

# The service's settings these default from (bandit.settings.Settings; pinned by a test): read
# here from the environment, since the settings module loads the engine.
API_TOKEN_ENV, INGEST_TOKEN_ENV = "CMAB_API_TOKEN", "CMAB_INGEST_TOKEN"
HOST_ENV, PORT_ENV = "CMAB_HOST", "CMAB_PORT"
NDJSON = "application/x-ndjson"
_T = TypeVar("_T")
_SPECS = TypeAdapter(list[CampaignSpec])


# -- errors -----------------------------------------------------------------------------------


class ServiceRefused(BanditError):
    """The service answered with an error: ``status``, its stable ``code``, ``message``,
    ``field`` (the first offending value, when known) and ``errors`` (every validation error,
    as ``{"field", "message"}``)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(f"{status} {code}{where}: {message}")
        self.status, self.code, self.message = status, code, message
        self.field, self.errors = field, errors or []


class Invalid(ServiceRefused, InvalidInputError):
    """400, 413, 415, 422: the request itself is wrong."""


class Forbidden(ServiceRefused):
    """401, 403: a token is missing or wrong."""


class NotFound(ServiceRefused, NotFoundError):
    """404: no such campaign, slot or arm."""


class Conflict(ServiceRefused, ConflictError):
    """409: the campaign or arm exists, or the arm cannot be retired."""


class Unavailable(ServiceRefused, UnavailableError):
    """503 after every retry: not ready, or ``over_capacity``."""

    retriable = True


class Unreachable(UnavailableError):
    """No answer after every retry: connection refused, reset or timed out."""


_BY_STATUS: dict[int, type[ServiceRefused]] = {
    400: Invalid, 401: Forbidden, 403: Forbidden, 404: NotFound, 409: Conflict, 413: Invalid,
    415: Invalid, 422: Invalid, 503: Unavailable}


def refusal(response: httpx.Response) -> ServiceRefused:
    """The error of a non-2xx answer, read from the service's ``{"error": {...}}`` body."""
    try:
        error = orjson.loads(response.content)["error"]
        code, message = str(error["code"]), str(error["message"])
        field, errors = error.get("field"), error.get("errors")
    except (orjson.JSONDecodeError, KeyError, TypeError):  # not the service's (a proxy's)
        code, message, field, errors = "http_error", response.text[:300], None, None
    kind = _BY_STATUS.get(response.status_code, ServiceRefused)
    return kind(response.status_code, code, message, field, errors)


# -- retries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryEvent:
    """What ``Retry.on_retry`` is told before a retry: the attempt that failed (1-based), why
    (``503 over_capacity: ...`` or the connection error), and the wait before the next."""

    attempt: int
    reason: str
    delay_s: float


@dataclass(frozen=True)
class Retry:
    """At most ``attempts`` tries of a request; before try k+1 a wait drawn uniformly from
    [0, min(max_backoff_s, backoff_s * 2**(k-1))] (full jitter: clients that failed together
    do not come back together), and never less than the answer's ``Retry-After``.
    ``on_retry(event)`` is called before each wait (logging)."""

    attempts: int = 5
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    on_retry: Callable[[RetryEvent], None] | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise InvalidInputError(f"Retry: attempts >= 1 and backoffs >= 0, got {self}")

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        wait = self.rng.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        if retry_after is not None and retry_after.isdigit():
            wait = max(wait, float(retry_after))
        return wait


# -- the calls, shared by both clients ---------------------------------------------------------

# What may be retried after a request may have reached the service: "any" (harmless to
# repeat), or "connect" (only a connection that failed before sending).
_SAFE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class _Call(Generic[_T]):
    method: str
    path: str
    read: Callable[[bytes], _T]
    body: bytes | None = None
    token: str | None = None  # "api" or "ingest"
    repeatable: bool = True


def _json(model: BaseModel | Mapping[str, Any]) -> bytes:
    if isinstance(model, BaseModel):
        return model.model_dump_json().encode()
    return orjson.dumps(model)


def _decision_line(campaign: str, row: Any) -> bytes:
    if isinstance(row, BaseModel):
        return row.model_dump_json().encode()
    if "campaign" not in row:
        row = {"campaign": campaign, **row}
    return orjson.dumps(row)


class _Base:
    def __init__(self, url: str | None, api_token: str | None, ingest_token: str | None,
                 retry: Retry | None) -> None:
        if url is None:
            host = os.environ.get(HOST_ENV, "127.0.0.1")
            host = "127.0.0.1" if host in ("0.0.0.0", "") else host
            url = f"http://{host}:{os.environ.get(PORT_ENV, '8000')}"
        self.url = url.rstrip("/")
        self._tokens = {"api": api_token or os.environ.get(API_TOKEN_ENV),
                        "ingest": ingest_token or os.environ.get(INGEST_TOKEN_ENV)}
        self.retry = retry or Retry()

    def _headers(self, call: _Call[Any], content_type: str = "application/json") -> dict[str, str]:
        headers = {"content-type": content_type} if call.body is not None else {}
        token = self._tokens.get(call.token) if call.token else None
        if token:
            headers["authorization"] = f"Bearer {token}"
        return headers

    def _wait(self, call: _Call[Any], outcome: httpx.Response | Exception, attempt: int,
              started: bool = False) -> float:
        """The wait before retrying ``call`` after a failed ``attempt`` (a non-2xx answer or a
        transport error); raises the error when it is not retried."""
        if isinstance(outcome, httpx.Response):
            error: BanditError = refusal(outcome)
            retriable, retry_after = outcome.status_code == 503, outcome.headers.get("retry-after")
        else:
            error = Unreachable(f"{call.method} {self.url}{call.path}: {outcome!r}")
            retriable = not started and (call.repeatable or isinstance(outcome, _SAFE))
            retry_after = None
        if not retriable or attempt >= self.retry.attempts:
            raise error from (outcome if isinstance(outcome, Exception) else None)
        wait = self.retry.delay(attempt, retry_after)
        if self.retry.on_retry is not None:
            self.retry.on_retry(RetryEvent(attempt, str(error), wait))
        return wait


def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _lines(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """The complete lines of ``buffer + chunk``; the rest stays in ``buffer``."""
    buffer += chunk
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    done = bytes(buffer[:end])
    del buffer[:end + 1]
    return [line for line in done.split(b"\n") if line.strip()]


def _batches(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _calls_decide(request: Any) -> _Call[Decision]:
    return _Call("POST", "/v1/decisions", Decision.model_validate_json, _json(request),
                 repeatable=False)


def _calls_batch(campaign: str, requests: Iterable[Any]) -> _Call[list[Decision]]:
    lines = b",".join(_decision_line(campaign, r) for r in requests)
    body = b'{"campaign":' + orjson.dumps(campaign) + b',"requests":[' + lines + b"]}"
    return _Call("POST", "/v1/decisions/batch",
                 lambda b: BatchDecisionResponse.model_validate_json(b).decisions, body,
                 repeatable=False)


def _calls_events(events: list[Any]) -> _Call[int]:
    body = b"[" + b",".join(_json(e) for e in events) + b"]"
    return _Call("POST", "/v1/events", lambda b: Accepted.model_validate_json(b).accepted, body,
                 token="ingest")


def _calls_pause(campaign: str, paused: bool) -> _Call[PauseState]:
    return _Call("POST", f"/v1/campaigns/{campaign}/pause", PauseState.model_validate_json,
                 orjson.dumps({"paused": paused}), token="api")


def _calls_retire(campaign: str, slot: str, arm: str) -> _Call[CampaignSpec]:
    return _Call("DELETE", f"/v1/campaigns/{campaign}/slots/{slot}/arms/{_quoted(arm)}",
                 CampaignSpec.model_validate_json, token="api")


def _calls_erase(user_id: str) -> _Call[Erased]:
    return _Call("DELETE", f"/v1/subjects/{_quoted(user_id)}", Erased.model_validate_json,
                 token="api")


_SPEC, _REPORT = CampaignSpec.model_validate_json, CampaignReport.model_validate_json


class Client(_Base):
    """The sync client; ``transport`` (an httpx transport) and ``timeout_s`` go to httpx.
    Use it as a context manager, or ``close()`` it."""

    def __init__(self, url: str | None = None, *, api_token: str | None = None,
                 ingest_token: str | None = None, retry: Retry | None = None,
                 timeout_s: float = 300.0, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, api_token, ingest_token, retry)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[_T]) -> _T:
        for attempt in range(1, self.retry.attempts + 1):
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(call.method, call.path, content=call.body,
                                             headers=self._headers(call))
            except httpx.TransportError as failed:
                outcome = failed
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return call.read(outcome.content)
            time.sleep(self._wait(call, outcome, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def health(self) -> Health:
        return self._run(_Call("GET", "/healthz", Health.model_validate_json))

    def readiness(self) -> Readiness:
        """``/readyz``; its 503 (warming up) is retried as any other."""
        return self._run(_Call("GET", "/readyz", Readiness.model_validate_json))

    def decide(self, request: Any) -> Decision:
        """One decision; ``request`` a ``DecisionRequest`` or a mapping of its fields."""
        return self._run(_calls_decide(request))

    def decide_batch(self, campaign: str, requests: Iterable[Any]) -> list[Decision]:
        """Up to 100,000 decisions in one JSON request, in request order."""
        return self._run(_calls_batch(campaign, requests))

    def decide_stream(self, campaign: str, rows: Iterable[Any], *,
                      rows_per_request: int = 100_000) -> Iterator[Decision]:
        """Decisions for ``rows`` (``DecisionRequest``s or mappings; a mapping without
        ``campaign`` gets ``campaign``), in order, as they come back."""
        for line in self.decide_lines(campaign, rows, rows_per_request=rows_per_request):
            yield Decision.model_validate_json(line)

    def decide_lines(self, campaign: str, rows: Iterable[Any], *,
                     rows_per_request: int = 100_000) -> Iterator[bytes]:
        """``decide_stream``'s decisions as the service's JSON lines (for a caller that reads
        columns: no model per decision)."""
        iterator = iter(rows)
        while True:
            first = next(iterator, None)
            if first is None:
                return
            yield from self._stream(campaign, first, islice(iterator, rows_per_request - 1))

    def _stream(self, campaign: str, first: Any, rest: Iterator[Any]) -> Iterator[bytes]:
        started = False

        def body() -> Iterator[bytes]:
            nonlocal started
            started = True
            yield _decision_line(campaign, first) + b"\n"
            for chunk in _batches(rest, 1024):
                yield b"".join(_decision_line(campaign, row) + b"\n" for row in chunk)

        call = _Call("POST", "/v1/decisions/batch", bytes, b"", repeatable=False)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                with self._http.stream("POST", call.path, content=body(),
                                       headers=self._headers(call, NDJSON)) as response:
                    if response.is_success:
                        buffer = bytearray()
                        for chunk in response.iter_bytes():
                            yield from _lines(buffer, chunk)
                        yield from _lines(buffer, b"\n")
                        return
                    response.read()
                    outcome: httpx.Response | Exception = response
            except httpx.TransportError as failed:
                outcome = failed
            # A body already (partly) sent cannot be sent again: its rows are gone.
            time.sleep(self._wait(call, outcome, attempt, started))

    def record(self, events: Iterable[Any], *, batch_size: int = 1000) -> int:
        """Post events (models or mappings) in batches of ``batch_size``; the number the
        service accepted."""
        return sum(self._run(_calls_events(batch)) for batch in _batches(events, batch_size))

    def create_campaign(self, spec: CampaignSpec | Mapping[str, Any]) -> CampaignSpec:
        return self._run(_Call("POST", "/v1/campaigns", _SPEC, _json(spec), "api", False))

    def campaign(self, name: str) -> CampaignSpec:
        return self._run(_Call("GET", f"/v1/campaigns/{name}", _SPEC))

    def campaigns(self) -> list[CampaignSpec]:
        return self._run(_Call("GET", "/v1/campaigns", _SPECS.validate_json))

    def add_arm(self, campaign: str, slot: str, arm: Arm | Mapping[str, Any]) -> CampaignSpec:
        body = AddArmRequest(slot=slot, arm=Arm.model_validate(arm))
        return self._run(_Call("POST", f"/v1/campaigns/{campaign}/arms", _SPEC, _json(body),
                               "api", False))

    def retire_arm(self, campaign: str, slot: str, arm: str) -> CampaignSpec:
        return self._run(_calls_retire(campaign, slot, arm))

    def pause(self, campaign: str) -> PauseState:
        return self._run(_calls_pause(campaign, True))

    def resume(self, campaign: str) -> PauseState:
        return self._run(_calls_pause(campaign, False))

    def report(self, campaign: str) -> CampaignReport:
        return self._run(_Call("GET", f"/v1/campaigns/{campaign}/report", _REPORT))

    def erase(self, user_id: str) -> Erased:
        return self._run(_calls_erase(user_id))


class AsyncClient(_Base):
    """``Client`` for asyncio: the same methods, awaited; ``decide_stream`` and
    ``decide_lines`` are async iterators and take an iterable or an async iterable."""

    def __init__(self, url: str | None = None, *, api_token: str | None = None,
                 ingest_token: str | None = None, retry: Retry | None = None,
                 timeout_s: float = 300.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(url, api_token, ingest_token, retry)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[_T]) -> _T:
        for attempt in range(1, self.retry.attempts + 1):
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(call.method, call.path, content=call.body,
                                                   headers=self._headers(call))
            except httpx.TransportError as failed:
                outcome = failed
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return call.read(outcome.content)
            await asyncio.sleep(self._wait(call, outcome, attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def health(self) -> Health:
        return await self._run(_Call("GET", "/healthz", Health.model_validate_json))

    async def readiness(self) -> Readiness:
        return await self._run(_Call("GET", "/readyz", Readiness.model_validate_json))

    async def decide(self, request: Any) -> Decision:
        return await self._run(_calls_decide(request))

    async def decide_batch(self, campaign: str, requests: Iterable[Any]) -> list[Decision]:
        return await self._run(_calls_batch(campaign, requests))

    async def decide_stream(self, campaign: str, rows: Iterable[Any] | AsyncIterable[Any], *,
                            rows_per_request: int = 100_000) -> AsyncIterator[Decision]:
        async for line in self.decide_lines(campaign, rows, rows_per_request=rows_per_request):
            yield Decision.model_validate_json(line)

    async def decide_lines(self, campaign: str, rows: Iterable[Any] | AsyncIterable[Any], *,
                           rows_per_request: int = 100_000) -> AsyncIterator[bytes]:
        iterator = _aiter(rows)
        while True:
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                return
            async for line in self._stream(campaign, first, iterator, rows_per_request):
                yield line

    async def _stream(self, campaign: str, first: Any, rows: AsyncIterator[Any],
                      limit: int) -> AsyncIterator[bytes]:
        started = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal started
            started = True
            chunk, n = [_decision_line(campaign, first) + b"\n"], 1
            while n < limit:
                try:
                    row = await anext(rows)
                except StopAsyncIteration:
                    break
                chunk.append(_decision_line(campaign, row) + b"\n")
                n += 1
                if len(chunk) == 1024:
                    yield b"".join(chunk)
                    chunk = []
            yield b"".join(chunk)

        call = _Call("POST", "/v1/decisions/batch", bytes, b"", repeatable=False)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                async with self._http.stream("POST", call.path, content=body(),
                                             headers=self._headers(call, NDJSON)) as response:
                    if response.is_success:
                        buffer = bytearray()
                        async for chunk in response.aiter_bytes():
                            for line in _lines(buffer, chunk):
                                yield line
                        for line in _lines(buffer, b"\n"):
                            yield line
                        return
                    await response.aread()
                    outcome: httpx.Response | Exception = response
            except httpx.TransportError as failed:
                outcome = failed
            await asyncio.sleep(self._wait(call, outcome, attempt, started))

    async def record(self, events: Iterable[Any], *, batch_size: int = 1000) -> int:
        accepted = 0
        for batch in _batches(events, batch_size):
            accepted += await self._run(_calls_events(batch))
        return accepted

    async def create_campaign(self, spec: CampaignSpec | Mapping[str, Any]) -> CampaignSpec:
        return await self._run(_Call("POST", "/v1/campaigns", _SPEC, _json(spec), "api", False))

    async def campaign(self, name: str) -> CampaignSpec:
        return await self._run(_Call("GET", f"/v1/campaigns/{name}", _SPEC))

    async def campaigns(self) -> list[CampaignSpec]:
        return await self._run(_Call("GET", "/v1/campaigns", _SPECS.validate_json))

    async def add_arm(self, campaign: str, slot: str,
                      arm: Arm | Mapping[str, Any]) -> CampaignSpec:
        body = AddArmRequest(slot=slot, arm=Arm.model_validate(arm))
        return await self._run(_Call("POST", f"/v1/campaigns/{campaign}/arms", _SPEC,
                                     _json(body), "api", False))

    async def retire_arm(self, campaign: str, slot: str, arm: str) -> CampaignSpec:
        return await self._run(_calls_retire(campaign, slot, arm))

    async def pause(self, campaign: str) -> PauseState:
        return await self._run(_calls_pause(campaign, True))

    async def resume(self, campaign: str) -> PauseState:
        return await self._run(_calls_pause(campaign, False))

    async def report(self, campaign: str) -> CampaignReport:
        return await self._run(_Call("GET", f"/v1/campaigns/{campaign}/report", _REPORT))

    async def erase(self, user_id: str) -> Erased:
        return await self._run(_calls_erase(user_id))


async def _aiter(rows: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row
