"""The stream worker on a real broker: end to end, SIGKILL at random instants, two workers in
a group with a rebalance on join and on kill. Exactly-once is checked bit for bit: contexts
are multiples of 1/4, so sums do not depend on the order they were added in."""

import signal
import subprocess
import sys
import time
import uuid

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bandit.engine import Engine
from bandit.engine.join import subject_key
from streams.codec import encode
from streams.follower import StateFollower
from streams.kafka import KafkaTransport
from streams.publish import Publisher
from streams.topics import Topics, create_topics
from streams.worker import PartitionJoin, Worker
from tests import streamdata

TEST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def _setup(kafka, partitions: int) -> Topics:
    topics = Topics(f"t{uuid.uuid4().hex[:10]}")
    create_topics(kafka.bootstrap_servers, topics, partitions)
    service = Engine()
    service.create_campaign(streamdata.spec())
    with Publisher(kafka.bootstrap_servers, topics) as pub:
        pub.campaign(service.campaign_record("news"))
    return topics


def _produce(kafka, topics: Topics, s: streamdata.Streams, partitions: int,
             sentinels: bool = True) -> dict[tuple[str, int], int]:
    """Send the streams (impressions first, as a sender would); returns records per
    (topic, partition)."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5,
                             allow_auto_create_topics=False)
    futures = [producer.send(topics.impressions, encode(e), key=e["decision_id"].encode())
               for e in s.impressions]
    futures += [producer.send(topics.clicks, encode(e), key=e["decision_id"].encode())
                for e in s.clicks]
    if sentinels:
        for p in range(partitions):
            imp, click = streamdata.sentinels(p, s.end_ts + 10 * streamdata.WINDOW_MS)
            futures.append(producer.send(topics.impressions, encode(imp), partition=p))
            futures.append(producer.send(topics.clicks, encode(click), partition=p))
    producer.flush()
    producer.close()
    counts: dict[tuple[str, int], int] = {}
    for f in futures:
        meta = f.get(timeout=10)
        counts[(meta.topic, meta.partition)] = counts.get((meta.topic, meta.partition), 0) + 1
    return counts


def _done(topics: Topics, counts, partitions: int):
    def check(latest: dict[int, PartitionJoin]) -> bool:
        return len(latest) == partitions and all(
            latest[p].offsets["impressions"] == counts.get((topics.impressions, p), 0)
            and latest[p].offsets["clicks"] == counts.get((topics.clicks, p), 0)
            for p in range(partitions))
    return check


def _service(kafka, topics: Topics) -> tuple[Engine, StateFollower]:
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    return engine, StateFollower(engine, kafka.bootstrap_servers, topics).start()


def _spawn(kafka, topics: Topics, group: str, log, max_poll_records: int = 50) -> subprocess.Popen:
    """A `cmab worker` process; its stderr goes to the open file ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "bandit.cli", "worker", "--bootstrap-servers",
         kafka.bootstrap_servers, "--topic-prefix", topics.prefix, "--group", group,
         "--max-poll-records", str(max_poll_records), "--session-timeout-ms", "2000",
         "--heartbeat-interval-ms", "500", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=log)


def _joined_ids(kafka, topics: Topics, partitions: int, expected: int) -> set[str]:
    import orjson

    from streams.joined import examples
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers,
                             auto_offset_reset="earliest", allow_auto_create_topics=False)
    consumer.assign([TopicPartition(topics.joined, p) for p in range(partitions)])
    ids: set[str] = set()
    deadline = time.monotonic() + 20
    while len(ids) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            ids |= {orjson.loads(v)["decision_id"] for r in records for v in examples(r.value)}
    consumer.close()
    return ids


def _run_until(broker, topics: Topics, group: str, counts, partitions: int):
    """An in-process worker stepped until the state topic shows every record of ``counts``
    consumed; returns the service engine that followed the state topic, and the checkpoints."""
    engine, follower = _service(broker, topics)
    transport = KafkaTransport(broker.bootstrap_servers, topics, group, max_poll_records=100,
                               **TEST_GROUP)
    worker = Worker(transport)
    transport.attach(worker)
    try:
        # A liveness bound, not a speed check: a consumer group's first join on a loaded
        # machine has taken most of a minute.
        deadline = time.monotonic() + 180
        while not follower.wait_for(_done(topics, counts, partitions), 0.01):
            worker.step(100)
            assert time.monotonic() < deadline, "the worker did not catch up in 180 s"
    finally:
        transport.close()
        follower.close()
    return engine, follower.partitions()


def test_end_to_end_the_model_equals_a_direct_batch_computation(kafka):
    partitions = 3
    topics = _setup(kafka, partitions)
    s = streamdata.make(400, seed=11)
    counts = _produce(kafka, topics, s, partitions)
    engine, _ = _run_until(kafka, topics, f"g-{topics.prefix}", counts, partitions)
    streamdata.assert_same_model(engine, streamdata.reference(s))
    assert engine.model_version("news") > 0
    assert _joined_ids(kafka, topics, partitions, 400) == {e.decision_id for e in s.joined}


def _run_with_kills(kafka, topics, s, partitions, kills: int, rng, log_path, workers: int = 1):
    counts = _produce(kafka, topics, s, partitions)
    engine, follower = _service(kafka, topics)
    group = f"g-{topics.prefix}"
    log = open(log_path, "wb")  # noqa: SIM115 - shared by every worker process, closed below
    procs = [_spawn(kafka, topics, group, log) for _ in range(workers)]
    try:
        for _ in range(kills):
            time.sleep(float(rng.uniform(1.5, 4.0)))
            victim = int(rng.integers(len(procs)))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            procs[victim] = _spawn(kafka, topics, group, log)
        finished = follower.wait_for(_done(topics, counts, partitions), 120)
        assert finished, f"workers did not finish in 120 s: {log_path.read_text()[-2000:]}"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                assert p.wait(timeout=20) in (0, -signal.SIGTERM)
            except subprocess.TimeoutExpired:
                p.kill()
                raise
        follower.close()
        log.close()
    return engine


def test_sigkill_at_random_instants_loses_and_doubles_nothing(kafka, tmp_path):
    partitions = 2
    topics = _setup(kafka, partitions)
    s = streamdata.make(3000, seed=12)
    engine = _run_with_kills(kafka, topics, s, partitions, kills=5,
                             rng=np.random.default_rng(12), log_path=tmp_path / "workers.log")
    streamdata.assert_same_model(engine, streamdata.reference(s))
    assert _joined_ids(kafka, topics, partitions, 3000) == {e.decision_id for e in s.joined}


def test_two_workers_rebalance_on_join_and_on_kill(kafka, tmp_path):
    partitions = 4
    topics = _setup(kafka, partitions)
    s = streamdata.make(3000, seed=13)
    engine = _run_with_kills(kafka, topics, s, partitions, kills=2,
                             rng=np.random.default_rng(13), workers=2,
                             log_path=tmp_path / "workers.log")
    streamdata.assert_same_model(engine, streamdata.reference(s))


def test_the_service_in_stream_mode_publishes_campaigns_and_events_and_follows_the_state(kafka):
    from bandit.service import create_app
    from bandit.settings import Settings
    from streams.link import stream_link
    from tests.servers import live

    prefix = f"s{uuid.uuid4().hex[:10]}"
    topics = Topics(prefix)
    settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=prefix)
    s = streamdata.make(200, seed=14)
    link = stream_link(kafka.bootstrap_servers, prefix)
    with live(create_app(Engine(seed=0), settings, link)) as client:
        created = client.post("/v1/campaigns", json=streamdata.spec().model_dump(mode="json"))
        assert created.status_code == 201, created.text
        transport = KafkaTransport(kafka.bootstrap_servers, topics, f"g-{prefix}",
                                   **TEST_GROUP)
        worker = Worker(transport)
        transport.attach(worker)
        try:
            # Two seconds of decisions with a one-second window: windows close in the stream.
            posted = client.post("/v1/events", json=s.impressions + s.clicks)
            assert posted.status_code == 200, posted.text
            bad = client.post("/v1/events", json=[
                {**s.impressions[0], "slots": {"subject": {"arm": "ghost", "propensity": 1}}}])
            assert bad.status_code == 422 and "ghost" in bad.text
            deadline = time.monotonic() + 60
            while client.get("/v1/campaigns/news/report").json()["slots"][0]["arms"][0][
                    "impressions"] == 0:
                worker.step(100)
                assert time.monotonic() < deadline, "the model never reached the service"
            ready = client.get("/readyz").json()
            assert ready["status"] == "ready" and ready["state_age_s"] >= 0
        finally:
            transport.close()


def test_an_erasure_survives_a_sigkilled_worker(kafka, tmp_path):
    """A subject's decision is open in a `cmab worker`'s checkpoint; the service erases them
    (DELETE /v1/subjects/..., forwarded to the stream); the worker is SIGKILLed and restarted,
    and the stream plays on past the window. Nothing of the subject is learned or in
    .joined: the model is the one of a run where the subject never existed."""
    import orjson

    from bandit.service import create_app
    from bandit.settings import Settings
    from streams.joined import examples
    from streams.kafka import read_until_idle
    from streams.link import stream_link
    from tests.servers import live

    partitions = 2
    topics = _setup(kafka, partitions)
    s = streamdata.make(300, seed=31)
    subject = s.impressions[200]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                             allow_auto_create_topics=False)
    counts: dict[tuple[str, int], int] = {}
    sent = {"impressions": 0, "clicks": 0}

    def send_until(ts: float) -> None:  # both inputs, in event time, up to ts
        futures = []
        for stream in sent:
            events = getattr(s, stream)
            while sent[stream] < len(events) and events[sent[stream]]["ts"] <= ts:
                event = events[sent[stream]]
                futures.append(producer.send(getattr(topics, stream), encode(event),
                                             key=event["decision_id"].encode()))
                sent[stream] += 1
        if ts > s.end_ts:
            for p in range(partitions):
                imp, click = streamdata.sentinels(p, s.end_ts + 10 * streamdata.WINDOW_MS)
                futures.append(producer.send(topics.impressions, encode(imp), partition=p))
                futures.append(producer.send(topics.clicks, encode(click), partition=p))
        producer.flush()
        for f in futures:
            meta = f.get(timeout=10)
            counts[(meta.topic, meta.partition)] = counts.get((meta.topic, meta.partition),
                                                              0) + 1

    engine, follower = _service(kafka, topics)
    group = f"g-{topics.prefix}"
    log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    worker = _spawn(kafka, topics, group, log)
    try:
        send_until(subject["ts"])
        assert follower.wait_for(_done(topics, dict(counts), partitions), 60), "no checkpoint"
        settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=topics.prefix)
        link = stream_link(kafka.bootstrap_servers, topics.prefix)
        with live(create_app(Engine(seed=0), settings, link)) as client:
            erased = client.delete(f"/v1/subjects/{subject['user_id']}")
            assert erased.status_code == 200, erased.text
            assert erased.json() == {"erased": 0, "forwarded": True}
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = _spawn(kafka, topics, group, log)
        send_until(s.end_ts + 10 * streamdata.WINDOW_MS)
        finished = follower.wait_for(_done(topics, counts, partitions), 120)
        assert finished, f"the worker did not finish: {(tmp_path / 'workers.log').read_text()}"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        follower.close()
        producer.close()
        log.close()
    key = subject_key(subject["user_id"]).hex()
    kept = [e for e in s.joined if e.subject != key]
    streamdata.assert_same_model(engine, streamdata.reference(
        streamdata.Streams(s.impressions, s.clicks, kept, s.late, s.duplicates, s.end_ts)))
    joined = [orjson.loads(v) for block in read_until_idle(kafka.bootstrap_servers, topics.joined)
              for v in examples(block)]
    assert {j["decision_id"] for j in joined} == {e.decision_id for e in kept}
    assert key not in {j["subject"] for j in joined}
