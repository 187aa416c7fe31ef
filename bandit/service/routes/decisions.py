"""Decisions: one subscriber (the FastAPI route behind the fast path), or a batch of one
campaign's subscribers, JSON or NDJSON."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response, StreamingResponse
from opentelemetry.trace import Span

from bandit import tracing
from bandit.engine import DecisionBatch, Engine, RequestColumns
from bandit.errors import InvalidInputError
from bandit.models import BatchDecisionRequest, BatchDecisionResponse, Decision, DecisionRequest
from bandit.service.dependencies import (
    EngineDep,
    MetricsDep,
    SettingsDep,
    SinglesDep,
    off_loop,
)
from bandit.service.errors import ServiceError, refused, responses
from bandit.service.limits import read_rows
from bandit.service.metrics import Metrics
from bandit.service.openapi import BATCH_BODY, BATCH_OK, EXAMPLE_REQUESTS, example
from bandit.service.reading import (
    JSON_BODY,
    JSON_OR_NDJSON_BODY,
    NDJSON,
    StrictRoute,
    encoded,
    is_ndjson,
    ndjson_items,
    read_body,
)
from bandit.wire.batch import json_columns, ndjson_columns

# Engine calls for a large batch are cut into chunks, so a batch never holds the engine's lock
# for long and single decisions interleave with it.
BATCH_CHUNK = 4096

router = APIRouter(route_class=StrictRoute)
_T = TypeVar("_T")


@router.post("/v1/decisions", response_model=Decision, tags=["decisions"],
             dependencies=[JSON_BODY], responses=responses(400, 404, 413, 415, 422, 503))
async def decide(
    request: Annotated[DecisionRequest, Body(openapi_examples=example(
        EXAMPLE_REQUESTS[0], "A subscriber with context and segment"))],
    singles: SinglesDep, metrics: MetricsDep, http: Request,
) -> Response:
    """Decide every slot for one subscriber: arms, propensities, expected rewards."""
    start = time.perf_counter()
    span = tracing.start("cmab.decide", http.headers.get("traceparent"))
    try:
        # In a thread (with the requests that arrived meanwhile): waiting on the engine's lock
        # (a large events batch holds it for every event) must not stall the event loop.
        body = await singles.decide(request)
        headers = tracing.decided(span, request.campaign, 1, None, body)
    finally:
        span.end()
    metrics.latency.labels("decision").observe(time.perf_counter() - start)
    return Response(body, media_type="application/json", headers=headers)


@router.post("/v1/decisions/batch", response_model=BatchDecisionResponse, tags=["decisions"],
             openapi_extra={"requestBody": BATCH_BODY}, dependencies=[JSON_OR_NDJSON_BODY],
             responses={**BATCH_OK, **responses(400, 404, 413, 415, 422, 503)})
async def decide_batch(request: Request, engine: EngineDep, metrics: MetricsDep,
                       settings: SettingsDep) -> Response:
    """Decide for many subscribers of one campaign, answers in request order.

    JSON in and out (up to 100,000 requests), or ``application/x-ndjson`` in and out (one
    request or decision per line, up to the setting ``max_batch_rows`` lines, all for one
    campaign); a body with more is refused (413) while it arrives. Every request is
    validated before the first byte goes out, so that a bad one is a 422 naming its line
    (NDJSON) or index (JSON) rather than a broken stream.
    """
    start = time.perf_counter()
    ndjson = is_ndjson(request)
    body = await read_rows(request, ndjson, settings.max_batch_rows)
    encoded(body)
    media_type = NDJSON if ndjson else "application/json"
    span = tracing.start("cmab.decide_batch", request.headers.get("traceparent"))
    try:
        # Parsing and serializing 100,000 rows takes a while too: all of it off the event loop.
        columns = await off_loop(ndjson_columns if ndjson else json_columns, body, engine)
        if columns is not None:
            # A good body (msgspec, bandit.wire.batch): nothing left to refuse, so each chunk
            # goes out once decided, while the next one is decided (the span ends with it).
            headers = tracing.decided(span, columns.campaign, len(columns), None)
            return StreamingResponse(_decided(engine, metrics, columns, ndjson, start, span),
                                     media_type=media_type, headers=headers)
        batches = await off_loop(_decide_body, engine, metrics, body, ndjson)
    except BaseException:
        span.end()
        raise
    headers = batches and tracing.decided(span, batches[0].campaign, sum(map(len, batches)),
                                          batches[0].model_version) or None
    span.end()
    metrics.latency.labels("batch").observe(time.perf_counter() - start)
    if ndjson:
        return StreamingResponse(_ndjson_chunks(batches), media_type=NDJSON, headers=headers)
    return Response(await off_loop(_json_decisions, batches), media_type=media_type,
                    headers=headers)


def _decided(engine: Engine, metrics: Metrics, columns: RequestColumns, ndjson: bool,
             start: float, span: Span) -> Iterator[bytes]:
    """The answer to a batch that passed as columns, a chunk at a time (``_decide_labelled``'s
    chunks, so the decisions are the same): NDJSON, or a BatchDecisionResponse's JSON. Ends
    ``span`` (the batch's) once the last chunk is decided."""
    end = b"\n" if ndjson else b","
    try:
        for first in range(0, len(columns), BATCH_CHUNK):
            batch = engine.decide_columns(columns.rows(first, first + BATCH_CHUNK))
            metrics.count(batch)
            if first == 0 and span.is_recording():
                span.set_attribute("cmab.model_version", batch.model_version)
            text = batch.ndjson(end)
            if not ndjson:
                head = b'{"decisions":[' if first == 0 else b","
                text = head + text[:-1] + (b"]}" if first + BATCH_CHUNK >= len(columns)
                                           else b"")
            yield text
    finally:
        span.end()
    metrics.latency.labels("batch").observe(time.perf_counter() - start)


def _decide_body(engine: Engine, metrics: Metrics, body: bytes,
                 ndjson: bool) -> list[DecisionBatch]:
    """Validate a batch body, JSON or NDJSON, with the pydantic models, whose errors name
    the line or index and the field, and decide it."""
    if ndjson:
        lines = ndjson_items(body, DecisionRequest.model_validate_json)
        return _decide_labelled(engine, metrics, None, ((f"line {n}", r) for n, r in lines))
    parsed = read_body(body, BatchDecisionRequest.model_validate_json,
                       lambda batch: batch.model_dump_json(exclude_unset=True).encode())
    return _decide_labelled(engine, metrics, parsed.campaign,
                            ((f"requests[{i}]", r) for i, r in enumerate(parsed.requests)))


def _decide_labelled(engine: Engine, metrics: Metrics, campaign: str | None,
                     labelled: Iterable[tuple[str, DecisionRequest]]) -> list[DecisionBatch]:
    """Decide ``(label, request)`` pairs a chunk at a time, so that a big batch never holds
    the engine's lock for long nor keeps every request alive at once. The label (``line
    7``, ``requests[6]``) names the request in errors; ``campaign`` defaults to the first
    request's. The decisions are logged once the whole batch is decided: a refused batch
    answers no decision, so it logs none (its probes neither)."""
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
            batches.append(engine.decide_batch(campaign, requests, logged=False))
        except InvalidInputError:
            # The engine names the row inside the chunk only: decide the chunk's requests
            # alone (deciding has no side effect but drawing ids) to name the first bad one
            # as the caller knows it.
            for label, request in chunk:
                try:
                    engine.decide_batch(campaign, [request], logged=False)
                except InvalidInputError as error:
                    raise refused(label, error, ndjson=label.startswith("line")) from None
            raise
        metrics.count(batches[-1])
    for batch in batches:
        engine.log_decisions(batch.log)
    return batches


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _json_decisions(batches: list[DecisionBatch]) -> bytes:
    items = b"".join(batch.ndjson(b",") for batch in batches)
    return b'{"decisions":[' + items[:-1] + b"]}"


def _ndjson_chunks(batches: list[DecisionBatch]) -> Iterator[bytes]:
    for batch in batches:  # serialized a chunk at a time: the bytes of one chunk in memory
        yield batch.ndjson()
