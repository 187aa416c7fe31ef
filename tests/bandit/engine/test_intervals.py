"""The lift variance clustered by subscriber bucket and the two intervals built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine.intervals import (
    CLUSTERS,
    always_valid_factor,
    always_valid_interval,
    clustered_difference,
    clusters_of,
    fixed_interval,
    rho_for,
)
from bandit.engine.tally import _Clustered, clustered_lift
from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES
from tests import reference


def _bucket_sums(groups, outcomes, clusters):
    n = [np.bincount(clusters[groups == k], minlength=CLUSTERS) for k in (0, 1)]
    y = [np.bincount(clusters[groups == k], weights=outcomes[groups == k], minlength=CLUSTERS)
         for k in (0, 1)]
    return n, y


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(4, 300), st.integers(2, 40))
def test_clustered_difference_matches_the_twin(seed, n, clusters):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 2, n)
    groups[:2] = [0, 1]
    outcomes = rng.poisson(0.7, n).astype(float)
    labels = rng.integers(0, clusters, n)
    labels[:2] = [0, 1]
    (n0, n1), (y0, y1) = _bucket_sums(groups, outcomes, labels)
    got = clustered_difference(n1, y1, n0, y0)
    assert got is not None
    want = reference.clustered_difference(groups, outcomes, labels)
    assert math.isclose(got[0], want[0], rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(got[1], want[1], rel_tol=1e-9, abs_tol=1e-15)


def test_one_decision_per_cluster_is_the_independent_variance():
    # With one decision per cluster the sandwich is the two binomial variances (times G/(G-1)).
    rng = np.random.default_rng(1)
    groups = np.repeat([0, 1], 500)
    outcomes = (rng.random(1000) < np.where(groups == 1, 0.3, 0.2)).astype(float)
    est, var = reference.clustered_difference(groups, outcomes, np.arange(1000))
    p1, p0 = outcomes[500:].mean(), outcomes[:500].mean()
    assert math.isclose(var, 1000 / 999 * (p1 * (1 - p1) / 500 + p0 * (1 - p0) / 500))
    assert math.isclose(est, p1 - p0)


def test_no_interval_without_both_groups_or_two_clusters():
    zeros, ones = np.zeros(CLUSTERS), np.zeros(CLUSTERS)
    ones[3] = 5
    assert clustered_difference(ones, ones, zeros, zeros) is None
    assert clustered_difference(ones, ones, ones, zeros) is None  # one cluster


def test_clusters_agree_for_hex_and_bytes_keys():
    keys = [bytes(range(i, i + 16)) for i in range(50)]
    got = clusters_of([k.hex() for k in keys])
    assert np.array_equal(got, clusters_of(keys))
    assert ((got >= 0) & (got < CLUSTERS)).all()


def test_always_valid_is_wider_than_fixed_at_every_look():
    rho = rho_for(10_000)
    for t in (10, 100, 1_000, 10_000, 100_000, 10_000_000):
        assert always_valid_factor(t, rho) > 1.959963984540054
    a, f = always_valid_interval(0.1, 1e-4, 10_000, rho), fixed_interval(0.1, 1e-4)
    assert a.low < f.low < 0.1 < f.high < a.high


def test_always_valid_covers_a_running_mean_at_every_look():
    # 400 seeded streams of 5,000 standard normals, read after every observation: the running
    # mean's confidence sequence misses 0 somewhere in at most 5% of them (about 1 - 0.95
    # asymptotically; the bound allows the binomial noise of 400 runs).
    rng = np.random.default_rng(7)
    t = np.arange(1, 5_001)
    rho = rho_for(1_000)
    factor = np.array([always_valid_factor(k, rho) for k in t])
    misses = 0
    for _ in range(400):
        x = rng.standard_normal(t.size)
        mean = np.cumsum(x) / t
        misses += bool((np.abs(mean) > factor * np.sqrt(1.0 / t)).any())
    assert misses <= 0.05 * 400


def test_clustered_tally_lift_is_the_difference_of_its_buckets():
    rng = np.random.default_rng(3)
    keys = [rng.bytes(16) for _ in range(400)]
    holdout = rng.random(400) < 0.3
    outcomes = rng.poisson(0.2, (400, len(OUTCOME_TYPES)))
    rewards = rng.random(400)
    groups = [_Clustered(), _Clustered()]
    for g in (0, 1):
        at = holdout == bool(g)
        groups[g].add(clusters_of([k for k, h in zip(keys, at, strict=True) if h]),
                      outcomes[at], rewards[at])
    total = groups[0] + groups[1]
    assert total.n.sum() == 400 and total.reached.sum() == (outcomes > 0).sum()
    click = OUTCOME_TYPES.index("click")
    got = clustered_lift(groups[0], groups[1], click, rho_for(1_000))
    assert got is not None
    fixed, valid = got
    clicked = (outcomes[:, click] > 0).astype(float)
    want = reference.clustered_difference((~holdout).astype(int), clicked, clusters_of(keys))
    assert math.isclose(fixed.estimate, want[0], rel_tol=1e-12)
    assert math.isclose((fixed.high - fixed.low) / 2, 1.959963984540054 * math.sqrt(want[1]),
                        rel_tol=1e-9)
    assert valid.low < fixed.low and valid.high > fixed.high
    reward = clustered_lift(groups[0], groups[1], None, rho_for(1_000))
    assert reward is not None
    assert math.isclose(reward[0].estimate, rewards[~holdout].mean() - rewards[holdout].mean())


def test_subject_keys_of_another_shape_are_refused():
    with pytest.raises(InvalidInputError, match="32 hex digits"):
        clusters_of(["0" * 31])
    with pytest.raises(InvalidInputError, match="32 hex digits"):
        clusters_of(["g" * 32])
    with pytest.raises(InvalidInputError, match="16 bytes"):
        clusters_of([b"\0" * 15, b"\0" * 17])
    assert clusters_of([]).shape == (0,)


def test_rate_lifts_are_cut_to_minus_one_to_one_and_reward_lifts_are_not():
    # Two decisions a group, early (t = 4 of a 100,000 horizon): the always-valid interval
    # is far wider than any rate difference can be.
    groups = [_Clustered(), _Clustered()]
    outcomes = np.zeros((2, len(OUTCOME_TYPES)), dtype=np.int64)
    outcomes[0] = 1
    for g in groups:
        g.add(np.array([1, 2]), outcomes, np.array([5.0, 0.0]))
    groups[1].add(np.array([3]), outcomes[:1], np.array([5.0]))
    click = OUTCOME_TYPES.index("click")
    got = clustered_lift(groups[0], groups[1], click, rho_for(100_000))
    reward = clustered_lift(groups[0], groups[1], None, rho_for(100_000))
    assert got is not None and reward is not None
    assert (got[1].low, got[1].high) == (-1.0, 1.0)
    assert reward[1].low < -5 and reward[1].high > 5
