"""Checks of a binary decision block's slot columns (``bandit.wire.columns``) in one pass,
with no Python object per decision."""

from __future__ import annotations

import numpy as np
from numba import njit

_REPEATS = 4  # distinct vector texts remembered per slot, to compare the other rows with


@njit(cache=True)
def slot_fits(arms, k, propensity, ends, data, out):
    """Whether one slot's columns of n decisions hold: arms (n,) int32 each in 0..k-1,
    propensity (n,) float64 each in (0, 1], and the vector texts data (m,) uint8, row i's
    ending at ends (n,) uint32 where row i+1's starts (row 0's at 0, the last's at m), each
    at least 2 bytes, ``{`` first and ``}`` last, and no byte below 0x20 in data.

    Fills out (4, n) int64: the arms, the rows' starts and ends, and 1 for the rows whose
    text must be parsed as JSON: those not equal, byte for byte, to an earlier row's text
    that is parsed (the first few distinct texts are remembered for the comparison; the
    rows of a block mostly repeat a few vectors). False as soon as something does not hold
    (out is then partly filled)."""
    n = arms.shape[0]
    m = data.shape[0]
    for i in range(n):
        if arms[i] < 0 or arms[i] >= k:
            return False
        if not (propensity[i] > 0.0 and propensity[i] <= 1.0):  # NaN too
            return False
        out[0, i] = arms[i]
    low = np.uint8(0xFF)
    for b in range(m):
        low = min(low, data[b])
    if low < 0x20:
        return False
    start = 0
    known_start = np.zeros(_REPEATS, dtype=np.int64)
    known_width = np.zeros(_REPEATS, dtype=np.int64)
    known = 0
    for i in range(n):
        end = int(ends[i])
        if end <= start or end > m or data[start] != 0x7B or data[end - 1] != 0x7D:
            return False
        out[1, i] = start
        out[2, i] = end
        width = end - start
        parse = True
        for r in range(known):
            if known_width[r] == width:
                x = data[known_start[r]:known_start[r] + width]
                y = data[start:end]
                equal = 0
                for j in range(width):  # a count, not an early exit: the loop is vectorized
                    equal += x[j] == y[j]
                if equal == width:
                    parse = False
                    break
        if parse and known < _REPEATS:
            known_start[known] = start
            known_width[known] = width
            known += 1
        out[3, i] = parse
        start = end
    return start == m
