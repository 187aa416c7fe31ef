"""The VW learner: the single learner of every Vowpal Wabbit slot, reading the training log.

VW learns in order and its model is not a sum, so the stream worker's per-partition partial
states cannot carry it (``Engine.absorb`` keeps a service's VW slots as they are). Instead one
process reads ``<prefix>.joined``, the closed decisions the workers write, and learns every
slot whose policy is VW through the engine's own learn path (``Engine.learn``: same contexts,
same conditioning on earlier slots, cost = -reward at the logged propensity).

Its checkpoint is one record on ``<prefix>.vwstate`` (one partition): the learner's engine
snapshot (the VW models) with the next offset of every ``.joined`` partition, sent and flushed
as its own batch so the topic's end offset is exact (shared/NOTES-KAFKA.md). On start the
learner restores the newest record and seeks every joined partition to its stored offset, so a
restart, at any instant, ends with the model of an uninterrupted run, every joined example
learned exactly once. With one joined partition the order, and so the model, is bit-identical;
with several, the interleaving of partitions is the poll's.

Decision services follow ``.vwstate`` too (``streams.follower``) and swap the VW slots' models
in with ``Engine.absorb_vw``. A ``.joined`` record is a block of joined examples
(``streams.joined``); offsets count blocks, and a block is learned whole within one batch, so
a checkpoint never falls inside one. A record that is not a block goes to ``.deadletter``
whole, and a bad example of a good block (not JSON, not a JoinedEvent, unknown campaign, slot,
arm or context feature) goes alone, with a reason naming the block and the example's index;
the learner never stops for them.

Exactly once per decision. Delivery into ``.joined`` is at-least-once: a worker killed between
flushing a batch's closed decisions and the checkpoint that covers them re-processes that batch
after its restart and writes those decisions again, possibly cut into blocks differently. The
learner drops an example whose decision id it has already learned, so the VW models are those
of the log with every decision once (its first copy). The memory is bounded in event time: per
``.joined`` partition and campaign, the learner remembers the decision ids it learned whose
``ts >= newest - DEDUP_WINDOWS * attribution_window_ms``, ``newest`` being the newest ``ts`` it
has read of that campaign on that partition (the *horizon*). A repeat within the horizon, as it
stands when the repeat is read, is dropped and counted (``LearnerCounters.duplicates``). An
example behind the horizon is learned unchecked and counted (``past_horizon``): a late
decision, or a repeat too old to tell, so ``past_horizon`` bounds how many decisions can have
been learned twice.

A worker's repeats are the decisions its last batch before the kill closed (it checkpoints after
every batch that closed windows). Each was still open before that batch, so its ts is behind
the newest ts by at most one window plus the event time covered by the worker's batches since
its last checkpoint (or by its successor's first batch): within the horizon unless those span
about ``DEDUP_WINDOWS - 1`` windows. Whether an example is dropped depends only on the examples
read before it, not on batching, pruning or restarts: the memory is part of the checkpoint
(format 2; a format 1 checkpoint is refused), and ids behind the horizon, which can no longer
match, are pruned, so it holds about ``DEDUP_WINDOWS`` windows of decisions per partition and
campaign (16 bytes of id and 8 of ts each in the checkpoint).
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from bandit.engine import Engine
from bandit.errors import BanditError, IncompatibleStateError, InvalidInputError, UnavailableError
from bandit.models import JoinedEvent
from bandit.wire.decode import Reader
from bandit.wire.joined import Joined
from bandit.wire.joined import misfits as joined_misfits
from streams import joined
from streams.kafka import (
    MAX_RECORD_BYTES,
    producer,
    read_campaign_records,
    read_last,
    reader,
)
from streams.records import DeadLetter, Record, dead_letter_headers
from streams.topics import Topics

log = logging.getLogger(__name__)

JOINED = "joined"
VWSTATE_FORMAT = 2  # 2: with the decision ids of the dedup horizon
# Decision ids are remembered this many attribution windows of their campaign back from the
# newest ts read (per .joined partition): the dedup horizon (module docstring).
DEDUP_WINDOWS = 4
_PRUNE_FLOOR = 4096  # ids remembered before the first prune; then prune at twice the last size


@dataclass
class LearnerCounters:
    """What the learner has seen, carried in its checkpoint (so totals survive restarts)."""

    records: int = 0  # joined examples read (a .joined record, a block, holds many)
    blocks: int = 0
    learned: int = 0  # joined events that reached a VW slot (each decision once)
    skipped: int = 0  # events of campaigns without a VW slot
    dead_letters: int = 0
    duplicates: int = 0  # decisions already learned, dropped
    past_horizon: int = 0  # learned unchecked: behind the dedup horizon (module docstring)

    def add(self, other: LearnerCounters) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


def _refused(line: bytes | None, error: Exception | None) -> InvalidInputError:
    return InvalidInputError(_reason(line, error))


# Joined examples: the msgspec mirror of JoinedEvent, its names checked for a whole block.
_EXAMPLES: Reader[Joined, InvalidInputError] = Reader(Joined, _refused, joined_misfits)


def decode_examples(lines: Sequence[bytes]) -> list[Joined | InvalidInputError]:
    """Each line of a block as its example, or the InvalidInputError (its message the reason)
    it is refused with; one msgspec call for a block without a bad line
    (``bandit.wire.Reader``)."""
    return _EXAMPLES.many(lines)


def _reason(line: bytes | None, error: Exception | None) -> str:
    """Why ``line`` is not a joined example, in the contract's words: the first error of
    ``JoinedEvent`` (msgspec's own message, or the pattern check's, only if the two ever
    disagree)."""
    try:
        JoinedEvent.model_validate_json(line)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            return "not JSON"
        return f"not a joined event: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return f"not a joined event: {error or 'a name or decision id misses its pattern'}"


class VWLearner:
    """The learner's state: an engine holding the campaigns (its VW slots are the models that
    matter), the next offset of every ``.joined`` partition, and the decision ids of the
    dedup horizon (module docstring).

    >>> learner = VWLearner(Engine())
    >>> learner.sync_campaigns([{"spec": {"name": "w", "slots": [{"name": "s", "arms": [
    ...     {"id": "a"}, {"id": "b"}], "default_arm": "a", "policy": {"kind": "vw"}}]},
    ...     "paused": False, "retired": {}}])
    0
    >>> event = JoinedEvent(decision_id="0" * 32, campaign="w", subject="0" * 32, ts=0,
    ...     slots={"s": {"arm": "b", "propensity": 0.5}}, rewards={"s": 1.0})
    >>> line = event.model_dump_json().encode()
    >>> [(_, block)] = joined.pack([("0" * 32, line), ("1", b"{"), ("0" * 32, line)])
    >>> letters = learner.process([Record(JOINED, 0, 0, block), Record(JOINED, 0, 1, b"{")])
    >>> learner.offsets, learner.counters.learned, learner.counters.duplicates
    ({0: 2}, 1, 1)
    >>> for letter in letters:
    ...     print(letter.source, "|", letter.reason)
    joined/0/0/1 | block joined/0/0, example 1: not JSON
    joined/0/1 | not a joined block: no 'cmab.joined/2' header (nor '/1')
    """

    def __init__(self, engine: Engine, *, offsets: dict[int, int] | None = None,
                 counters: LearnerCounters | None = None, seq: int = 0) -> None:
        self.engine = engine
        self.offsets = dict(offsets) if offsets else {}
        self.counters = counters or LearnerCounters()
        self.seq = seq
        # Per (.joined partition, campaign): the newest ts read, and decision id -> ts of the
        # examples learned within the horizon (older ones are pruned now and then; the check
        # ignores them until then, so when pruning happens changes nothing).
        self._newest: dict[tuple[int, str], float] = {}
        self._seen: dict[tuple[int, str], dict[str, float]] = {}
        self._remembered = 0  # ids in _seen
        self._prune_at = _PRUNE_FLOOR
        self._plans: dict[str, tuple[frozenset[str], float]] = {}  # campaign -> _plan

    @property
    def remembered(self) -> int:
        """How many decision ids the dedup memory holds (pruned ones excluded)."""
        return self._remembered

    def sync_campaigns(self, records: Iterable[Any]) -> int:
        """Apply campaign records (``Engine.campaign_record``); returns how many were refused
        (logged). Erasure records are the workers' business: nothing pending here."""
        refused = 0
        for record in records:
            if isinstance(record, dict) and "erase" in record:
                continue
            try:
                self.engine.sync_campaign(record)
            except BanditError as exc:
                refused += 1
                log.error("vw learner: campaign record refused: %s", exc)
        return refused

    def _plan(self, campaign: str) -> tuple[frozenset[str], float]:
        """The slots an event of ``campaign`` keeps (VW slots and the slots they condition on:
        their choices are features; empty for a campaign without VW) and its dedup horizon in
        ms. Cached: a campaign's slots and window never change once it exists."""
        plan = self._plans.get(campaign)
        if plan is None:
            spec = self.engine.campaign(campaign)
            keep: set[str] = set()
            for slot in spec.slots:
                if slot.policy.kind == "vw":
                    keep |= {slot.name, *slot.condition_on}
            plan = self._plans[campaign] = (frozenset(keep),
                                            DEDUP_WINDOWS * float(spec.attribution_window_ms))
        return plan

    def process(self, records: Iterable[Record]) -> list[DeadLetter]:
        """Decode, check, deduplicate and learn a batch of ``.joined`` records (blocks) in
        their order; records at offsets already covered (a replay after a restart) are
        skipped. Returns the refused values with their reasons: a record that is not a block
        whole, a bad example of a block alone (source ``joined/<partition>/<offset>/<index>``)."""
        batch = LearnerCounters()
        letters: list[DeadLetter] = []
        events: list[Joined] = []
        check = self.engine.check_event
        for record in records:
            if record.offset < self.offsets.get(record.partition, 0):
                continue
            self.offsets[record.partition] = record.offset + 1
            batch.blocks += 1
            try:
                lines = joined.examples(record.value)
            except InvalidInputError as exc:
                letters.append(DeadLetter.of(record, str(exc)))
                continue
            batch.records += len(lines)
            block = f"{record.stream}/{record.partition}/{record.offset}"
            for index, event in enumerate(decode_examples(lines)):
                try:
                    if isinstance(event, InvalidInputError):  # decode_examples makes no subclass
                        raise event
                    check(event)  # campaign, slots, arms, context
                except InvalidInputError as exc:
                    letters.append(DeadLetter(lines[index], f"block {block}, example {index}: "
                                              f"{exc}", f"{block}/{index}"))
                    continue
                keep, span = self._plan(event.campaign)
                if not keep & event.slots.keys():
                    batch.skipped += 1
                    continue
                if not self._first(record.partition, event, span, batch):
                    continue
                if not event.slots.keys() <= keep:  # the other slots are the workers' business
                    event = msgspec.structs.replace(event, slots={
                        k: v for k, v in event.slots.items() if k in keep})
                events.append(event)
        if events:
            self.engine.learn(events)
        batch.learned += len(events)
        batch.dead_letters += len(letters)
        self.counters.add(batch)
        self.seq += 1
        if self._remembered > self._prune_at:
            self._prune()
        return letters

    def _first(self, partition: int, event: Joined, span: float,
               batch: LearnerCounters) -> bool:
        """Whether ``event`` is to be learned: not a decision already learned within the
        horizon (``span`` ms behind the newest ts of its campaign on ``partition``). Counts a
        dropped repeat or an example past the horizon in ``batch``; remembers the id."""
        key = (partition, event.campaign)
        newest = self._newest.get(key, -math.inf)
        if event.ts < newest - span:
            batch.past_horizon += 1  # cannot be told from a repeat: learned, not remembered
            return True
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = {}
        if event.decision_id in seen and seen[event.decision_id] >= newest - span:
            batch.duplicates += 1
            return False
        if event.decision_id not in seen:
            self._remembered += 1
        seen[event.decision_id] = event.ts
        if event.ts > newest:
            self._newest[key] = event.ts
        return True

    def _prune(self) -> None:
        """Forget the ids behind their horizon (they can no longer match); the next prune is
        due at twice the ids left, so pruning costs O(1) per example."""
        for key, seen in self._seen.items():
            horizon = self._newest[key] - self._plan(key[1])[1]
            self._seen[key] = {d: t for d, t in seen.items() if t >= horizon}
        self._remembered = sum(len(seen) for seen in self._seen.values())
        self._prune_at = max(2 * self._remembered, _PRUNE_FLOOR)

    def _memory(self) -> list[list]:
        """The dedup memory, JSON-ready: per (partition, campaign), the newest ts and the ids
        within the horizon (16 bytes each) with their ts (float64), base64."""
        out = []
        for (partition, campaign), newest in sorted(self._newest.items()):
            horizon = newest - self._plan(campaign)[1]
            seen = {d: t for d, t in self._seen.get((partition, campaign), {}).items()
                    if t >= horizon}
            out.append([partition, campaign, newest,
                        base64.b64encode(bytes.fromhex("".join(seen))).decode(),
                        base64.b64encode(np.array(list(seen.values()), dtype=np.float64)
                                         .tobytes()).decode()])
        return out

    def _restore_memory(self, memory: list[list]) -> None:
        """``_memory``'s inverse (ValueError, TypeError or KeyError if it is damaged)."""
        for partition, campaign, newest, ids, ts in memory:
            key = (int(partition), str(campaign))
            raw = base64.b64decode(ids, validate=True)
            times = np.frombuffer(base64.b64decode(ts, validate=True), dtype=np.float64)
            if len(raw) != 16 * len(times):
                raise ValueError(f"dedup memory of {key}: {len(raw)} id bytes for "
                                 f"{len(times)} times")
            hexed = raw.hex()
            self._newest[key] = float(newest)
            self._seen[key] = dict(zip((hexed[i:i + 32] for i in range(0, len(hexed), 32)),
                                       times.tolist(), strict=True))
        self._remembered = sum(len(seen) for seen in self._seen.values())
        self._prune_at = max(2 * self._remembered, _PRUNE_FLOOR)

    def checkpoint(self) -> bytes:
        """The models, the next offsets and the dedup memory as one record value."""
        return self.engine.to_bytes(extra={
            "vwstate": VWSTATE_FORMAT, "seq": self.seq,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "counters": vars(self.counters), "dedup": self._memory()})

    @classmethod
    def restore(cls, data: bytes, *, what: str = "vw learner checkpoint") -> VWLearner:
        """The learner a ``checkpoint`` came from (IncompatibleStateError if damaged)."""
        engine, extra = Engine.from_bytes(data, what=what)
        try:
            if extra is None:  # an engine snapshot: Python's words for indexing it
                raise TypeError("'NoneType' object is not subscriptable")
            if extra["vwstate"] != VWSTATE_FORMAT:
                raise ValueError(f"format {extra['vwstate']}, expected {VWSTATE_FORMAT}")
            learner = cls(engine, offsets={int(p): int(o) for p, o in extra["offsets"].items()},
                          counters=LearnerCounters(**extra["counters"]), seq=int(extra["seq"]))
            learner._restore_memory(extra["dedup"])
            return learner
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleStateError(f"{what}: not a vw learner checkpoint ({exc})") from None


class KafkaVWLearner:
    """The learner over Kafka: ``assign()`` of every ``.joined`` partition (one learner, no
    group to join; ``group_id``, if given, only receives offset commits for lag monitoring),
    campaigns read to their end before every batch, a checkpoint to ``.vwstate`` after a
    batch once ``checkpoint_interval_ms`` has passed since the last one (0: every batch), and
    on a graceful stop.

    ``on_batch`` (optional) is called with the learner after each processed batch.
    """

    def __init__(self, bootstrap_servers: str, topics: Topics, *, group_id: str | None = None,
                 max_poll_records: int = 20, checkpoint_interval_ms: int = 1000,
                 seed: int = 0,
                 on_batch: Callable[[VWLearner], None] | None = None) -> None:
        self.topics = topics
        self.group_id = group_id
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.on_batch = on_batch
        self.campaign_errors = 0
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap_servers, group_id=group_id,
                enable_auto_commit=False, auto_offset_reset="earliest",
                allow_auto_create_topics=False, max_poll_records=max_poll_records,
                fetch_max_bytes=MAX_RECORD_BYTES, max_partition_fetch_bytes=MAX_RECORD_BYTES)
        except KafkaError as exc:
            raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None
        self._campaigns = reader(bootstrap_servers)
        self._producer = producer(bootstrap_servers)
        try:
            parts = self._consumer.partitions_for_topic(topics.joined)
            if not parts or not self._consumer.partitions_for_topic(topics.vwstate):
                raise UnavailableError(f"no topics {topics.joined} and {topics.vwstate}: "
                                       "create the topics first")
            self._joined = [TopicPartition(topics.joined, p) for p in sorted(parts)]
            self._campaigns_tp = TopicPartition(topics.campaigns, 0)
            self._campaigns.assign([self._campaigns_tp])
            data = read_last(self._campaigns, TopicPartition(topics.vwstate, 0))
            self._campaigns.assign([self._campaigns_tp])  # read_last assigned the state
            self._campaigns.seek(self._campaigns_tp, 0)
            self.learner = (VWLearner(Engine(seed=seed)) if data is None else
                            VWLearner.restore(data, what=f"newest record of {topics.vwstate}"))
            self._sync_campaigns()
            self._consumer.assign(self._joined)
            for tp in self._joined:
                self._consumer.seek(tp, self.learner.offsets.get(tp.partition, 0))
        except BaseException:
            self.close()
            raise
        log.info("vw learner: from offsets %s (checkpoint %d)", self.learner.offsets,
                 self.learner.seq)
        self._dirty = False
        self._last_checkpoint = time.monotonic()

    def _sync_campaigns(self) -> None:
        self.campaign_errors += self.learner.sync_campaigns(
            read_campaign_records(self._campaigns, self._campaigns_tp))

    def step(self, timeout_ms: int = 100) -> int:
        """One poll and its batch (and a checkpoint when due); returns the records read."""
        self._sync_campaigns()
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        records = [Record(JOINED, tp.partition, r.offset, r.value)
                   for tp, rs in sorted(batches.items()) for r in rs]
        if records:
            self._sync_campaigns()  # a campaign created just before its first decisions
            letters = self.learner.process(records)
            for letter in letters:
                self._producer.send(self.topics.deadletter, letter.value,
                                    headers=dead_letter_headers(letter))
            self._dirty = True
            if self.on_batch is not None:
                self.on_batch(self.learner)
        due = (time.monotonic() - self._last_checkpoint) * 1000 >= self.checkpoint_interval_ms
        if self._dirty and due:
            self.checkpoint()
        return len(records)

    def checkpoint(self) -> None:
        """Write the models and offsets as one record (dead letters flushed first, so the
        checkpoint never covers a letter that was lost)."""
        self._producer.flush()
        self._producer.send(self.topics.vwstate, self.learner.checkpoint(), partition=0)
        self._producer.flush()
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        if self.group_id is not None:
            try:
                self._consumer.commit({tp: OffsetAndMetadata(
                    self.learner.offsets.get(tp.partition, 0), "", -1) for tp in self._joined})
            except KafkaError as exc:  # lag monitoring only: the checkpoint is what counts
                log.warning("vw learner: offset commit failed: %s", exc)

    def run(self, should_stop: Callable[[], bool], timeout_ms: int = 100) -> None:
        """Steps until ``should_stop()``; then writes a last checkpoint and closes."""
        try:
            while not should_stop():
                self.step(timeout_ms)
            if self._dirty:
                self.checkpoint()
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()
        self._campaigns.close()
        self._producer.close()
