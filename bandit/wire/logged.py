"""The msgspec mirror of ``models.LoggedDecision``: a line of a decision block on
``<prefix>.decisions`` (``streams.blocks``), as the stream worker decodes it.

Like the event mirrors (``wire.events``) it has the model's fields, defaults and constraints
but the patterns (names, decision id, subject key: 32 lowercase hex digits), which ``misfits``
checks for a whole block, and one more: a slot's ``probabilities`` stay the raw JSON object the
service wrote (``msgspec.Raw``). The worker passes them to ``.joined`` as they are: decoding a
vector of every eligible arm into a dict, and encoding it again, would cost more than the rest
of a decision's decoding and joining. ``misfits`` checks that each is a JSON object; its names
and numbers are checked where they are read as a dict (the pydantic models, the joined
example's readers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from bandit.wire.names import (
    DecisionId,
    EpochMs,
    Label,
    Name,
    Propensity,
    ids_misfit,
    names_match,
    whole,
)
from bandit.wire.names import known as _known

SubjectKey = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]


class LoggedChoice(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    arm: Name
    propensity: Propensity
    probabilities: msgspec.Raw = msgspec.Raw(b"{}")  # the JSON object as written


class LoggedDecision(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    type: ClassVar[Literal["decision"]] = "decision"
    decision_id: DecisionId
    campaign: Name
    subject: SubjectKey
    ts: EpochMs
    model_version: EpochMs = 0
    holdout: bool = False
    slots: Annotated[dict[Name, LoggedChoice], msgspec.Meta(min_length=1)]
    context: dict[Name, float | Label] | None = None
    segments: dict[Name, Label] = {}

    def __post_init__(self) -> None:
        self.ts = whole(self.ts)
        self.model_version = whole(self.model_version)


DECISIONS = msgspec.json.Decoder(LoggedDecision)
_arm = attrgetter("arm")
_HEX = frozenset("0123456789abcdef")


def misfits(decisions: Sequence[LoggedDecision | Exception]) -> list[int]:
    """Indices of the decisions (anything else is skipped) whose names, decision id or subject
    key do not match the models' patterns, or whose probability vectors are not JSON
    objects, in order."""
    return logged_misfits(decisions, LoggedDecision, lambda d: [
        d.campaign, *d.slots, *map(_arm, d.slots.values()), *(d.context or ()), *d.segments])


def logged_misfits(items: Sequence[Any], kind: type, names_of: Callable[[Any], list[str]]
                   ) -> list[int]:
    """``misfits`` of the records of type ``kind`` that hold a logged decision (this module's,
    or a joined example): their names (``names_of``), subject key, decision id and raw
    probability vectors."""
    known = _known
    fits = known.issuperset
    out, ids, where = [], [], []
    for i, item in enumerate(items):
        if type(item) is not kind:
            continue
        d: Any = item
        names = names_of(d)
        if (not fits(names) and not names_match(names) or not _HEX.issuperset(d.subject)
                or not all(memoryview(c.probabilities)[:1].tobytes() == b"{"
                           for c in d.slots.values())):
            out.append(i)
            continue
        ids.append(d.decision_id)
        where.append(i)
    bad = ids_misfit(ids, where)
    return sorted(out + bad) if bad else out
