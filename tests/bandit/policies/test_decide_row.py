"""``Policy.decide_row``, the fused single-row decision, against its straightforward twin: the
batch calls ``choose_many(x[None], eligible, draws, with_propensities=True)`` and
``expectation`` of the same row, bit for bit (and ``decide_row_vector``'s vector against
``propensities`` of the row), for every policy kind, through state changes
that must invalidate what the fused paths keep (learning, one event at a time or in batches,
decay, arms added and retired, merges, snapshots)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.kernels import single
from bandit.policies import (
    Bart,
    BetaTS,
    EpsilonGreedy,
    HybridLinUCB,
    LinTS,
    LinUCB,
    Policy,
    VWPolicy,
    from_state,
)

K, D = 4, 3
ARM_FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])  # arms 0, 3 alike

FACTORIES = {
    "lin_ucb": lambda: LinUCB(K, D, alpha=0.8, epsilon=0.1, rng=1),
    "lin_ucb_no_floor": lambda: LinUCB(K, D, alpha=0.0, epsilon=0.0, rng=1),
    "lin_ts": lambda: LinTS(K, D, v=0.4, rng=1),
    "epsilon_greedy": lambda: EpsilonGreedy(K, D, epsilon=0.2, rng=1),
    "hybrid_lin_ucb": lambda: HybridLinUCB(D, ARM_FEATURES, alpha=0.5, rng=1),
    "beta_ts": lambda: BetaTS(K, dim=D, rng=1),
    "beta_ts_decay": lambda: BetaTS(K, dim=D, half_life_ms=1000.0, rng=1),
    "bart": lambda: Bart(D, ARM_FEATURES, epsilon=0.2, rng=1),
    "bart_greedy": lambda: Bart(D, ARM_FEATURES, epsilon=0.0, half_life_ms=500.0, rng=1),
}
# Policies that keep something between decisions: checked against a fresh copy of their state
# as well, so a stale cache cannot hide behind the batch path reading the same cache.
CACHING = {"beta_ts", "beta_ts_decay", "bart", "bart_greedy"}


def batch_twin(policy: Policy, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray):
    X = x[None, :]
    arms, probs = policy.choose_many(X, eligible=mask, draws=u[None, :], with_propensities=True)
    mean, bonus = policy.expectation(X, arms)
    return int(arms[0]), float(probs[0]), float(mean[0]), float(bonus[0])


def check(policy: Policy, kind: str, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray):
    got = policy.decide_row(x, mask, u)
    assert got == batch_twin(policy, x, mask, u)
    if kind in CACHING:
        assert got == batch_twin(from_state(policy.state()), x, mask, u)
    arm, p = got[:2]
    assert policy.active[arm] and (mask is None or mask[arm]) and 0.0 < p <= 1.0
    vector = np.full(policy.n_arms, np.nan)
    assert policy.decide_row_vector(x, mask, u, vector) == got
    assert np.array_equal(vector, policy.propensities(x[None, :], eligible=mask)[0])
    assert vector[arm] == p


def events(seed: int, n: int, k: int):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, D - 1))])
    arms = rng.integers(k, size=n)
    return arms, X, (rng.random(n) < 0.3 + 0.1 * arms / k).astype(float)


changes = st.one_of(
    st.tuples(st.just("none"), st.just(0), st.just(0)),
    st.tuples(st.just("learn_many"), st.integers(0, 2**32 - 1), st.integers(1, 40)),
    st.tuples(st.just("learn_one"), st.integers(0, 2**32 - 1), st.just(1)),
    st.tuples(st.just("add_arm"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(st.just("retire_arm"), st.integers(0, 7), st.just(0)),
    st.tuples(st.just("merge"), st.integers(0, 2**32 - 1), st.integers(1, 20)),
    st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
)
# After every change a decision (twice, with and without an eligibility mask): what a fused
# path kept from the decision before the change must not survive it.
steps = st.lists(st.tuples(changes, st.integers(0, 2**32 - 1)), min_size=1, max_size=12)


def change(policy: Policy, step: str, seed: int, size: int, ts: float) -> tuple[Policy, float]:
    k = policy.n_arms
    if step in ("learn_many", "merge"):
        arms, X, r = events(seed, size, k)
        ts += 100.0 * size
        times = ts + np.arange(size, dtype=float) if policy.half_life_ms else None
        if step == "merge":
            other = from_state(policy.state())
            other.learn_many(arms, X, r, ts_ms=times)
            return policy.merge(other), ts
        policy.learn_many(arms, X, r, ts_ms=times)
    elif step == "learn_one":
        arms, X, r = events(seed, 1, k)
        ts += 10.0
        policy.learn_one(int(arms[0]), X[0], float(r[0]), ts_ms=ts)
    elif step == "add_arm":
        features = ARM_FEATURES[seed] * (1 + size)
        policy.add_arm(features if isinstance(policy, HybridLinUCB | Bart) else None)
    elif step == "retire_arm":
        if seed < k and policy.active[seed] and policy.active.sum() > 1:
            policy.retire_arm(seed)
    elif step == "snapshot":
        return from_state(policy.state()), ts
    return policy, ts


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(FACTORIES)), plan=steps)
def test_decide_row_is_the_batch_calls_of_one_row(kind, plan):
    policy = FACTORIES[kind]()
    ts = 0.0
    for (step, seed, size), decision in plan:
        policy, ts = change(policy, step, seed, size, ts)
        k = policy.n_arms
        rng = np.random.default_rng(decision)
        x = np.concatenate([[1.0], rng.normal(size=D - 1) * rng.choice([0.0, 1.0, 100.0])])
        u = rng.random(2 + k)
        u[rng.random(2 + k) < 0.1] = 0.0  # the edges of the draws: explore, first arm
        mask = rng.random(k) < 0.6
        mask &= policy.active
        mask[np.flatnonzero(policy.active)[rng.integers(policy.active.sum())]] = True
        for eligible in (None, mask, None):
            check(policy, kind, x, eligible, u)


@pytest.mark.parametrize("kind", ["lin_ucb", "lin_ts", "hybrid_lin_ucb", "bart"])
def test_non_finite_row_takes_the_checked_path(kind):
    """A row the engine would never hand over (NaN) gets the batch path's error (Beta TS does
    not read x)."""
    policy = FACTORIES[kind]()
    policy.learn_many(*events(0, 30, K))
    x = np.array([1.0, np.nan, 0.0])
    with pytest.raises(Exception) as batch:
        batch_twin(policy, x, None, np.full(2 + K, 0.5))
    with pytest.raises(type(batch.value), match="NaN or inf"):
        policy.decide_row(x, None, np.full(2 + K, 0.5))


def test_vw_takes_the_batch_calls():
    policy = VWPolicy(D, ARM_FEATURES, exploration="epsilon", epsilon=0.2, rng=1)
    arms, X, r = events(3, 30, K)
    policy.learn_many(arms, X, r, propensities=np.full(30, 1 / K))
    u = np.random.default_rng(4).random(2 + K)
    assert policy.decide_row(X[0], None, u) == batch_twin(policy, X[0], None, u)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 8), d=st.integers(1, 6),
       epsilon=st.sampled_from([0.0, 0.1, 1.0]), alpha=st.sampled_from([0.0, 0.7]))
def test_linear_decide_kernel_against_the_batch_kernels(seed, k, d, epsilon, alpha):
    """The kernel on its own, on raw arrays (ties included: repeated theta rows)."""
    from bandit.kernels import linear

    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(k, d)).round(1)
    theta[rng.random(k) < 0.3] = theta[0]
    L = rng.normal(size=(k, d, d))
    Ainv = np.ascontiguousarray(L @ np.swapaxes(L, 1, 2) + np.eye(d))
    x = rng.normal(size=d)
    mask = rng.random(k) < 0.7
    mask[rng.integers(k)] = True
    u = rng.random(2 + k)
    arms, probs = np.empty(1, dtype=np.int64), np.empty(1)
    linear.choose(theta, Ainv, x[None, :], alpha, np.empty((0, k)), mask[None, :], epsilon,
                  np.ascontiguousarray(u[None, :2]), arms, probs)
    mean, width = np.empty(1), np.empty(1)
    linear.chosen_moments(theta, Ainv, x[None, :], arms, mean, width)
    got = single.linear_decide(theta, Ainv, x, alpha, mask, epsilon, u, 0.5)
    assert got == (arms[0], probs[0], mean[0], 0.5 * width[0])
