"""Events: impressions and clicks as senders write them, the watermark of a stream, and the
joined event of a closed attribution window."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from bandit.models.base import Strict
from bandit.models.names import (
    DECISION_ID_DESCRIPTION,
    INTEGER,
    MAX_MS,
    REWARD_LIMIT,
    DecisionId,
    EpochMs,
    Finite,
    Label,
    Name,
    UserId,
    integral,
)


class SlotChoice(Strict):
    arm: Name
    propensity: Finite = Field(gt=0, le=1)


class Impression(Strict):
    type: Literal["impression"] = "impression"
    event_id: Label
    decision_id: DecisionId = Field(description=DECISION_ID_DESCRIPTION + "; the impression of a "
                                    "decision without consent is kept without its context "
                                    "and segments")
    campaign: Name
    user_id: UserId
    ts: EpochMs
    slots: dict[Name, SlotChoice] = Field(min_length=1)
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    model_version: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                             AfterValidator(integral)] = 0


class Click(Strict):
    type: Literal["click"] = "click"
    event_id: Label
    decision_id: DecisionId
    campaign: Name
    ts: EpochMs
    reward: Finite = Field(1.0, ge=-REWARD_LIMIT, le=REWARD_LIMIT)
    slot: Name | None = None


Event = Annotated[Impression | Click, Field(discriminator="type")]


class Watermark(Strict):
    """A producer's promise on one partition: none of its later events is older than ``ts``.

    Senders and trackers send one to every partition of their topic when they know time has
    moved on (a send is over, an attribution window has passed), so windows close without
    waiting for the next event. It is part of the stream, so replays close the same windows.
    """

    type: Literal["watermark"] = "watermark"
    ts: EpochMs


class JoinedEvent(Strict):
    """A decision whose attribution window closed: its logged context and choices, and the
    reward aggregated over its clicks (the campaign's default reward when there were none)."""

    decision_id: DecisionId
    campaign: Name
    user_id: UserId
    ts: EpochMs
    slots: dict[Name, SlotChoice]
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    rewards: dict[Name, Finite] = Field(description="Reward per slot.")
