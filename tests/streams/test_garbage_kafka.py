"""Hypothesis-drawn garbage on real topics, mixed into a valid stream: the worker survives,
every bad record reaches the dead-letter topic with its original bytes, a reason and where it
came from, and the valid events are learned exactly (bit-equal to a direct batch computation).

One broker for the module; each example gets its own topic prefix and consumer group."""

import uuid
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer, TopicPartition

from streams.codec import encode
from streams.kafka import reader
from streams.records import CLICKS, IMPRESSIONS
from streams.topics import Topics
from tests import streamdata
from tests.streams.test_durable import _run_until
from tests.streams.test_worker_kafka import _setup

PARTITIONS = 2
VALID = streamdata.make(40, seed=31)
_KNOWN_ARMS = {"plain", "urgent", "quiz"}
_PLACEHOLDER = "__number__"

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


@st.composite
def _garbage(draw) -> tuple[str, bytes | None, str | None]:
    """One bad record: (stream it is sent to, value, a word its reason must contain)."""
    n = draw(st.integers(0, 10**9))  # fresh ids: garbage never collides with a real event
    # An odd id: a decision made with consent, whose impression's context is read and checked
    # (a consent-less one's is dropped unread, so bad context in it is no garbage).
    imp = {**VALID.impressions[draw(st.integers(0, len(VALID.impressions) - 1))],
           "event_id": f"g-{n}", "decision_id": f"{2 * n + 1:032x}"}
    click = {**VALID.clicks[draw(st.integers(0, len(VALID.clicks) - 1))], "event_id": f"g-{n}"}
    stream = draw(st.sampled_from([IMPRESSIONS, CLICKS]))
    kind = draw(st.sampled_from(["bytes", "empty", "shape", "not finite", "context",
                                 "arm", "campaign", "wrong topic"]))
    if kind == "bytes":
        return stream, draw(st.binary(max_size=64)), None
    if kind == "empty":
        return stream, None, None
    if kind == "shape":  # JSON, but not an event: any value, or an event's keys mangled
        value = draw(_json | st.fixed_dictionaries(
            {"type": st.sampled_from(["impression", "click", "view"])}, optional={
                k: _json for k in ("event_id", "decision_id", "campaign", "ts", "slots")}))
        return stream, orjson.dumps(value), None
    if kind == "not finite":  # NaN, Infinity and overflowing numbers, which JSON forbids
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        if stream == CLICKS:
            event = {**click, "reward": _PLACEHOLDER}
        else:
            field = draw(st.sampled_from(["ts", "context", "propensity"]))
            event = {**imp, "ts": _PLACEHOLDER} if field == "ts" else {
                **imp, "context": {"engagement": _PLACEHOLDER, "plan": "free"}} if (
                field == "context") else {
                **imp, "slots": {"subject": {"arm": "plain", "propensity": _PLACEHOLDER}}}
        return stream, encode(event).replace(f'"{_PLACEHOLDER}"'.encode(), token), None
    if kind == "context":  # too many features, too few, or of the wrong kind
        extra = draw(st.lists(_names.filter(lambda f: f not in ("engagement", "plan")),
                              min_size=1, max_size=20, unique=True))
        context = draw(st.sampled_from([
            {"engagement": 0.5, "plan": "free", **dict.fromkeys(extra, 1.0)},
            {"plan": "free"},
            {"engagement": extra[0], "plan": "free"}]))
        return IMPRESSIONS, encode({**imp, "context": context}), None
    if kind == "arm":
        arm = draw(_names.filter(lambda a: a not in _KNOWN_ARMS))
        return IMPRESSIONS, encode({**imp, "slots": {"subject": {"arm": arm,
                                                                 "propensity": 0.5}}}), arm
    if kind == "campaign":
        name = draw(_names.filter(lambda c: c != "news"))
        event = {**imp, "campaign": name} if stream == IMPRESSIONS else {**click,
                                                                         "campaign": name}
        return stream, encode(event), name
    # An impression on the clicks topic or a click on the impressions topic.
    return (CLICKS, encode(imp), "topic") if stream == CLICKS else (
        IMPRESSIONS, encode(click), "topic")


def _send(kafka, topics: Topics, garbage, positions) -> dict[tuple[str, int], int]:
    """The valid stream with the garbage inserted at ``positions`` (to random partitions),
    then the sentinels that close every window; returns records per (topic, partition)."""
    records: list[tuple[str, bytes | None, bytes | None, int | None]] = [
        (topics.impressions, encode(e), e["decision_id"].encode(), None)
        for e in VALID.impressions] + [
        (topics.clicks, encode(c), c["decision_id"].encode(), None) for c in VALID.clicks]
    name = {IMPRESSIONS: topics.impressions, CLICKS: topics.clicks}
    for (stream, value, _), (at, partition) in sorted(zip(garbage, positions, strict=True),
                                                      key=lambda g: -g[1][0]):
        # A key, because Kafka refuses a record with neither key nor value.
        records.insert(at, (name[stream], value, b"garbage", partition))
    for p in range(PARTITIONS):
        imp, click = streamdata.sentinels(p, VALID.end_ts + 10 * streamdata.WINDOW_MS)
        records += [(topics.impressions, encode(imp), None, p),
                    (topics.clicks, encode(click), None, p)]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5,
                             allow_auto_create_topics=False)
    try:
        futures = [producer.send(topic, value, key=key, partition=partition)
                   for topic, value, key, partition in records]
        producer.flush()
    finally:
        producer.close()
    counts: Counter[tuple[str, int]] = Counter()
    for f in futures:
        meta = f.get(timeout=10)
        counts[(meta.topic, meta.partition)] += 1
    return dict(counts)


def _dead_letters(kafka, topics: Topics, expected: int) -> list[tuple[bytes | None, dict]]:
    import time

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
    total = len(VALID.impressions) + len(VALID.clicks)
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
    # Each bad record once, byte for byte, with the input it came from.
    assert Counter((value, h["source"].split("/")[0]) for value, h in bad) == Counter(
        (value, stream) for stream, value, _ in garbage)
    assert all(h["reason"] for _, h in bad)
    reasons = {value: h["reason"] for value, h in bad}
    for _, value, word in garbage:
        if word is not None:
            assert word in reasons[value], (value, reasons[value])
