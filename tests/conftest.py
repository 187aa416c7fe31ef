from collections.abc import Callable
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """All test randomness comes from here: fixed seed, fresh per test."""
    return np.random.default_rng(20261123)


@pytest.fixture(scope="session")
def newsletter_spec() -> Callable[[str], dict[str, Any]]:
    """A newsletter campaign as JSON: a numeric, a defaulted numeric and a categorical feature,
    a segment, and three slots (LinUCB; hybrid LinUCB over arm features, conditioned on the
    first slot; Beta TS)."""

    def spec(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "holdout": 0.1,
            "attribution_window_ms": 1000,
            "context": {
                "features": [
                    {"kind": "numeric", "name": "engagement"},
                    {"kind": "numeric", "name": "recency", "default": 0.0},
                    {"kind": "categorical", "name": "plan", "values": ["free", "pro", "team"]},
                ],
                "segments": ["region"],
            },
            "slots": [
                {"name": "subject_line", "arms": [{"id": "plain"}, {"id": "urgent"},
                                                  {"id": "question"}],
                 "default_arm": "plain", "policy": {"kind": "lin_ucb", "alpha": 0.5}},
                {"name": "artwork",
                 "arms": [{"id": "action", "features": {"scene": "action", "brightness": 0.8}},
                          {"id": "calm", "features": {"scene": "calm", "brightness": 0.2}}],
                 "default_arm": "calm", "policy": {"kind": "hybrid_lin_ucb", "epsilon": 0.2},
                 "arm_features": [
                     {"kind": "categorical", "name": "scene",
                      "values": ["action", "calm", "comedy"]},
                     {"kind": "numeric", "name": "brightness"}],
                 "condition_on": ["subject_line"]},
                {"name": "send_hour", "arms": [{"id": "h09"}, {"id": "h18"}],
                 "default_arm": "h09", "policy": {"kind": "beta_ts"}},
            ],
        }

    return spec


@pytest.fixture(scope="module")
def kafka():
    """A real Kafka-compatible broker (tansu) on a free loopback port, for one test module."""
    from streams.broker import LocalBroker

    with LocalBroker() as broker:
        yield broker
