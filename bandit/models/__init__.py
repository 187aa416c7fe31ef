"""Pydantic models for everything that crosses a process boundary: campaign specs, decision
requests and answers, events, reports. Strict and closed (``extra="forbid"``): a typo or a
wrong type is refused at the edge with the field's name, never half-understood inside.

One module per concern: ``names`` (the shared scalar types and the one name pattern),
``base`` (``Strict``), ``specs``, ``decisions``, ``events``, ``reports``.
"""

from bandit.models.base import Strict
from bandit.models.decisions import (
    BatchDecisionRequest,
    BatchDecisionResponse,
    Contribution,
    Decision,
    DecisionRequest,
    SlotDecision,
)
from bandit.models.events import Click, Event, Impression, JoinedEvent, SlotChoice, Watermark
from bandit.models.names import MAX_MS, REWARD_LIMIT, EpochMs, Name
from bandit.models.reports import ArmReport, CampaignReport, Interval, SegmentReport, SlotReport
from bandit.models.specs import (
    FEATURE_LIMIT,
    VW_EXTRA_OPTIONS,
    Arm,
    CampaignSpec,
    EligibilityRule,
    LinTSSpec,
    PolicySpec,
    SlotSpec,
    VWSpec,
    check_arm_features,
    check_vw_args,
)

__all__ = [
    "FEATURE_LIMIT",
    "MAX_MS",
    "REWARD_LIMIT",
    "VW_EXTRA_OPTIONS",
    "Arm",
    "ArmReport",
    "BatchDecisionRequest",
    "BatchDecisionResponse",
    "CampaignReport",
    "CampaignSpec",
    "Click",
    "Contribution",
    "Decision",
    "DecisionRequest",
    "EligibilityRule",
    "EpochMs",
    "Event",
    "Impression",
    "Interval",
    "JoinedEvent",
    "LinTSSpec",
    "Name",
    "PolicySpec",
    "SegmentReport",
    "SlotChoice",
    "SlotDecision",
    "SlotReport",
    "SlotSpec",
    "Strict",
    "VWSpec",
    "Watermark",
    "check_arm_features",
    "check_vw_args",
]
