"""A durable broker restarted mid-stream: worker, broker and store all stop, start again on
the same directory (new ports), and the stream carries on. Nothing is lost or counted twice:
the model is bit-equal to a direct batch computation over every event, the checkpoints'
counters add up to exactly what was produced, and the joined topic has every decision."""

import dataclasses
import uuid

import orjson
import pytest

from streams.broker import LocalBroker
from streams.topics import create_topics
from streams.worker import Counters
from tests import streamdata
from tests.streams.test_worker_kafka import _joined_ids, _produce, _run_until, _setup


@pytest.mark.broker
def test_a_durable_broker_restarted_mid_stream_loses_and_doubles_nothing(tmp_path):
    partitions = 2
    s = streamdata.make(600, seed=21)
    times = [orjson.loads(line)["ts"] for _, line in s.decisions]
    half_ts = times[len(times) // 2]
    # Split in event time: open windows and outcomes still to come cross the restart.
    first = dataclasses.replace(
        s, decisions=[d for d, ts in zip(s.decisions, times, strict=True) if ts < half_ts],
        events=[e for e in s.events if e["ts"] < half_ts])
    rest = dataclasses.replace(
        s, decisions=[d for d, ts in zip(s.decisions, times, strict=True) if ts >= half_ts],
        events=[e for e in s.events if e["ts"] >= half_ts])
    group = f"g-{uuid.uuid4().hex[:10]}"
    with LocalBroker(durable=tmp_path / "kafka") as broker:
        topics = _setup(broker, partitions)
        counts = _produce(broker, topics, first, partitions, sentinels=False)
        _, before = _run_until(broker, topics, group, counts, partitions)
        old_address = broker.bootstrap_servers
    assert sum(p.counters.joined for p in before.values()) < len(s.joined)  # windows open

    with LocalBroker(durable=tmp_path / "kafka") as broker:
        assert broker.bootstrap_servers != old_address
        assert create_topics(broker.bootstrap_servers, topics, 5) == partitions  # kept
        for key, n in _produce(broker, topics, rest, partitions).items():
            counts[key] = counts.get(key, 0) + n
        engine, after = _run_until(broker, topics, group, counts, partitions)
        joined = _joined_ids(broker, topics, partitions, len(s.joined))

    streamdata.assert_same_model(engine, streamdata.reference(s))
    total = Counters()
    for part in after.values():
        total.add(part.counters)
    # Every produced record counted once, every decision (and each partition's sentinel,
    # whose window stays open); the tracker's repeats dropped; late outcomes dead-lettered;
    # machine and scanner outcomes counted apart.
    assert total == Counters(records=sum(counts.values()), decisions=600 + partitions,
                             joined=len(s.joined), duplicates=s.duplicates, late=s.late,
                             dead_letters=s.late, machine=s.excluded["machine"],
                             scanner=s.excluded["scanner"])
    assert joined == {e.decision_id for e in s.joined}
