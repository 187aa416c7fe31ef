"""The worker's erasure ledger stored apart (streams.worker, ``Ledger.apart``): sealed chunks on
the compacted ledger topic, referenced by the checkpoints; erasures that rewrite them, and
workers killed at every write of that rewrite."""

import io
import math

import numpy as np
import pytest

from bandit.engine.ledger import key_words
from bandit.engine.snapshot import read as read_snapshot
from streams.memory import MemoryLog, MemoryTransport
from streams.worker import PartitionJoin, Worker
from tests import streamdata
from tests.streams.test_worker import (
    _drain,
    _partition_engines,
    assert_same_sums,
    decay_log,
    subject_stream,
    without,
)

BOUND = 1600  # learned decisions per partition: sealed chunks of 100 rows


class Killed(Exception):
    """The worker died here."""


class _Killing(MemoryTransport):
    """A MemoryTransport whose writes of ledger chunks, checkpoints and tombstones count
    down ``left``: the write that finds it at 0 is not done, and the worker dies there."""

    left = math.inf
    writes = 0

    def _write(self) -> None:
        if self.left <= 0:
            raise Killed
        self.left -= 1
        self.writes += 1

    def send_ledger(self, partition: int, key: str, value: bytes) -> int:
        self._write()
        return super().send_ledger(partition, key, value)

    def send_checkpoint(self, partition: int, data: bytes) -> None:
        self._write()
        super().send_checkpoint(partition, data)

    def retire_ledger(self, partition: int, keys: list[str]) -> None:
        for key in keys:  # tombstone by tombstone
            self._write()
            super().retire_ledger(partition, [key])


def _worker(log: MemoryLog, transport: MemoryTransport | None = None) -> Worker:
    transport = transport or MemoryTransport(log)
    worker = Worker(transport, erasure_ledger=BOUND)
    transport.attach(worker)
    return worker


def _copy(log: MemoryLog) -> MemoryLog:
    """Another log holding the same records."""
    twin = MemoryLog(log.topics, log.partitions)
    for topic, parts in log._data.items():
        twin._data[topic] = [list(records) for records in parts]
    return twin


def _referenced(log: MemoryLog) -> dict[int, set[bytes]]:
    """Per partition, the ledger keys its newest checkpoint references."""
    out = {}
    for p in range(log.partitions):
        meta, _ = read_snapshot(MemoryTransport(log).latest_checkpoint(p), "checkpoint", False)
        out[p] = {item["key"].encode() for item in meta["ledger"]["chunks"] if "key" in item}
    return out


def _rows_of(value: bytes, key: bytes) -> int:
    """The rows of subject ``key`` in a stored ledger chunk."""
    hi, lo = key_words(key)
    with np.load(io.BytesIO(value)) as npz:
        return int(np.sum((npz["rows/subject_hi"] == hi) & (npz["rows/subject_lo"] == lo)))


def test_a_checkpoint_references_sealed_chunks_rather_than_carrying_them():
    """With every decision learned, each partition's checkpoint carries the rows of its open
    chunk only (fewer than a sealed chunk's), and each sealed chunk as a key and offset of the
    ledger topic; a worker restoring it reads them back: the same ledger, erasure included."""
    s, key = subject_stream(1200, seed=5, picks=[40, 300, 650])
    log = decay_log(2, None)
    streamdata.fill(log, s)
    worker = _worker(log)
    _drain(worker)
    worker.write_checkpoints()
    sizes = {p: part.engine.ledger.size for p, part in worker.partitions.items()}
    assert sum(sizes.values()) == len(s.joined)
    for p in range(log.partitions):
        data = MemoryTransport(log).latest_checkpoint(p)
        meta, arrays = read_snapshot(data, "checkpoint", False)
        sealed = [c for c in meta["ledger"]["chunks"] if c["sealed"]]
        assert len(sealed) >= 3 and all(set(c) == {"campaign", "sealed", "key", "at"}
                                        for c in sealed)
        carried = sum(len(v) for k, v in arrays.items() if k.endswith("/rows/ts"))
        assert carried < BOUND // 16 and carried + 100 * len(sealed) == sizes[p]
        assert len(log.compacted(log.topics.ledger, p)) == len(sealed)
    restored = _worker(log)
    for p, part in restored.partitions.items():
        assert part.engine.ledger.size == sizes[p] and part.engine.ledger.complete
    found = sum(len(part.engine.ledger.find({key: math.inf}))
                for part in restored.partitions.values())
    assert found == 3


@pytest.mark.parametrize("half_life_ms", [None, 700.0])
def test_a_worker_killed_at_any_write_of_an_erasure_leaves_a_consistent_successor(half_life_ms):
    """A worker learned a stream (its sealed chunks stored, checkpointed), then applies an
    erase record of subject S, whose learned decisions sit in several sealed chunks: it
    writes their new versions, the checkpoints, then the old versions' tombstones. It is
    killed before each of those writes in turn (and once after all of them). Its successor
    restores, re-applies the record and finishes: every partition's sums equal those of a
    run without S's events (to 1e-9), no ledger holds S's rows, the ledger topic compacted
    holds exactly the chunks the newest checkpoints reference, and none of S's rows."""
    s, key = subject_stream(1200, seed=7, picks=[40, 200, 420, 650, 900])
    plain = without(s, key, s.end_ts)
    reference = decay_log(2, half_life_ms)
    streamdata.fill(reference, plain)
    plain_worker = _worker(reference)
    _drain(plain_worker)
    plain_worker.write_checkpoints()
    expected = _partition_engines(reference)

    learned = decay_log(2, half_life_ms)
    streamdata.fill(learned, s)
    first = _worker(learned)
    _drain(first)
    first.write_checkpoints()
    assert all(len(p.engine.ledger.unstored()) == 0 for p in first.partitions.values())

    def erase(log: MemoryLog, left: float) -> int:
        transport = _Killing(log)
        worker = _worker(log, transport)
        log.publish_campaign({"erase": key.hex(), "at": s.end_ts})
        transport.left = left
        try:
            worker.step()
            worker.write_checkpoints()
        except Killed:
            pass
        return transport.writes

    total = erase(_copy(learned), math.inf)
    assert total >= 2 + 3  # a checkpoint per partition, new chunk versions and tombstones
    for left in range(total + 1):
        log = _copy(learned)
        assert erase(log, left) == left
        successor = _worker(log)
        _drain(successor)
        successor.write_checkpoints()
        for p, part in successor.partitions.items():
            assert_same_sums(part.engine, expected[p])
            assert not len(part.engine.ledger.find({key: math.inf}))
        referenced = _referenced(log)
        for p in range(log.partitions):
            kept = log.compacted(log.topics.ledger, p)
            assert set(kept) == referenced[p], f"killed before write {left}"
            assert not any(_rows_of(value, key) for value in kept.values())
        again = _worker(log)  # and the next restore reads the same state
        for p, part in again.partitions.items():
            assert_same_sums(part.engine, expected[p])


def test_a_restored_checkpoint_refuses_a_missing_chunk_and_an_unread_ledger():
    """A checkpoint whose referenced chunk is not at its offset is refused with what is
    missing; a checkpoint restored without reading its chunks keeps its model but refuses
    erasure until they are read."""
    from bandit.errors import IncompatibleStateError

    s, key = subject_stream(600, seed=9, picks=[40, 300])
    log = decay_log(1, None)
    streamdata.fill(log, s)
    worker = _worker(log)
    _drain(worker)
    worker.write_checkpoints()
    part = PartitionJoin.restore(MemoryTransport(log).latest_checkpoint(0))
    assert part.engine.ledger.references()
    with pytest.raises(ValueError, match="were not read"):
        part.engine.erase_subjects({key: math.inf})
    log._data[log.topics.ledger][0] = []
    with pytest.raises(IncompatibleStateError, match="ledger chunk 0/[0-9a-f]{16} is not at"):
        _worker(log)
