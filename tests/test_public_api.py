"""The public API: every ``__all__`` in bandit/ pinned (a change to one is a change to this file
too, so it is deliberate), each of its names there, sorted; ``from bandit import *``; every
error at the top; ``import bandit`` light; the type marker shipped."""

import importlib
import inspect
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bandit
from bandit import errors

ROOT = Path(__file__).resolve().parents[1]

PINNED = {
    "bandit": [
        "Arm", "ArmReport", "BanditError", "BartSpec", "BatchDecisionRequest",
        "BatchDecisionResponse", "BetaTSSpec", "CampaignReport", "CampaignSpec",
        "CategoricalFeature", "Click", "ConflictError", "ContextSchema", "Contribution",
        "Decision", "DecisionRequest", "EligibilityRule", "Engine", "EpsilonGreedySpec",
        "HybridLinUCBSpec", "Impression", "IncompatibleStateError", "Interval",
        "InvalidInputError", "JoinedEvent", "LinTSSpec", "LinUCBSpec", "NotFoundError",
        "NumericFeature", "OverCapacityError", "SegmentReport", "SlotChoice", "SlotDecision",
        "SlotReport", "SlotSpec", "UnavailableError", "UnknownArmError", "VWSpec", "Watermark",
    ],
    "bandit.client": [
        "AsyncClient", "Client", "Conflict", "Forbidden", "Invalid", "NotFound", "Retry",
        "RetryEvent", "ServiceRefused", "Unavailable", "Unreachable",
    ],
    "bandit.engine": [
        "ERASED", "MAX_PENDING", "OVER_CAPACITY", "Closed", "DecisionBatch", "Engine",
        "JoinResult", "Joiner", "OneDecision", "RequestColumns", "SlotColumns", "_Tally",
        "_add_grouped", "_in_holdout", "_rule_holds", "decided_with_consent", "decision_draws",
        "decision_seeds", "encode_slot_contexts", "holdout_mask", "slot_draws",
        "strip_consentless", "subject_key",
    ],
    "bandit.errors": [
        "BanditError", "ConflictError", "IncompatibleStateError", "InvalidInputError",
        "NotFoundError", "OverCapacityError", "UnavailableError", "UnknownArmError",
    ],
    "bandit.models": [
        "FEATURE_LIMIT", "MAX_MS", "OUTCOME_TYPES", "REWARD_LIMIT", "VW_EXTRA_OPTIONS", "Arm",
        "ArmReport", "BatchDecisionRequest", "BatchDecisionResponse", "Bounce", "CampaignReport",
        "CampaignSpec", "Click", "Complaint", "Contribution", "Conversion", "Decision",
        "DecisionRequest", "EligibilityRule", "EpochMs", "Event", "Impression", "Interval",
        "JoinedEvent", "LinTSSpec", "LoggedChoice", "LoggedDecision", "Name", "Open", "Outcome",
        "OutcomeReward", "OutcomeType", "PolicySpec", "RewardSpec", "SegmentReport", "Send",
        "SlotChoice", "SlotDecision", "SlotReport", "SlotSpec", "Strict", "Unsubscribe", "VWSpec",
        "Watermark", "check_arm_features", "check_vw_args",
    ],
    "bandit.policies": [
        "Bart", "BetaTS", "EpsilonGreedy", "HybridLinUCB", "LinTS", "LinUCB", "Policy",
        "VWPolicy", "from_state", "is_vw",
    ],
    "bandit.policies.vw": ["EXPLORATIONS", "VWFormat", "VWPolicy"],
    "bandit.service": [
        "BATCH_CHUNK", "EXAMPLE_CAMPAIGN", "NDJSON", "Link", "LinkFactory", "create_app",
        "tune_gc",
    ],
    "bandit.service.console": ["ASSETS", "Heatmap", "HeatmapRow", "allocation_heatmap"],
    "bandit.service.routes": ["ROUTERS"],
    "bandit.settings": [
        "ENV_PREFIX", "SHARED", "BrokerSettings", "Settings", "VWLearnerSettings", "WorkerSettings",
    ],
    "bandit.tracing": [
        "TRACEPARENT_PATTERN", "configure_export", "decided", "link_traceparents", "link_values",
        "parent", "span_context", "start", "traceparent", "tracer",
    ],
    "bandit.wire": [
        "DECISIONS", "EVENTS", "OUTCOMES", "Bounce", "Click", "Complaint", "Conversion", "Event",
        "Impression", "Joined", "LoggedChoice", "LoggedDecision", "Open", "Outcome", "Reader",
        "Send", "SlotChoice", "Unsubscribe", "Watermark", "decode_lines", "duplicate_key",
        "encoding_problem", "joined_json", "keys_unique", "misfits", "names_fit",
    ],
    "bandit.wire.decisions": ["DecisionRequest", "DecisionRequestLike"],
}
# The public modules and packages: each states its names.
PUBLIC = ["bandit", "bandit.client", "bandit.engine", "bandit.errors", "bandit.models",
          "bandit.policies", "bandit.service", "bandit.settings", "bandit.wire"]


def _modules_with_all() -> dict[str, list[str]]:
    names = ["bandit", *(m.name for m in pkgutil.walk_packages(bandit.__path__, "bandit."))]
    modules = {name: importlib.import_module(name) for name in names}
    return {name: list(m.__all__) for name, m in modules.items() if "__all__" in vars(m)}


def test_every_all_in_bandit_is_pinned():
    assert _modules_with_all() == PINNED


@pytest.mark.parametrize("name", PUBLIC)
def test_each_public_module_states_its_names(name):
    assert "__all__" in vars(importlib.import_module(name))


def _order(name: str) -> tuple[int, str]:
    """isort's order (ruff's RUF022): constants, then classes, then the rest."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name


@pytest.mark.parametrize("name", sorted(PINNED))
def test_every_name_of_an_all_exists_once_and_in_order(name):
    module = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert len(set(module.__all__)) == len(module.__all__)
    assert module.__all__ == sorted(module.__all__, key=_order)


def test_star_import_gives_the_public_names():
    namespace: dict[str, object] = {}
    exec("from bandit import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(bandit.__all__)
    assert namespace["Engine"] is importlib.import_module("bandit.engine").Engine


def test_every_error_is_public():
    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, errors.BanditError)}
    assert classes == set(errors.__all__) and classes <= set(bandit.__all__)
    assert all(getattr(bandit, name) is getattr(errors, name) for name in classes)


def test_importing_bandit_or_an_error_loads_neither_the_engine_nor_numba():
    # A fresh interpreter: the engine and the models load on first use of their names.
    code = ("import sys, bandit, bandit.errors; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numba', 'vowpalwabbit', 'pydantic') or m.startswith('bandit.engine')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert run.stdout.strip() == "[]"


def test_the_type_marker_ships_with_the_package():
    assert (ROOT / "bandit" / "py.typed").is_file()
    with open(ROOT / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["bandit"]
