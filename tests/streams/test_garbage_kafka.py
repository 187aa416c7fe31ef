"""Hypothesis-drawn garbage on real topics, mixed into a valid stream: the worker survives,
every bad record (or bad line of a decision block) reaches the dead-letter topic with its
original bytes, a reason and where it came from, and the valid decisions and events are
learned exactly (bit-equal to a direct batch computation).

Garbage goes to both inputs: on ``.decisions`` records that are no block (bytes, nothing, a
JSON event sent to the wrong topic, a damaged text block, a binary block cut, miscounted or
with a bad propensity, arm, probability vector or a context no consenting decision owns) and
text blocks of valid decisions (repeats of logged ones: counted, never learned twice) with one
bad line (bytes, a JSON that is no decision, non-finite numbers, a bad context, an unknown arm
or campaign); the valid decisions come in binary blocks, as the service writes them; on
``.events``
bytes, nothing, JSON that is no event, non-finite numbers, an unknown campaign, a legacy
impression of an unknown arm, a decision block sent to the wrong topic.

One broker for the module; each example gets its own topic prefix and consumer group."""

import time
import uuid
from collections import Counter
from typing import Any, NamedTuple

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from bandit.wire import columns
from streams.codec import encode
from streams.kafka import reader
from streams.records import DECISIONS, EVENTS
from streams.topics import Topics
from tests import streamdata
from tests.streams.test_worker_kafka import _run_until, _setup, _write

PARTITIONS = 2
VALID = streamdata.make(40, seed=31)
BLOCKS = streamdata.blocks_of(VALID.decisions, PARTITIONS, size=5)  # partition -> blocks
BINARY = streamdata.binary_blocks_of(VALID, PARTITIONS, size=5)  # cmab.decisions/3, the same
_KNOWN_ARMS = {"plain", "urgent", "quiz", "action", "calm", "h09", "h18"}
_PLACEHOLDER = "__number__"
_HEADER = b"cmab.decisions/1 "

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


class Garbage(NamedTuple):
    stream: str  # DECISIONS or EVENTS
    partition: int | None  # None: drawn
    value: bytes | None  # the record
    dead: bytes | None  # what its dead letter holds: the record, or its bad line
    words: tuple[str, ...]  # what the reason must contain


def _block(lines: list[bytes]) -> bytes:
    return _HEADER + b"%d\n" % len(lines) + b"".join(line + b"\n" for line in lines)


def _finite(event: dict[str, Any], token: bytes) -> bytes:
    return encode(event).replace(f'"{_PLACEHOLDER}"'.encode(), token)


@st.composite
def _bad_line(draw, n: int) -> tuple[bytes, tuple[str, ...]]:
    """A bad decision line: (its bytes, words of its reason)."""
    # An odd id: a decision made with consent, whose context is read and checked (a
    # consent-less one's is dropped unread, so bad context in it is no garbage).
    good = {**orjson.loads(VALID.decisions[draw(st.integers(0, len(VALID.decisions) - 1))][1]),
            "decision_id": f"{2 * n + 1:032x}"}
    kind = draw(st.sampled_from(["bytes", "shape", "not finite", "context", "arm",
                                 "campaign"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=64).filter(lambda b: b"\n" not in b)), ()
    if kind == "shape":  # JSON, but not a decision: any value, or a decision's keys mangled
        value = draw(_json | st.fixed_dictionaries({}, optional={
            k: _json for k in ("decision_id", "campaign", "subject", "ts", "slots")}))
        return orjson.dumps(value), ()
    if kind == "not finite":  # NaN, Infinity and overflowing numbers, which JSON forbids
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        field = draw(st.sampled_from(["ts", "context", "propensity"]))
        line = {**good, "ts": _PLACEHOLDER} if field == "ts" else {
            **good, "context": {"engagement": _PLACEHOLDER, "plan": "free"}} if (
            field == "context") else {
            **good, "slots": {"subject": {"arm": "plain", "propensity": _PLACEHOLDER}}}
        return _finite(line, token), ()
    if kind == "context":  # too many features, too few, or of the wrong kind
        extra = draw(st.lists(_names.filter(lambda f: f not in ("engagement", "plan")),
                              min_size=1, max_size=20, unique=True))
        context = draw(st.sampled_from([
            {"engagement": 0.5, "plan": "free", **dict.fromkeys(extra, 1.0)},
            {"plan": "free"},
            {"engagement": extra[0], "plan": "free"}]))
        return encode({**good, "context": context}), ()
    if kind == "arm":
        arm = draw(_names.filter(lambda a: a not in _KNOWN_ARMS))
        return encode({**good, "slots": {"subject": {"arm": arm, "propensity": 0.5}}}), (arm,)
    name = draw(_names.filter(lambda c: c != "news"))
    return encode({**good, "campaign": name}), (name,)


def _damaged(value: bytes, how: str) -> bytes:
    """A valid binary decision block damaged as ``how`` says (``_DAMAGE``)."""
    head, body = value.split(b"\n", 1)
    n = int(head.split(b" ")[1])
    block = msgspec.msgpack.decode(body, type=columns.Block3)
    slot = block.slots[0]
    if how == "cut":
        return value[:-1]
    if how == "count":
        return columns.write(block, n + 1)
    if how == "propensity":
        p = np.frombuffer(slot.propensity, dtype="<f8").copy()
        p[-1] = 1.5
        slot = msgspec.structs.replace(slot, propensity=p.tobytes())
    elif how == "arm":
        slot = msgspec.structs.replace(slot, arms=np.full(n, 99, dtype="<i4").tobytes())
    elif how == "vector":
        slot = msgspec.structs.replace(slot, texts=slot.texts.replace(b":", b"=", 1))
    else:  # a context with no decision made with consent to belong to
        private = block.private or columns.Private3([], b"", [])
        return columns.write(msgspec.structs.replace(block, private=msgspec.structs.replace(
            private, shape=private.shape + b"\0\0\0\0")), n)
    return columns.write(msgspec.structs.replace(block, slots=[slot, *block.slots[1:]]), n)


_DAMAGE = ("cut", "count", "propensity", "arm", "vector", "context")


def test_every_damage_of_a_binary_block_is_refused_by_its_reader():
    assert BINARY is not None
    for blocks in BINARY.values():
        for _, block in blocks:
            columns.read(block)  # whole, it reads
            for how in _DAMAGE:
                with pytest.raises(ValueError):
                    columns.read(_damaged(block, how))


@st.composite
def _garbage(draw) -> Garbage:
    """One bad record, of either input."""
    n = draw(st.integers(0, 10**9))  # fresh ids: garbage never collides with a real event
    event = {**VALID.events[draw(st.integers(0, len(VALID.events) - 1))], "event_id": f"g-{n}"}
    if draw(st.booleans()):  # .decisions
        kind = draw(st.sampled_from(["bytes", "empty", "event", "damaged", "line", "binary"]))
        if kind == "bytes":
            value = draw(st.binary(max_size=64))
            return Garbage(DECISIONS, None, value, value, ())
        if kind == "empty":
            return Garbage(DECISIONS, None, None, None, ("empty",))
        if kind == "event":  # a tracker's event sent to the wrong topic
            value = encode(event)
            return Garbage(DECISIONS, None, value, value, ("events",))
        if kind == "damaged":  # a block that lost a line, or whose last line is cut
            p = draw(st.sampled_from(sorted(BLOCKS)))
            _, block = BLOCKS[p][draw(st.integers(0, len(BLOCKS[p]) - 1))]
            cut = block[:-1] if draw(st.booleans()) else block[:block.rfind(
                b"\n", 0, len(block) - 1) + 1]
            return Garbage(DECISIONS, p, cut, cut, ("block",))
        if kind == "binary":  # a binary block of repeats, damaged: refused whole
            assert BINARY is not None
            p = draw(st.sampled_from(sorted(BINARY)))
            _, block = BINARY[p][draw(st.integers(0, len(BINARY[p]) - 1))]
            bad = _damaged(block, draw(st.sampled_from(list(_DAMAGE))))
            return Garbage(DECISIONS, p, bad, bad, ("decision block",))
        # A block of repeats of logged decisions (of their partition) with one bad line.
        p = draw(st.sampled_from(sorted(BLOCKS)))
        _, block = BLOCKS[p][draw(st.integers(0, len(BLOCKS[p]) - 1))]
        lines = block.split(b"\n")[1:-1]
        bad, words = draw(_bad_line(n))
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, bad)
        return Garbage(DECISIONS, p, _block(lines), bad, (f"line {at + 1} of the block", *words))
    kind = draw(st.sampled_from(["bytes", "empty", "shape", "not finite", "campaign",
                                 "impression", "block"]))
    if kind == "bytes":
        value = draw(st.binary(max_size=64))
        return Garbage(EVENTS, None, value, value, ())
    if kind == "empty":
        return Garbage(EVENTS, None, None, None, ())
    if kind == "shape":  # JSON, but not an event: any value, or an event's keys mangled
        value = orjson.dumps(draw(_json | st.fixed_dictionaries(
            {"type": st.sampled_from(["send", "open", "click", "conversion", "view"])},
            optional={k: _json for k in ("event_id", "decision_id", "ts", "value", "slot")})))
        return Garbage(EVENTS, None, value, value, ())
    if kind == "not finite":
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        value = _finite({**event, "ts": _PLACEHOLDER} if draw(st.booleans()) else {
            "type": "conversion", "event_id": f"g-{n}", "decision_id": event["decision_id"],
            "ts": event["ts"], "value": _PLACEHOLDER}, token)
        return Garbage(EVENTS, None, value, value, ())
    if kind == "campaign":
        name = draw(_names.filter(lambda c: c != "news"))
        value = encode({**event, "campaign": name})
        return Garbage(EVENTS, None, value, value, (name,))
    if kind == "impression":  # a legacy impression of a decision made elsewhere, bad arm
        arm = draw(_names.filter(lambda a: a not in _KNOWN_ARMS))
        value = encode({"type": "impression", "event_id": f"g-{n}",
                        "decision_id": f"{2 * n + 1:032x}", "campaign": "news",
                        "user_id": f"g-{n}", "ts": event["ts"],
                        "slots": {"subject": {"arm": arm, "propensity": 0.5}}})
        return Garbage(EVENTS, None, value, value, (arm,))
    p = draw(st.sampled_from(sorted(BLOCKS)))  # a decision block sent to the wrong topic
    _, block = BLOCKS[p][draw(st.integers(0, len(BLOCKS[p]) - 1))]
    return Garbage(EVENTS, None, block, block, ("block", "decisions"))


def _send(kafka, topics: Topics, garbage: list[Garbage],
          positions: list[tuple[int, int]]) -> dict[tuple[str, int], int]:
    """The valid stream with the garbage inserted at ``positions`` (to the partition drawn
    for it, when it has none), then the sentinels that close every window; returns records
    per (topic, partition)."""
    records = streamdata.records(VALID, PARTITIONS, size=5, sentinel=False)
    for g, (at, partition) in sorted(zip(garbage, positions, strict=True),
                                     key=lambda item: -item[1][0]):
        # A key, because Kafka refuses a record with neither key nor value.
        records.insert(at, (g.stream, partition if g.partition is None else g.partition,
                            b"garbage", g.value))
    for p in range(PARTITIONS):
        block, mark = streamdata.sentinels(p, VALID.end_ts + 10 * streamdata.WINDOW_MS)
        records += [(DECISIONS, p, None, block), (EVENTS, p, None, mark)]
    return _write(kafka, topics, records)


def _dead_letters(kafka, topics: Topics, expected: int) -> list[tuple[bytes | None, dict]]:
    consumer = reader(kafka.bootstrap_servers)
    tp = TopicPartition(topics.deadletter, 0)
    consumer.assign([tp])
    letters: list[tuple[bytes | None, dict[str, Any]]] = []
    deadline = time.monotonic() + 20
    while len(letters) < expected and time.monotonic() < deadline:
        letters += [(r.value, {k: v.decode() for k, v in r.headers})
                    for r in consumer.poll(timeout_ms=200).get(tp, [])]
    consumer.close()
    return letters


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_on_real_topics_is_dead_lettered_and_the_rest_learned(kafka, data):
    garbage = data.draw(st.lists(_garbage(), min_size=1, max_size=30), label="garbage")
    total = len(streamdata.records(VALID, PARTITIONS, size=5, sentinel=False))
    positions = data.draw(st.lists(st.tuples(st.integers(0, total), st.integers(
        0, PARTITIONS - 1)), min_size=len(garbage), max_size=len(garbage)), label="positions")
    topics = _setup(kafka, PARTITIONS)
    counts = _send(kafka, topics, garbage, positions)
    engine, _ = _run_until(kafka, topics, f"g-{uuid.uuid4().hex[:10]}", counts, PARTITIONS)

    streamdata.assert_same_model(engine, streamdata.reference(VALID))
    letters = _dead_letters(kafka, topics, len(garbage) + VALID.late)
    late = [h for _, h in letters if h["reason"].startswith("late")]
    bad = [(value, h) for value, h in letters if not h["reason"].startswith("late")]
    assert len(late) == VALID.late
    # Each bad record (or line) once, byte for byte, with the input it came from.
    assert Counter((value, h["source"].split("/")[0]) for value, h in bad) == Counter(
        (g.dead, g.stream) for g in garbage)
    assert all(h["reason"] for _, h in bad)
    reasons: dict[bytes | None, list[str]] = {}
    for value, h in bad:
        reasons.setdefault(value, []).append(h["reason"])
    for g in garbage:
        assert any(all(word in reason for word in g.words) for reason in reasons[g.dead]), (
            g, reasons[g.dead])
