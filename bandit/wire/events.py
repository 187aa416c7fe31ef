"""Typed msgspec mirrors of the event models, for the stream worker's hot path.

The pydantic models in ``bandit.models.events`` stay the contract (HTTP, docs, the in-process
event path). The worker decodes its records into these Structs instead: the same fields,
defaults and constraints, much cheaper per event than ``model_validate``. Agreement with the
pydantic models on valid and invalid input is pinned by tests (tests/streams/test_codec.py);
where msgspec refuses an event, ``streams.codec`` asks the pydantic model for the reason, so
dead-letter reasons do not change.

One constraint is not in the Structs: the patterns of names (campaign, slot, arm, context key,
segment key) and decision ids, which ``misfits`` checks for a whole batch (``wire.names``). An
event it names is re-read by the pydantic models, for the verdict and the reason.

The join and the engine read events by attribute (``type``, ``event_id``, ``slots[s].arm``,
...), which both kinds provide (``wire.protocols``).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Annotated, ClassVar, Literal, cast

import msgspec

from bandit.wire.names import (
    DecisionId,
    EpochMs,
    Label,
    Name,
    Propensity,
    Reward,
    ids_misfit,
    names_match,
    whole,
)
from bandit.wire.names import known as _known

# models.events.Traceparent: the W3C traceparent of the decision's span.
Traceparent = Annotated[str, msgspec.Meta(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


class SlotChoice(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    arm: Name
    propensity: Propensity


# Events never take part in a reference cycle, so the cyclic GC need not track them (gc=False):
# a batch allocates thousands, and tracked they make decoding slower.
class Impression(msgspec.Struct, forbid_unknown_fields=True, tag_field="type",
                 tag="impression", gc=False):
    type: ClassVar[Literal["impression"]] = "impression"
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
        self.ts = whole(self.ts)
        self.model_version = whole(self.model_version)


class Send(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="send",
           gc=False):
    type: ClassVar[Literal["send"]] = "send"
    event_id: Label
    decision_id: DecisionId
    ts: EpochMs
    campaign: Name | None = None
    traceparent: Traceparent | None = None

    def __post_init__(self) -> None:
        self.ts = whole(self.ts)


class _Outcome(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", gc=False):
    """``models.events._Outcome``: one Struct per outcome type (msgspec tags one per class)."""

    event_id: Label
    decision_id: DecisionId
    ts: EpochMs
    campaign: Name | None = None
    slot: Name | None = None
    machine: bool = False
    traceparent: Traceparent | None = None

    def __post_init__(self) -> None:
        self.ts = whole(self.ts)

    @property
    def amount(self) -> float:
        return 1.0


class Open(_Outcome, tag="open"):
    type: ClassVar[Literal["open"]] = "open"


class Click(_Outcome, tag="click"):
    type: ClassVar[Literal["click"]] = "click"
    reward: Reward = 1.0

    @property
    def amount(self) -> float:
        return self.reward


class Conversion(_Outcome, tag="conversion", kw_only=True):
    type: ClassVar[Literal["conversion"]] = "conversion"
    value: Reward

    @property
    def amount(self) -> float:
        return self.value


class Unsubscribe(_Outcome, tag="unsubscribe"):
    type: ClassVar[Literal["unsubscribe"]] = "unsubscribe"


class Complaint(_Outcome, tag="complaint"):
    type: ClassVar[Literal["complaint"]] = "complaint"


class Bounce(_Outcome, tag="bounce"):
    type: ClassVar[Literal["bounce"]] = "bounce"


Outcome = Open | Click | Conversion | Unsubscribe | Complaint | Bounce
OUTCOMES = (Open, Click, Conversion, Unsubscribe, Complaint, Bounce)


class Watermark(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", tag="watermark",
                gc=False):
    type: ClassVar[Literal["watermark"]] = "watermark"
    ts: EpochMs

    def __post_init__(self) -> None:
        self.ts = whole(self.ts)


Event = Impression | Send | Outcome | Watermark
# all but the patterns: misfits
EVENTS = msgspec.json.Decoder(Impression | Send | Open | Click | Conversion | Unsubscribe
                              | Complaint | Bounce | Watermark)
_arm = attrgetter("arm")
_SENT = frozenset({Send, *OUTCOMES})


def misfits(events: Sequence[Event | Exception]) -> list[int]:
    """Indices of the events (as ``EVENTS`` decodes them; anything else is skipped) whose names
    or decision id do not match the models' patterns, in order."""
    known = _known
    fits = known.issuperset
    out, ids, where = [], [], []
    for i, e in enumerate(events):
        if type(e) is Impression:
            if not (e.campaign in known and fits(e.slots) and fits(map(_arm, e.slots.values()))
                    and (e.context is None or fits(e.context)) and fits(e.segments)) and not (
                    names_match([e.campaign, *e.slots, *map(_arm, e.slots.values()),
                                 *(e.context or ()), *e.segments])):
                out.append(i)
                continue
        elif type(e) in _SENT:
            sent = cast("Send | Outcome", e)
            slot = getattr(sent, "slot", None)
            if sent.campaign is not None or slot is not None:  # (most name neither)
                names = [n for n in (sent.campaign, slot) if n is not None]
                if not fits(names) and not names_match(names):
                    out.append(i)
                    continue
        else:
            continue
        ids.append(cast("Impression | Send | Outcome", e).decision_id)
        where.append(i)
    bad = ids_misfit(ids, where)
    return sorted(out + bad) if bad else out
