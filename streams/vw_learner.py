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

Delivery into ``.joined`` is at-least-once: a decision a restarted worker writes again is
learned again (the learner does not keep every decision id it has seen); what the learner
guarantees is its own exactly-once over the log as written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from bandit.engine import Engine
from bandit.errors import BanditError, IncompatibleStateError, InvalidInputError, UnavailableError
from bandit.models import Impression, JoinedEvent
from streams import joined
from streams.kafka import (
    MAX_RECORD_BYTES,
    producer,
    read_campaign_records,
    read_last,
    reader,
)
from streams.topics import Topics
from streams.worker import DeadLetter, Record, dead_letter_headers

log = logging.getLogger(__name__)

JOINED = "joined"
VWSTATE_FORMAT = 1


@dataclass
class LearnerCounters:
    """What the learner has seen, carried in its checkpoint (so totals survive restarts)."""

    records: int = 0  # joined examples read (a .joined record, a block, holds many)
    blocks: int = 0
    learned: int = 0  # joined events that reached a VW slot
    skipped: int = 0  # events of campaigns without a VW slot
    dead_letters: int = 0

    def add(self, other: LearnerCounters) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


class VWLearner:
    """The learner's state: an engine holding the campaigns (its VW slots are the models that
    matter) and the next offset of every ``.joined`` partition.

    >>> learner = VWLearner(Engine())
    >>> learner.sync_campaigns([{"spec": {"name": "w", "slots": [{"name": "s", "arms": [
    ...     {"id": "a"}, {"id": "b"}], "default_arm": "a", "policy": {"kind": "vw"}}]},
    ...     "paused": False, "retired": {}}])
    0
    >>> event = JoinedEvent(decision_id="0" * 32, campaign="w", user_id="u", ts=0,
    ...     slots={"s": {"arm": "b", "propensity": 0.5}}, rewards={"s": 1.0})
    >>> [(_, block)] = joined.pack([("0" * 32, event.model_dump_json().encode()), ("1", b"{")])
    >>> letters = learner.process([Record(JOINED, 0, 0, block), Record(JOINED, 0, 1, b"{")])
    >>> learner.offsets, learner.counters.learned
    ({0: 2}, 1)
    >>> for letter in letters:
    ...     print(letter.source, "|", letter.reason)
    joined/0/0/1 | block joined/0/0, example 1: not JSON
    joined/0/1 | not a joined block: no 'cmab.joined/1' header
    """

    def __init__(self, engine: Engine, *, offsets: dict[int, int] | None = None,
                 counters: LearnerCounters | None = None, seq: int = 0) -> None:
        self.engine = engine
        self.offsets = dict(offsets) if offsets else {}
        self.counters = counters or LearnerCounters()
        self.seq = seq

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

    def _vw_slots(self, campaign: str) -> set[str]:
        """The slots an event of ``campaign`` keeps: VW slots and the slots they condition on
        (their choices are features). Empty for a campaign without VW."""
        spec = self.engine.campaign(campaign)
        keep = set()
        for slot in spec.slots:
            if slot.policy.kind == "vw":
                keep |= {slot.name, *slot.condition_on}
        return keep

    def _check(self, event: JoinedEvent) -> set[str]:
        """InvalidInputError if the event does not fit the campaigns (the engine's check of an
        impression: campaign, slots, arms, context); else the slots to learn."""
        self.engine.check_event(Impression.model_construct(
            event_id=event.decision_id, decision_id=event.decision_id, campaign=event.campaign,
            user_id=event.user_id, ts=event.ts, slots=event.slots, context=event.context,
            segments=event.segments, holdout=event.holdout))
        return self._vw_slots(event.campaign)

    def _event(self, line: bytes) -> JoinedEvent | None:
        """One example as the event to learn (only its VW slots and the slots they condition
        on), None if it has no VW slot; InvalidInputError with the reason if it is bad."""
        try:
            event = JoinedEvent.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise InvalidInputError(
                "not JSON" if first["type"] == "json_invalid" else "not a joined event: "
                f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        keep = self._check(event)
        if not keep & event.slots.keys():
            return None
        if not event.slots.keys() <= keep:  # the other slots are the workers' business
            event = event.model_copy(update={"slots": {
                k: v for k, v in event.slots.items() if k in keep}})
        return event

    def process(self, records: Iterable[Record]) -> list[DeadLetter]:
        """Decode, check and learn a batch of ``.joined`` records (blocks) in their order;
        records at offsets already covered (a replay after a restart) are skipped. Returns the
        refused values with their reasons: a record that is not a block whole, a bad example
        of a block alone (source ``joined/<partition>/<offset>/<index>``)."""
        batch = LearnerCounters()
        letters: list[DeadLetter] = []
        events: list[JoinedEvent] = []
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
            for index, line in enumerate(lines):
                try:
                    event = self._event(line)
                except InvalidInputError as exc:
                    letters.append(DeadLetter(line, f"block {block}, example {index}: {exc}",
                                              f"{block}/{index}"))
                    continue
                if event is None:
                    batch.skipped += 1
                else:
                    events.append(event)
        if events:
            self.engine.learn(events)
        batch.learned += len(events)
        batch.dead_letters += len(letters)
        self.counters.add(batch)
        self.seq += 1
        return letters

    def checkpoint(self) -> bytes:
        """The models and the next offsets as one record value."""
        return self.engine.to_bytes(extra={
            "vwstate": VWSTATE_FORMAT, "seq": self.seq,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "counters": vars(self.counters)})

    @classmethod
    def restore(cls, data: bytes, *, what: str = "vw learner checkpoint") -> VWLearner:
        """The learner a ``checkpoint`` came from (IncompatibleStateError if damaged)."""
        engine, extra = Engine.from_bytes(data, what=what)
        try:
            if extra["vwstate"] != VWSTATE_FORMAT:
                raise ValueError(f"format {extra['vwstate']}")
            return cls(engine, offsets={int(p): int(o) for p, o in extra["offsets"].items()},
                       counters=LearnerCounters(**extra["counters"]), seq=int(extra["seq"]))
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
