"""Other libraries doing the same learn-and-choose loop, for the speedup ratios.

Each peer has a ``prepare`` (untimed: the model built and fitted on ``WARMUP_EVENTS`` uniformly
logged rows, the inputs laid out as the peer wants them) and a ``play`` that the benchmark
times: it plays the workload's rows with the same pre-drawn rewards and returns the events
played. The per-event plays stop at a time budget instead of a fixed count so the whole suite
stays within minutes; a benchmark reads events per second either way.

- MABWiser LinUCB: ``predict`` + ``partial_fit`` per event, or per batch of rows;
- Vowpal Wabbit ``--cb_explore_adf --squarecb -q UA``: predict, sample, learn per event;
- bayesianbandits (``ContextualAgent`` over one ``NormalRegressor`` per arm, its
  ``UpperConfidenceBound`` or ``ThompsonSampling`` policy at defaults): ``pull`` + ``update``
  per event, or ``pull`` on a batch then one ``update`` per arm chosen. Its Thompson policy
  draws one posterior sample per arm per ``pull`` call, so a batch shares one draw (LinTS draws
  per row); its UCB estimates each arm's quantile from posterior samples per call.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.workloads import Workload

WARMUP_EVENTS = 100  # a peer's first fit happens here, outside the clock


def _warmup_arms(wl: Workload) -> np.ndarray:
    return np.random.default_rng(7).integers(wl.n_arms, size=WARMUP_EVENTS)


# -- MABWiser --------------------------------------------------------------------------------


def mabwiser(wl: Workload) -> Any:
    """MABWiser LinUCB (alpha 1, l2 1) fitted on the warm-up rows."""
    from mabwiser.mab import MAB, LearningPolicy

    arms = _warmup_arms(wl)
    mab = MAB(arms=list(range(wl.n_arms)),
              learning_policy=LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0), seed=11)
    mab.fit(arms, wl.rewards(0, arms), wl.X[:WARMUP_EVENTS])
    return mab


def mabwiser_rows(wl: Workload, n: int) -> list[np.ndarray]:
    """n 2-D rows after the warm-up, as MABWiser's per-event calls want them."""
    return [wl.X[i : i + 1] for i in range(WARMUP_EVENTS, WARMUP_EVENTS + n)]


def mabwiser_per_event(mab: Any, rows: list[np.ndarray], wl: Workload, budget_s: float) -> int:
    """``predict`` then ``partial_fit`` per row until the rows or the budget run out."""
    R = wl.R
    deadline = time.perf_counter() + budget_s
    for i, x in enumerate(rows):
        arm = mab.predict(x)
        mab.partial_fit([arm], [R[WARMUP_EVENTS + i, arm]], x)
        if time.perf_counter() > deadline:
            return i + 1
    return len(rows)


def mabwiser_batched(mab: Any, wl: Workload, n: int, batch: int) -> int:
    """``predict`` on ``batch`` rows then ``partial_fit`` on them, for n events (a multiple)."""
    for s in range(WARMUP_EVENTS, WARMUP_EVENTS + n, batch):
        Xb = wl.X[s : s + batch]
        arms = np.asarray(mab.predict(Xb), dtype=np.int64)
        mab.partial_fit(arms, wl.rewards(s, arms), Xb)
    return n


# -- Vowpal Wabbit ---------------------------------------------------------------------------


def vw(wl: Workload, n: int) -> tuple[Any, list[str], list[str], list[float]]:
    """A fresh ``--cb_explore_adf --squarecb -q UA`` workspace and the first n rows as text.

    Text lines are built here, untimed (only the chosen action's label line is made inside the
    play): the timing is VW's parse + predict + learn plus the Python calls, not our string
    formatting.
    """
    from vowpalwabbit import Workspace

    shared = ["shared |User " + " ".join(f"f{j}:{v:.6g}" for j, v in enumerate(row))
              for row in wl.X[:n]]
    actions = [f"|Action a{a}" for a in range(wl.n_arms)]
    U = np.random.default_rng(13).random(n).tolist()
    return Workspace("--cb_explore_adf --squarecb --quiet -q UA"), shared, actions, U


def vw_per_event(ws: Any, shared: list[str], actions: list[str], U: list[float],
                 wl: Workload, budget_s: float) -> int:
    """Predict, sample, learn per row until the rows or the budget run out.

    Cost is -reward (VW minimises cost); the float32 pmf is renormalised before sampling.
    """
    R = wl.R
    deadline = time.perf_counter() + budget_s
    done = len(shared)
    for i in range(len(shared)):
        example = [shared[i], *actions]
        pmf = np.asarray(ws.predict(example), dtype=np.float64)
        cdf = np.cumsum(pmf)
        arm = min(int(np.searchsorted(cdf, U[i] * cdf[-1], side="right")), wl.n_arms - 1)
        prob = pmf[arm] / cdf[-1]
        example[1 + arm] = f"0:{-R[i, arm]}:{prob:.6g} {actions[arm]}"
        ws.learn(example)
        if time.perf_counter() > deadline:
            done = i + 1
            break
    ws.finish()
    return done


# -- bayesianbandits -------------------------------------------------------------------------

BB_POLICIES = ("UCB", "TS")


def bayesianbandits(wl: Workload, policy: str) -> Any:
    """A bayesianbandits ``ContextualAgent``, one ``NormalRegressor(alpha=1, beta=1)`` per arm
    (a ridge of l2 1 with unit noise, LinUCB's and LinTS's model), its ``UpperConfidenceBound``
    ("UCB") or ``ThompsonSampling`` ("TS") policy at defaults, fitted on the warm-up rows."""
    from bayesianbandits import (
        Arm,
        ContextualAgent,
        NormalRegressor,
        ThompsonSampling,
        UpperConfidenceBound,
    )

    chooser = UpperConfidenceBound() if policy == "UCB" else ThompsonSampling()
    agent = ContextualAgent([Arm(a, learner=NormalRegressor(alpha=1.0, beta=1.0))
                             for a in range(wl.n_arms)], chooser, random_seed=11)
    arms = _warmup_arms(wl)
    X, r = wl.X[:WARMUP_EVENTS], wl.rewards(0, arms)
    for a in np.unique(arms).tolist():
        agent.select_for_update(a).update(X[arms == a], r[arms == a])
    return agent


def bayesianbandits_per_event(agent: Any, rows: list[np.ndarray], wl: Workload,
                              budget_s: float) -> int:
    """``pull`` then ``update`` per row (the pulled arm) until the rows or the budget run out."""
    R = wl.R
    deadline = time.perf_counter() + budget_s
    for i, x in enumerate(rows):
        (arm,) = agent.pull(x)
        agent.update(x, R[WARMUP_EVENTS + i, arm : arm + 1])
        if time.perf_counter() > deadline:
            return i + 1
    return len(rows)


def bayesianbandits_batched(agent: Any, wl: Workload, n: int, batch: int) -> int:
    """``pull`` on ``batch`` rows, then one ``update`` per arm chosen, for n events."""
    for s in range(WARMUP_EVENTS, WARMUP_EVENTS + n, batch):
        Xb = wl.X[s : s + batch]
        arms = np.asarray(agent.pull(Xb), dtype=np.int64)
        r = wl.rewards(s, arms)
        for a in np.unique(arms).tolist():
            chosen = arms == a
            agent.select_for_update(a).update(Xb[chosen], r[chosen])
    return n
