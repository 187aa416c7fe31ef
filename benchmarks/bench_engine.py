"""The Engine in process: one weekly send of 280,000 subscribers on a 4-slot campaign.

Campaign: d=20 (19 numeric features plus the intercept), four slots of K=10 arms each: LinUCB,
epsilon-greedy, Bart (arm features m=3) and Beta TS. It first learns 20,000 joined events
(untimed), so its state is that of a campaign in progress. Requests are built before the clock.

Timed: ``decide_batch`` (validation of what only the engine knows, holdout hashes, context
encoding, per-decision draws, four policies, expectations), then the same plus the JSON the
service sends. The REFERENCE is the four policies' own ``choose_many(X, with_propensities=True)``
on the already-encoded matrix, in the same run: the ratio says what the engine layer costs.

Run on its own: ``pytest benchmarks/bench_engine.py [--quick]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandit.engine import Engine
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent, SlotChoice
from benchmarks.common import ratio, record, rounds

BENCH = "engine"
N_SEND = 280_000
N_TRAIN = 20_000
D_NUMERIC = 19
K = 10
POLICIES = ["lin_ucb", "epsilon_greedy", "bart", "beta_ts"]


def campaign() -> CampaignSpec:
    arms = [{"id": f"a{j}", "features": {"f0": j / K, "f1": (j % 3) / 2, "f2": float(j % 2)}}
            for j in range(K)]
    return CampaignSpec.model_validate({
        "name": "bench", "holdout": 0.05,
        "context": {"features": [{"kind": "numeric", "name": f"x{i}"} for i in range(D_NUMERIC)]},
        "slots": [{"name": kind, "arms": arms, "default_arm": "a0", "policy": {"kind": kind},
                   "arm_features": [{"kind": "numeric", "name": f"f{i}"} for i in range(3)]}
                  for kind in POLICIES],
    })


def build(n: int, seed: int) -> tuple[list[DecisionRequest], np.ndarray]:
    X = np.random.default_rng(seed).normal(size=(n, D_NUMERIC)).round(6)
    names = [f"x{i}" for i in range(D_NUMERIC)]
    rows = X.tolist()
    return [DecisionRequest(campaign="bench", user_id=f"u{seed}-{i}",
                            context=dict(zip(names, r, strict=True)))
            for i, r in enumerate(rows)], X


def trained_engine() -> Engine:
    engine = Engine(seed=1)
    engine.create_campaign(campaign())
    requests, X = build(N_TRAIN, seed=2)
    rng = np.random.default_rng(3)
    arms = rng.integers(K, size=(N_TRAIN, len(POLICIES)))
    p = 1 / (1 + np.exp(-(X[:, :1] * (arms - K / 2) / K - 2.0)))
    clicks = rng.random(arms.shape) < p
    engine.learn([
        JoinedEvent(decision_id=f"{i:032x}", campaign="bench", subject=f"{i:032x}", ts=0,
                    context=r.context,
                    slots={s: SlotChoice(arm=f"a{arms[i, j]}", propensity=1 / K)
                           for j, s in enumerate(POLICIES)},
                    rewards={s: float(clicks[i, j]) for j, s in enumerate(POLICIES)})
        for i, r in enumerate(requests)])
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def send(quick: bool) -> tuple[Engine, list[DecisionRequest], np.ndarray]:
    """The trained engine and the send's requests (a tenth when quick), warmed up."""
    engine = trained_engine()
    requests, X = build(N_SEND // 10 if quick else N_SEND, seed=4)
    engine.decide_batch("bench", requests[:100])  # compile or load the cache, untimed
    return engine, requests, X


REF = "REFERENCE 4 policies' choose_many + propensities"


def test_reference(benchmark, send, quick):
    engine, requests, X = send
    n = len(requests)
    X1 = np.ascontiguousarray(np.hstack([np.ones((n, 1)), X]))
    slots = engine._campaigns["bench"].slots  # the same policy objects, same state

    def reference() -> None:
        for s in slots:
            s.policy.choose_many(X1 if s.policy.dim else X1[:, :0], with_propensities=True)

    benchmark.pedantic(reference, rounds=rounds(quick))
    record(benchmark, BENCH, REF, "E4", n, "s/send",
           ratios=[ratio("policies alone / Engine.decide_batch (time ratio)", DECIDE, by="value",
                         note="the share of the engine's time spent in the policies")])


DECIDE = "Engine.decide_batch, 4 slots"


def test_decide_batch(benchmark, send, quick):
    engine, requests, _ = send
    n = len(requests)
    batch = benchmark.pedantic(engine.decide_batch, args=("bench", requests),
                               rounds=rounds(quick))
    record(benchmark, BENCH, DECIDE, "E4", n, "s/send",
           note=f"holdout share {float(batch.holdout.mean()):.3f}",
           target=("<", 4.0) if n == N_SEND else None)


def test_decide_batch_json(benchmark, send, quick):
    engine, requests, _ = send
    benchmark.pedantic(lambda: engine.decide_batch("bench", requests).ndjson(),
                       rounds=rounds(quick))
    record(benchmark, BENCH, "decide_batch + JSON of every decision", "E4", len(requests),
           "s/send")
