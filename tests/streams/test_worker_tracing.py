"""The worker's spans on a real broker: a span per partition's batch with its counts, linked to
the decision's span an outcome names by its ``traceparent``; a span per checkpoint."""

import time
import uuid

import pytest
from kafka import KafkaProducer

from bandit.engine import Engine
from streams.kafka import KafkaTransport
from streams.publish import Publisher
from streams.records import EVENTS
from streams.topics import Topics, create_topics
from streams.worker import Worker
from tests import streamdata
from tests.spans import spans

pytestmark = pytest.mark.broker

PARENT = "00-" + "5e" * 16 + "-" + "a1" * 8 + "-01"  # a decision's span, as its answer says


def test_batch_and_checkpoint_spans_and_the_outcome_s_link(kafka):
    exporter = spans()
    topics = Topics(f"t{uuid.uuid4().hex[:10]}")
    create_topics(kafka.bootstrap_servers, topics, 1)
    service = Engine()
    service.create_campaign(streamdata.spec())
    with Publisher(kafka.bootstrap_servers, topics) as pub:
        pub.campaign(service.campaign_record("news"))
    s = streamdata.make(40, seed=3)
    traced = next(i for i, e in enumerate(s.events) if e["type"] == "click")
    s.events[traced] = {**s.events[traced], "traceparent": PARENT}
    records = streamdata.records(s, 1)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    for stream, p, key, value in records:
        producer.send(getattr(topics, stream), value, key=key, partition=0 if p is None else p)
    producer.flush()
    producer.close()
    n_events = sum(1 for r in records if r[0] == EVENTS)
    transport = KafkaTransport(kafka.bootstrap_servers, topics, "g", max_poll_records=1000,
                               session_timeout_ms=10_000, heartbeat_interval_ms=1000)
    worker = Worker(transport, checkpoint_interval_ms=0)
    transport.attach(worker)
    try:
        deadline = time.monotonic() + 180  # a liveness bound: a group's first join can be slow
        while not (0 in worker.partitions and worker.partitions[0].offsets[EVENTS] == n_events):
            worker.step(100)
            assert time.monotonic() < deadline, "the worker did not catch up"
    finally:
        transport.close()
    finished = exporter.get_finished_spans()
    batches = [sp for sp in finished if sp.name == "cmab.worker.batch"]
    assert sum(sp.attributes["cmab.records"] for sp in batches) == len(records)
    assert sum(sp.attributes["cmab.events"] for sp in batches) == n_events
    assert sum(sp.attributes["cmab.decisions"] for sp in batches) == len(s.decisions) + 1
    assert sum(sp.attributes["cmab.learned"] for sp in batches) == worker.counters.joined > 0
    links = [link.context for sp in batches for link in sp.links]
    assert [(c.trace_id, c.span_id) for c in links] == [(int("5e" * 16, 16), int("a1" * 8, 16))]
    checkpoints = [sp for sp in finished if sp.name == "cmab.worker.checkpoint"]
    assert len(checkpoints) == worker.checkpoints > 0
    assert all(sp.attributes["cmab.partition"] == 0 and sp.attributes["cmab.bytes"] > 0
               for sp in checkpoints)
