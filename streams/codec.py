"""Events on the wire: JSON bytes <-> Impression / Click, and why a record is refused.

The consumer trusts nothing: a record that is not JSON, not an object, of an unknown type or
that fails the event model gets a one-line reason naming the field, for the dead-letter topic.

``decode`` is the worker's hot path: msgspec decodes and validates a record into the typed
mirrors of the event models (``bandit.wire``) in one pass, then ``wire.misfits`` checks the
name and decision id patterns (``bandit.wire.Reader``). A record either refuses is re-read by
the pydantic models, the contract, whose first error is the reason; should they accept it,
their event is used, so the worker accepts and refuses exactly what they do.

``decode_many`` decodes a whole poll batch in one msgspec call and checks the patterns of the
whole batch at once; it falls back to ``decode`` per record only where that fails.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from pydantic import ValidationError

from bandit import wire
from bandit.models.events import Click, Impression, Watermark
from bandit.wire.decode import Reader

Event = Impression | Click
_MODELS: dict[str, type[Impression] | type[Click] | type[Watermark]] = {
    "impression": Impression, "click": Click, "watermark": Watermark}


class Refused(ValueError):
    """A record the worker cannot use; ``str()`` is the dead-letter reason."""


def _verdict(value: bytes | None, error: Exception | None) -> Event | Watermark | Refused:
    """The contract's answer on a record the Structs refuse: its pydantic event, or the
    Refused that ``decode_model`` raises."""
    try:
        return decode_model(value)
    except Refused as exc:
        return exc


_EVENTS: Reader[wire.Event, Event | Watermark | Refused] = Reader(
    wire.Event, _verdict, wire.misfits)


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


def decode_model(value: bytes | None) -> Event | Watermark:
    """One record's value -> its pydantic event, or Refused with the reason."""
    if value is None:
        raise Refused("empty record")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(f"not a JSON object but {type(data).__name__}")
    kind = data.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise Refused(f"type: expected 'impression', 'click' or 'watermark', got {kind!r:.40}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refused(f"{kind}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "(record)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def encode(event: Event | Watermark | wire.Event | dict[str, Any]) -> bytes:
    """An event (or its JSON-ready dict) as the bytes producers send."""
    if isinstance(event, dict):
        return orjson.dumps(event)
    if isinstance(event, msgspec.Struct):  # rare (dead letters): the pydantic model's bytes
        event = _MODELS[event.type].model_validate(msgspec.to_builtins(event))
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))
