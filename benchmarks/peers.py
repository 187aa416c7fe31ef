"""Other libraries doing the same LinUCB-style learn-and-choose loop, for the speedup ratios.

Each runner plays the same workload rows with the same pre-drawn rewards and returns
(events played, seconds). The slow peers stop at a time budget instead of a fixed count so the
whole suite stays within a few minutes; throughput is events / seconds either way. Import errors
surface as None so the suite still runs where a peer is not installed.
"""

from __future__ import annotations

import time
from types import ModuleType

import numpy as np

from benchmarks.workloads import Workload

WARMUP_EVENTS = 100  # a peer's first fit happens here, outside the clock


def _import(name: str) -> ModuleType | None:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def mabwiser_per_event(wl: Workload, n: int, budget_s: float) -> tuple[int, float] | None:
    """MABWiser LinUCB, `predict` then `partial_fit` per event, until n events or budget_s."""
    mab_mod = _import("mabwiser.mab")
    if mab_mod is None:
        return None
    mab = _mabwiser_fit(mab_mod, wl)
    start = WARMUP_EVENTS
    rows = [wl.X[i : i + 1] for i in range(start, start + n)]  # 2-D rows, as MABWiser wants
    R = wl.R
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + budget_s
    for i, x in enumerate(rows):
        arm = mab.predict(x)
        mab.partial_fit([arm], [R[start + i, arm]], x)
        done += 1
        if time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - t0


def mabwiser_batched(wl: Workload, n: int, batch: int = 1000) -> tuple[int, float] | None:
    """MABWiser LinUCB, `predict` on `batch` rows then `partial_fit` on them, for n events."""
    mab_mod = _import("mabwiser.mab")
    if mab_mod is None:
        return None
    mab = _mabwiser_fit(mab_mod, wl)
    start = WARMUP_EVENTS
    n = min(n, wl.n - start) // batch * batch
    t0 = time.perf_counter()
    for s in range(start, start + n, batch):
        Xb = wl.X[s : s + batch]
        arms = np.asarray(mab.predict(Xb), dtype=np.int64)
        mab.partial_fit(arms, wl.rewards(s, arms), Xb)
    return n, time.perf_counter() - t0


def _mabwiser_fit(mab_mod: ModuleType, wl: Workload) -> object:
    rng = np.random.default_rng(7)
    arms = rng.integers(wl.n_arms, size=WARMUP_EVENTS)
    mab = mab_mod.MAB(
        arms=list(range(wl.n_arms)),
        learning_policy=mab_mod.LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0),
        seed=11,
    )
    mab.fit(arms, wl.rewards(0, arms), wl.X[:WARMUP_EVENTS])
    return mab


def vw_per_event(wl: Workload, n: int, budget_s: float) -> tuple[int, float] | None:
    """Vowpal Wabbit `--cb_explore_adf --squarecb -q UA`: predict, sample, learn per event.

    Text lines are built before the clock (only the chosen action's label line is made inside):
    the timing is VW's parse + predict + learn plus the Python calls, not our string formatting.
    Cost is -reward (VW minimises cost); the float32 pmf is renormalised before sampling.
    """
    vw_mod = _import("vowpalwabbit")
    if vw_mod is None:
        return None
    vw = vw_mod.Workspace("--cb_explore_adf --squarecb --quiet -q UA")
    n = min(n, wl.n)
    shared = [
        "shared |User " + " ".join(f"f{j}:{v:.6g}" for j, v in enumerate(row)) for row in wl.X[:n]
    ]
    actions = [f"|Action a{a}" for a in range(wl.n_arms)]
    U = np.random.default_rng(13).random(n).tolist()
    R = wl.R
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + budget_s
    for i in range(n):
        example = [shared[i], *actions]
        pmf = np.asarray(vw.predict(example), dtype=np.float64)
        cdf = np.cumsum(pmf)
        arm = min(int(np.searchsorted(cdf, U[i] * cdf[-1], side="right")), wl.n_arms - 1)
        prob = pmf[arm] / cdf[-1]
        example[1 + arm] = f"0:{-R[i, arm]}:{prob:.6g} {actions[arm]}"
        vw.learn(example)
        done += 1
        if time.perf_counter() > deadline:
            break
    vw.finish()
    return done, time.perf_counter() - t0
