"""Campaign reports: reward rates with their intervals per arm, segment and slot; outcome
rates (the share of decisions that opened, clicked, converted, unsubscribed, complained,
bounced) per arm and per group (personalized, holdout), and their lift."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bandit.models.base import Strict
from bandit.models.events import OutcomeType

Group = Literal["personalized", "holdout"]


class Interval(Strict):
    estimate: float
    low: float
    high: float


class OutcomeRate(Strict):
    """The share of decisions with at least one learned event of an outcome type, with its 95%
    Wilson score interval (sound near 0 and 1, where guardrail rates live); null with no
    decisions."""

    decisions: int = Field(description="Decisions: the rate's denominator.")
    reached: int = Field(description="Decisions with at least one learned event of the type.")
    events: int = Field(description="Learned events of the type (conversions: their count).")
    rate: float | None
    interval: Interval | None


_FIXED = ("95% fixed-horizon interval, variance clustered by subscriber (a subscriber's "
          "decisions in every send are one unit): valid when read once, at a planned end.")
_ALWAYS_VALID = ("95% always-valid interval (asymptotic confidence sequence, Waudby-Smith et al. "
                 "2024), variance clustered by subscriber: covers at every look at once, "
                 "however often the report is read; tightest at the campaign's lift_horizon.")


class OutcomeLift(Strict):
    """Personalized minus holdout rate of an outcome type (the share of decisions with at
    least one learned event of it), with two 95% intervals whose variance is clustered by
    subscriber: ``lift`` (fixed-horizon) and ``always_valid``; null unless both groups have
    decisions (in two subscriber buckets)."""

    personalized: int = Field(description="Personalized decisions.")
    holdout: int = Field(description="Holdout decisions.")
    lift: Interval | None = Field(description=_FIXED)
    always_valid: Interval | None = Field(None, description=_ALWAYS_VALID)


class GroupReport(Strict):
    """The decisions of one group (personalized or holdout): reward and outcome rates."""

    decisions: int
    reward: float = Field(description="Total reward.")
    mean_reward: Interval | None = Field(
        description="Reward per decision, 95% normal-approximation interval.")
    outcomes: dict[OutcomeType, OutcomeRate]


class ArmReport(Strict):
    arm: str
    active: bool
    impressions: int
    reward: float
    ctr: Interval | None
    share: float
    outcomes: dict[OutcomeType, OutcomeRate] = Field(
        default_factory=dict, description="Outcome rates over the arm's decisions.")
    groups: dict[Group, GroupReport] = Field(
        default_factory=dict, description="The arm's decisions by group, where it has any.")


class SegmentReport(Strict):
    segment: str
    value: str
    impressions: int
    ctr: Interval | None
    allocation: dict[str, float]
    flagged: bool
    reason: str | None = None
    ctr_gap: Interval | None = Field(
        None, description="Reward rate of this value minus that of the segment's other values.")


class SlotReport(Strict):
    slot: str
    policy: str
    arms: list[ArmReport]
    segments: list[SegmentReport]
    groups: dict[Group, GroupReport] = Field(
        default_factory=dict, description="The slot's decisions by group, every arm together.")
    outcome_lift: dict[OutcomeType, OutcomeLift] = Field(
        default_factory=dict, description="Per outcome type with learned events, and always "
        "for unsubscribe and complaint (the guardrails): personalized minus holdout rate.")


GuardrailState = Literal["ok", "waiting", "breached"]


class PauseReason(Strict):
    """Why a guardrail paused a campaign: the outcome type, the bound its lift left and the
    always-valid interval that showed it, at ``at_ms`` (the deciding engine's clock)."""

    outcome: OutcomeType
    bound: Literal["max_lift", "min_lift"]
    limit: float = Field(description="The bound's value (a difference of rates).")
    interval: Interval = Field(description="The lift's always-valid 95% interval then.")
    at_ms: int


class GuardrailReport(Strict):
    """A guardrail's test over the decisions since the campaign was last resumed after a
    guardrail pause (all decisions before any): ``waiting`` until each group has
    ``min_decisions``, then ``breached`` while the always-valid interval lies wholly above
    ``max_lift`` or below ``min_lift``, else ``ok``."""

    outcome: OutcomeType
    max_lift: float | None
    min_lift: float | None
    min_decisions: int
    state: GuardrailState
    personalized: int = Field(description="Personalized decisions the test counts.")
    holdout: int = Field(description="Holdout decisions the test counts.")
    interval: Interval | None = Field(
        description="The lift with its always-valid 95% interval (a confidence sequence: "
        "valid however often it is read); null unless both groups have decisions.")


class CampaignReport(Strict):
    campaign: str
    model_version: int
    paused: bool
    impressions: int
    personalized_ctr: Interval | None
    holdout_ctr: Interval | None
    lift: Interval | None = Field(description="Personalized minus holdout reward per decision "
                                  "(a decision's best over its slots): " + _FIXED)
    lift_always_valid: Interval | None = Field(
        None, description="The same lift: " + _ALWAYS_VALID)
    slots: list[SlotReport]
    groups: dict[Group, GroupReport] = Field(
        default_factory=dict, description="Every decision by group: reward (a decision's best "
        "over its slots) and outcome rates.")
    outcome_lift: dict[OutcomeType, OutcomeLift] = Field(
        default_factory=dict, description="Per outcome type with learned events, and always "
        "for unsubscribe and complaint (the guardrails): personalized minus holdout rate.")
    guardrails: list[GuardrailReport] = Field(
        default_factory=list, description="The campaign's guardrails, each with its test.")
    paused_by: PauseReason | None = Field(
        None, description="The guardrail breach that paused the campaign, until a person "
        "resumes it; null for a campaign running or paused by hand.")
