"""VWPolicy beside the Numba LinUCB: decisions/s and learns/s at W1 and W2, in the same run.

Both policies first learn the same uniformly logged events (untimed). Decisions are
``choose_many(X, with_propensities=True)`` on one batch; learns are ``learn_many`` on another
(VW at the logged propensity 1/k). The ratios are LinUCB throughput / VW throughput: how many
times faster the Numba policy is (VW pays a text line and a native call per row).

The VW learner (``streams.vw_learner``) is measured on the same examples written as joined
events to ``.joined`` of a local broker, in the blocks a worker writes: learns/s of
``KafkaVWLearner`` (consume, decode a block per msgspec call, check, drop repeated decision
ids, ``Engine.learn``, one checkpoint at the end)
against ``VWPolicy.learn_many`` on the same rows in process, same run (the ratio is learner /
learn_many).

Run on its own: ``pytest benchmarks/bench_vw.py [--quick]``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from bandit.policies import LinUCB, Policy, VWPolicy
from benchmarks import workloads
from benchmarks.bench_learning import ALPHA, EPSILON, L2
from benchmarks.common import ratio, record, rounds

BENCH = "vw"
N_TRAIN = 5_000


def _policies(k: int, d: int) -> dict[str, Policy]:
    return {"LinUCB": LinUCB(k, d, alpha=ALPHA, l2=L2, epsilon=EPSILON, rng=3),
            "VW squarecb": VWPolicy(d, n_arms=k, rng=3)}


@dataclass(frozen=True)
class Trained:
    """Both policies after the training events, and the rows decided and learned."""

    policies: dict[str, Policy]
    Xd: np.ndarray
    Xl: np.ndarray
    arms: np.ndarray
    rewards: np.ndarray
    quick: bool


@pytest.fixture(scope="module")
def trained(quick: bool) -> dict[str, Trained]:
    n = 2_000 if quick else 20_000
    out = {}
    for name in ("W1", "W2"):
        wl = workloads.build(name, N_TRAIN + 2 * n)
        k = wl.n_arms
        train = np.random.default_rng(17).integers(k, size=N_TRAIN)
        rows = N_TRAIN + np.arange(n)
        arms = np.random.default_rng(18).integers(k, size=n)
        policies = _policies(k, wl.dim)
        for policy in policies.values():
            vw = isinstance(policy, VWPolicy)
            logged = {"propensities": np.full(N_TRAIN, 1.0 / k)} if vw else {}
            policy.learn_many(train, wl.X[:N_TRAIN], wl.R[np.arange(N_TRAIN), train], **logged)
            policy.choose_many(wl.X[rows[:3]], with_propensities=True)  # compile or load cache
        out[name] = Trained(policies, wl.X[rows], wl.X[rows + n], arms, wl.R[rows + n, arms],
                            quick)
    return out


CASES = [(w, label) for w in ("W1", "W2") for label in ("LinUCB", "VW squarecb")]


@pytest.mark.parametrize(("wname", "label"), CASES)
def test_decide(benchmark, trained, wname, label):
    t = trained[wname]
    policy = t.policies[label]
    benchmark.pedantic(policy.choose_many, args=(t.Xd,), kwargs={"with_propensities": True},
                       rounds=rounds(t.quick))
    rs = ([ratio("LinUCB / VW squarecb decide throughput", "VW squarecb choose_many + "
                 "propensities")] if label == "LinUCB" else [])
    record(benchmark, BENCH, f"{label} choose_many + propensities", wname, t.Xd.shape[0],
           "decisions/s", ratios=rs)


@pytest.mark.parametrize(("wname", "label"), CASES)
def test_learn(benchmark, trained, wname, label):
    """learn_many into a copy of the trained policy: learning changes the state, so each round
    learns the same rows into a fresh copy (made outside the clock); VW at propensity 1/k."""
    t = trained[wname]
    policy = t.policies[label]
    n = t.Xl.shape[0]
    logged = ({"propensities": np.full(n, 1.0 / policy.n_arms)}
              if isinstance(policy, VWPolicy) else {})
    benchmark.pedantic(lambda fresh: fresh.learn_many(t.arms, t.Xl, t.rewards, **logged),
                       setup=lambda: ((type(policy).from_state(policy.state(), rng=0),), {}),
                       rounds=rounds(t.quick))
    rs = ([ratio("LinUCB / VW squarecb learn throughput", "VW squarecb learn_many")]
          if label == "LinUCB" else [])
    record(benchmark, BENCH, f"{label} learn_many", wname, n, "learns/s", ratios=rs)


@dataclass(frozen=True)
class Examples:
    """n W1 examples as joined events of a one-slot VW campaign, and as encoded arrays."""

    spec: Any
    events: list[Any]
    arms: np.ndarray
    X: np.ndarray
    rewards: np.ndarray


@pytest.fixture(scope="module")
def examples(quick: bool) -> Examples:
    from bandit.engine import encode_slot_contexts
    from bandit.models import CampaignSpec, JoinedEvent

    n = 2_000 if quick else 20_000
    wl = workloads.build("W1", n)
    k, d = wl.n_arms, wl.dim
    spec = CampaignSpec.model_validate({
        "name": "bench", "holdout": 0.0,
        "context": {"intercept": False,
                    "features": [{"kind": "numeric", "name": f"x{j}"} for j in range(d)]},
        "slots": [{"name": "s", "arms": [{"id": f"a{a}"} for a in range(k)],
                   "default_arm": "a0", "policy": {"kind": "vw"}}]})
    arms = np.random.default_rng(19).integers(k, size=n)
    events = [JoinedEvent(decision_id=f"{i:032x}", campaign="bench", subject=f"{i:032x}", ts=i,
                          slots={"s": {"arm": f"a{a}", "propensity": 1.0 / k}},
                          context={f"x{j}": float(v) for j, v in enumerate(x)},
                          rewards={"s": float(wl.R[i, a])})
              for i, (a, x) in enumerate(zip(arms.tolist(), wl.X, strict=True))]
    X, _ = encode_slot_contexts(spec, "s", events)
    return Examples(spec, events, arms, X, wl.R[np.arange(n), arms])


LEARN_MANY = "REFERENCE VWPolicy.learn_many, same examples"


def test_learner_reference(benchmark, examples):
    n, k = examples.X.shape[0], 10
    benchmark.pedantic(lambda pol: pol.learn_many(examples.arms, examples.X, examples.rewards,
                                                  propensities=np.full(n, 1.0 / k)),
                       setup=lambda: ((VWPolicy(examples.X.shape[1], n_arms=k, rng=3),), {}))
    record(benchmark, BENCH, LEARN_MANY, "W1", n, "learns/s", note="one round")


@pytest.mark.broker
def test_learner(benchmark, examples):
    """The VW learner over the broker: consume the blocks, decode, check, learn, checkpoint."""
    from bandit.engine import Engine
    from streams import joined
    from streams.broker import LocalBroker
    from streams.kafka import producer
    from streams.publish import Publisher
    from streams.topics import Topics, create_topics
    from streams.vw_learner import KafkaVWLearner

    n = examples.X.shape[0]
    engine = Engine()
    engine.create_campaign(examples.spec)
    with LocalBroker() as broker:
        topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
        create_topics(broker.bootstrap_servers, topics, 1)
        with Publisher(broker.bootstrap_servers, topics) as pub:
            pub.campaign(engine.campaign_record("bench"))
        out = producer(broker.bootstrap_servers)
        # Built before the clock, in the blocks a worker writes (streams.joined).
        for key, value in joined.pack([(e.decision_id, orjson.dumps(e.model_dump(mode="json")))
                                       for e in examples.events]):
            out.send(topics.joined, value, key=key, partition=0)
        out.flush()
        out.close()

        def learn(learner: KafkaVWLearner) -> None:
            while learner.learner.counters.records < n:
                learner.step(100)
            learner.checkpoint()

        learner = KafkaVWLearner(broker.bootstrap_servers, topics, checkpoint_interval_ms=10**9)
        try:
            benchmark.pedantic(learn, args=(learner,))
        finally:
            learner.close()
    record(benchmark, BENCH, "VW learner from .joined (consume, validate, learn, checkpoint)",
           "W1", n, "learns/s", note="one round",
           ratios=[ratio("VW learner / VWPolicy.learn_many (learns/s)", LEARN_MANY)])
