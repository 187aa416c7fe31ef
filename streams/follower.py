"""The decision service's side of the stream: follow the state topic and swap models in.

A background thread reads the newest checkpoint of every state partition, and after every
change makes the engine's model the sum of the partitions' partial states (``Engine.absorb``,
built aside and swapped under the engine's lock: a decision sees the old model or the new one).

The model never goes back: per partition, a checkpoint is absorbed only if it has read at least
as far as the absorbed one in both inputs (decisions and events offsets), and further in one;
one that has read less of either is *stale* and ignored (counted in ``stale``, logged). A stale
checkpoint comes from a zombie worker: one that stalled past its session timeout (GC pause,
SIGSTOP) while its partitions moved on, and wrote what it had when it woke. It is a consistent
(state, offsets) pair, so the worker that restores it redoes the work and ends in the same
state; only a reader of the latest record would step back. Every owner's checkpoints grow in
both offsets, so a partition's final checkpoint is at or above every other and is absorbed; in
between, a zombie's checkpoint that is ahead in one input and behind in the other waits until
the owner has passed it in both. One with the same offsets as the absorbed one holds the same
state (the join is deterministic given its records) and is skipped. At start-up the newest
record of each partition is taken as it is.

After every absorb it evaluates the campaigns' guardrails on the merged model (one partition
sees part of the data; ``Engine.guard``): a breach pauses the campaign here and is handed to
``on_breach`` (the service's link publishes the campaign record, with the reason, so every
replica and worker follows; ``bandit.engine.guardrails``).

It also follows the campaigns topic, so several service replicas hold the same campaigns,
and ``.vwstate``, the VW learner's checkpoints: the VW slots' models are swapped in from the
newest one (``Engine.absorb_vw``), again under the engine's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
from kafka import TopicPartition
from kafka.errors import KafkaError

from bandit.engine import Engine
from bandit.errors import BanditError, UnavailableError
from streams.kafka import FETCH_MAX_WAIT_MS, reader
from streams.records import STREAMS
from streams.topics import Topics
from streams.vw_learner import VWLearner
from streams.worker import PartitionJoin

log = logging.getLogger(__name__)


def behind(offsets: dict[str, int], absorbed: dict[str, int]) -> bool:
    """Whether a checkpoint with next ``offsets`` has read less of either input than the
    ``absorbed`` one of the same partition: then it is stale (see the module docstring).

    >>> behind({"decisions": 90, "events": 70}, {"decisions": 100, "events": 60})
    True
    >>> behind({"decisions": 100, "events": 70}, {"decisions": 100, "events": 60})
    False
    """
    return any(offsets[s] < absorbed[s] for s in STREAMS)


class StateFollower:
    """Keeps ``engine`` at the sum of the newest partition states on ``topics.state``.

    ``updated_at`` (monotonic seconds) is when the model last changed; ``stale`` counts the
    checkpoints ignored because they were behind the absorbed ones; ``age_s()`` is what
    readyz reports. ``on_breach(campaign)`` is called for each campaign a guardrail paused
    after an absorb (the service's link publishes its record). ``wait_for(predicate)`` helps
    tests and the demo. ``fetch_max_wait_ms`` is
    how long the broker may hold a fetch that found nothing: a new checkpoint waits up to
    about half of it before the follower sees it (``streams.kafka.FETCH_MAX_WAIT_MS``).
    """

    def __init__(self, engine: Engine, bootstrap_servers: str, topics: Topics, *,
                 poll_timeout_ms: int = 200,
                 fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
                 on_breach: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.on_breach = on_breach
        self.topics = topics
        self.poll_timeout_ms = poll_timeout_ms
        self.updates = 0
        self.updated_at: float | None = None
        self.errors = 0
        self.stale = 0
        self._consumer = reader(bootstrap_servers, fetch_max_wait_ms=fetch_max_wait_ms)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._latest: dict[int, PartitionJoin] = {}
        parts = self._consumer.partitions_for_topic(topics.state)
        if not parts:
            self._consumer.close()
            raise UnavailableError(f"no topic {topics.state}: create the topics first")
        self._state = [TopicPartition(topics.state, p) for p in sorted(parts)]
        self._campaigns = TopicPartition(topics.campaigns, 0)
        # A deployment made before the VW learner existed has no .vwstate: nothing to follow.
        self._vw = ([TopicPartition(topics.vwstate, 0)]
                    if self._consumer.partitions_for_topic(topics.vwstate) else [])
        self.vw_offsets: dict[int, int] | None = None  # the .joined offsets of the VW models
        self._vw_latest: bytes | None = None
        self._consumer.assign([*self._state, self._campaigns, *self._vw])
        ends = self._consumer.end_offsets([*self._state, *self._vw])
        for tp in [*self._state, *self._vw]:  # only each partition's newest checkpoint matters
            self._consumer.seek(tp, max(ends[tp] - 1, 0))
        self._thread = threading.Thread(target=self._run, name="state-follower", daemon=True)

    def start(self) -> StateFollower:
        self._thread.start()
        return self

    def age_s(self) -> float | None:
        return None if self.updated_at is None else time.monotonic() - self.updated_at

    def partitions(self) -> dict[int, PartitionJoin]:
        """The newest checkpoint of every partition seen so far."""
        with self._changed:
            return dict(self._latest)

    def wait_for(self, predicate: Callable[[dict[int, PartitionJoin]], bool],
                 timeout_s: float) -> bool:
        """Wait until ``predicate(self.partitions())`` holds (checked after every update)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(dict(self._latest)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_for_vw(self, predicate: Callable[[dict[int, int] | None], bool],
                    timeout_s: float) -> bool:
        """Wait until ``predicate(self.vw_offsets)`` holds (checked after every VW update)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.vw_offsets):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batches = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
            except KafkaError as exc:  # the broker went away: keep the model, retry
                self.errors += 1
                log.warning("state follower: %s", exc)
                time.sleep(0.5)
                continue
            fresh: dict[int, list[bytes]] = {}
            vw: bytes | None = None
            synced = False
            for tp, records in batches.items():
                if tp.topic == self.topics.campaigns:
                    for r in records:
                        self._sync(r.value)
                    synced = synced or bool(records)
                elif tp.topic == self.topics.vwstate:
                    vw = records[-1].value if records else None
                elif records:  # every one: the newest may be a zombie's, an earlier one not
                    fresh[tp.partition] = [r.value for r in records]
            if fresh:
                self._absorb(fresh)
            # A VW checkpoint may arrive before its campaign: apply it again once it exists.
            newest = vw or self._vw_latest
            if newest is not None and (vw is not None or synced):
                self._absorb_vw(newest)

    def _sync(self, value: bytes) -> None:
        try:
            record = orjson.loads(value)
            if isinstance(record, dict) and "erase" in record:
                return  # for the workers: the service holds no pending decisions
            self.engine.sync_campaign(record)
        except (BanditError, orjson.JSONDecodeError) as exc:
            self.errors += 1
            log.error("state follower: campaign record refused: %s", exc)

    def _absorb(self, fresh: dict[int, list[bytes]]) -> None:
        changed = False
        for p, values in fresh.items():
            # In order: a zombie's record after the owner's newer one must not hide it (the
            # owner's may be its last one), so each is compared with what was taken before.
            for value in values:
                try:
                    # The model only: the open windows are the worker's business.
                    part = PartitionJoin.restore(value, what=f"checkpoint of partition {p}",
                                                 model_only=True)
                except BanditError as exc:
                    self.errors += 1
                    log.error("state follower: %s", exc)
                    continue
                absorbed = self._latest.get(p)
                if absorbed is not None and behind(part.offsets, absorbed.offsets):
                    self.stale += 1
                    log.warning("state follower: partition %d: stale checkpoint ignored "
                                "(offsets %s, absorbed %s)", p, part.offsets, absorbed.offsets)
                    continue
                if absorbed is None or part.offsets != absorbed.offsets:  # else: same state
                    with self._changed:
                        self._latest[p] = part
                    changed = True
        if not changed:
            return
        partials = [part.engine for part in self.partitions().values()]
        self.engine.absorb(partials)
        for name in self.engine.guard():
            if self.on_breach is not None:
                try:
                    self.on_breach(name)
                except (BanditError, KafkaError) as exc:  # paused in this replica only
                    self.errors += 1
                    log.error("state follower: campaign %r paused by a guardrail, its record "
                              "not published: %s", name, exc)
        with self._changed:
            self.updates += 1
            self.updated_at = time.monotonic()
            self._changed.notify_all()

    def _absorb_vw(self, value: bytes) -> None:
        try:
            learner = VWLearner.restore(value, what=f"newest record of {self.topics.vwstate}")
        except BanditError as exc:
            self.errors += 1
            log.error("state follower: %s", exc)
            return
        self._vw_latest = value
        self.engine.absorb_vw(learner.engine)
        with self._changed:
            self.vw_offsets = learner.offsets
            self.updates += 1
            self.updated_at = time.monotonic()
            self._changed.notify_all()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._consumer.close()
