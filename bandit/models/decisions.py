"""Decision requests and answers, one at a time and in batches."""

from __future__ import annotations

from pydantic import Field

from bandit.models.base import Strict
from bandit.models.names import DECISION_ID_DESCRIPTION, Finite, Label, Name, UserId


class DecisionRequest(Strict):
    campaign: Name
    user_id: UserId
    context: dict[Name, Finite | Label] = Field(default_factory=dict, max_length=512)
    segments: dict[Name, Label] = Field(default_factory=dict, max_length=16)
    consent: bool = Field(True, description="Personalization consent; without it the decision "
                          "ignores the context and logs none, and its id records that: "
                          "context and segments of its impression are dropped at ingestion.")
    explain: bool = False


class Contribution(Strict):
    feature: str
    value: float


class SlotDecision(Strict):
    slot: str
    arm: str
    propensity: float
    expected_reward: float
    exploration_bonus: float
    explanation: list[Contribution] | None = None


class Decision(Strict):
    decision_id: str = Field(description=DECISION_ID_DESCRIPTION)
    campaign: str
    user_id: str
    holdout: bool
    model_version: int
    slots: list[SlotDecision]


class BatchDecisionRequest(Strict):
    campaign: Name
    requests: list[DecisionRequest] = Field(min_length=1, max_length=100_000)


class BatchDecisionResponse(Strict):
    decisions: list[Decision]
