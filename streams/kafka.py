"""The worker's transport over Kafka (kafka-python): a consumer group over decisions and
events, a producer for outputs and checkpoints, and plain readers for checkpoints and campaigns.

What the local broker taught (shared/NOTES-KAFKA.md): offsets are committed explicitly with a
leader epoch of -1; "latest" offsets are only right when the partition's newest batch holds one
record, so every checkpoint goes in a batch of its own (a partition's checkpoint is flushed
before its next one is sent); topics are never auto-created; tests use a 2 s session timeout,
and nobody sets ``group_instance_id``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from bandit.errors import InvalidInputError, UnavailableError
from streams.records import DECISIONS, EVENTS, STREAMS, Batch, DeadLetter, dead_letter_headers
from streams.topics import Topics

# A checkpoint holds a partition's open windows: allow big records.
MAX_RECORD_BYTES = 256 << 20
_READ_TIMEOUT_S = 10.0
# How long the broker may hold a fetch that found nothing new. Short, because the local broker
# does not answer a waiting fetch when a record arrives but holds it, so every hop of the loop
# (events -> worker, checkpoint -> decision service) waits part of it (kafka-python's default
# makes that lag visible). Not much shorter, because on the durable broker (s3:// storage) a
# fetch must outlast the store's read, or a worker never catches up
# (tests/streams/test_durable.py). A busy consumer's fetches come back full at once, so throughput
# does not depend on it; an idle consumer fetches about every half of it.
FETCH_MAX_WAIT_MS = 100


def producer(bootstrap_servers: str, **config: Any) -> KafkaProducer:
    """A producer with the project's settings (no topic auto-creation, big records)."""
    settings = {"allow_auto_create_topics": False, "max_request_size": MAX_RECORD_BYTES,
                "linger_ms": 5, "batch_size": 1 << 20}
    settings.update(config)
    try:
        return KafkaProducer(bootstrap_servers=bootstrap_servers, **settings)
    except KafkaError as exc:
        raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None


def reader(bootstrap_servers: str, **config: Any) -> KafkaConsumer:
    """A consumer outside any group, for assign() and seek()."""
    settings = {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS}
    settings.update(config)
    try:
        return KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             allow_auto_create_topics=False,
                             fetch_max_bytes=MAX_RECORD_BYTES,
                             max_partition_fetch_bytes=MAX_RECORD_BYTES, **settings)
    except KafkaError as exc:
        raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None


def read_last(consumer: KafkaConsumer, tp: TopicPartition) -> bytes | None:
    """The value of a partition's last record (None if empty). Exact because the writers of
    such partitions flush every record on its own."""
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    if end == 0:
        return None
    consumer.seek(tp, end - 1)
    deadline = time.monotonic() + _READ_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=100).get(tp, [])
        if batch:
            last = batch[-1].value
        if last is not None and consumer.position(tp) >= end:
            return last
    raise UnavailableError(f"{tp.topic}[{tp.partition}]: last record not readable in "
                           f"{_READ_TIMEOUT_S:.0f} s")


def read_until_idle(bootstrap_servers: str, topic: str, *, idle_ms: int = 1000
                    ) -> Iterator[bytes | None]:
    """The value of every record of every partition of ``topic``, from the start, until a
    poll of ``idle_ms`` brings nothing (the broker's end offsets are wrong for partitions
    written in batches, as the joined topic is)."""
    consumer = reader(bootstrap_servers)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise InvalidInputError(f"topic {topic!r} does not exist at {bootstrap_servers}")
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        while batches := consumer.poll(timeout_ms=idle_ms):
            for records in batches.values():
                yield from (r.value for r in records)
    finally:
        consumer.close()


def read_at(consumer: KafkaConsumer, tp: TopicPartition, offsets: list[int]
            ) -> list[tuple[bytes | None, bytes | None]]:
    """The (key, value) of the records of partition ``tp`` at ``offsets`` ((None, None) for
    an offset that holds none: removed, or past the end). Consecutive offsets are one read."""
    consumer.assign([tp])
    wanted, got = set(offsets), {}
    end = consumer.end_offsets([tp])[tp]
    for offset in sorted(wanted):
        if offset in got or offset >= end:
            continue
        consumer.seek(tp, offset)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while offset not in got and consumer.position(tp) <= offset:
            if time.monotonic() > deadline:
                raise UnavailableError(f"{tp.topic}[{tp.partition}]: offset {offset} not "
                                       f"readable in {_READ_TIMEOUT_S:.0f} s")
            for record in consumer.poll(timeout_ms=100).get(tp, []):
                if record.offset in wanted:
                    got[record.offset] = (record.key, record.value)
    return [got.get(offset, (None, None)) for offset in offsets]


def read_from(consumer: KafkaConsumer, tp: TopicPartition, start: int
              ) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of the records of partition ``tp`` from ``start`` to its end
    (exact when its writers flush every record on its own)."""
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    out: list[tuple[int, bytes | None, bytes | None]] = []
    if start >= end:
        return out
    consumer.seek(tp, start)
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise UnavailableError(f"{tp.topic}[{tp.partition}]: not readable to its end")
        out += [(r.offset, r.key, r.value) for r in consumer.poll(timeout_ms=100).get(tp, [])]
    return out


def read_campaign_records(consumer: KafkaConsumer, tp: TopicPartition) -> list[dict[str, Any]]:
    """Everything new on the campaigns topic partition ``tp`` (assigned to ``consumer``), read
    to its end (records are flushed one by one by the publisher, so the end offset is exact)."""
    end = consumer.end_offsets([tp])[tp]
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise UnavailableError(f"{tp.topic}: not readable to its end")
        for record in consumer.poll(timeout_ms=100).get(tp, []):
            try:
                out.append(orjson.loads(record.value))
            except orjson.JSONDecodeError:
                out.append({"invalid": record.offset})
    return out


class _Listener(ConsumerRebalanceListener):
    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.transport.worker.on_revoked(sorted({tp.partition for tp in revoked}))

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        # kafka-python calls this instead of on_partitions_revoked once it learns that the
        # group evicted this member (a stall past the session timeout).
        self.transport.worker.on_lost(sorted({tp.partition for tp in lost}))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.transport.worker.on_assigned(sorted({tp.partition for tp in assigned}))


class KafkaTransport:
    """Consumer group ``group_id`` over ``topics.decisions`` and ``topics.events``.

    The range assignor gives a member the same partition numbers of both topics (they have
    the same count), which is what a partition-local join needs.
    """

    def __init__(self, bootstrap_servers: str, topics: Topics, group_id: str, *,
                 max_poll_records: int = 5000, session_timeout_ms: int = 6000,
                 heartbeat_interval_ms: int = 1000,
                 fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
        self.topics = topics
        self.worker: Any = None
        self._tp = {DECISIONS: topics.decisions, EVENTS: topics.events}
        self._stream = {topics.decisions: DECISIONS, topics.events: EVENTS}
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=bootstrap_servers, group_id=group_id,
                enable_auto_commit=False, auto_offset_reset="earliest",
                allow_auto_create_topics=False, max_poll_records=max_poll_records,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                fetch_max_wait_ms=fetch_max_wait_ms,
                partition_assignment_strategy=[RangePartitionAssignor])
        except KafkaError as exc:
            raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None
        self.producer = producer(bootstrap_servers)
        self._checkpoints = reader(bootstrap_servers)
        self._campaigns = reader(bootstrap_servers)
        self._campaigns_tp = TopicPartition(topics.campaigns, 0)
        self._campaigns.assign([self._campaigns_tp])
        self._unflushed: set[int] = set()  # state partitions with a checkpoint not flushed yet

    def attach(self, worker: Any) -> None:
        self.worker = worker
        self.consumer.subscribe([self.topics.decisions, self.topics.events],
                                listener=_Listener(self))

    def poll(self, timeout_ms: int) -> list[Batch]:
        fetched = self.consumer.poll(timeout_ms=timeout_ms)
        return [Batch(self._stream[tp.topic], tp.partition, [r.offset for r in records],
                      [r.value for r in records]) for tp, records in fetched.items()]

    def idle(self, partition: int) -> set[str]:
        idle = set()
        for stream in STREAMS:
            tp = TopicPartition(self._tp[stream], partition)
            high = self.consumer.highwater(tp)
            if high is not None and self.consumer.position(tp) >= high:
                idle.add(stream)
        return idle

    def campaign_records(self) -> list[dict[str, Any]]:
        return read_campaign_records(self._campaigns, self._campaigns_tp)

    def latest_checkpoint(self, partition: int) -> bytes | None:
        return read_last(self._checkpoints, TopicPartition(self.topics.state, partition))

    def seek(self, partition: int, offsets: dict[str, int]) -> None:
        for stream in STREAMS:
            self.consumer.seek(TopicPartition(self._tp[stream], partition), offsets[stream])

    def send_joined(self, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        # Blocks (streams.joined), not a record per decision: a send costs more than a join.
        for key, value in records:
            self.producer.send(self.topics.joined, value, key=key, partition=partition)

    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            # Keyed by where it came from: Kafka refuses a record with neither key nor value,
            # and an empty input record is dead-lettered as it is.
            self.producer.send(self.topics.deadletter, letter.value,
                               key=letter.source.encode(), headers=dead_letter_headers(letter))

    def flush(self) -> None:
        self.producer.flush()
        self._unflushed.clear()

    def send_checkpoint(self, partition: int, data: bytes) -> None:
        if partition in self._unflushed:  # its last checkpoint first: each in a batch of its own
            self.flush()
        self.producer.send(self.topics.state, data, key=str(partition).encode(),
                           partition=partition)
        self._unflushed.add(partition)

    def send_ledger(self, partition: int, key: str, value: bytes) -> int:
        sent = self.producer.send(self.topics.ledger, value, key=key.encode(),
                                  partition=partition)
        self.flush()  # on its own: the partition's end offset stays exact
        return int(sent.get(timeout=_READ_TIMEOUT_S).offset)

    def read_ledger(self, partition: int, offsets: list[int]
                    ) -> list[tuple[bytes | None, bytes | None]]:
        return read_at(self._checkpoints, TopicPartition(self.topics.ledger, partition), offsets)

    def ledger_records(self, partition: int, start: int
                       ) -> list[tuple[int, bytes | None, bytes | None]]:
        return read_from(self._checkpoints, TopicPartition(self.topics.ledger, partition),
                         start)

    def retire_ledger(self, partition: int, keys: list[str]) -> None:
        for key in keys:
            self.producer.send(self.topics.ledger, None, key=key.encode(), partition=partition)
            self.flush()

    def commit(self, offsets: dict[int, dict[str, int]]) -> None:
        # Not waited for: the offsets are for lag monitoring, and kafka-python runs the
        # rebalance listener that checkpoints revoked partitions on close in its IO thread,
        # where a blocking commit raises. A partition moved meanwhile: its checkpoint counts.
        with contextlib.suppress(KafkaError):
            self.consumer.commit_async({
                TopicPartition(self._tp[stream], p): OffsetAndMetadata(o, "", -1)
                for p, streams in offsets.items() for stream, o in streams.items()})

    def close(self) -> None:
        self.consumer.close()  # leaves the group: the partitions move at once
        self.producer.close()
        self._checkpoints.close()
        self._campaigns.close()
