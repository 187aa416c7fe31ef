"""cmab.joined/2 blocks: the lines read back are Closed.json's lines, byte for byte; caps and
keys are kept; anything but a whole block is refused with a reason."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import closedblocks
from bandit.engine.windows import Closed
from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES
from bandit.wire import joinedcolumns
from streams.blocks import MAX_BLOCK_BYTES, MAX_BLOCK_EXAMPLES

_name = st.text("abz_-.", min_size=1, max_size=5)
_label = st.text(min_size=1, max_size=6)  # any text: the JSON writer escapes it
_vector = st.sampled_from([b'{"a":0.5,"b":0.5}', b'{"a":1.0}', b'{"\\u00e9":0.25,"b":0.75}',
                           b"{}", b'{ "x" : 1 }'])
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_whole = st.integers(0, 10**13).map(float)


@st.composite
def _shape(draw):
    campaign = draw(_name)
    slots = tuple(draw(st.lists(_name, min_size=1, max_size=3, unique=True)))
    context = draw(st.none() | st.lists(st.tuples(_name, st.booleans()), max_size=3,
                                        unique_by=lambda kv: kv[0]).map(tuple))
    segments = tuple(draw(st.lists(_name, max_size=2, unique=True)))
    return campaign, slots, context, segments


@st.composite
def closed_sets(draw):
    """A Closed as the join makes one: rows of a few shapes, wide columns as wide as the
    widest shape and beyond (cells past a row's shape hold leftovers), a names table with
    strings no row uses."""
    shapes = draw(st.lists(_shape(), min_size=1, max_size=3))
    names = draw(st.lists(_label, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(1, 25))
    extra = draw(st.integers(0, 2))
    width = [max(len(s[1]) for s in shapes) + extra, max(len(s[2] or ()) for s in shapes)
             + extra, max(len(s[3]) for s in shapes) + extra]
    shape = np.array(draw(st.lists(st.integers(0, len(shapes) - 1), min_size=n, max_size=n)),
                     dtype=np.int32)
    k = len(names)

    def ints(hi, cols):
        return np.array(draw(st.lists(st.lists(st.integers(0, hi), min_size=cols,
                                               max_size=cols), min_size=n, max_size=n)),
                        dtype=np.int32).reshape(n, cols)

    def floats(strategy, cols):
        return np.array(draw(st.lists(st.lists(strategy, min_size=cols, max_size=cols),
                                      min_size=n, max_size=n)),
                        dtype=np.float64).reshape(n, cols)

    context = floats(_finite, width[1])
    for i, s in enumerate(shape.tolist()):  # string values: an index into names
        for j, (_, is_str) in enumerate(shapes[s][2] or ()):
            if is_str:
                context[i, j] = draw(st.integers(0, k - 1))
    hexes = st.binary(min_size=16, max_size=16).map(bytes.hex)
    return Closed(
        ids=draw(st.lists(hexes, min_size=n, max_size=n)),
        subjects=draw(st.lists(hexes, min_size=n, max_size=n)),
        ts=np.array(draw(st.lists(_whole, min_size=n, max_size=n))), shape=shape,
        holdout=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        wire=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        arm=ints(k - 1, width[0]), propensity=floats(st.floats(1e-9, 1.0), width[0]),
        reward=floats(_finite, width[0]), context=context, segment=ints(k - 1, width[2]),
        names=names, shapes=shapes,
        model_version=np.array(draw(st.lists(_whole, min_size=n, max_size=n))),
        outcomes=ints(3, len(OUTCOME_TYPES)),
        **_vectors([tuple(draw(st.lists(_vector, min_size=len(shapes[s][1]),
                                        max_size=len(shapes[s][1]))))
                    for s in shape.tolist()], width[0]))


def _vectors(rows: list[tuple[bytes, ...]], width: int) -> dict[str, object]:
    """``Closed``'s vector and texts of rows given as per slot the text: each text at its
    own index, even where two are equal (the block keeps equal texts once all the same)."""
    texts = [text for row in rows for text in row]
    vector = np.full((len(rows), width), -1, dtype=np.int32)
    at = 0
    for i, row in enumerate(rows):
        vector[i, :len(row)] = range(at, at + len(row))
        at += len(row)
    return {"vector": vector, "texts": texts}


@settings(max_examples=200, deadline=None)
@given(closed_sets(), st.integers(1, 4000), st.integers(1, 7))
def test_blocks_read_back_as_the_lines_closed_json_writes(closed, max_bytes, max_examples):
    records = closedblocks.blocks(closed, max_bytes=max_bytes, max_examples=max_examples)
    read = [closedblocks.lines(value) for _, value in records]
    assert [line for block in read for line in block] == [line for _, line in closed.json()]
    starts = [sum(map(len, read[:i])) for i in range(len(read))]
    assert [key for key, _ in records] == [closed.ids[i].encode() for i in starts]
    for (_, value), lines in zip(records, read, strict=True):
        assert value.startswith(joinedcolumns.PREFIX + b"%d\n" % len(lines))
        assert len(lines) <= max_examples and (len(value) <= max_bytes or len(lines) == 1)


@settings(max_examples=100, deadline=None)
@given(closed_sets())
def test_a_read_block_is_the_closed_rows_again(closed):
    [(_, value)] = closedblocks.blocks(closed, max_bytes=MAX_BLOCK_BYTES,
                                       max_examples=MAX_BLOCK_EXAMPLES)
    again = closedblocks.read(value)
    assert again.ids == closed.ids and again.subjects == closed.subjects
    assert again.probabilities() == closed.probabilities()
    for column in ("ts", "holdout", "model_version", "outcomes"):
        assert np.array_equal(getattr(again, column), getattr(closed, column))
    assert again.wire.all() and [e.decision_id for e in again.events()] == closed.ids


def test_a_block_holds_each_vector_text_and_string_once():
    vector = b'{"a":0.9,"b":0.1}'
    n = 1000
    closed = Closed(
        ids=[f"{i:032x}" for i in range(n)], subjects=["ab" * 16] * n,
        ts=np.arange(n, dtype=np.float64), shape=np.zeros(n, dtype=np.int32),
        holdout=np.zeros(n, dtype=bool), wire=np.ones(n, dtype=bool),
        arm=np.zeros((n, 1), dtype=np.int32), propensity=np.full((n, 1), 0.9),
        reward=np.zeros((n, 1)), context=np.zeros((n, 0)), segment=np.zeros((n, 0), np.int32),
        names=["a", "b"], shapes=[("weekly", ("subject",), None, ())],
        model_version=np.zeros(n), outcomes=np.zeros((n, len(OUTCOME_TYPES)), np.int32),
        **_vectors([(vector,)] * n, 1))
    [(_, value)] = closedblocks.blocks(closed, max_bytes=MAX_BLOCK_BYTES,
                                       max_examples=MAX_BLOCK_EXAMPLES)
    assert value.count(vector) == 1 and value.count(b"weekly") == 1
    assert len(value) * 2 < sum(len(line) for _, line in closed.json())


def test_keys_that_are_not_lowercase_hex_are_refused_on_writing():
    closed = Closed(
        ids=["AB" * 16], subjects=["ab" * 16], ts=np.zeros(1), shape=np.zeros(1, np.int32),
        holdout=np.zeros(1, bool), wire=np.ones(1, bool), arm=np.zeros((1, 1), np.int32),
        propensity=np.ones((1, 1)), reward=np.zeros((1, 1)), context=np.zeros((1, 0)),
        segment=np.zeros((1, 0), np.int32), names=["a"], shapes=[("w", ("s",), None, ())],
        model_version=np.zeros(1), outcomes=np.zeros((1, len(OUTCOME_TYPES)), np.int32),
        **_vectors([(b'{"a":1.0}',)], 1))
    with pytest.raises(ValueError, match="decision id is not 32 lowercase hex digits"):
        closedblocks.blocks(closed, max_bytes=MAX_BLOCK_BYTES, max_examples=1)


@settings(max_examples=300, deadline=None)
@given(closed_sets(), st.data())
def test_a_damaged_block_gives_lines_or_a_clear_error_never_a_crash(closed, data):
    [(_, value)] = closedblocks.blocks(closed, max_bytes=MAX_BLOCK_BYTES,
                                       max_examples=MAX_BLOCK_EXAMPLES)
    raw = bytearray(value)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    try:
        lines = closedblocks.lines(bytes(raw[:cut]))
    except InvalidInputError as exc:
        assert "joined block" in str(exc)
    else:
        for line in lines:
            assert b"\n" not in line and isinstance(orjson.loads(line), dict)
