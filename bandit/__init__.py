"""Contextual multi-armed bandit engine: policies with exact propensities, Numba kernels.

The public surface: ``Engine``, the contract models a user builds or reads (campaign specs,
decision requests and answers, events, reports) and every error. The errors are loaded with
the package; ``Engine`` and the models on first use, so that a module that only needs an error
(the CLI, the broker) does not load the engine's kernels. The policies are in
``bandit.policies``, the HTTP service in ``bandit.service``.

>>> from bandit import CampaignSpec, DecisionRequest, Engine
>>> engine = Engine(seed=7)
>>> _ = engine.create_campaign(CampaignSpec.model_validate({"name": "weekly", "slots": [
...     {"name": "subject", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}))
>>> [slot.arm in {"a", "b"} for slot in engine.decide(
...     DecisionRequest(campaign="weekly", user_id="u1")).slots]
[True]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bandit.errors import (
    BanditError,
    ConflictError,
    IncompatibleStateError,
    InvalidInputError,
    NotFoundError,
    OverCapacityError,
    UnavailableError,
    UnknownArmError,
)

if TYPE_CHECKING:
    from bandit.engine import Engine
    from bandit.models import (
        Arm,
        ArmReport,
        BatchDecisionRequest,
        BatchDecisionResponse,
        CampaignReport,
        CampaignSpec,
        Click,
        Contribution,
        Decision,
        DecisionRequest,
        EligibilityRule,
        Impression,
        Interval,
        JoinedEvent,
        LinTSSpec,
        SegmentReport,
        SlotChoice,
        SlotDecision,
        SlotReport,
        SlotSpec,
        VWSpec,
        Watermark,
    )
    from bandit.models.specs import (
        BartSpec,
        BetaTSSpec,
        CategoricalFeature,
        ContextSchema,
        EpsilonGreedySpec,
        HybridLinUCBSpec,
        LinUCBSpec,
        NumericFeature,
    )

__all__ = [
    "Arm",
    "ArmReport",
    "BanditError",
    "BartSpec",
    "BatchDecisionRequest",
    "BatchDecisionResponse",
    "BetaTSSpec",
    "CampaignReport",
    "CampaignSpec",
    "CategoricalFeature",
    "Click",
    "ConflictError",
    "ContextSchema",
    "Contribution",
    "Decision",
    "DecisionRequest",
    "EligibilityRule",
    "Engine",
    "EpsilonGreedySpec",
    "HybridLinUCBSpec",
    "Impression",
    "IncompatibleStateError",
    "Interval",
    "InvalidInputError",
    "JoinedEvent",
    "LinTSSpec",
    "LinUCBSpec",
    "NotFoundError",
    "NumericFeature",
    "OverCapacityError",
    "SegmentReport",
    "SlotChoice",
    "SlotDecision",
    "SlotReport",
    "SlotSpec",
    "UnavailableError",
    "UnknownArmError",
    "VWSpec",
    "Watermark",
]

# The names loaded on first use (those imported above for type checkers), and their modules.
_MODELS = ("Arm", "ArmReport", "BatchDecisionRequest", "BatchDecisionResponse", "CampaignReport",
           "CampaignSpec", "Click", "Contribution", "Decision", "DecisionRequest",
           "EligibilityRule", "Impression", "Interval", "JoinedEvent", "LinTSSpec",
           "SegmentReport", "SlotChoice", "SlotDecision", "SlotReport", "SlotSpec", "VWSpec",
           "Watermark")
_SPECS = ("BartSpec", "BetaTSSpec", "CategoricalFeature", "ContextSchema", "EpsilonGreedySpec",
          "HybridLinUCBSpec", "LinUCBSpec", "NumericFeature")
_LAZY = {"Engine": "bandit.engine", **dict.fromkeys(_MODELS, "bandit.models"),
         **dict.fromkeys(_SPECS, "bandit.models.specs")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(globals().keys() | _LAZY.keys())
