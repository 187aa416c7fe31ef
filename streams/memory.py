"""Embedded mode: an in-process event log with Kafka's shape, and the worker's transport over
it. One process can then run the whole loop (decide, log, join, learn) with no broker, through
the same worker code as production; the unit tests use it too."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, cast

import orjson
from kafka.partitioner.default import murmur2

from streams.records import STREAMS, Batch, DeadLetter, dead_letter_headers
from streams.topics import Topics


class MemoryLog:
    """Topics of append-only partitions of (key, value, headers), thread-safe.

    >>> log = MemoryLog(Topics("t"), partitions=2)
    >>> log.append("t.events", b"v", key=b"k") == log.partition_for(b"k")
    True
    """

    def __init__(self, topics: Topics, partitions: int) -> None:
        self.topics = topics
        self.partitions = partitions
        self._lock = threading.Lock()
        self._data: dict[str, list[list[tuple[bytes | None, bytes | None, list]]]] = {
            name: [[] for _ in range(n)]
            for name, n in topics.partition_counts(partitions).items()}

    def partition_for(self, key: bytes) -> int:
        """Same key, same partition number, whatever the topic (what co-partitioning needs):
        the partition Kafka's default partitioner gives it, as decision blocks are grouped
        (``bandit.engine.decisionlog.partition_of``)."""
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions

    def append(self, topic: str, value: bytes | None, *, key: bytes | None = None,
               partition: int | None = None, headers: list | None = None) -> int:
        """Append a record; returns its partition."""
        parts = self._data[topic]
        if partition is None:
            partition = 0 if key is None or len(parts) == 1 else self.partition_for(key)
        with self._lock:
            parts[partition].append((key, value, headers or []))
        return partition

    def put(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Append a record to ``partition``; returns its offset."""
        with self._lock:
            records = self._data[topic][partition]
            records.append((key, value, []))
            return len(records) - 1

    def read(self, topic: str, partition: int, start: int = 0,
             stop: int | None = None) -> list[tuple[bytes | None, bytes | None, list]]:
        with self._lock:
            return list(self._data[topic][partition][start:stop])

    def end(self, topic: str, partition: int) -> int:
        with self._lock:
            return len(self._data[topic][partition])

    def compacted(self, topic: str, partition: int) -> dict[bytes | None, bytes]:
        """What compaction would leave of a partition: the newest value of each key whose
        newest record is no tombstone."""
        newest = {key: value for key, value, _ in self.read(topic, partition)}
        return {key: value for key, value in newest.items() if value is not None}

    def publish_campaign(self, record: dict[str, Any]) -> None:
        self.append(self.topics.campaigns, orjson.dumps(record))


class MemoryTransport:
    """The worker's transport over a MemoryLog; it owns every partition (one worker). A poll
    brings at most ``max_records`` records of each input and partition, or ``limits[input]``
    for an input it names."""

    def __init__(self, log: MemoryLog, *, max_records: int = 10_000,
                 limits: Mapping[str, int] | None = None) -> None:
        self.log = log
        self.limits = {stream: (limits or {}).get(stream, max_records) for stream in STREAMS}
        self.worker: Any = None  # set by attach
        self._positions: dict[tuple[str, int], int] = {}
        self._campaigns_read = 0

    def attach(self, worker: Any) -> None:
        """Give every partition to ``worker`` (restores its checkpoints)."""
        self.worker = worker
        worker.on_assigned(range(self.log.partitions))

    def _topic(self, stream: str) -> str:
        return str(getattr(self.log.topics, stream))  # Topics.decisions, Topics.events

    def poll(self, timeout_ms: int) -> list[Batch]:
        batches: list[Batch] = []
        for p in range(self.log.partitions):
            for stream in STREAMS:
                start = self._positions.get((stream, p), 0)
                rows = self.log.read(self._topic(stream), p, start, start + self.limits[stream])
                if rows:
                    batches.append(Batch(stream, p, list(range(start, start + len(rows))),
                                         [value for _, value, _ in rows]))
                self._positions[(stream, p)] = start + len(rows)
        return batches

    def idle(self, partition: int) -> set[str]:
        return {s for s in STREAMS if self._positions.get((s, partition), 0)
                >= self.log.end(self._topic(s), partition)}

    def campaign_records(self) -> list[dict[str, Any]]:
        rows = self.log.read(self.log.topics.campaigns, 0, self._campaigns_read)
        self._campaigns_read += len(rows)
        # Only publish_campaign writes there, always bytes (None is for other topics' records).
        return [orjson.loads(cast(bytes, value)) for _, value, _ in rows]

    def latest_checkpoint(self, partition: int) -> bytes | None:
        end = self.log.end(self.log.topics.state, partition)
        return self.log.read(self.log.topics.state, partition, end - 1)[0][1] if end else None

    def seek(self, partition: int, offsets: dict[str, int]) -> None:
        for stream in STREAMS:
            self._positions[(stream, partition)] = offsets[stream]

    def send_joined(self, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            self.log.append(self.log.topics.joined, value, key=key, partition=partition)

    def send_dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.log.append(self.log.topics.deadletter, letter.value,
                            headers=dead_letter_headers(letter))

    def flush(self) -> None:
        pass

    def send_checkpoint(self, partition: int, data: bytes) -> None:
        self.log.append(self.log.topics.state, data, key=str(partition).encode(),
                        partition=partition)

    def send_ledger(self, partition: int, key: str, value: bytes) -> int:
        return self.log.put(self.log.topics.ledger, partition, key.encode(), value)

    def read_ledger(self, partition: int, offsets: list[int]
                    ) -> list[tuple[bytes | None, bytes | None]]:
        rows = self.log.read(self.log.topics.ledger, partition)
        return [(rows[o][0], rows[o][1]) if o < len(rows) else (None, None) for o in offsets]

    def ledger_records(self, partition: int, start: int
                       ) -> list[tuple[int, bytes | None, bytes | None]]:
        rows = self.log.read(self.log.topics.ledger, partition, start)
        return [(start + i, key, value) for i, (key, value, _) in enumerate(rows)]

    def retire_ledger(self, partition: int, keys: list[str]) -> None:
        for key in keys:
            self.log.append(self.log.topics.ledger, None, key=key.encode(), partition=partition)

    def commit(self, offsets: dict[int, dict[str, int]]) -> None:
        pass

    def close(self) -> None:
        pass

