"""Shared fixtures, and the ``broker`` marker: every test that starts the local Kafka-compatible
broker carries it (``-m "not broker"`` runs the rest). Tests using the ``kafka`` fixture get it
here; tests that start a broker themselves (``LocalBroker``, ``cmab broker``, ``cmab demo``) are
marked where they are written, and a guard fails any test that starts one unmarked."""

import subprocess
from collections.abc import Callable, Iterator, Sequence
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


# -- the broker marker ---------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def starts_broker(args: Any) -> bool:
    """Whether a child process with these arguments is a broker: the tansu binary's ``broker``
    command (what ``LocalBroker`` runs), or ``cmab broker`` / ``cmab demo``."""
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        return False
    argv = [str(a) for a in args]
    if len(argv) > 1 and argv[1] == "broker":
        return True
    return any((a == "bandit.cli" or a.endswith("cmab")) and b in ("broker", "demo")
               for a, b in zip(argv, argv[1:], strict=False))


class _GuardedPopen(subprocess.Popen):
    def __init__(self, args: Any, *rest: Any, **options: Any) -> None:
        item = _running[-1] if _running else None
        if item is not None and item.get_closest_marker("broker") is None and starts_broker(args):
            raise AssertionError(f"{item.nodeid} starts a broker: mark it @pytest.mark.broker")
        super().__init__(args, *rest, **options)


@pytest.fixture(scope="session", autouse=True)
def _broker_guard() -> Iterator[None]:
    """Every child process the tests start goes through the guard (``subprocess.run`` and
    ``LocalBroker`` look ``subprocess.Popen`` up when they call it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", _GuardedPopen)
        yield
