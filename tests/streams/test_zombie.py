"""Zombie workers on a real broker: a worker that stalls past its session timeout loses its
partitions; when it wakes it may still write the checkpoint it had computed. That checkpoint
is a consistent (state, offsets) pair but behind: the decision service must not step back to
it, and the final state must still be exactly the uninterrupted one."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from kafka import TopicPartition

from bandit.engine import Engine
from bandit.settings import Settings
from streams.follower import behind
from streams.kafka import read_last, reader
from streams.publish import Publisher
from streams.records import DECISIONS, EVENTS, STREAMS
from streams.topics import Topics, create_topics
from streams.worker import PartitionJoin
from tests import streamdata
from tests.streams.test_worker_kafka import _done, _joined_ids, _produce, _service, _setup

# A worker process as `cmab worker` builds it, paced (a pause after every batch of 20
# records, so that the stream lasts through two rebalances), with two hooks: it prints its
# partitions when they change, and after SIGUSR1 it stops itself (SIGSTOP) just before
# writing its next checkpoint, as a GC pause between computing a checkpoint and writing it
# would.
_WORKER = """
import json, os, signal, sys, time
from streams.kafka import KafkaTransport
from streams.topics import Topics
from streams.worker import Worker

bootstrap, prefix, group = sys.argv[1:4]
transport = KafkaTransport(bootstrap, Topics(prefix), group, max_poll_records=20,
                           session_timeout_ms=2000, heartbeat_interval_ms=500)
worker = Worker(transport)
transport.attach(worker)
flags = {"stall": False, "stop": False, "shown": None}
signal.signal(signal.SIGUSR1, lambda *_: flags.update(stall=True))
signal.signal(signal.SIGTERM, lambda *_: flags.update(stop=True))
send = transport.send_checkpoint

def send_checkpoint(partition, data):
    if flags["stall"]:
        flags["stall"] = False
        print(json.dumps({"stalled": partition}), flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
    send(partition, data)

def should_stop():
    time.sleep(0.02)
    if sorted(worker.partitions) != flags["shown"]:
        flags["shown"] = sorted(worker.partitions)
        print(json.dumps({"partitions": flags["shown"]}), flush=True)
    return flags["stop"]

transport.send_checkpoint = send_checkpoint
worker.run(should_stop)
"""


class _Child:
    """A worker process and the JSON lines it prints."""

    def __init__(self, kafka, topics: Topics, group: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, kafka.bootstrap_servers, topics.prefix, group],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.partitions: list[int] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def expect(self, predicate, timeout_s: float, what: str) -> dict:
        """The first line (from now) that ``predicate`` accepts; partitions lines are kept."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"worker {self.proc.pid}: {what} not seen in {timeout_s:.0f} s")
            self.partitions = line.get("partitions", self.partitions)
            if predicate(line):
                return line

    def stop(self) -> int:
        """SIGTERM, as `cmab worker` gets it; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def close(self) -> None:
        """Kill the process if it still runs (stopped or not), and release its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self.proc.stdout.close()


def _last_offsets(kafka, topics: Topics, partitions: int) -> dict[int, dict[str, int]]:
    """The offsets of the last checkpoint of every state partition (what a restoring worker
    or a starting service reads)."""
    consumer = reader(kafka.bootstrap_servers)
    try:
        return {p: PartitionJoin.restore(read_last(consumer, TopicPartition(topics.state, p)),
                                         model_only=True).offsets for p in range(partitions)}
    finally:
        consumer.close()


def test_a_worker_stalled_past_its_session_timeout_changes_nothing(kafka):
    """Two workers over 4 partitions; one stops (SIGSTOP) with a checkpoint in hand, the
    other takes its partitions and finishes the stream; the stopped one wakes (SIGCONT) and
    writes its now stale checkpoint. The service's model never steps back, the final state
    equals the uninterrupted one bit for bit, and the state topic ends at the final offsets
    again (the zombie's rejoin makes the group restore, and the stale work is redone)."""
    partitions = 4
    topics = _setup(kafka, partitions)
    s = streamdata.make(2000, seed=21)
    counts = _produce(kafka, topics, s, partitions)  # all of it first: no wall-clock luck
    engine, follower = _service(kafka, topics)
    group = f"g-{topics.prefix}"
    seen: list[dict[int, dict[str, int]]] = []  # the service's offsets, update after update

    def record(latest: dict[int, PartitionJoin]) -> dict[int, PartitionJoin]:
        if not seen or {p: part.offsets for p, part in latest.items()} != seen[-1]:
            seen.append({p: dict(part.offsets) for p, part in latest.items()})
        return latest

    def watch(until, what: str) -> None:
        """Record the service's updates until ``until()`` holds (60 s at most)."""
        deadline = time.monotonic() + 60
        while not until():
            follower.wait_for(lambda latest: record(latest) is None, 0.1)
            assert time.monotonic() < deadline, what

    done = _done(topics, counts, partitions)
    a, b = _Child(kafka, topics, group), _Child(kafka, topics, group)
    try:
        for child in (a, b):
            child.expect(lambda line: len(line.get("partitions", [])) == 2, 60, "2 partitions")
        a.proc.send_signal(signal.SIGUSR1)  # a stalls at its next checkpoint
        stalled = a.expect(lambda line: "stalled" in line, 60, "the stall")["stalled"]
        assert stalled in a.partitions
        b.expect(lambda line: len(line.get("partitions", [])) == partitions, 60,
                 "the stalled worker's partitions")
        assert not done(follower.partitions()), "the stream ended before the rebalance"
        watch(lambda: done(follower.partitions()), "the other worker did not finish")
        final = {p: dict(part.offsets) for p, part in follower.partitions().items()}

        os.kill(a.proc.pid, signal.SIGCONT)  # the zombie writes its stale checkpoint
        watch(lambda: follower.stale >= 1, "the zombie's checkpoint never reached the service")
        # Its rejoin makes the group restore every partition from its last checkpoint: the
        # stalled partition's is the stale one, so its new owner redoes that work and writes
        # the final checkpoint again.
        watch(lambda: _last_offsets(kafka, topics, partitions) == final,
              "the state topic does not end at the final offsets")
        assert all(child.stop() in (0, -signal.SIGTERM) for child in (a, b))
    finally:
        for child in (a, b):
            child.close()
        follower.close()
    streamdata.assert_same_model(engine, streamdata.reference(s))
    assert {p: part.offsets for p, part in follower.partitions().items()} == final
    assert len(seen) > 1
    # The service's model never stepped back.
    for before, after in zip(seen, seen[1:], strict=False):
        for p, offsets in before.items():
            assert not behind(after[p], offsets), (p, offsets, after[p])
    assert _joined_ids(kafka, topics, partitions, len(s.joined)) == {
        e.decision_id for e in s.joined}


def _checkpoint(partition: int, n: int, decisions: int, events: int) -> bytes:
    """A partition checkpoint whose model learned the first ``n`` decisions of a stream."""
    s = streamdata.make(n, seed=22)
    return PartitionJoin(partition, streamdata.reference(s),
                         offsets={DECISIONS: decisions, EVENTS: events}).checkpoint()


def test_the_service_ignores_checkpoints_behind_the_absorbed_one_and_counts_them(kafka):
    from bandit.service import create_app
    from streams.link import stream_link
    from tests.servers import live

    prefix = f"z{uuid.uuid4().hex[:10]}"
    topics = Topics(prefix)
    create_topics(kafka.bootstrap_servers, topics, 2)
    settings = Settings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=prefix)
    link = stream_link(kafka.bootstrap_servers, prefix)
    with live(create_app(Engine(seed=0), settings, link)) as client, \
            Publisher(kafka.bootstrap_servers, topics) as pub:
        assert client.post("/v1/campaigns", json=streamdata.spec().model_dump(
            mode="json")).status_code == 201

        def impressions() -> int:
            return int(client.get("/v1/campaigns/news/report").json()["impressions"])

        def stale() -> float:
            lines = client.get("/metrics").text.splitlines()
            return float(next(x for x in lines if x.startswith("cmab_stale_checkpoints_total"))
                         .split()[1])

        def wait(condition, what: str) -> None:
            deadline = time.monotonic() + 30
            while not condition():
                assert time.monotonic() < deadline, what
                time.sleep(0.02)

        def send(*values: bytes) -> None:
            for value in values:  # each flushed on its own, as the workers do
                pub.raw(topics.state, [value], key=b"0")

        assert stale() == 0
        send(_checkpoint(0, 30, 100, 50))
        wait(lambda: impressions() == 30, "the first checkpoint was not absorbed")
        # The same offsets as the absorbed one (so the same state, whatever its bytes); behind
        # in both inputs; behind in events only (ahead in decisions): none is taken.
        send(_checkpoint(0, 20, 100, 50), _checkpoint(0, 10, 60, 40), _checkpoint(0, 40, 120, 49))
        wait(lambda: stale() == 2, "the stale checkpoints were not counted")
        assert impressions() == 30
        send(_checkpoint(0, 50, 120, 50))
        wait(lambda: impressions() == 50, "the newer checkpoint was not absorbed")
        assert stale() == 2
        # A newer checkpoint, then a zombie's that is ahead of the absorbed one but behind the
        # newer one (in one poll or two): the newer one stays.
        send(_checkpoint(0, 60, 130, 55), _checkpoint(0, 45, 125, 50))
        wait(lambda: impressions() == 60, "the newest not-stale checkpoint was not absorbed")
        # In two polls the zombie's is counted a poll after the newer one was absorbed.
        wait(lambda: stale() == 3, "the zombie's checkpoint was not counted")
        assert impressions() == 60


@pytest.mark.parametrize(("offsets", "absorbed", "stale"), [
    ((100, 60), (100, 60), False),  # the same records: not behind (and skipped as the same)
    ((101, 60), (100, 60), False),
    ((100, 61), (100, 60), False),
    ((99, 60), (100, 60), True),
    ((100, 59), (100, 60), True),
    ((120, 59), (100, 60), True),  # ahead in one input, behind in the other
    ((0, 0), (1, 0), True),
])
def test_behind_compares_both_inputs(offsets, absorbed, stale):
    assert behind(dict(zip(STREAMS, offsets, strict=True)),
                  dict(zip(STREAMS, absorbed, strict=True))) is stale
