"""Events (sends, outcomes, legacy impressions and clicks) for senders and trackers that
cannot write to Kafka, and the erasure of a subject."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field, TypeAdapter

from bandit import tracing
from bandit.engine import Engine, strip_consentless
from bandit.errors import InvalidInputError, NotFoundError, OverCapacityError
from bandit.models import Event, Impression, Outcome, Send
from bandit.service.bodies import Accepted, Erased, as_json
from bandit.service.dependencies import (
    INGESTED,
    MANAGED,
    EngineDep,
    LinkDep,
    MetricsDep,
    off_loop,
)
from bandit.service.errors import EVENT_TAGS, ServiceError, refused, responses
from bandit.service.link import Link
from bandit.service.metrics import Metrics
from bandit.service.openapi import EVENTS_BODY, UserIdPath
from bandit.service.reading import (
    JSON_OR_NDJSON_BODY,
    StrictRoute,
    encoded,
    is_ndjson,
    ndjson_items,
    read_body,
)

router = APIRouter(route_class=StrictRoute)
_Sent = Impression | Send | Outcome  # what Event reads (a union of models)
_EVENT: TypeAdapter[_Sent] = TypeAdapter(Event)
_EVENTS: TypeAdapter[list[_Sent]] = TypeAdapter(Annotated[list[Event], Field(min_length=1)])


@router.post("/v1/events", response_model=Accepted, tags=["events"],
             openapi_extra={"requestBody": EVENTS_BODY},
             dependencies=[INGESTED, JSON_OR_NDJSON_BODY],
             responses=responses(400, 401, 403, 404, 413, 415, 422, 503))
async def record(request: Request, engine: EngineDep, metrics: MetricsDep,
                 link: LinkDep) -> Response:
    """What senders and trackers report, for those that cannot write to Kafka: sends (the
    email of a decision went out), outcomes (``open``, ``click``, ``conversion`` with its
    ``value``, ``unsubscribe``, ``complaint``, ``bounce``; ``machine: true`` for a proxy's
    or scanner's), and the legacy ``impression`` (the send of a decision the service logged;
    a decision and its send for one made elsewhere). A JSON list of events, or
    ``application/x-ndjson`` with one event per line. A campaign an event names that does
    not exist is a 404, as on the decision routes (the item is named, ``[3]`` or
    ``line 4``), unknown slots, arms or context features a 422, and an impression that
    would leave more than ``max_pending`` decisions of its campaign waiting a 503
    ``over_capacity``: each refuses the whole request before anything is learned, so a
    batch is never half recorded. Duplicates, late and orphan events are dropped and not
    counted as accepted. An impression of a decision made without consent (its id's last
    hex digit is even) is accepted without its context and segments (metric
    ``cmab_impressions_stripped``). Needs the ingest token when one is configured."""
    body, ndjson = await request.body(), is_ndjson(request)
    encoded(body)
    try:
        accepted = await off_loop(_record_body, engine, metrics, link, body, ndjson)
    except OverCapacityError as error:
        for campaign, n in error.refused.items():
            metrics.pending_refused.labels(campaign).inc(n)
        raise
    return as_json(Accepted(accepted=accepted))


def _record_body(engine: Engine, metrics: Metrics, link: Link | None, body: bytes,
                 ndjson: bool) -> int:
    """Read, check and record (or send to the stream) the events of a body: the number
    accepted."""
    events: Sequence[_Sent]
    events, where = _events_of(body, ndjson)
    with tracing.tracer.start_as_current_span("cmab.events") as span:
        if span.is_recording():  # a send or outcome may name its decision's span
            span.set_attribute("cmab.events", len(events))
            tracing.link_values(span, (getattr(e, "traceparent", None) for e in events))
        return _record(engine, metrics, link, events, where, ndjson)


def _record(engine: Engine, metrics: Metrics, link: Link | None, events: Sequence[_Sent],
            where: list[str], ndjson: bool) -> int:
    """Check and record (or send to the stream) read events: the number accepted."""
    known: set[str] = set()
    for label, event in zip(where, events, strict=True):
        if event.campaign is not None and event.campaign not in known:
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
        accepted = link.events(events) if link is not None else engine.record(events)
    except InvalidInputError as error:
        # The engine says "event <i> (<event id>): <reason>": name the item as sent.
        match = re.match(r"event (\d+) ", str(error))
        if match is None:
            raise
        i = int(match[1])
        inner = InvalidInputError(str(error)[len(f"event {i} ({events[i].event_id}): "):])
        raise refused(where[i], inner, ndjson=ndjson,
                      prefix=f"event {events[i].event_id!r}: ") from None
    metrics.stripped.inc(stripped)
    return accepted


def _events_of(body: bytes, ndjson: bool) -> tuple[list[_Sent], list[str]]:
    """The events of a JSON or NDJSON body, each with its label in errors (``[3]``,
    ``line 4``)."""
    if ndjson:
        numbered = list(ndjson_items(body, _EVENT.validate_json, EVENT_TAGS))
        return [e for _, e in numbered], [f"line {n}" for n, _ in numbered]
    events = read_body(body, _EVENTS.validate_json,
                       partial(_EVENTS.dump_json, exclude_unset=True), tags=EVENT_TAGS)
    return events, [f"[{i}]" for i in range(len(events))]


@router.delete("/v1/subjects/{user_id}", response_model=Erased, tags=["subjects"],
               dependencies=[MANAGED], responses=responses(401, 403, 503))
async def erase(user_id: UserIdPath, engine: EngineDep, link: LinkDep) -> Erased:
    """Erasure: the subscriber's decisions with an impression at or before now (this
    server's clock) are dropped and refused if their impression comes again; a later
    impression is a new decision. Those already learned are subtracted from every policy
    with sums (each contribution as it stands in the decayed sums), as far as the erasure
    ledger holds them (`complete` says whether it holds every learned decision); VW slots
    are named for retraining from the log. Their user id and string values leave the state.
    The report tallies still count them."""
    at_ms = int(time.time() * 1000)
    if link is not None:
        await off_loop(link.erase, user_id, at_ms)
    erasure = await off_loop(engine.erase, user_id, at_ms)
    return Erased(erased=erasure.dropped, forgotten=erasure.forgotten, retrain=erasure.retrain,
                  complete=erasure.complete and link is None, forwarded=link is not None)
