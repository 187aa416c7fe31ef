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

Run on its own: ``python -m benchmarks.bench_vw [--quick]``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import orjson

from bandit.policies import LinUCB, Policy, VWPolicy
from benchmarks import workloads
from benchmarks.bench_decisions import time_choose
from benchmarks.bench_learning import ALPHA, EPSILON, L2
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main

BENCH = "vw"
N_TRAIN = 5_000


def _policies(k: int, d: int) -> dict[str, Policy]:
    return {"LinUCB": LinUCB(k, d, alpha=ALPHA, l2=L2, epsilon=EPSILON, rng=3),
            "VW squarecb": VWPolicy(d, n_arms=k, rng=3)}


def _time_learn(policy: Policy, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                logged: dict[str, np.ndarray], repeat: int) -> tuple[float, Any]:
    """Best time of ``learn_many(arms, X, rewards, **logged)`` into a copy of `policy`.

    Learning changes the state, so each repeat learns the same rows into a fresh copy (made
    outside the clock).
    """
    return best_time(lambda: type(policy).from_state(policy.state(), rng=0),
                     lambda fresh: fresh.learn_many(arms, X, rewards, **logged), repeat)


def run(quick: bool = False) -> Results:
    """Rows per second of choose_many and learn_many, VW against LinUCB, at W1 and W2."""
    n = 2_000 if quick else 20_000
    repeat = 1 if quick else 3
    ms: list[Measurement] = []
    rs: list[Ratio] = []
    for name in ("W1", "W2"):
        wl = workloads.build(name, N_TRAIN + 2 * n)
        k = wl.n_arms
        train = np.random.default_rng(17).integers(k, size=N_TRAIN)
        rows = N_TRAIN + np.arange(n)
        Xd, Xl = wl.X[rows], wl.X[rows + n]
        arms = np.random.default_rng(18).integers(k, size=n)
        rewards = wl.R[rows + n, arms]
        p = np.full(n, 1.0 / k)
        rate: dict[tuple[str, str], float] = {}
        for label, policy in _policies(k, wl.dim).items():
            vw = isinstance(policy, VWPolicy)
            logged = {"propensities": np.full(N_TRAIN, 1.0 / k)} if vw else {}
            policy.learn_many(train, wl.X[:N_TRAIN], wl.R[np.arange(N_TRAIN), train], **logged)
            policy.choose_many(Xd[:3], with_propensities=True)  # compile or load the cache
            t, _ = time_choose(policy, Xd, repeat)
            rate[label, "decide"] = n / t
            ms.append(Measurement(BENCH, f"{label} choose_many + propensities", name, n / t,
                                  "decisions/s", n))
            logged = {"propensities": p} if vw else {}
            t, _ = _time_learn(policy, arms, Xl, rewards, logged, repeat)
            rate[label, "learn"] = n / t
            ms.append(Measurement(BENCH, f"{label} learn_many", name, n / t, "learns/s", n))
        for verb in ("decide", "learn"):
            rs.append(Ratio(BENCH, f"LinUCB / VW squarecb {verb} throughput", name,
                            rate["LinUCB", verb] / rate["VW squarecb", verb]))
    m, r = _learner(2_000 if quick else 20_000)
    return ms + m, rs + r


def _learner(n: int) -> Results:
    """The VW learner over the broker against learn_many in process, on n W1 examples."""
    from bandit.engine import Engine, encode_slot_contexts
    from bandit.models import CampaignSpec, JoinedEvent
    from streams import joined
    from streams.broker import LocalBroker
    from streams.kafka import producer
    from streams.publish import Publisher
    from streams.topics import Topics, create_topics
    from streams.vw_learner import KafkaVWLearner

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
    rewards = wl.R[np.arange(n), arms]
    t_direct, _ = best_time(lambda: VWPolicy(d, n_arms=k, rng=3),
                            lambda pol: pol.learn_many(arms, X, rewards,
                                                       propensities=np.full(n, 1.0 / k)), 1)
    engine = Engine()
    engine.create_campaign(spec)
    with LocalBroker() as broker:
        topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
        create_topics(broker.bootstrap_servers, topics, 1)
        with Publisher(broker.bootstrap_servers, topics) as pub:
            pub.campaign(engine.campaign_record("bench"))
        out = producer(broker.bootstrap_servers)
        # Built before the clock, in the blocks a worker writes (streams.joined).
        for key, value in joined.pack([(e.decision_id, orjson.dumps(e.model_dump(mode="json")))
                                       for e in events]):
            out.send(topics.joined, value, key=key, partition=0)
        out.flush()
        out.close()
        learner = KafkaVWLearner(broker.bootstrap_servers, topics,
                                 checkpoint_interval_ms=10**9)
        t0 = time.perf_counter()
        while learner.learner.counters.records < n:
            learner.step(100)
        learner.checkpoint()
        t_learner = time.perf_counter() - t0
        learner.close()
    ms = [Measurement(BENCH, "REFERENCE VWPolicy.learn_many, same examples", "W1",
                      n / t_direct, "learns/s", n),
          Measurement(BENCH, "VW learner from .joined (consume, validate, learn, checkpoint)",
                      "W1", n / t_learner, "learns/s", n)]
    return ms, [Ratio(BENCH, "VW learner / VWPolicy.learn_many (learns/s)", "W1",
                      t_direct / t_learner)]


if __name__ == "__main__":
    script_main(run)
