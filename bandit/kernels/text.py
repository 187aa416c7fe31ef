"""Text assembly: rows of JSON built from column texts, with no Python object per row.

A batch's decisions are JSON objects that differ only in their field values. The caller writes
each column's values once (orjson writes a whole float column in one call) into one byte
buffer, and this kernel copies, row after row, the constant pieces of the row's template and
the row's slice of each column.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def interleave(pieces, piece_at, data, starts, ends, out):
    """Fill out (total,) uint8 with n rows; row i is piece 0, column 0's text of row i,
    piece 1, ..., column c-1's text of row i, piece c.

    pieces (p,) uint8 holds the c+1 constant pieces, piece j at piece_at[j]:piece_at[j+1]
    (piece_at (c+2,) int64); data (m,) uint8 holds the column texts, row i of column j at
    starts[i, j]:ends[i, j] (starts, ends (n, c) int64, a row's bounds side by side).
    total = n * p + sum(ends - starts). Returns the number of bytes written."""
    n, c = starts.shape
    pos = 0
    for i in range(n):
        for j in range(c + 1):
            for b in range(piece_at[j], piece_at[j + 1]):
                out[pos] = pieces[b]
                pos += 1
            if j < c:
                for b in range(starts[i, j], ends[i, j]):
                    out[pos] = data[b]
                    pos += 1
    return pos


def row_bounds(blob: np.ndarray, separator: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) (n,) of the n texts of ``blob`` (uint8) that ``separator`` separates;
    none of the texts may contain it."""
    cuts = np.flatnonzero(blob == separator)
    if len(cuts) != n - 1:
        raise ValueError(f"expected {n} texts, found {len(cuts) + 1}")
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    starts[0], ends[-1] = 0, len(blob)
    starts[1:], ends[:-1] = cuts + 1, cuts
    return starts, ends
