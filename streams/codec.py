"""Records on the wire: JSON bytes <-> events and logged decisions, and why one is refused.

The consumer trusts nothing: a record that is not JSON, not an object, of an unknown type or
that fails its model gets a one-line reason naming the field, for the dead-letter topic.

``decode`` is the worker's hot path for ``<prefix>.events``: msgspec decodes and validates a
record into the typed mirrors of the event models (``bandit.wire``: impression, send, the
outcomes, watermark) in one pass, then ``wire.misfits`` checks the name and decision id
patterns (``bandit.wire.Reader``). A record either refuses is re-read by the pydantic models,
the contract, whose first error is the reason; should they accept it, their event is used, so
the worker accepts and refuses exactly what they do. ``decode_decisions`` is the same for the
lines of decision blocks (``streams.blocks``; ``wire.LoggedDecision``, ``models.LoggedDecision``).

``decode_many`` decodes a whole poll batch in one msgspec call and checks the patterns of the
whole batch at once; it falls back to ``decode`` per record only where that fails.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from bandit import wire
from bandit.models.events import (
    Bounce,
    Click,
    Complaint,
    Conversion,
    Impression,
    LoggedDecision,
    Open,
    Send,
    Unsubscribe,
    Watermark,
)
from bandit.wire.decode import Reader
from bandit.wire.logged import misfits as decision_misfits

Event = Impression | Send | Open | Click | Conversion | Unsubscribe | Complaint | Bounce
_MODELS: dict[str, type[Event] | type[Watermark]] = {
    "impression": Impression, "send": Send, "open": Open, "click": Click,
    "conversion": Conversion, "unsubscribe": Unsubscribe, "complaint": Complaint,
    "bounce": Bounce, "watermark": Watermark}
_TYPES = ", ".join(repr(kind) for kind in _MODELS)


class Refused(ValueError):
    """A record the worker cannot use; ``str()`` is the dead-letter reason."""


def _verdict(value: bytes | None, error: Exception | None) -> Event | Watermark | Refused:
    """The contract's answer on a record the Structs refuse: its pydantic event, or the
    Refused that ``decode_model`` raises."""
    try:
        return decode_model(value)
    except Refused as exc:
        return exc


def _decision_verdict(value: bytes | None, error: Exception | None) -> LoggedDecision | Refused:
    try:
        return decode_decision_model(value)
    except Refused as exc:
        return exc


_EVENTS: Reader[wire.Event, Event | Watermark | Refused] = Reader(
    wire.Event, _verdict, wire.misfits)
_DECISIONS: Reader[wire.LoggedDecision, LoggedDecision | Refused] = Reader(
    wire.LoggedDecision, _decision_verdict, decision_misfits)


def decode(value: bytes | None) -> wire.Event | Event | Watermark:
    """One record's value -> its event (a ``bandit.wire`` Struct), or Refused with the reason."""
    event = _EVENTS.one(value)
    if isinstance(event, Refused):
        raise event
    return event


def decode_many(values: list[bytes | None]) -> list[wire.Event | Event | Watermark | Refused]:
    """``decode`` of every value, in order: its event, or the Refused it would raise; one
    msgspec call for a batch of good records (``bandit.wire.Reader``)."""
    return _EVENTS.many(values)


def decode_decisions(lines: list[bytes]) -> list[wire.LoggedDecision | LoggedDecision | Refused]:
    """Each line of decision blocks -> its logged decision (a ``wire.LoggedDecision``, or the
    model where only the contract accepts it), or the Refused with the reason; one msgspec
    call for good lines.

    >>> [type(d).__name__ for d in decode_decisions([b'{"decision_id": "x"}', b"[1]"])]
    ['Refused', 'Refused']
    >>> str(decode_decisions([b'{"type": "click"}'])[0])
    'a click event, not a logged decision: events go to <prefix>.events'
    """
    return _DECISIONS.many(lines)


def _object(value: bytes | None) -> dict[str, Any]:
    """The JSON object of a record (Refused if it is none)."""
    if value is None:
        raise Refused("empty record")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(f"not a JSON object but {type(data).__name__}")
    return data


def decode_model(value: bytes | None) -> Event | Watermark:
    """One record's value -> its pydantic event, or Refused with the reason."""
    data = _object(value)
    kind = data.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise Refused(f"type: expected one of {_TYPES}, got {kind!r:.40}")
    return _validate(model, data, model.__name__.lower())


def decode_decision_model(value: bytes | None) -> LoggedDecision:
    """One line of a decision block -> its pydantic logged decision, or Refused with the
    reason."""
    data = _object(value)
    if "type" in data:
        raise Refused(f"a {data['type']!s:.40} event, not a logged decision: events go to "
                      "<prefix>.events")
    return _validate(LoggedDecision, data, "decision")


def _validate(model: type[Any], data: dict[str, Any], kind: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refused(f"{kind}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "(record)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def encode(event: Event | Watermark | LoggedDecision | wire.Event | wire.LoggedDecision
           | dict[str, Any]) -> bytes:
    """An event or logged decision (or its JSON-ready dict) as the bytes producers send."""
    if isinstance(event, dict):
        return orjson.dumps(event)
    if isinstance(event, wire.LoggedDecision):  # its vectors are Raw JSON: to_builtins fails
        event = LoggedDecision.model_validate_json(msgspec.json.encode(event))
    elif isinstance(event, msgspec.Struct):  # rare (dead letters): the pydantic model's bytes
        event = _MODELS[event.type].model_validate(msgspec.to_builtins(event))
    model: BaseModel = event
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))
