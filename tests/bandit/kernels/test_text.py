"""The text kernels: row bounds of separated texts, pieces and columns interleaved in row
order, and the first of equal texts (against its dict twin)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.kernels.text import first_equal, interleave, row_bounds
from tests import reference


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


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.sampled_from([b"", b"{}", b"a", b"ab", b"ba", b'{"x":0.5}']) | st.binary(
    max_size=6), max_size=40), gap=st.binary(max_size=3))
def test_first_equal_names_the_first_text_equal_to_each(texts, gap):
    blob = gap.join(texts)
    starts, ends, at = [], [], 0
    for text in texts:
        starts.append(at)
        ends.append(at + len(text))
        at += len(text) + len(gap)
    data = np.frombuffer(blob, dtype=np.uint8)
    s, e = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
    out = np.empty(len(texts), dtype=np.int64)
    first_equal(data, s, e, out)
    assert out.tolist() == reference.first_equal(data, s, e).tolist()
