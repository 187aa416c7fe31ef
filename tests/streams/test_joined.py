"""The .joined block format: pack then read back is the identity, blocks respect their caps,
and anything else on the topic is refused with a reason, never a crash."""

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.errors import InvalidInputError
from streams.blocks import JOINED
from streams.joined import examples, pack

FORMAT = JOINED.name

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
_items = st.lists(st.tuples(st.text(min_size=1, max_size=40), _json.map(orjson.dumps)),
                  max_size=60)


@settings(max_examples=300, deadline=None)
@given(_items, st.integers(1, 3000), st.integers(1, 70))
def test_pack_then_examples_is_the_identity_and_blocks_keep_their_caps(items, max_bytes,
                                                                      max_examples):
    blocks = pack(items, max_bytes=max_bytes, max_examples=max_examples)
    read = [examples(value) for _, value in blocks]
    assert [e for block in read for e in block] == [value for _, value in items]
    starts = [sum(map(len, read[:i])) for i in range(len(read))]
    assert [key for key, _ in blocks] == [items[i][0].encode() for i in starts]
    for (_, value), lines in zip(blocks, read, strict=True):
        assert value.startswith(FORMAT) and value.endswith(b"\n")
        assert 1 <= len(lines) <= max_examples
        assert len(value) <= max_bytes or len(lines) == 1  # only a lone example goes over
    # Greedy: the next example would not have fitted in the block before it.
    for i, lines in enumerate(read[:-1]):
        grown = pack(items[starts[i]:starts[i + 1] + 1], max_bytes=max_bytes,
                     max_examples=max_examples)
        assert len(grown) == 2 and examples(grown[0][1]) == lines


def test_no_items_no_records_and_bad_items_or_caps_are_refused():
    assert pack([]) == []
    with pytest.raises(InvalidInputError, match="joined example 'd2': expected one line"):
        pack([("d1", b"{}"), ("d2", b'{\n"a": 1}')])
    with pytest.raises(InvalidInputError, match="joined example 'd1'"):
        pack([("d1", b"")])
    with pytest.raises(InvalidInputError, match="max_bytes=0"):
        pack([("d1", b"{}")], max_bytes=0)


GOOD = pack([("d1", b'{"a":1}'), ("d2", b'{"a":2}')])[0][1]


@pytest.mark.parametrize(("value", "reason"), [
    (None, "not a joined block: no 'cmab.joined/2' header (nor '/1')"),
    (b"", "not a joined block: no 'cmab.joined/2' header (nor '/1')"),
    (b'{"decision_id": "d1"}', "not a joined block: no 'cmab.joined/2' header (nor '/1')"),
    (b"cmab.joined/3 1\n{}\n", "not a joined block: no 'cmab.joined/2' header (nor '/1')"),
    (b"cmab.joined/2 1\n{}\n", "damaged joined block: "),
    (b"cmab.joined/1 2", "does not end in a count and a newline"),
    (b"cmab.joined/1 -1\n{}\n", "does not end in a count and a newline"),
    (b"cmab.joined/1 1_0\n{}\n", "does not end in a count and a newline"),
    (b"cmab.joined/1 99999999999\n{}\n", "does not end in a count and a newline"),
    (b"cmab.joined/1 1\n", "header says 1 examples, the body is empty"),
    (GOOD[:-1], "its last line is cut"),
    (GOOD.replace(b" 2\n", b" 3\n"), "header says 3 examples, found 2"),
    (GOOD + b'{"a":3}\n', "header says 2 examples, found 3"),
])
def test_anything_but_a_whole_block_is_refused_with_a_reason(value, reason):
    with pytest.raises(InvalidInputError, match=re.escape(reason)):
        examples(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: FORMAT + b" " + b)
       | st.binary(max_size=300).map(lambda b: b"cmab.joined/2 " + b))
def test_garbage_values_give_examples_or_a_clear_error_never_a_crash(value):
    try:
        lines = examples(value)
    except InvalidInputError as exc:
        assert "joined block" in str(exc)
    else:  # a value that happens to be a well-formed block: its lines, as counted
        assert value.startswith(FORMAT) and value.count(b"\n") == len(lines) + 1


_line = st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.none()
                | st.lists(_line, min_size=1, max_size=5).map(
                    lambda lines: pack([(str(i), v) for i, v in enumerate(lines)])[0][1]),
                max_size=8))
def test_the_vw_learner_dead_letters_garbage_on_joined_and_carries_on(values):
    from bandit.engine import Engine
    from streams.records import Record
    from streams.vw_learner import JOINED, VWLearner

    learner = VWLearner(Engine())  # no campaign: every example is refused too
    letters = learner.process([Record(JOINED, 1, i, v) for i, v in enumerate(values)])
    want = []
    for i, v in enumerate(values):
        try:
            want += [(f"joined/1/{i}/{j}", line) for j, line in enumerate(examples(v))]
        except InvalidInputError:
            want.append((f"joined/1/{i}", v))
    assert [(d.source, d.value) for d in letters] == want
    assert all(d.reason for d in letters) and learner.offsets == ({1: len(values)} if values
                                                                  else {})
    assert learner.counters.dead_letters == len(letters) and learner.counters.learned == 0
