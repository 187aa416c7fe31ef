"""The decision log on the stream: the partition of a decision is Kafka's default partitioner's;
every decide path of the service in stream mode writes each decision once to
``<prefix>.decisions``, in blocks of its partition; a broker that goes away does not fail
deciding, and what the log loses is counted."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections import Counter
from functools import partial

import numpy as np
import orjson
import pytest
from kafka import TopicPartition
from kafka.partitioner.default import murmur2

from bandit.engine.decisionlog import DecisionLogStatus, partition_of
from bandit.models import LoggedDecision
from streams.blocks import decision_lines
from streams.broker import LocalBroker
from streams.decisionlog import DecisionLogWriter
from streams.kafka import reader
from streams.link import StreamLink
from streams.topics import Topics, create_topics
from tests.bandit.engine.test_decisionlog import canonical, learned, requests_of


def test_the_partition_of_a_decision_is_kafka_s_default_partitioner_s(rng):
    ids = [rng.bytes(16).hex() for _ in range(5000)] + ["", "a", "ab", "abc", "abcde", "x" * 33]
    for n in (1, 4, 7, 12):
        expected = [(murmur2(key.encode()) & 0x7FFFFFFF) % n for key in ids]
        assert partition_of(ids, n).tolist() == expected


def decisions_topic(bootstrap_servers: str, topic: str) -> list[tuple[int, bytes]]:
    """Every (partition, block) of the decisions topic, until it stays idle for a second."""
    consumer = reader(bootstrap_servers)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        out = []
        while batches := consumer.poll(timeout_ms=1000):
            for tp, records in batches.items():
                out += [(tp.partition, r.value) for r in records]
        return out
    finally:
        consumer.close()


def logged_lines(bootstrap_servers: str, topics: Topics, partitions: int) -> list[bytes]:
    """Every line of the decisions topic, each checked to sit in its decision's partition."""
    lines = []
    for partition, block in decisions_topic(bootstrap_servers, topics.decisions):
        items = decision_lines(block)
        ids = [orjson.loads(line)["decision_id"] for line in items]
        assert set(partition_of(ids, partitions).tolist()) == {partition}
        lines += items
    return lines


def test_the_writer_logs_every_decision_once_in_blocks_of_its_partition(kafka, rng):
    topics = Topics(f"d{uuid.uuid4().hex[:10]}")
    partitions = create_topics(kafka.bootstrap_servers, topics, 3)
    engine = learned({"kind": "lin_ts"}, rng)
    writer = DecisionLogWriter(kafka.bootstrap_servers, topics, partitions)
    engine.decision_sink = writer.append
    requests = requests_of(rng, 3000)
    batch = engine.decide_batch("weekly", requests)
    singles = [engine.decide_one(r) for r in requests[:20]]
    writer.flush()
    writer.close()
    status = writer.status()
    assert (status.logged, status.unlogged, status.queued, status.failing) == (3020, {}, 0, None)
    lines = logged_lines(kafka.bootstrap_servers, topics, partitions)
    assert all(line == canonical(line) for line in lines)
    assert Counter(orjson.loads(line)["decision_id"] for line in lines) == Counter(
        batch.decision_ids + [orjson.loads(one.json)["decision_id"] for one in singles])
    for line in lines:
        if int(orjson.loads(line)["decision_id"][-1], 16) % 2 == 0:  # no consent
            d = LoggedDecision.model_validate_json(line)
            assert d.context is None and d.segments == {}


# kafka-python leaves the sockets of its refused reconnections to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.broker
def test_a_broker_that_goes_away_fails_no_decision_and_the_lost_ones_are_counted(rng, caplog):
    # Nor keep its errors in log records (whose tracebacks would keep the sockets alive).
    caplog.set_level(logging.CRITICAL, logger="kafka")
    with LocalBroker() as broker:
        status = _outage(broker, rng)
    gc.collect()  # here, where the warnings of those sockets are ignored
    assert status.logged == 100 and status.failing is not None
    assert status.unlogged["delivery_failed"] > 0 and status.queued == 0


def _outage(broker: LocalBroker, rng: np.random.Generator) -> DecisionLogStatus:
    """Decide while the broker is up, stop it, decide on: every call decides and its
    decisions are logged or counted as lost."""
    topics = Topics(f"d{uuid.uuid4().hex[:10]}")
    partitions = create_topics(broker.bootstrap_servers, topics, 2)
    engine = learned({"kind": "lin_ucb"}, rng)
    writer = DecisionLogWriter(broker.bootstrap_servers, topics, partitions, capacity=500,
                               delivery_timeout_ms=2000, request_timeout_ms=1000,
                               max_block_ms=1000)
    engine.decision_sink = writer.append
    engine.decide_batch("weekly", requests_of(rng, 100))
    writer.flush()
    assert writer.status().logged == 100
    broker.stop()
    requests = requests_of(rng, 200)
    made = sum(len(engine.decide_batch("weekly", requests)) for _ in range(20))
    # A call larger than the queue is dropped whole, at once.
    made += len(engine.decide_batch("weekly", requests_of(rng, 501)))
    assert writer.status().unlogged["queue_full"] >= 501
    deadline = time.monotonic() + 60
    while sum(writer.status().unlogged.values()) + writer.status().logged < 100 + made:
        assert time.monotonic() < deadline, writer.status()
        time.sleep(0.1)
    writer.close()
    assert not writer._producer._sender.is_alive()
    return writer.status()


@pytest.mark.broker
def test_every_decide_path_of_the_service_logs_each_decision_once(kafka, rng):
    from bandit.service import create_app
    from bandit.settings import Settings
    from tests.servers import live

    prefix = f"s{uuid.uuid4().hex[:10]}"
    topics = Topics(prefix)
    settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=prefix)
    link = partial(StreamLink, bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                   partitions=3)
    engine = learned({"kind": "lin_ucb"}, rng, holdout=0.3)
    engine.warm_up()
    requests = [r.model_dump(mode="json") for r in requests_of(rng, 300)]
    ids: list[str] = []
    with live(create_app(engine, settings, link)) as client:
        ids.append(client.post("/v1/decisions", json=requests[0]).json()["decision_id"])
        route = client.post("/v1/decisions", content=orjson.dumps(requests[1]),
                            headers={"content-type": "application/json; charset=utf-8"})
        ids.append(route.json()["decision_id"])  # the FastAPI route, not the fast path
        ndjson = b"\n".join(orjson.dumps(r) for r in requests[2:102])
        answer = client.post("/v1/decisions/batch", content=ndjson,
                             headers={"content-type": "application/x-ndjson"})
        ids += [orjson.loads(line)["decision_id"] for line in answer.content.splitlines()]
        answer = client.post("/v1/decisions/batch",
                             json={"campaign": "weekly", "requests": requests[102:202]})
        ids += [d["decision_id"] for d in answer.json()["decisions"]]
        # A body the fast decoder leaves to pydantic (a feature outside the schema, in the
        # context of a request without consent, which deciding ignores): the models' path.
        slow = b"\n".join(orjson.dumps({**r, "consent": False, "context": {"other": 1.0}})
                          for r in requests[202:252])
        answer = client.post("/v1/decisions/batch", content=slow,
                             headers={"content-type": "application/x-ndjson"})
        ids += [orjson.loads(line)["decision_id"] for line in answer.content.splitlines()]
        assert client.post("/v1/campaigns/weekly/pause", json={"paused": True}).status_code \
            == 200
        answer = client.post("/v1/decisions/batch",
                             json={"campaign": "weekly", "requests": requests[252:300]})
        paused = [d["decision_id"] for d in answer.json()["decisions"]]
        ids += paused
        assert client.get("/readyz").json()["status"] == "ready"
        deadline = time.monotonic() + 30
        while f"cmab_decisions_logged_total {len(ids)}.0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, client.get("/metrics").text
            time.sleep(0.1)
    lines = logged_lines(kafka.bootstrap_servers, topics, 3)
    logged = [orjson.loads(line) for line in lines]
    assert Counter(d["decision_id"] for d in logged) == Counter(ids)
    assert any(d["holdout"] for d in logged) and not all(d["holdout"] for d in logged)
    for d in logged:
        if d["decision_id"] in paused or d["holdout"]:
            assert {c["arm"] for c in d["slots"].values()} == {"a", "h09"}
            assert all(c["probabilities"] == {c["arm"]: 1.0} for c in d["slots"].values())
    assert np.all([line == canonical(line) for line in lines])
