"""Kernels of the report tallies: rows grouped by a small integer code, in one pass each.

Pure functions over C-contiguous int64 / float64 arrays; outputs go into caller-owned arrays
and are added to. ``codes`` (n,) are group indices in 0..size-1. Rewards add to a group's sums
in row order, one row at a time (no fastmath: no fused multiply-add, no reordering), so every
float sum is the one an event-at-a-time loop makes, however the rows were batched; counts are
integers and exact.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def groups(codes, counts, first):
    """Rows per group and each group's first row: counts (size,) += rows of the group;
    first (size,) set to the row of the group's first appearance where it is still >= n."""
    n = codes.shape[0]
    for i in range(n):
        k = codes[i]
        if first[k] >= n:
            first[k] = i
        counts[k] += 1


@njit(cache=True)
def reward_sums(codes, rewards, total, squares):
    """total[k] += r and squares[k] += r * r for each row's group k and reward r, in row
    order (what ``np.add.at`` adds, unbuffered)."""
    for i in range(codes.shape[0]):
        k = codes[i]
        r = rewards[i]
        total[k] += r
        squares[k] += r * r


@njit(cache=True)
def outcome_sums(codes, outcomes, rows, reached, events):
    """Per group and outcome type: reached (size, K) += rows with a nonzero count, events
    (size, K) += the counts; code i counts row rows[i] of outcomes (m, K) int64 >= 0, so a
    subset of the rows needs no copy of them."""
    K = outcomes.shape[1]
    for i in range(codes.shape[0]):
        k = codes[i]
        r = rows[i]
        for t in range(K):
            c = outcomes[r, t]
            if c != 0:
                reached[k, t] += 1
                events[k, t] += c
