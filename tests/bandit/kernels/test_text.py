"""The text kernels: row bounds of separated texts, and pieces and columns interleaved in row
order."""

import numpy as np
import pytest

from bandit.kernels.text import interleave, row_bounds


def test_interleave_puts_pieces_and_columns_in_row_order():
    data = np.frombuffer(b"a,bb,ccc|x|yy|z", dtype=np.uint8)
    s1, e1 = row_bounds(data[:8], ord(","), 3)
    s2, e2 = row_bounds(data[9:], ord("|"), 3)
    starts = np.stack([s1, s2 + 9], axis=1)
    ends = np.stack([e1, e2 + 9], axis=1)
    pieces = np.frombuffer(b"<-=>\n", dtype=np.uint8)
    piece_at = np.array([0, 1, 2, 5], dtype=np.int64)
    out = np.empty(3 * 5 + int((ends - starts).sum()), dtype=np.uint8)
    assert interleave(pieces, piece_at, data, starts, ends, out) == len(out)
    assert out.tobytes() == b"<a-x=>\n<bb-yy=>\n<ccc-z=>\n"
    with pytest.raises(ValueError, match="expected 2 texts, found 3"):
        row_bounds(data[:8], ord(","), 2)
