"""The msgspec mirror of ``JoinedEvent``: a closed attribution window, as the join writes it
for the stream worker's impressions and as the VW learner reads it from ``.joined``.

Two uses, one Struct. Built by the join (``bandit.join``) from its columns, it is not
validated (msgspec checks types on decoding only; ts is made whole either way) and its JSON
(``joined_json``) is the bytes of the pydantic ``JoinedEvent``'s ``model_dump(mode="json",
exclude_none=True)``. Decoded
(the learner's ``decode_examples``), it has ``JoinedEvent``'s fields, defaults and
constraints but two: the name and decision-id patterns, which ``misfits`` checks for a whole
block (``wire.names``), and the pattern and length of context keys, left to
``Engine.check_event``, which refuses any key outside the campaign's schema (whose names are
Names): such an example is refused all the same, by that check (an unknown feature, unless
the campaign, a slot or an arm is wrong too: the check names what it finds first). ``type``
lets ``check_event`` check the example as the impression it was; ``Engine.learn`` reads it as
it reads a ``JoinedEvent``.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Annotated, ClassVar, Literal

import msgspec
import orjson

from bandit.models.events import OutcomeType
from bandit.wire.logged import LoggedChoice, SubjectKey, logged_misfits
from bandit.wire.names import DecisionId, EpochMs, Label, Name, whole


class Joined(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A closed window: ``JoinedEvent``'s fields in its order."""

    type: ClassVar[Literal["decision"]] = "decision"
    decision_id: DecisionId
    campaign: Name
    subject: SubjectKey
    ts: EpochMs
    slots: dict[Name, LoggedChoice]
    context: dict[str, float | Label] | None = None  # keys: see the module docstring
    segments: dict[Name, Label] = {}
    holdout: bool = False
    model_version: EpochMs = 0
    outcomes: dict[OutcomeType, Annotated[int, msgspec.Meta(ge=1)]] = {}
    rewards: dict[Name, float]  # msgspec refuses non-finite JSON numbers: Finite

    def __post_init__(self) -> None:
        self.ts = whole(self.ts)  # EpochMs: a whole number (154.0 is 154), built or decoded
        self.model_version = whole(self.model_version)


_arm = attrgetter("arm")


def misfits(examples: Sequence[Joined | Exception]) -> list[int]:
    """Indices of the examples (anything else is skipped) whose names (campaign, slots, arms,
    segment and reward keys; not context keys), subject key or decision id do not match the
    models' patterns, or whose probability vectors are not JSON objects (kept raw, as
    ``bandit.wire.logged`` says), in order."""
    return logged_misfits(examples, Joined, lambda e: [
        e.campaign, *e.slots, *map(_arm, e.slots.values()), *e.segments, *e.rewards])


def joined_json(joined: Joined) -> bytes:
    """The JSON of a closed window, written by orjson as the pydantic path's is (msgspec's own
    encoder writes some floats differently: 1e16 where orjson writes 1e+16); without a context
    when it has none, as ``exclude_none`` writes it, and ts a float, as pydantic writes
    ``EpochMs`` (a float field, validated whole)."""
    fields = msgspec.to_builtins(joined, builtin_types=(msgspec.Raw,))
    for choice in fields["slots"].values():  # the vector's JSON as it came
        choice["probabilities"] = orjson.Fragment(bytes(choice["probabilities"]))
    fields["ts"] = float(fields["ts"])
    fields["model_version"] = float(fields["model_version"])
    if fields["context"] is None:
        del fields["context"]
    return orjson.dumps(fields)
