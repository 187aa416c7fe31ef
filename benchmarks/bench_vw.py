"""VWPolicy beside the Numba LinUCB: decisions/s and learns/s at W1 and W2, in the same run.

Both policies first learn the same uniformly logged events (untimed). Decisions are
``choose_many(X, with_propensities=True)`` on one batch; learns are ``learn_many`` on another
(VW at the logged propensity 1/k). The ratios are LinUCB throughput / VW throughput: how many
times faster the Numba policy is (VW pays a text line and a native call per row).

Run on its own: ``python -m benchmarks.bench_vw [--quick]``.
"""

from __future__ import annotations

import numpy as np

from bandit.policies import LinUCB, Policy, VWPolicy
from benchmarks import workloads
from benchmarks.bench_learning import ALPHA, EPSILON, L2
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main

BENCH = "vw"
N_TRAIN = 5_000


def _policies(k: int, d: int) -> dict[str, Policy]:
    return {"LinUCB": LinUCB(k, d, alpha=ALPHA, l2=L2, epsilon=EPSILON, rng=3),
            "VW squarecb": VWPolicy(d, n_arms=k, rng=3)}


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
            t, _ = best_time(lambda: None,
                             lambda _, pol=policy: pol.choose_many(Xd, with_propensities=True),
                             repeat)
            rate[label, "decide"] = n / t
            ms.append(Measurement(BENCH, f"{label} choose_many + propensities", name, n / t,
                                  "decisions/s", n))
            # Learning changes the state, so each repeat learns the same rows into a copy.
            logged = {"propensities": p} if vw else {}
            t, _ = best_time(lambda pol=policy: type(pol).from_state(pol.state(), rng=0),
                             lambda fresh: fresh.learn_many(arms, Xl, rewards, **logged), repeat)
            rate[label, "learn"] = n / t
            ms.append(Measurement(BENCH, f"{label} learn_many", name, n / t, "learns/s", n))
        for verb in ("decide", "learn"):
            rs.append(Ratio(BENCH, f"LinUCB / VW squarecb {verb} throughput", name,
                            rate["LinUCB", verb] / rate["VW squarecb", verb]))
    return ms, rs


if __name__ == "__main__":
    script_main(run)
