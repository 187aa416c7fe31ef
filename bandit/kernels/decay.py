"""Event weights under exponential forgetting (``half_life_ms``), row after row.

The sums are kept as seen from a reference time ``ref``: a row at event time t weighs
2^((t - ref) / half_life). The reference moves only at a row a half-life or more past it, by
whole half-lives, and the sums learned so far are rescaled there, so the reference, the
rescales and every weight are one function of the rows so far, however they were batched.
The first reference is the multiple of the half-life at or below the first row's time: one
grid from epoch 0, whose points are exact for a whole-number half-life (below 2^53 ms), so
rescales and merges are then exact powers of two; otherwise the factor is the one for the
float reference actually reached (a power of two within rounding). Where float time is
coarser than the half-life (whole half-lives cannot land within one of the row), the
reference moves to the row's own time.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def weights(ts, half_life, ref, out, moves, factors):
    """Weigh rows of event times ts (n,) against the reference ``ref`` (NaN: none yet).

    Writes out (n,) each row's weight relative to the reference in force at that row, and for
    each move of the reference the row it happens at (``moves``, (n,) int64) and the factor
    (``factors``, (n,), in [0, 1/2]) that brings the sums learned before that row to the new
    reference. Returns (number of moves, final reference).
    """
    runs = 0
    for i in range(ts.shape[0]):
        t = ts[i]
        if ref != ref:
            grid = np.floor(t / half_life) * half_life
            ref = grid if t - half_life < grid <= t else t
        e = (t - ref) / half_life
        if e >= 1.0:
            moved = ref + np.floor(e) * half_life
            if not t - half_life < moved <= t:
                moved = t
            moves[runs] = i
            factors[runs] = 2.0 ** ((ref - moved) / half_life)
            runs += 1
            ref = moved
            e = (t - ref) / half_life
        out[i] = 2.0**e
    return runs, ref
