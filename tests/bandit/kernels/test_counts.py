"""The report tallies' grouping kernels against their one-row-at-a-time twins."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.kernels import counts
from tests import reference

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 5), finite, st.lists(st.integers(0, 3),
                                                                     min_size=3, max_size=3)),
                     max_size=40),
       start=st.lists(finite, min_size=6, max_size=6))
def test_counting_kernels_match_their_twins(rows, start):
    size = 6
    codes = np.array([k for k, _, _ in rows], dtype=np.int64)
    rewards = np.array([r for _, r, _ in rows], dtype=np.float64)
    outcomes = np.array([o for _, _, o in rows], dtype=np.int64).reshape(len(rows), 3)
    n, first = np.zeros(size, dtype=np.int64), np.full(size, len(rows), dtype=np.int64)
    counts.groups(codes, n, first)
    assert (n.tolist(), first.tolist()) == reference.group_counts(codes.tolist(), size)
    with np.errstate(over="ignore"):  # as Python floats overflow, to inf
        total, squares = np.array(start), np.array(start) ** 2
        want = reference.group_reward_sums(codes.tolist(), rewards.tolist(), total, squares)
        counts.reward_sums(codes, rewards, total, squares)
    # Bit-equal, NaN-safe (squares of huge rewards overflow to inf, inf - inf is NaN).
    assert (list(map(repr, total.tolist())), list(map(repr, squares.tolist()))) == (
        list(map(repr, want[0])), list(map(repr, want[1])))
    reached, events = np.zeros((size, 3), dtype=np.int64), np.zeros((size, 3), dtype=np.int64)
    counts.outcome_sums(codes, outcomes, np.arange(len(rows)), reached, events)
    assert (reached.tolist(), events.tolist()) == reference.group_outcome_sums(
        codes.tolist(), outcomes.tolist(), size, 3)
    # Codes over a subset of the rows, read in place: the subset's sums.
    some = np.arange(len(rows))[::2]
    reached, events = np.zeros((size, 3), dtype=np.int64), np.zeros((size, 3), dtype=np.int64)
    counts.outcome_sums(codes[some], outcomes, some, reached, events)
    assert (reached.tolist(), events.tolist()) == reference.group_outcome_sums(
        codes[some].tolist(), outcomes[some].tolist(), size, 3)
