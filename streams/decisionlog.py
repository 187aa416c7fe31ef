"""The decision service's decision log on ``<prefix>.decisions``: ``DecisionLogWriter``.

The engine hands every decide call's ``DecisionLog`` to its ``decision_sink``; in stream mode
that is ``DecisionLogWriter.append``, which only queues it. A background thread cuts
each log into binary blocks of one partition (``DecisionLog.blocks``: ``cmab.decisions/3``,
columns, ``bandit.wire.columns``; at most ``streams.blocks``' caps) and produces every block to
the partition its decision ids hash to (Kafka's default partitioner, so that the sends and
outcomes keyed by a decision id land in the same partition number of their topic).

What is buffered, and what is dropped (deciding never waits on Kafka):

- The writer's queue holds up to ``capacity`` decisions (``Settings.decision_log_capacity``)
  not yet encoded. ``append`` never blocks: a call whose decisions do not fit is dropped
  whole and counted (``unlogged["queue_full"]``).
- The producer's buffer (kafka-python's accumulator, ``buffer_memory`` bytes) holds encoded
  blocks until the broker acknowledges them; the producer retries a block until
  ``delivery_timeout_ms`` has passed, then gives it up (``unlogged["delivery_failed"]``, as
  for a block the producer refuses at once). When that buffer is full the writer's thread
  waits in ``send`` (at most ``max_block_ms``), so the queue fills and later calls are
  dropped, as above.
- At ``close``, what the writer could not hand over and the producer could not deliver within
  the timeout is counted (``unlogged["shutdown"]`` for the queue, ``delivery_failed`` for the
  producer's buffer).

So a broker outage shorter than the delivery timeout loses nothing while the queue has room;
a longer one loses the decisions of the outage, counted, and ``status().failing`` says so
until a block is delivered again. Delivery is at-least-once (the producer retries a block
whose acknowledgement was lost): readers drop repeats by decision id.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from typing import Any

from kafka.errors import KafkaError

from bandit.engine.decisionlog import DecisionLog, DecisionLogStatus
from bandit.wire import columns
from streams.blocks import MAX_BLOCK_BYTES, MAX_BLOCK_EXAMPLES
from streams.kafka import producer
from streams.topics import Topics

log = logging.getLogger("streams.decisionlog")

CAPACITY = 1_000_000  # decisions queued; Settings.decision_log_capacity
_CLOSE_TIMEOUT_S = 10.0
# Decisions arrive in large calls: fill big batches, and let a busy stream fill them.
_PRODUCER = {"linger_ms": 50, "batch_size": 1 << 20, "delivery_timeout_ms": 30_000,
             "request_timeout_ms": 10_000, "max_block_ms": 5_000, "acks": 1}


class DecisionLogWriter:
    """Writes decision logs to ``topics.decisions`` in blocks, from a background thread.

    ``append`` is the engine's ``decision_sink``; ``status`` the counts the service exposes
    (``/metrics``, ``/readyz``); ``close`` hands over what it can within a timeout.
    """

    def __init__(self, bootstrap_servers: str, topics: Topics, partitions: int, *,
                 capacity: int = CAPACITY, **config: Any) -> None:
        self.topic = topics.decisions
        self.partitions = partitions
        self.capacity = capacity
        self._queue: deque[DecisionLog] = deque()
        self._queued = 0  # decisions in _queue and in the thread's hands
        self._wake = threading.Condition()
        self._closed = False
        self._counts = threading.Lock()  # the producer's callbacks run in its I/O thread
        self._logged = 0
        self._unlogged: Counter[str] = Counter()
        self._failing: str | None = None
        self._producer = producer(bootstrap_servers, **{**_PRODUCER, **config})
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def append(self, decisions: DecisionLog) -> None:
        """Queue one call's decisions; never blocks. Dropped and counted when they do not fit
        (or after ``close``)."""
        n = len(decisions)
        if n == 0:
            return
        with self._wake:
            if self._closed or self._queued + n > self.capacity:
                dropped = True
            else:
                dropped = False
                self._queue.append(decisions)
                self._queued += n
                self._wake.notify()
        if dropped:
            self._unlog("queue_full", n, f"the queue of {self.capacity} decisions is full")

    def status(self) -> DecisionLogStatus:
        with self._counts:
            return DecisionLogStatus(self._logged, dict(self._unlogged), self._queued,
                                     self._failing if self._thread.is_alive() or self._closed
                                     else "the writer's thread stopped")

    def flush(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Wait until what was appended so far was handed to the producer and sent (or
        failed), at most about ``timeout_s``."""
        with self._wake:
            self._wake.wait_for(lambda: self._queued == 0, timeout=timeout_s)
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Stop taking decisions, hand over the queue, deliver what the broker takes within
        ``timeout_s``; the rest is counted as unlogged."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout_s)
        with self._wake:
            left = sum(map(len, self._queue))
            self._queue.clear()
        if left:
            self._unlog("shutdown", left, "closed before they were sent")
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as exc:  # the producer's buffer is lost; its errbacks count it
            log.warning("decision log: producer close failed: %s", exc)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: bool(self._queue) or self._closed)
                if not self._queue:
                    return
                # The calls queued by now, up to a block's worth, go together: single decisions
                # (decide_one) fill blocks too instead of making a record each.
                calls = [self._queue.popleft()]
                size = len(calls[0])
                while self._queue and size + len(self._queue[0]) <= MAX_BLOCK_EXAMPLES:
                    calls.append(self._queue.popleft())
                    size += len(calls[-1])
            for run in _runs(calls):
                n = sum(map(len, run))
                try:
                    self._send(run[0] if len(run) == 1 else DecisionLog.concat(run))
                except Exception:  # a bug of ours: count these, keep logging the next
                    log.exception("decision log: could not write %d decisions", n)
                    self._unlog("delivery_failed", n, "the writer failed")
                finally:
                    with self._wake:
                        self._queued -= n
                        self._wake.notify_all()

    def _send(self, decisions: DecisionLog) -> None:
        for partition, made in decisions.blocks(self.partitions, MAX_BLOCK_BYTES,
                                                MAX_BLOCK_EXAMPLES).items():
            for key, value in made:
                count = columns.count(value)
                try:
                    future = self._producer.send(self.topic, value, key=key,
                                                 partition=partition)
                except KafkaError as exc:  # buffer full past max_block_ms, no metadata
                    self._unlog("delivery_failed", count, str(exc))
                    continue
                future.add_callback(self._delivered, count)
                future.add_errback(self._undelivered, count)

    def _delivered(self, count: int, _metadata: Any) -> None:
        with self._counts:
            self._logged += count
            self._failing = None

    def _undelivered(self, count: int, error: Exception) -> None:
        self._unlog("delivery_failed", count, f"delivery failed: {error}")

    def _unlog(self, reason: str, count: int, why: str) -> None:
        with self._counts:
            first = self._failing is None
            self._unlogged[reason] += count
            self._failing = why
        if first:
            log.warning("decision log: %d decisions not logged (%s): %s", count, reason, why)



def _runs(calls: list[DecisionLog]) -> list[list[DecisionLog]]:
    """The calls in order, cut into runs that ``DecisionLog.concat`` joins: of one campaign
    with the same slots and arms."""
    out: list[list[DecisionLog]] = []
    for call in calls:
        if out and DecisionLog.joinable(out[-1][-1], call):
            out[-1].append(call)
        else:
            out.append([call])
    return out
