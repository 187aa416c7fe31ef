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


_M32 = 0xFFFFFFFF
_MIX = 0x5BD1E995  # murmur2's: a product of it and 32 bits fits in int64, so nothing overflows


@njit(cache=True, inline="always")
def _word(data, p):
    """The 4 bytes of data at p, as a little-endian number."""
    return (np.int64(data[p]) | np.int64(data[p + 1]) << 8 | np.int64(data[p + 2]) << 16
            | np.int64(data[p + 3]) << 24)


@njit(cache=True, inline="always")
def _same(data, a, b, width):
    """Whether data[a:a + width] and data[b:b + width] are equal."""
    x, y = data[a:a + width], data[b:b + width]
    for t in range(width):  # noqa: SIM110 (a loop Numba compiles, not a generator)
        if x[t] != y[t]:
            return False
    return True


@njit(cache=True)
def first_equal(data, starts, ends, out):
    """Fill out (n,) int64 with, per text i of data (m,) uint8 (at starts[i]:ends[i], starts
    and ends (n,) int64), the first text equal to it byte for byte (i itself if none before
    is): the distinct texts are those with out[i] == i. A text is compared with the one
    before it first (rows mostly repeat it), else looked up in a hash table over the texts'
    bytes, 4 at a time, each equal hash confirmed by a comparison."""
    n = starts.shape[0]
    size = 2
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)
    hashes = np.empty(n, dtype=np.int64)
    for i in range(n):
        a, width = starts[i], ends[i] - starts[i]
        if i and ends[out[i - 1]] - starts[out[i - 1]] == width and _same(
                data, a, starts[out[i - 1]], width):  # as the row before: no hash needed
            out[i] = out[i - 1]
            continue
        h = width & _M32
        k = 0
        while k + 4 <= width:
            h = ((h ^ _word(data, a + k)) * _MIX) & _M32
            h ^= h >> 15
            k += 4
        for t in range(k, width):
            h = ((h ^ np.int64(data[a + t])) * _MIX) & _M32
        hashes[i] = h
        at = h & (size - 1)
        while True:
            j = table[at]
            if j < 0:
                table[at] = i
                out[i] = i
                break
            if hashes[j] == h and ends[j] - starts[j] == width and _same(data, a, starts[j],
                                                                          width):
                out[i] = j
                break
            at = (at + 1) & (size - 1)
