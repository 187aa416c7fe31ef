"""Campaign reports: reward rates with their intervals per arm, segment and slot."""

from __future__ import annotations

from pydantic import Field

from bandit.models.base import Strict


class Interval(Strict):
    estimate: float
    low: float
    high: float


class ArmReport(Strict):
    arm: str
    active: bool
    impressions: int
    reward: float
    ctr: Interval | None
    share: float


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


class CampaignReport(Strict):
    campaign: str
    model_version: int
    paused: bool
    impressions: int
    personalized_ctr: Interval | None
    holdout_ctr: Interval | None
    lift: Interval | None = Field(description="Personalized minus holdout reward per decision.")
    slots: list[SlotReport]
