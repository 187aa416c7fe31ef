"""The binary decision block (``cmab.decisions/3``, and ``/2`` still read; bandit.wire.columns):
it holds exactly the decisions of the text lines it replaces, never carries a consent-less
decision's context, and is never laxer than the text blocks it replaces: any damage is refused
with a reason (InvalidInputError), and whatever it accepts, the text path accepts line by
line."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine.decisionlog import DecisionLog
from bandit.errors import InvalidInputError
from bandit.wire import columns
from streams.codec import decode_decisions
from tests import streamdata

S = streamdata.make(60, seed=5)
LOG = DecisionLog.concat(S.logs)
BLOCK = LOG.block()
_HEAD = len(BLOCK) - len(BLOCK.split(b"\n", 1)[1])


def _body(value: bytes) -> columns.Block3:
    return msgspec.msgpack.decode(value[_HEAD:], type=columns.Block3)


def _with(n: int, block: columns.Block3 | columns.Block) -> bytes:
    if isinstance(block, columns.Block):
        return columns.NAME_2 + b" %d\n" % n + msgspec.msgpack.encode(block)
    return columns.write(block, n)


def _v2(value: bytes) -> columns.Block:
    """A ``cmab.decisions/3`` block as ``cmab.decisions/2`` stored it: each decision's
    vector text in full."""
    block = _body(value)
    slots = []
    for s in block.slots:
        ends = np.frombuffer(s.text_ends, dtype="<u4").astype(np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        texts = [s.texts[starts[i]:ends[i]] for i in np.frombuffer(s.vector, dtype="<u4")]
        slots.append(columns.Slot(s.name, s.arm_ids, s.arms, s.propensity, b"".join(texts),
                                  np.cumsum(list(map(len, texts))).astype("<u4").tobytes()))
    read = columns.read(value)
    given = np.flatnonzero(read.consent).tolist()
    private = orjson.dumps([{"context": read.contexts[i], "segments": read.segments[i]}
                            for i in given]) if block.private is not None else None
    return columns.Block(block.campaign, block.ts, block.model_version, block.ids,
                         block.subjects, block.holdout, slots, private)


BLOCK_2 = _with(len(LOG), _v2(BLOCK))


def test_a_block_keeps_each_distinct_vector_once_and_a_v2_block_reads_the_same():
    block = _body(BLOCK)
    for s, mine in zip(block.slots, LOG.slots, strict=True):
        vector = np.frombuffer(s.vector, dtype="<u4")
        assert sorted(set(vector.tolist())) == list(range(len(np.frombuffer(s.text_ends,
                                                                             dtype="<u4"))))
        assert len(set(vector.tolist())) < len(LOG) and mine.slot == s.name
    assert len(BLOCK) < len(BLOCK_2)
    assert DecisionLog.of_block(columns.read(BLOCK_2)).lines() == [
        line for _, line in S.decisions]


def test_a_block_holds_the_lines_it_replaces_and_no_consent_less_context():
    back = DecisionLog.of_block(columns.read(BLOCK))
    assert back.lines() == [line for _, line in S.decisions]
    assert back.logged() == LOG.decisions()
    gone = [d for d, given in S.consent.items() if not given]
    assert gone
    for d in back.logged():
        if d.decision_id in gone:
            assert d.context is None and d.segments == {}
    # The context travels in columns, a row per consenting decision: nothing names a
    # consent-less one.
    private = _body(BLOCK).private
    assert private is not None
    assert len(np.frombuffer(private.shape, dtype="<u4")) == sum(S.consent.values())
    assert len(msgspec.json.decode(_v2(BLOCK).private or b"[]")) == sum(S.consent.values())


def test_blocks_are_cut_by_partition_count_and_size():
    made = LOG.blocks(3, max_bytes=4000, max_examples=7)
    for p, records in made.items():
        for key, value in records:
            cols = columns.read(value)
            assert 1 <= len(cols) <= 7 and key == cols.decision_ids[0].encode()
            assert len(value) <= 4000 or len(cols) == 1
            assert set(streamdata.partition_of(cols.decision_ids, 3).tolist()) == {p}
    order = [d for records in made.values() for _, v in records for d in columns.read(v)
             .decision_ids]
    assert sorted(order) == sorted(d for d, _ in S.decisions)


def _refused(value: bytes | None, *words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        columns.read(value)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("version", [3, 2])
def test_damage_is_refused_with_its_reason(version):
    block: columns.Block3 | columns.Block = _body(BLOCK) if version == 3 else _v2(BLOCK)
    n = len(LOG)
    slot = block.slots[0]
    _refused(None, "no 'cmab.decisions/3' header")
    _refused(b"cmab.decisions/%d x\n" % version, "count")
    _refused(BLOCK[:-3], "damaged")
    _refused(_with(n + 1, block), "ts: expected 61 values")
    bad = np.frombuffer(slot.propensity, dtype="<f8").copy()
    bad[4] = np.nan
    _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
        slot, propensity=bad.tobytes())] + block.slots[1:])), "decision 5", "propensity")
    arms = np.frombuffer(slot.arms, dtype="<i4").copy()
    arms[2] = len(slot.arm_ids)
    _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
        slot, arms=arms.tobytes())] + block.slots[1:])), "decision 3", "arm index")
    _refused(_with(n, msgspec.structs.replace(block, campaign="-x")), "name pattern")
    ts = np.frombuffer(block.ts, dtype="<i8").copy()
    ts[0] = -1
    _refused(_with(n, msgspec.structs.replace(block, ts=ts.tobytes())), "decision 1", "ts")
    # One context more than decisions made with consent: it would belong to one without.
    if isinstance(block, columns.Block):
        extra = block.private[:-1] + b',{"context":{"engagement":1.0},"segments":{}}]'
        _refused(_with(n, msgspec.structs.replace(block, private=extra)), "one per decision made")
    else:
        private = block.private
        _refused(_with(n, msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shape=private.shape + private.shape[:4]))), "shape: expected")
        # A shape index out of range names the decision by its number in the block (the
        # first consenting one after a decision without consent: its place among the
        # consenting ones is another number).
        given = np.flatnonzero(LOG.consent)
        k = int(np.flatnonzero(given != np.arange(len(given)))[0])
        shape = np.frombuffer(private.shape, dtype="<u4").copy()
        shape[k] = len(private.shapes)
        _refused(_with(n, msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shape=shape.tobytes()))), f"decision {int(given[k]) + 1}: context and")
        numbers = np.frombuffer(private.shapes[0].numbers, dtype="<f8").copy()
        numbers[1] = np.inf
        _refused(_with(n, msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shapes=[msgspec.structs.replace(private.shapes[0], numbers=numbers
                                                     .tobytes()), *private.shapes[1:]]))),
            "shape 1: numbers: expected finite")
        labels = np.frombuffer(private.shapes[0].labels, dtype="<u4").copy()
        labels[0] = len(private.names)
        _refused(_with(n, msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shapes=[msgspec.structs.replace(private.shapes[0], labels=labels
                                                     .tobytes()), *private.shapes[1:]]))),
            "shape 1: labels: expected indices below")
        _refused(_with(n, msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shapes=[msgspec.structs.replace(private.shapes[0], strings=b"\x02" * len(
                private.shapes[0].keys)), *private.shapes[1:]]))), "shape 1: expected distinct")
    text, ends_field = ("vectors", "ends") if version == 2 else ("texts", "text_ends")
    texts = getattr(slot, text).replace(b":", b";", 1)
    _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
        slot, **{text: texts})] + block.slots[1:])), "probabilities")
    texts = getattr(slot, text).replace(b",", b",\n", 1)
    ends = np.frombuffer(getattr(slot, ends_field), dtype="<u4") + 1
    _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
        slot, **{text: texts, ends_field: ends.astype("<u4").tobytes()})] + block.slots[1:])),
        "probabilities")
    if version == 3:
        vector = np.frombuffer(slot.vector, dtype="<u4").copy()
        vector[6] = len(ends)
        _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
            slot, vector=vector.tobytes())] + block.slots[1:])), "decision 7", "vector")
        _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
            slot, vector=slot.vector[:-4])] + block.slots[1:])), "vector: expected 60 values")
        _refused(_with(n, msgspec.structs.replace(block, slots=[msgspec.structs.replace(
            slot, text_ends=b"")] + block.slots[1:])), "text_ends")


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from([BLOCK, BLOCK_2]))
def test_damaged_bytes_are_refused_or_hold_only_valid_decisions(data, block):
    """Any byte of a block changed, or the block cut: refused with InvalidInputError, or every
    decision it holds is one the text path accepts as the same decision (its lines decoded as
    the worker decodes cmab.decisions/1, which reads a probability vector's names and numbers
    where it uses it as a dict)."""
    value = bytearray(block)
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            value[data.draw(st.integers(0, len(value) - 1))] = data.draw(st.integers(0, 255))
    else:
        value = value[:data.draw(st.integers(0, len(value) - 1))]
    try:
        read = columns.read(bytes(value))
    except InvalidInputError:
        return
    log = DecisionLog.of_block(read)
    assert decode_decisions(log.lines()) == log.logged()


def _slot_rows(rows: list[bytes], version: int) -> bytes:
    """BLOCK with slot 0's first vector texts replaced by ``rows`` (the others kept): in a
    ``/3`` block each row its own text."""
    v2 = _v2(BLOCK)
    slot = v2.slots[0]
    ends = np.frombuffer(slot.ends, dtype="<u4").astype(np.int64)
    starts = np.concatenate(([0], ends[:-1]))
    texts = rows + [slot.vectors[a:b] for a, b in zip(starts[len(rows):], ends[len(rows):],
                                                      strict=True)]
    ends = np.cumsum([len(t) for t in texts]).astype("<u4").tobytes()
    if version == 2:
        return _with(len(LOG), msgspec.structs.replace(v2, slots=[msgspec.structs.replace(
            slot, vectors=b"".join(texts), ends=ends)] + v2.slots[1:]))
    block = _body(BLOCK)
    return _with(len(LOG), msgspec.structs.replace(block, slots=[msgspec.structs.replace(
        block.slots[0], texts=b"".join(texts), text_ends=ends,
        vector=np.arange(len(LOG)).astype("<u4").tobytes())] + block.slots[1:]))


@pytest.mark.parametrize("version", [3, 2])
@pytest.mark.parametrize("rows", [
    # Back to back with commas they parse into as many values as rows, but rows 1 and 2 are
    # no JSON objects (a string spans the boundary) and row 3 is two.
    [b'{"a":"}', b'{"}', b"{},{}"],
    # A damaged row after more distinct texts than the rows are compared with.
    [b'{"a":0.5}', b'{"b":0.5}', b'{"c":0.5}', b'{"d":0.5}', b'{"e":0.5}', b'{"a":0.5,}'],
    [b'{"a":0.5}'] * 9 + [b'{"a":0.5 }', b'{"a":0.5x}'],
])
def test_each_probability_vector_must_be_a_json_object(rows, version):
    _refused(_slot_rows(rows, version), "probabilities: expected a JSON object each")


@pytest.mark.parametrize("version", [3, 2])
def test_repeated_probability_vectors_are_read_as_written(version):
    rows = [b'{"a":0.5}', b'{"a":0.25,"b":0.75}'] * 5 + [b'{"a":1.0}']
    read = columns.read(_slot_rows(rows, version)).slots[0]
    assert [read.vectors[a:b]
            for a, b in zip(read.starts[:11], read.ends[:11], strict=True)] == rows


@pytest.mark.parametrize(("key", "words"), [
    ("k" * 65, "Expected `str` of length <= 64"),
    ("", "Expected `str` of length >= 1"),
    ("-x", "context or segment key: expected the name pattern"),
])
@pytest.mark.parametrize("version", [3, 2])
def test_context_and_segment_keys_are_refused_with_the_contract_s_reason(key, words, version):
    if version == 2:
        block = _v2(BLOCK)
        private = block.private.replace(b'"segments":{', b'"segments":{"' + key.encode()
                                        + b'":"v",', 1)
        _refused(_with(len(LOG), msgspec.structs.replace(block, private=private)),
                 "context and segments: " + words if key[:1] != "-" else words)
        return
    block3 = _body(BLOCK)
    shapes = block3.private.shapes
    bad = msgspec.structs.replace(shapes[0], segments=[key, *shapes[0].segments[1:]])
    _refused(_with(len(LOG), msgspec.structs.replace(block3, private=msgspec.structs.replace(
        block3.private, shapes=[bad, *shapes[1:]]))), words)


_KEYS = st.sampled_from(["a", "b", "tenure", "plan", "zone"])
_VALUES = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.sampled_from(["pro", "free", "x" * 128, "ü"]))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_contexts_and_segments_of_any_shapes_are_read_back_as_written(data):
    """Consenting decisions of mixed shapes (no context, keys in any order, a key holding a
    number in one decision and a label in another, segments or none) travel as columns by
    shape and read back as the same dicts, in the same key order, with the same lines."""
    given = LOG.consent.tolist()
    contexts = [data.draw(st.none() | st.dictionaries(_KEYS, _VALUES, max_size=4))
                if c else None for c in given]
    segments = [data.draw(st.dictionaries(_KEYS, st.sampled_from(["eu", "us"]), max_size=2))
                if c else {} for c in given]
    log = dataclasses.replace(LOG, contexts=contexts, segments=segments)
    read = columns.read(log.block())
    assert list(read.contexts) == contexts and list(read.segments) == segments
    assert DecisionLog.of_block(read).lines() == log.lines()
