"""The stream worker on a real broker: end to end, SIGKILL at random instants, two workers in
a group with a rebalance on join and on kill. Exactly-once is checked bit for bit: contexts
are multiples of 1/4, so sums do not depend on the order they were added in."""

import io
import math
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from functools import partial

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bandit.engine import Engine
from bandit.engine.ledger import key_words
from bandit.engine.pseudonyms import SubjectKeys, fingerprint
from bandit.models import LoggedDecision
from streams.codec import encode
from streams.follower import StateFollower
from streams.kafka import KafkaTransport, producer, reader
from streams.memory import MemoryTransport
from streams.publish import Publisher
from streams.records import DECISIONS, EVENTS
from streams.topics import Topics, create_topics
from streams.worker import Counters, PartitionJoin, Worker
from tests import streamdata

# The in-process worker's group: a step that holds the interpreter for long (a first batch's
# compilations on a cold cache, a loaded machine) must not get it evicted and rebalanced.
TEST_GROUP = {"session_timeout_ms": 10_000, "heartbeat_interval_ms": 1000}


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
    """Write ``streamdata.records`` (the decision blocks first, as the service logs them
    before senders and trackers write); returns records per (topic, partition)."""
    return _write(kafka, topics, streamdata.records(s, partitions, sentinel=sentinels))


def _write(kafka, topics: Topics, records) -> dict[tuple[str, int], int]:
    """Write (stream, partition or None, key, value) records; records per (topic, partition)."""
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5,
                             allow_auto_create_topics=False)
    try:
        futures = [producer.send(getattr(topics, stream), value, key=key, partition=p)
                   for stream, p, key, value in records]
        producer.flush()
    finally:
        producer.close()
    counts: dict[tuple[str, int], int] = {}
    for f in futures:
        meta = f.get(timeout=10)
        counts[(meta.topic, meta.partition)] = counts.get((meta.topic, meta.partition), 0) + 1
    return counts


def _done(topics: Topics, counts, partitions: int):
    def check(latest: dict[int, PartitionJoin]) -> bool:
        return len(latest) == partitions and all(
            latest[p].offsets[DECISIONS] == counts.get((topics.decisions, p), 0)
            and latest[p].offsets[EVENTS] == counts.get((topics.events, p), 0)
            for p in range(partitions))
    return check


def _service(kafka, topics: Topics,
             activation: str = "decision") -> tuple[Engine, StateFollower]:
    engine = Engine()
    engine.create_campaign(streamdata.spec(activation=activation))
    return engine, StateFollower(engine, kafka.bootstrap_servers, topics).start()


def _spawn(kafka, topics: Topics, group: str, log, max_poll_records: int = 50,
           *options: str) -> subprocess.Popen:
    """A `cmab worker` process (``options``: more of its options); its stderr goes to the
    open file ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "bandit.cli", "worker", "--bootstrap-servers",
         kafka.bootstrap_servers, "--topic-prefix", topics.prefix, "--group", group,
         "--max-poll-records", str(max_poll_records), "--session-timeout-ms", "2000",
         "--heartbeat-interval-ms", "500", "--quiet", *options],
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


def _run_until(broker, topics: Topics, group: str, counts, partitions: int,
               activation: str = "decision"):
    """An in-process worker stepped until the state topic shows every record of ``counts``
    consumed; returns the service engine that followed the state topic, and the checkpoints."""
    engine, follower = _service(broker, topics, activation)
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



# -- the service in stream mode: its own decision log, posted sends and outcomes ---------------


def _requests(n: int, seed: int, secret: bool = False) -> list[dict]:
    """Decision requests of ``streamdata.spec()``: contexts of multiples of 1/4 with consent;
    without consent (every fifth), with ``secret`` a context and segment no topic may hold."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        request = {"campaign": "news", "user_id": f"u{seed}-{i}",
                   "context": {"engagement": float(rng.integers(0, 5)) / 4,
                               "plan": ["free", "pro"][int(rng.integers(0, 2))]},
                   "segments": {"region": ["north", "south"][int(rng.integers(0, 2))]}}
        if i % 5 == 0:
            request["consent"] = False
            if secret:
                request["context"] = {"engagement": 0.123456789, "plan": "SECRET-PLAN"}
                request["segments"] = {"region": "SECRET-REGION"}
        out.append(request)
    return out


def _email(d, i: int, sent: bool) -> tuple[list[dict], list[tuple[int, str, str | None, float]],
                                            Counter]:
    """The send (if ``sent``) and outcomes of logged decision ``d``, the ``i``-th: every
    outcome type, conversions with a value, machine opens and a scanner's clicks; returns
    the events, the learned outcomes (as ``streamdata.joined_of`` takes them) and what is
    excluded ("machine", "scanner"; "of unsent": every outcome of an unsent decision)."""
    send_ts = d.ts + 5
    events = [{"type": "send", "event_id": f"s-{d.decision_id}", "decision_id": d.decision_id,
               "ts": send_ts}] if sent else []
    planned: list[tuple[str, int, dict]] = [("open", 50, {"machine": True} if i % 7 == 0 else {})]
    if i % 3 == 0:
        planned.append(("click", 100, {"slot": "subject"} if i % 2 else {}))
    if i % 13 == 0:
        planned.append(("click", streamdata.SCANNER_MS // 2, {}))  # a link scanner's
    if i % 5 == 0:
        planned.append(("conversion", 200, {"value": float(i % 4 + 1), "campaign": "news"}))
    if i % 11 == 0:
        planned.append(("unsubscribe", 300, {}))
    if i % 17 == 0:
        planned.append(("complaint", 400, {}))
    if i % 19 == 0:
        planned.append(("bounce", 1, {}))
    learned, excluded = [], Counter[str]()
    for j, (kind, delay, extra) in enumerate(planned):
        event = {"type": kind, "event_id": f"o{j}-{d.decision_id}", "decision_id": d.decision_id,
                 "ts": send_ts + delay, **extra}
        events.append(event)
        if not sent:
            excluded["of unsent"] += 1
        elif extra.get("machine"):
            excluded["machine"] += 1
        elif kind == "click" and delay < streamdata.SCANNER_MS:
            excluded["scanner"] += 1
        else:
            learned.append((event["ts"], kind, extra.get("slot"), extra.get("value", 1.0)))
    return events, learned, excluded


def _read_all(kafka, topic: str) -> list:
    """Every record of every partition of ``topic``, until a poll brings nothing for a
    second (the broker's end offsets are wrong for partitions written in batches)."""
    consumer = reader(kafka.bootstrap_servers)
    try:
        consumer.assign([TopicPartition(topic, p)
                         for p in sorted(consumer.partitions_for_topic(topic))])
        out = []
        while batches := consumer.poll(timeout_ms=1000):
            for records in batches.values():
                out += records
        return out
    finally:
        consumer.close()


def _ends(kafka, topics: Topics) -> dict[tuple[str, int], int]:
    """The next offset of every partition of the two inputs (where a worker ends)."""
    ends: dict[tuple[str, int], int] = {}
    for topic in (topics.decisions, topics.events):
        for r in _read_all(kafka, topic):
            ends[(topic, r.partition)] = max(ends.get((topic, r.partition), 0), r.offset + 1)
    return ends


def _serve_and_join(kafka, requests: list[dict], *, activation: str = "decision",
                    sent=lambda i: True, partitions: int = 2, check=None):
    """A service in stream mode (a real uvicorn server; its decision log on the broker)
    decides ``requests`` in one batch call; the logged decisions are read back from
    ``.decisions`` (each once, in its id's partition); the sender posts the sends of those
    ``sent(i)``, a tracker the outcomes of all (``_email``), over HTTP; sentinels close every
    window; an in-process worker joins it all. ``check(client)`` runs while the service is up.
    Returns the model the state topic holds, the checkpoints' counters summed, the expected
    join, what was excluded, the topics."""
    from bandit.service import create_app
    from bandit.settings import Settings
    from streams.link import StreamLink
    from tests.servers import live
    from tests.streams.test_decisionlog import logged_lines

    topics = Topics(f"s{uuid.uuid4().hex[:10]}")
    settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=topics.prefix)
    link = partial(StreamLink, bootstrap_servers=kafka.bootstrap_servers, topics=topics,
                   partitions=partitions)
    with live(create_app(Engine(seed=0), settings, link)) as client:
        spec = streamdata.spec(activation=activation).model_dump(mode="json")
        assert client.post("/v1/campaigns", json=spec).status_code == 201
        answer = client.post("/v1/decisions/batch", json={"campaign": "news",
                                                          "requests": requests})
        assert answer.status_code == 200, answer.text
        ids = [d["decision_id"] for d in answer.json()["decisions"]]
        deadline = time.monotonic() + 30
        while f"cmab_decisions_logged_total {len(ids)}.0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the decisions were not logged"
            time.sleep(0.05)
        logged = {d.decision_id: d for d in map(
            LoggedDecision.model_validate_json,
            logged_lines(kafka.bootstrap_servers, topics, partitions))}
        assert len(logged) == len(ids) and set(logged) == set(ids)  # each once
        events, joined, excluded = [], [], Counter[str]()
        for i, decision_id in enumerate(ids):
            d = logged[decision_id]
            mine, learned, out = _email(d, i, sent(i))
            events += mine
            excluded += out
            if sent(i) or activation == "decision":
                joined.append(streamdata.joined_of(d, learned))
        events.sort(key=lambda e: e["ts"])
        posted = client.post("/v1/events", json=events)
        assert posted.status_code == 200, posted.text
        end_ts = max(e["ts"] for e in events) + 10 * streamdata.WINDOW_MS
        _write(kafka, topics, [(stream, p, None, value) for p in range(partitions)
                               for stream, value in zip(
                                   (DECISIONS, EVENTS), streamdata.sentinels(p, end_ts),
                                   strict=True)])
        counts = _ends(kafka, topics)
        engine, parts = _run_until(kafka, topics, f"g-{topics.prefix}", counts, partitions,
                                   activation)
        if check is not None:
            check(client)
    total = Counters()
    for part in parts.values():
        total.add(part.counters)
    return engine, total, joined, excluded, topics


def test_the_service_logs_its_decisions_and_learns_the_posted_sends_and_outcomes(kafka):
    """Decisions the service logs itself, sends and every outcome type posted over HTTP:
    the model equals a direct batch computation, the machine and scanner outcomes are
    counted apart, and the service follows the learned state."""

    def check(client) -> None:
        bad = client.post("/v1/events", json=[{"type": "click", "event_id": "x",
                                               "decision_id": "1" * 32, "campaign": "ghost",
                                               "ts": 1}])
        assert bad.status_code == 404 and "ghost" in bad.text
        deadline = time.monotonic() + 60
        while client.get("/v1/campaigns/news/report").json()["impressions"] < 300:
            assert time.monotonic() < deadline, "the model never reached the service"
            time.sleep(0.05)
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["state_age_s"] >= 0

    engine, total, joined, excluded, _ = _serve_and_join(kafka, _requests(300, seed=14),
                                                         check=check)
    streamdata.assert_same_model(engine, streamdata.reference(streamdata.of_joined(joined)))
    assert (total.joined, total.decisions) == (300, 300 + 2)  # and the sentinels
    assert (total.machine, total.scanner) == (excluded["machine"], excluded["scanner"])
    assert excluded["machine"] > 0 and excluded["scanner"] > 0
    assert (total.late, total.dead_letters, total.unsent) == (0, 0, 0)


def test_a_campaign_activated_by_sends_learns_only_the_sent_decisions(kafka):
    """Deferred activation: the service decides, the sender confirms half of the sends,
    the tracker reports outcomes of every decision; only the sent ones are learned."""
    engine, total, joined, excluded, _ = _serve_and_join(
        kafka, _requests(200, seed=15), activation="send", sent=lambda i: i % 2 == 0)
    assert len(joined) == 100
    streamdata.assert_same_model(engine, streamdata.reference(
        streamdata.of_joined(joined), activation="send"))
    assert (total.joined, total.unsent) == (100, 100)
    assert (total.machine, total.scanner) == (excluded["machine"], excluded["scanner"])
    # The outcomes of an email never sent wait for its send, then are dead letters.
    assert total.dead_letters == excluded["of unsent"] > 0


def test_no_topic_holds_the_context_or_segments_of_a_subscriber_without_consent(kafka):
    """The issue's read-back: after a run (the service logging its decisions in stream
    mode, sends and outcomes posted, a worker joining), every record of every topic (key,
    value, headers) is read back: the secret context and segment values of the subscribers
    who did not consent appear nowhere, those of the others do."""
    requests = _requests(100, seed=16, secret=True)
    requests[1]["segments"] = {"region": "SHOWN-REGION"}  # with consent: logged and joined
    _, total, _, _, topics = _serve_and_join(kafka, requests)
    assert total.joined == 100
    written = b"".join(b"%r%r%r" % (r.key, r.value, r.headers)
                       for topic in topics.partition_counts(1)
                       for r in _read_all(kafka, topic))
    assert written.count(b"SHOWN-REGION") >= 2  # the decision log, .joined (and the state)
    for secret in (b"SECRET-PLAN", b"SECRET-REGION", b"0.123456789"):
        assert secret not in written


def _sender(kafka, topics: Topics, s: streamdata.Streams, partitions: int,
            counts: dict[tuple[str, int], int]):
    """``send_until(ts)``: write the decisions and events of ``s`` up to event time ``ts`` not
    written yet, in event time (past ``s.end_ts``: each partition's sentinels too), adding the
    records written to ``counts``."""
    import orjson

    times = [orjson.loads(line)["ts"] for _, line in s.decisions]
    sent = {DECISIONS: 0, EVENTS: 0}

    def send_until(ts: float) -> None:
        records: list[tuple[str, int | None, bytes | None, bytes]] = []
        first = sent[DECISIONS]
        while sent[DECISIONS] < len(s.decisions) and times[sent[DECISIONS]] <= ts:
            sent[DECISIONS] += 1
        records += [(DECISIONS, p, key, value) for p, packed in sorted(streamdata.blocks_of(
            s.decisions[first:sent[DECISIONS]], partitions).items()) for key, value in packed]
        while sent[EVENTS] < len(s.events) and s.events[sent[EVENTS]]["ts"] <= ts:
            event = s.events[sent[EVENTS]]
            records.append((EVENTS, None, event["decision_id"].encode(), encode(event)))
            sent[EVENTS] += 1
        if ts > s.end_ts:
            for p in range(partitions):
                block, mark = streamdata.sentinels(p, s.end_ts + 10 * streamdata.WINDOW_MS)
                records += [(DECISIONS, p, None, block), (EVENTS, p, None, mark)]
        for key, n in _write(kafka, topics, records).items():
            counts[key] = counts.get(key, 0) + n

    return send_until


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
    subject_id, subject_line = s.decisions[200]
    subject_ts = orjson.loads(subject_line)["ts"]
    user_id = s.user_ids[subject_id]
    counts: dict[tuple[str, int], int] = {}
    send_until = _sender(kafka, topics, s, partitions, counts)

    engine, follower = _service(kafka, topics)
    group = f"g-{topics.prefix}"
    log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    worker = _spawn(kafka, topics, group, log)
    try:
        send_until(subject_ts)
        assert follower.wait_for(_done(topics, dict(counts), partitions), 60), "no checkpoint"
        settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=topics.prefix)
        _share_secrets(kafka, topics, s.subjects)  # the service erases by their pseudonyms
        link = stream_link(kafka.bootstrap_servers, topics.prefix)
        with live(create_app(Engine(seed=0), settings, link)) as client:
            erased = client.delete(f"/v1/subjects/{user_id}")
            assert erased.status_code == 200, erased.text
            # The service's own ledger does not hold what the workers learned: incomplete.
            assert erased.json() == {"erased": 0, "forgotten": 0, "retrain": {},
                                     "complete": False, "forwarded": True}
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        worker = _spawn(kafka, topics, group, log)
        send_until(s.end_ts + 10 * streamdata.WINDOW_MS)
        finished = follower.wait_for(_done(topics, counts, partitions), 120)
        assert finished, f"the worker did not finish: {(tmp_path / 'workers.log').read_text()}"
    finally:
        _stop(worker)
        follower.close()
        log.close()
    [key] = [k.hex() for k in s.subjects.all_of(user_id)]
    kept = [e for e in s.joined if e.subject != key]
    assert len(kept) == len(s.joined) - 1
    streamdata.assert_same_model(engine, streamdata.reference(streamdata.of_joined(kept)))
    joined = [orjson.loads(v) for block in read_until_idle(kafka.bootstrap_servers, topics.joined)
              for v in examples(block)]
    assert {j["decision_id"] for j in joined} == {e.decision_id for e in kept}
    assert key not in {j["subject"] for j in joined}


def campaign_records(kafka, topics: Topics) -> list:
    """Every record on the campaigns topic, decoded."""
    from streams.kafka import read_campaign_records

    consumer = reader(kafka.bootstrap_servers)
    tp = TopicPartition(topics.campaigns, 0)
    consumer.assign([tp])
    try:
        return read_campaign_records(consumer, tp)
    finally:
        consumer.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a worker process and wait for it (killed, and the test failed, if it hangs)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _share_secrets(kafka, topics: Topics, subjects: SubjectKeys) -> None:
    """Publish the deciding engine's subscriber secrets on the subjects topic, as the
    replica that decided would have (``streams.subjects``)."""
    out = producer(kafka.bootstrap_servers)
    try:
        for index, secret in zip(*subjects.state(), strict=True):
            out.send(topics.subjects, secret.tobytes(),
                     key=index.tobytes() + fingerprint(secret.tobytes()), partition=0)
        out.flush()
    finally:
        out.close()


def _checkpoints(kafka, topics: Topics, partitions: int) -> dict[int, PartitionJoin]:
    """The newest checkpoint of every partition, whole (the erasure ledger too, its sealed
    chunks read from the ledger topic)."""
    from streams.kafka import read_at, read_last

    consumer = reader(kafka.bootstrap_servers)
    try:
        out = {}
        for p in range(partitions):
            part = PartitionJoin.restore(read_last(consumer, TopicPartition(topics.state, p)))
            ledger = part.engine.ledger
            stored = read_at(consumer, TopicPartition(topics.ledger, p),
                             [at for _, at in ledger.references()])
            ledger.load([value for _, value in stored])
            out[p] = part
        return out
    finally:
        consumer.close()


def _compacted_ledger(kafka, topics: Topics, partitions: int) -> dict[int, dict[bytes, bytes]]:
    """What compaction leaves of each partition of the ledger topic (the local broker never
    compacts): the newest value of each key whose newest record is no tombstone."""
    from streams.kafka import read_from

    consumer = reader(kafka.bootstrap_servers)
    try:
        out = {}
        for p in range(partitions):
            newest = {key: value for _, key, value in
                      read_from(consumer, TopicPartition(topics.ledger, p), 0)}
            out[p] = {key: value for key, value in newest.items() if value is not None}
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("half_life_ms", [None, 700.0])
def test_an_erasure_takes_learned_decisions_out_through_a_sigkilled_worker(kafka, tmp_path,
                                                                           half_life_ms):
    """A `cmab worker` learned the first 60% of a stream in which subject S made decisions
    (3 learned, 1 open, 2 after) and stopped; an erase record of S up to then (as `cmab erase`
    publishes it) and the rest of the stream are written, and a worker restores the
    partitions, applies the record (forgets S's learned decisions, drops the open one) and
    plays on, until it is SIGKILLed at a random instant after its first checkpoint that shows
    the erasure; a third worker restores and finishes. Every partition's policy sums then
    equal, to 1e-9 seen from a common time, those of a run on the stream without S's erased
    decisions and their events; no checkpoint's ledger holds them, and every one shows the
    erase record applied. The workers keep 1600 learned decisions a partition, so most sit in
    sealed chunks on the ledger topic: compacted, it holds exactly the chunks the newest
    checkpoints reference, none with S's erased rows. (The stream is written while no worker
    runs: a worker that reads half-written inputs may judge outcomes late, which no erasure
    is about.)"""
    import orjson

    from streams.link import ErasureWatch, publish_erasures
    from tests.streams.test_worker import (
        _drain,
        _partition_engines,
        assert_same_sums,
        decay_log,
        subject_stream,
        without,
    )

    partitions = 2
    topics = Topics(f"e{uuid.uuid4().hex[:10]}")
    create_topics(kafka.bootstrap_servers, topics, partitions)
    engine = Engine()
    engine.create_campaign(streamdata.spec(half_life_ms=half_life_ms))
    with Publisher(kafka.bootstrap_servers, topics) as pub:
        pub.campaign(engine.campaign_record("news"))
    s, key = subject_stream(1500, seed=43, picks=[100, 400, 700, 899, 1100, 1400])
    at = orjson.loads(s.decisions[900][1])["ts"]  # decision 899's window is open then
    plain = without(s, key, at)
    assert len(plain.joined) == len(s.joined) - 4
    reference = decay_log(partitions, half_life_ms)
    streamdata.fill(reference, plain)
    worker = Worker(MemoryTransport(reference))
    worker.transport.attach(worker)
    _drain(worker)
    expected = _partition_engines(reference)

    counts: dict[tuple[str, int], int] = {}
    send_until = _sender(kafka, topics, s, partitions, counts)
    follower = StateFollower(engine, kafka.bootstrap_servers, topics).start()
    group = f"g-{topics.prefix}"
    log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    rng = np.random.default_rng(43 if half_life_ms is None else 44)
    send_until(at)
    ledger = ("--erasure-ledger", "1600")
    proc = _spawn(kafka, topics, group, log, 50, *ledger)
    try:
        assert follower.wait_for(_done(topics, dict(counts), partitions), 60), "no checkpoint"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        [offset] = publish_erasures(kafka.bootstrap_servers, topics,
                                    [{"erase": key.hex(), "at": at}])
        send_until(s.end_ts + 10 * streamdata.WINDOW_MS)
        watch = ErasureWatch(kafka.bootstrap_servers, topics, offset)
        proc = _spawn(kafka, topics, group, log, 50, *ledger)
        try:
            deadline = time.monotonic() + 60
            while not watch.check():
                assert time.monotonic() < deadline, "no checkpoint shows the erasure"
                time.sleep(0.05)
        finally:
            watch.close()
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = _spawn(kafka, topics, group, log, 50, *ledger)
        finished = follower.wait_for(_done(topics, counts, partitions), 120)
        assert finished, f"the worker did not finish: {(tmp_path / 'workers.log').read_text()}"
    finally:
        _stop(proc)
        follower.close()
        log.close()
    checkpoints = _checkpoints(kafka, topics, partitions)
    for p, part in checkpoints.items():
        assert_same_sums(part.engine, expected[p])
        assert not len(part.engine._ledger.find({key: at}))
        assert part.campaigns == offset + 1
    assert sum(len(part.engine._ledger.find({key: math.inf}))
               for part in checkpoints.values()) == 2  # made after the erasure's time
    hi, lo = key_words(key)
    for p, kept in _compacted_ledger(kafka, topics, partitions).items():
        assert set(kept) == {k.encode() for k in checkpoints[p].engine.ledger.stored_keys()}
        assert len(kept) >= 3
        for value in kept.values():
            with np.load(io.BytesIO(value)) as npz:
                mine = (npz["rows/subject_hi"] == hi) & (npz["rows/subject_lo"] == lo)
                assert np.all(npz["rows/ts"][mine] > at)


def test_cmab_erase_publishes_the_records_and_waits_for_every_partition(kafka, tmp_path):
    """`cmab erase`: bad input is one line and exit code 2, nothing published; good input
    publishes one erase record per subscriber (a hash of the id, no id) and prints a line
    each; with --wait it returns once every partition's checkpoint shows them applied."""
    import orjson

    from bandit.engine.randomness import subject_key
    from streams.worker import erase_record

    partitions = 2
    topics = _setup(kafka, partitions)

    def cmab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bandit.cli", "erase", *args, "--bootstrap-servers",
             kafka.bootstrap_servers, "--topic-prefix", topics.prefix],
            capture_output=True, text=True, timeout=120)

    for bad in (["x" * 129], ["u1", "--at-ms", "-5"], ["u1", "--at-ms", "soon"], []):
        done = cmab(*bad)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("cmab: error:")
    wrong = subprocess.run([sys.executable, "-m", "bandit.cli", "erase", "u1",
                            "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix",
                            "nowhere"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "nowhere.subjects" in wrong.stderr
    assert wrong.stderr.count("\n") == 1

    done = cmab("alice@example.org", "bob", "--at-ms", "1000")
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["alice@example.org",
                                                                         "bob"]
    records = campaign_records(kafka, topics)
    # No secret on the subjects topic: each has the legacy key only.
    assert records[1:] == [erase_record(subject_key("alice@example.org"), 1000),
                           erase_record(subject_key("bob"), 1000)]
    assert b"alice" not in orjson.dumps(records)

    s = streamdata.make(200, seed=44)
    counts = _produce(kafka, topics, s, partitions)
    log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115 - closed below
    proc = _spawn(kafka, topics, f"g-{topics.prefix}", log)
    try:
        erased = cmab("carol", "--wait", "--timeout-s", "120")
        assert erased.returncode == 0, erased.stderr
        assert erased.stderr.splitlines()[-1] == (
            f"cmab erase: {partitions} of {partitions} partitions applied the erasures")
        engine, follower = _service(kafka, topics)
        try:
            assert follower.wait_for(_done(topics, counts, partitions), 120)
        finally:
            follower.close()
    finally:
        _stop(proc)
        log.close()
    unapplied = cmab("dave", "--wait", "--timeout-s", "1")  # no worker runs now
    assert unapplied.returncode == 1
    assert unapplied.stderr.splitlines()[-1].startswith(
        f"cmab: error: --wait: 0 of {partitions} partitions applied the erasures in 1 s")


def test_a_worker_whose_batch_failed_half_way_writes_no_checkpoint_as_it_closes(kafka,
                                                                                 monkeypatch):
    topics = _setup(kafka, 1)
    _produce(kafka, topics, streamdata.make(300, seed=3), 1)
    applied, written = PartitionJoin.process, []

    def fails(self, *args, **kwargs):
        # A batch is applied, then something breaks, while batches before it wait for their
        # checkpoint.
        pending = bool(worker._pending)
        out = applied(self, *args, **kwargs)
        if out.counters.records and pending:
            written.append(worker.checkpoints)
            raise RuntimeError("boom")
        return out

    monkeypatch.setattr(PartitionJoin, "process", fails)
    transport = KafkaTransport(kafka.bootstrap_servers, topics, f"g-{topics.prefix}",
                               max_poll_records=20, **TEST_GROUP)
    worker = Worker(transport, checkpoint_interval_ms=10**9)
    transport.attach(worker)
    # The batch's error, not the consumer's: closing revokes the partition, and a checkpoint
    # written then would hold offsets past records the state did not take whole.
    deadline = time.monotonic() + 120  # a liveness bound: the failure comes in a few steps
    with pytest.raises(RuntimeError, match="boom"):
        worker.run(lambda: time.monotonic() > deadline)
    assert written == [worker.checkpoints]  # none after the failed batch
    consumer = reader(kafka.bootstrap_servers)
    try:
        state = TopicPartition(topics.state, 0)
        assert consumer.end_offsets([state])[state] == worker.checkpoints
    finally:
        consumer.close()
