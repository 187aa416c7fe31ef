"""Typed msgspec mirrors of the event models, for the stream worker's hot path.

The pydantic models in ``bandit.models`` stay the contract (HTTP, docs, the in-process event
path). The worker decodes its records into these Structs instead: the same fields, defaults
and constraints, several times cheaper per event than ``model_validate``. Agreement with the
pydantic models on valid and invalid input is pinned by tests (tests/test_codec.py); where
msgspec refuses an event, ``streams.codec.decode`` asks the pydantic model for the reason, so
dead-letter reasons do not change.

One constraint is not in the Structs: the patterns of names (campaign, slot, arm, context key,
segment key) and decision ids. msgspec checks a pattern with a regex call per string, which
was about 85% of the decoding; a stream repeats the same few names, so ``misfits`` checks a
batch's names against a cache of names already seen to be valid (a set lookup each) and its
decision ids with one pass over their concatenation. An event it names is re-read by the
pydantic models, for the verdict and the reason.

The join and the engine read events by attribute (``type``, ``event_id``, ``slots[s].arm``,
...), which both kinds provide; a closed window of a Struct impression becomes a ``Joined``
Struct, whose JSON is byte-identical to the pydantic ``JoinedEvent``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
import orjson

from bandit.models import MAX_MS, REWARD_LIMIT

# Patterns of Name and DecisionId: checked by ``misfits``, not by msgspec (see above).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
DecisionId = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]
EpochMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_MS)]  # models.EpochMs's bound
# JSON has no NaN or infinity and msgspec refuses numbers out of float64's range: finite.
Propensity = Annotated[float, msgspec.Meta(gt=0, le=1)]
Reward = Annotated[float, msgspec.Meta(ge=-REWARD_LIMIT, le=REWARD_LIMIT)]  # models.Click's


def _whole(ts: float) -> int:
    """EpochMs's rule: a whole number (154.0 is accepted as 154)."""
    if ts != int(ts):
        raise ValueError(f"expected a whole number, got {ts}")
    return int(ts)


class SlotChoice(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    arm: Name
    propensity: Propensity


# Events never take part in a reference cycle, so the cyclic GC need not track them (gc=False):
# a batch allocates thousands, and tracked, they made decoding about 1.5x slower.
class Impression(msgspec.Struct, forbid_unknown_fields=True, tag_field="type",
                 tag="impression", gc=False):
    type: ClassVar[str] = "impression"
    event_id: Label
    decision_id: DecisionId
    campaign: Name
    user_id: Label
    ts: EpochMs
    slots: Annotated[dict[Name, SlotChoice], msgspec.Meta(min_length=1)]
    context: dict[Name, float | Label] | None = None
    segments: dict[Name, Label] = {}
    holdout: bool = False
    model_version: EpochMs = 0  # models.Impression's bounds

    def __post_init__(self) -> None:
        self.ts = _whole(self.ts)
        self.model_version = _whole(self.model_version)


class Click(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="click",
            gc=False):
    type: ClassVar[str] = "click"
    event_id: Label
    decision_id: DecisionId
    campaign: Name
    ts: EpochMs
    reward: Reward = 1.0
    slot: Name | None = None

    def __post_init__(self) -> None:
        self.ts = _whole(self.ts)


class Watermark(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="watermark",
                gc=False):
    type: ClassVar[str] = "watermark"
    ts: EpochMs

    def __post_init__(self) -> None:
        self.ts = _whole(self.ts)


class Joined(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A closed window of a Struct impression: ``JoinedEvent``'s fields in its order (its JSON
    is the same bytes as ``JoinedEvent``'s ``model_dump(mode="json", exclude_none=True)``)."""

    decision_id: str
    campaign: str
    user_id: str
    ts: float
    slots: dict[str, SlotChoice]
    context: dict[str, float | str] | None = None  # the only default: omitted when None
    segments: dict[str, str]
    holdout: bool
    rewards: dict[str, float]


Event = Impression | Click | Watermark
EVENTS = msgspec.json.Decoder(Impression | Click | Watermark)  # all but the patterns: misfits

# Python's re lets "$" match before a final newline, pydantic's regex does not: "\Z".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z").match
_HEX = b"0123456789abcdef"
_KNOWN_MAX = 65_536  # names remembered as valid (more are checked by the regex every time)
_known: set[str] = set()  # names seen to match the pattern
_arm = attrgetter("arm")


def misfits(events: Sequence[Event | Exception]) -> list[int]:
    """Indices of the events (as ``EVENTS`` decodes them; anything else is skipped) whose names
    or decision id do not match the models' patterns, in order."""
    known = _known
    fits = known.issuperset
    out, ids, where = [], [], []
    for i, e in enumerate(events):
        kind = type(e)
        if kind is Impression:
            if not (e.campaign in known and fits(e.slots) and fits(map(_arm, e.slots.values()))
                    and (e.context is None or fits(e.context)) and fits(e.segments)) and not (
                    _names_match([e.campaign, *e.slots, *map(_arm, e.slots.values()),
                                  *(e.context or ()), *e.segments])):
                out.append(i)
                continue
        elif kind is Click:
            if not (e.campaign in known and (e.slot is None or e.slot in known)) and not (
                    _names_match([e.campaign] if e.slot is None else [e.campaign, e.slot])):
                out.append(i)
                continue
        else:
            continue
        ids.append(e.decision_id)
        where.append(i)
    # 32 characters each (msgspec checked): all of them hex digits if deleting those leaves none
    # (a character beyond ASCII encodes to bytes that are not hex digits either).
    if "".join(ids).encode().translate(None, _HEX):
        out += [i for i, d in zip(where, ids) if d.encode().translate(None, _HEX)]
        out.sort()
    return out


T = TypeVar("T")
_ONE_BY_ONE = 8  # below this many values a bad run is decoded value by value


def decode_lines(many: msgspec.json.Decoder, values: Sequence[bytes | None],
                 one: Callable[[bytes | None], T],
                 misfits: Callable[[list[Any]], Iterable[int]] | None = None) -> list[Any]:
    """Each JSON object of ``values`` decoded, in order: ``many`` (a Decoder of a list of the
    type) reads them in one call, and ``one(value)`` gives the verdict on a value it cannot,
    or that ``misfits(decoded)`` names by index. A run with a bad value is split in halves, so
    one bad value costs a few calls, not one each.

    The values become one JSON array, joined by a newline and a comma. A newline is a byte no
    JSON string may hold raw, so no string runs from one value into the next; with every value
    starting an object, the comma before a value can only begin a new element (inside an object
    a key must follow; the schemas read this way hold no arrays). N elements from N values is
    then one per value, as if each were decoded alone.

    >>> def one(value):
    ...     try:
    ...         return msgspec.json.decode(value, type=dict[str, int])
    ...     except msgspec.ValidationError as exc:
    ...         return f"refused: {exc}"
    >>> many = msgspec.json.Decoder(list[dict[str, int]])
    >>> decode_lines(many, [b'{"a": 1}', b'{"a": "x"}', b'{"b": 2}'], one)
    [{'a': 1}, 'refused: Expected `int`, got `str` - at `$[...]`', {'b': 2}]
    """
    if len(values) > 1 and [v[:1] for v in values if v is not None].count(b"{") == len(values):
        try:
            decoded = many.decode(b"[" + b"\n,".join(values) + b"]")  # type: ignore[arg-type]
        except msgspec.DecodeError:
            pass  # at least one bad value: find it (and its verdict)
        else:
            if len(decoded) == len(values):
                for i in misfits(decoded) if misfits is not None else ():
                    decoded[i] = one(values[i])
                return decoded
    if len(values) > _ONE_BY_ONE:
        half = len(values) // 2
        return (decode_lines(many, values[:half], one, misfits)
                + decode_lines(many, values[half:], one, misfits))
    return [one(value) for value in values]


def names_fit(names: list[str]) -> bool:
    """Whether every name matches the models' name pattern: a set lookup for names already
    seen to match, the regex for the others (which are then remembered)."""
    return _known.issuperset(names) or _names_match(names)


def _names_match(names: list[str]) -> bool:
    """Whether every name matches the pattern; those that do are remembered."""
    if not all(map(_NAME, names)):
        return False
    if len(_known) < _KNOWN_MAX:
        _known.update(names)
    return True


# -- strict JSON: what the readers here take silently --------------------------------------

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_ESCAPED_COLON = b"\\u003"  # \u003a, \u003A (and, to keep it one search, \u0030-\u003f)


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def encoding_problem(body: bytes) -> str | None:
    """Why ``body`` is not UTF-8 JSON though a reader may take it, or None: a byte order mark,
    or a NUL byte (UTF-16 or UTF-32 text; JSON allows none outside strings, nor raw inside).
    Python's JSON reader decodes all of these silently."""
    if body.startswith(_BOMS):
        return "it starts with a byte order mark (UTF-16 or UTF-8 with BOM); send plain UTF-8"
    at = body.find(b"\x00")
    if at >= 0:
        return f"NUL byte at byte {at} (UTF-16 or UTF-32?); send UTF-8"
    return None


def keys_unique(body: bytes, again: bytes) -> bool:
    """Whether the JSON ``body`` surely has no duplicate key, from ``again``: what a reader
    made of it, written back with only the members the body had. msgspec and pydantic keep the
    last of duplicate keys silently. Each member has one colon, strings may hold more: with a
    duplicate dropped, ``body`` has more colons than ``again`` (unless an escaped colon in a
    string made up for it), and without one as many (unless a member equal to its default was
    not written back). So equal counts (no escaped colon) prove no duplicate; anything else is
    for ``duplicate_key`` to settle. Two byte counts: cheap enough for every request."""
    return body.count(b":") == again.count(b":") and _ESCAPED_COLON not in body


def duplicate_key(body: bytes) -> str | None:
    """The first duplicate key of the JSON ``body`` (innermost objects first), or None; the
    exact check (a second read of the body by Python's JSON reader). ``body`` is JSON that
    another reader took."""
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _Duplicate as duplicate:
        return duplicate.key
    return None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)


def joined_json(joined: Joined) -> bytes:
    """The JSON of a closed window, written by orjson as the pydantic path's is (msgspec's own
    encoder writes some floats differently: 1e16 where orjson writes 1e+16)."""
    return orjson.dumps(msgspec.to_builtins(joined))
