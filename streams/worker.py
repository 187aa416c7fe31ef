"""The stream worker: decisions and events in, a learned partial model per partition out.

Inputs (``streams.topics``): ``.decisions``, the decision service's log, whose records are
blocks of logged decisions of the block's partition: binary (``cmab.decisions/3``, or an
older service's ``/2``, columns, ``bandit.wire.columns``: what the service writes; the block
goes to the join as one run of columns, ``Joiner.add``) or text (``streams.blocks``:
``cmab.decisions/1``, one ``LoggedDecision`` JSON per line: an older service's), and
``.events``,
everything senders and trackers write, one JSON event per record: sends, outcomes (open,
click, conversion, unsubscribe, complaint, bounce), legacy impressions and clicks, watermarks.
Both are keyed by decision id, so partition p of each holds what the join of p needs.

Each partition p is joined on its own (``PartitionJoin``): an Engine that holds the
partition's attribution windows and what the partition learned (the partial state), plus the
next offsets of both inputs. The whole of it is written as one checkpoint record to partition
p of the state topic, and that record is the only truth: on assignment a worker restores it
and seeks to its offsets. A worker killed at any instant therefore resumes from a state and
offsets that belong together, and the model sees every event once (duplicated event and
decision ids are dropped by the join). The decision service sums the partitions' latest
partial states (``Engine.absorb``). A checkpoint of format 2 (of the old impressions and
clicks topics) is refused with what to do.

A checkpoint holds every open attribution window, so it is not written after every batch but
at most every ``checkpoint_interval_ms``, and at once when a batch closed windows (the model
changed), when the worker has caught up (a poll with nothing new), when a partition is revoked
and when the worker stops. While the worker is behind (its polls bring records), a partition's
checkpoint also waits ``CHECKPOINT_SHARE`` times as long as its last one took to write (by
``clock``), a batch that closed windows too, so that checkpoints of many open windows take a
bounded share of the worker's time (a partition with a week of open windows writes a large
checkpoint). A worker killed between checkpoints loses nothing: its successor re-processes
the records after the last checkpoint's offsets (and writes their closed decisions again).

Outputs besides the checkpoint are at-least-once: closed decisions go to ``.joined`` (the
training log, blocks: streams.joined) and refused items to ``.deadletter`` with their bytes
and a reason: a ``.decisions`` record that is no decision block (a stray JSON event among
them) and a damaged binary block whole, a bad line of a text block alone (its bytes, the
reason naming its line number; the block's other decisions are used), a decision of a binary
block the campaigns refuse alone (its JSON, the reason naming its number), an ``.events``
record that is a block or no event, events
the campaigns refuse, late ones, and decisions over the join's cap (``max_pending`` decisions
of a campaign open in the partition, counted in ``Counters.over_capacity``). Both are sent
after every batch and flushed before any checkpoint that covers them (not each batch: a flush
waits for the broker), and records re-processed after a restart may write them again.
Counted, not dead-lettered: repeats (``duplicates``), machine and scanner outcomes and unsent
decisions (``machine``, ``scanner``, ``unsent``: the join's ``excluded``).

Erasure is durable: the decision service publishes an erase record (``erase_record``: the
subject's key and the erasure's time, no user id; ``cmab erase`` publishes the same) to the
campaigns topic, which every worker reads from its start. A worker applies each erase record to
every partition it holds and again to every partition it restores (a checkpoint may predate the
erasure): the join drops the subject's pending decisions and refuses those up to the
erasure's time that come again (records re-processed after a restart) without dead-lettering
them, and the subject's learned decisions that the partition's erasure ledger holds
(``erasure_ledger``, ``bandit.engine.ledger``: the columns learned, in the checkpoint) are
taken out of every summed policy (``Engine.erase_subjects``; VW slots learn in the VW learner,
not here). Applying an erase record again is a no-op: the forgotten rows left the ledger, and
a worker killed after forgetting but before its checkpoint restores the older state, ledger
rows included, and forgets them again. No restart, rebalance or replay brings the subject
back into the model or ``.joined``. A partition's checkpoint is due as soon as erase records
were applied to it; it records how many campaign records had been read then (``campaigns``:
the campaigns topic's next offset while the topic keeps every record), so ``cmab erase
--wait`` knows when every partition's state shows an erasure. Earlier records on the topics
themselves (decisions, events, older checkpoints) hold the subject until the topics'
retention removes them. Partition engines never evaluate guardrails (``Engine.guarding``):
each sees one partition, and the decision service evaluates the merged model.

The ledger's sealed chunks are not in the checkpoint (``Ledger.apart``): each version of a
sealed chunk is written once to partition p of the compacted ``.ledger`` topic, under a key of
its own (the partition and 16 random hex digits: no other writer, a killed predecessor or a
zombie, ever uses it, so compaction never removes a record a checkpoint references), flushed
before the checkpoint, which holds the open chunks and each sealed chunk's key and offset
(``LedgerRefs``). A sealed chunk changes only when an erasure takes rows out of it; the new
version is written before the next checkpoint, and once that checkpoint is written the keys it
no longer references (old versions, chunks dropped by the bound or expired) get tombstones,
so compaction removes the erased rows. The checkpoint names those retired keys, and the
ledger topic's end after its writes: a restoring worker reads its chunks by offset, then
tombstones the retired keys again and every key written after that end that it does not
reference (chunks of a predecessor killed before its checkpoint), so a kill at any point
leaves the successor consistent and the topic, once compacted, without erased rows.

Consent: a logged decision or impression whose decision id says the decision was made
without consent (``bandit.engine.decided_with_consent``) loses its context and segments as it
is decoded, before any check, and is counted (``Counters.stripped``); the join, the
checkpoints and ``.joined`` never hold them, and its dead letter carries the stripped copy
(the service logs none for such a decision; a sender's impression may).

Event time: a partition's watermark is the slower of its two inputs (the newest event time
each has delivered: decisions' times, events' times and watermark records), so an outcome is
not judged late because decisions ran ahead; an input with nothing left to read does not hold
the watermark back.

Events ahead of the decisions wait outside the join. A worker catching up reads both inputs
at once, and a fetch of small event records spans far more event time than one of decision
blocks, so most outcomes would reach the join before their decision and wait there (kept,
then applied a second time). A partition instead holds back, decoded, the events from the
first one whose time is not older than the newest decision read, and gives them to the join
as the decisions pass them (Kafka Streams' timestamp synchronization of a join's inputs),
all of them once the decisions are idle, and the oldest whatever their time beyond
``HOLD_EVENTS``. Held events are not read as far as the checkpoint goes: its events offset
is the first held one's, so a successor reads them again, and the watermark counts only the
events the join was given. This is one more order in which the polls may bring the inputs;
what follows holds for any of them.

Learning order, and what is bit for bit. A batch closes the open windows whose deadline (the
decision's activation + attribution window; activation is the decision's time, or its send's
for a campaign activated by sends) is strictly before the watermark, in deadline order,
decision id breaking ties, and the policies and report tallies add them to their sums one
decision after another (no sum of a batch is added at once). Suppose no decision, send, and
no outcome inside its window, reaches the join after the watermark has passed its decision's
deadline; that holds when each input partition arrives in event time order and no input is
idle while behind the other (nor sends a watermark record it later breaks). Then every
batch closes exactly the windows with deadline in [previous watermark, watermark), so the
batches, end to end, close the partition's decisions in (deadline, id) order whatever the
poll sizes and interleaving, with the same rewards; a restart re-closes those after its
checkpoint in that order onto the checkpointed sums. The partition's policy sums and report
tallies are then the bits of one uninterrupted run, for any real-valued features and rewards
(tests/streams/test_learning_order.py); a VW slot learns in the same order, its model being VW's.
Outside that condition, a decision that comes after its deadline passed is closed in the
batch it arrives in, and an in-window outcome counts or is late, depending on the polls. Decay
(``half_life_ms``) keeps this: the sums' reference time moves by whole half-lives at the
decision that crosses one, whatever the batch (``bandit.kernels.decay``).

The transport is a seam: ``streams.kafka.KafkaTransport`` over a consumer group, or
``streams.memory.MemoryTransport`` over an in-process log (embedded mode, unit tests).

Traced (``bandit.tracing``, when a tracer provider is set): a span per partition's batch
(``cmab.worker.batch``: records, decisions, events, learned, dead letters; linked to the
decisions' spans its events name by ``traceparent``) and per checkpoint
(``cmab.worker.checkpoint``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
from opentelemetry.trace import Span

from bandit import wire
from bandit.engine import Engine, strip_consentless
from bandit.engine.campaign import EventChecker
from bandit.engine.decisionlog import DecisionLog
from bandit.engine.join import ERASED, MAX_PENDING, OVER_CAPACITY, Rejected
from bandit.engine.snapshot import read as read_snapshot
from bandit.errors import BanditError, IncompatibleStateError, InvalidInputError
from bandit.models import Impression, LoggedDecision, Outcome, Send
from bandit.tracing import link_traceparents, tracer
from bandit.wire import columns
from streams import blocks, joined
from streams.codec import Refused, decode_decisions, decode_many, encode
from streams.records import DECISIONS, EVENTS, STREAMS, Batch, DeadLetter

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 3  # 3: offsets of .decisions and .events; 2: of .impressions and .clicks
# While behind, a partition's checkpoints are this many times their writing time apart.
CHECKPOINT_SHARE = 10
# Learned decisions each partition keeps for erasure, as the service does: sealed chunks of the
# ledger go to <prefix>.ledger once per version, so a checkpoint carries the open chunks only.
ERASURE_LEDGER = 1_000_000
# Events a partition holds back at most while its decisions are behind (the module docstring):
# past it, the oldest go to the join whatever their time.
HOLD_EVENTS = 50_000


@dataclass
class Counters:
    """What a partition has seen, carried in its checkpoint (so totals survive restarts).
    ``records``: input records (a block of decisions is one); ``decisions``: the logged
    decisions those blocks held. ``stripped``: logged decisions and impressions that lost
    their context and segments because their decision was made without consent
    (``bandit.engine.strip_consentless``). ``machine``, ``scanner``: outcomes counted, never
    learned (``bandit.engine.join``); ``unsent``: decisions of campaigns activated by sends
    that closed unsent, never learned."""

    records: int = 0
    decisions: int = 0
    joined: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    erased: int = 0  # decisions of erased subjects dropped (pending, or their impression)
    stripped: int = 0  # impressions of consent-less decisions, context and segments dropped
    over_capacity: int = 0  # decisions refused for the join's cap (also dead letters)
    machine: int = 0
    scanner: int = 0
    unsent: int = 0

    def add(self, other: Counters) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


class Stages:
    """Where a worker's time goes, for the benchmarks: seconds per stage, summed over batches.
    ``lap(stage)`` charges the time since the previous lap to ``stage`` (None: to nothing),
    so timing a batch costs a clock read per stage, not per record.

    >>> stages = Stages()
    >>> stages.lap(None); stages.lap("decode")
    >>> stages.seconds["decode"] >= 0.0, list(stages.seconds)[:3]
    (True, ['transport', 'decode', 'check'])
    """

    NAMES = ("transport", "decode", "check", "join", "learn", "closed blocks", "output",
             "checkpoint")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.NAMES, 0.0)
        self._last = time.perf_counter()

    def lap(self, stage: str | None) -> None:
        now = time.perf_counter()
        if stage is not None:
            self.seconds[stage] += now - self._last
        self._last = now


def erase_record(key: bytes, at_ms: int) -> dict[str, Any]:
    """The campaigns-topic record that erases the decisions of subject key ``key`` (a
    pseudonym of the subscriber, or the legacy ``subject_key``: ``SubjectKeys.erase_keys``)
    with an impression at or before ``at_ms`` (event time, ms since the epoch), pending and
    learned."""
    return {"erase": key.hex(), "at": at_ms}


def _erasure(record: dict[str, Any]) -> tuple[bytes, float]:
    """The subject key and time of an erase record (InvalidInputError if it is not one)."""
    key, at = record.get("erase"), record.get("at")
    if not (isinstance(key, str) and len(key) == 32 and isinstance(at, int | float)
            and not isinstance(at, bool) and math.isfinite(at)):
        # Not the record itself: an erase record of an older version holds the user id.
        raise InvalidInputError("erase record: expected a subject key of 32 hex digits and a "
                                f"finite time 'at', got the fields {sorted(record)}")
    try:
        return bytes.fromhex(key), float(at)
    except ValueError:
        raise InvalidInputError("erase record: the subject key is not hex") from None


def applied_campaigns(checkpoint: bytes, what: str = "checkpoint") -> int:
    """How many campaign records a worker checkpoint's partition had applied (its erasures
    through them: ``PartitionJoin.campaigns``), read from the snapshot's meta alone."""
    meta, _ = read_snapshot(checkpoint, what, model_only=True)
    extra = meta.get("extra")
    if not isinstance(extra, dict) or "checkpoint" not in extra:
        raise IncompatibleStateError(f"{what}: not a worker checkpoint")
    return int(extra.get("campaigns", 0))


# What each input's records decode to, when good: the join's decision records, its events.
_JOINABLE = {DECISIONS: frozenset({wire.LoggedDecision}),
             EVENTS: frozenset({wire.Impression, wire.Send, *wire.OUTCOMES})}
Event = (Impression | LoggedDecision | Send | Outcome | wire.Impression | wire.LoggedDecision
         | wire.Send | wire.Outcome)
_BLOCK = b"cmab."  # how every block's header starts (streams.blocks)


class _Probe(NamedTuple):
    """What the event checker reads of a decision, for checking a run's arms and contexts
    without building its decisions."""

    campaign: str
    slots: dict[str, Any]
    context: Any
    type: str = "decision"


class _Choice(NamedTuple):
    arm: str


def _misfits(run: DecisionLog, check: EventChecker) -> list[tuple[int, str]]:
    """The decisions of a run that the campaigns refuse (their positions and reasons, in
    order): a slot's arms at once when the campaign knows them all, else each arm it uses
    once; the consenting decisions' contexts at once."""
    bad: dict[int, str] = {}
    for s in run.slots:
        if check.knows(run.campaign, s.slot, s.arm_ids):  # the block's dictionary of arms
            continue
        for a in np.unique(s.arms).tolist():
            try:
                check(cast(Any, _Probe(run.campaign, {s.slot: _Choice(s.arm_ids[a])}, None)))
            except InvalidInputError as exc:
                for j in np.flatnonzero(s.arms == a).tolist():
                    bad.setdefault(j, str(exc))
    private = run.private
    if private is not None and check.fit_columns(run.campaign, [
            (s.keys, s.strings, s.numbers) for s in private.shapes if s.keys is not None]):
        return sorted(bad.items())  # every context fits: none read as dicts
    contexts = run.contexts
    rows = np.flatnonzero(run.consent).tolist()
    if bad or len(rows) != len(contexts) or None in contexts:  # else: every row, as it is
        rows = [j for j in rows if contexts[j] is not None and j not in bad]
        contexts = [contexts[j] for j in rows]
    for k, why in check.contexts(run.campaign, contexts):
        bad[rows[k]] = why
    return sorted(bad.items())


def _decisions(offsets: list[int], values: list[bytes | None]) -> tuple[
        list[int], list[bytes | None], list[int | None], list[Any]]:
    """The items of a batch of ``.decisions`` records: each line of each text block (its
    record's offset, its bytes, its number in the block, its decision or Refused), a binary
    block whole (its offset, its bytes, None, its decisions as one ``DecisionLog``: the join
    takes them as a run of columns), or a record that is no block whole (line None, Refused
    with the reason)."""
    where: list[int] = []
    items: list[bytes | None] = []
    numbers: list[int | None] = []
    decoded: list[Any] = []
    text: list[int] = []  # items that are lines of text blocks, decoded together below
    for offset, value in zip(offsets, values, strict=True):
        try:
            if columns.is_block(value):
                run = DecisionLog.of_block(columns.read(value))
                where.append(offset)  # the whole block, its decisions one run of columns
                items.append(value)
                numbers.append(None)
                decoded.append(run)
                continue
            lines = blocks.DECISIONS.lines(value)
        except InvalidInputError as exc:
            where.append(offset)
            items.append(value)
            numbers.append(None)
            decoded.append(Refused(
                f"a JSON {EVENTS[:-1]}, not a decision block: senders and trackers write to "
                f"<prefix>.{EVENTS}" if value is not None and value.lstrip()[:1] == b"{"
                else "empty record" if value is None else str(exc)))
            continue
        text += range(len(items), len(items) + len(lines))
        where += [offset] * len(lines)
        items += lines
        numbers += range(1, len(lines) + 1)
        decoded += [None] * len(lines)
    if len(text) == len(items):  # the usual batch of text blocks
        return where, items, numbers, decode_decisions(cast("list[bytes]", items))
    for i, d in zip(text, decode_decisions([cast(bytes, items[i]) for i in text]), strict=True):
        decoded[i] = d
    return where, items, numbers, decoded


class _Held(NamedTuple):
    """Records of ``.events`` read and decoded but not given to the join yet, with each
    one's event time (-inf for a record refused: it goes with its neighbours)."""

    offsets: list[int]
    values: list[bytes | None]
    decoded: list[Any]
    ts: np.ndarray

    def split(self, k: int) -> tuple[_Held, _Held]:
        return (_Held(self.offsets[:k], self.values[:k], self.decoded[:k], self.ts[:k]),
                _Held(self.offsets[k:], self.values[k:], self.decoded[k:], self.ts[k:]))


def _event_ts(item: Any) -> float:
    return float(item.ts) if type(item) is not Refused else -math.inf


class _Read(NamedTuple):
    """The items of one batch past the input's next offset, and what they decoded to: on
    ``.events`` an item is a record; on ``.decisions`` a line of a block (``lines``: its
    number in the block, from 1), or a whole record that is no block (``lines`` None)."""

    stream: str
    offsets: list[int]  # per item: its record's offset
    values: list[bytes | None]  # per item: the record's bytes, or the line's
    decoded: Sequence[Any]  # per item: its event, or the Refused it is refused with
    lines: list[int | None] | None  # per item of .decisions: its line number; None on .events
    stripped: AbstractSet[int]  # items that lost context and segments (no consent)


_ts = attrgetter("ts")


def _no_lap(stage: str | None) -> None:
    """The timing hook of a worker nobody times."""


@dataclass
class BatchOutput:
    """The effects of one batch of one partition, to be written before its checkpoint."""

    joined: list[tuple[bytes, bytes]] = field(default_factory=list)  # .joined (key, block)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)


@dataclass
class LedgerRefs:
    """A partition's bookkeeping of the ledger topic (module docstring): ``keys`` its last
    checkpoint references, ``retired`` the keys that checkpoint stopped referencing (to be
    tombstoned after it), ``end`` the topic partition's next offset after its writes."""

    keys: set[str] = field(default_factory=set)
    retired: list[str] = field(default_factory=list)
    end: int = 0

    @classmethod
    def of(cls, saved: Any, engine: Engine) -> LedgerRefs:
        """The bookkeeping of a checkpoint's ``extra["ledger"]`` (absent: written before
        the ledger was stored apart) and its engine."""
        saved = saved or {}
        return cls(engine.ledger.stored_keys(), [str(k) for k in saved.get("retired", [])],
                   int(saved.get("end", 0)))


class PartitionJoin:
    """One partition's attribution join, partial model and next input offsets.

    >>> from streams import blocks
    >>> from bandit.models import CampaignSpec
    >>> engine = Engine()
    >>> _ = engine.create_campaign(CampaignSpec.model_validate({"name": "w",
    ...     "attribution_window_ms": 10, "slots": [{"name": "s", "arms": [{"id": "a"}],
    ...     "default_arm": "a"}]}))
    >>> part = PartitionJoin(0, Engine.from_bytes(engine.to_bytes())[0])
    >>> line = (b'{"decision_id": "' + b"0" * 32 + b'", "campaign": "w", "subject": "'
    ...         + b"0" * 32 + b'", "ts": 0, "slots": {"s": {"arm": "a", "propensity": 1.0}}}')
    >>> [(_, block)] = blocks.DECISIONS.pack([("0" * 32, line), ("1" * 32, b'{"ts": 1}')])
    >>> out = part.process([Batch(DECISIONS, 0, [0, 1], [block, b"?"])], idle={EVENTS})
    >>> part.offsets, part.counters.decisions, [d.reason[:21] for d in out.dead_letters]
    ({'decisions': 2, 'events': 0}, 2, ['line 2 of the block: ', 'not a decision block:'])
    """

    def __init__(self, partition: int, engine: Engine, *,
                 offsets: dict[str, int] | None = None,
                 newest: dict[str, float] | None = None,
                 counters: Counters | None = None, seq: int = 0, campaigns: int = 0,
                 ledger: LedgerRefs | None = None) -> None:
        self.partition = partition
        self.engine = engine
        self.ledger = ledger or LedgerRefs(keys=engine.ledger.stored_keys())
        self.offsets = dict(offsets) if offsets else dict.fromkeys(STREAMS, 0)
        self.newest = dict(newest) if newest else dict.fromkeys(STREAMS, -math.inf)
        # Events read but held back (``_hold``), oldest first, and the next offset to read.
        self._held: list[_Held] = []
        self._read_to = self.offsets[EVENTS]
        self.counters = counters or Counters()
        self.seq = seq
        # Campaign records read (from the topic's start) when erasures were last applied.
        self.campaigns = campaigns

    @property
    def holding(self) -> int:
        """How many events are held back (read, not yet given to the join)."""
        return sum(len(h.offsets) for h in self._held)

    def process(self, batches: Iterable[Batch], idle: AbstractSet[str] = frozenset(), *,
                lap: Callable[[str | None], None] = _no_lap) -> BatchOutput:
        """Decode, validate, join and learn what a poll brought of this partition (either
        input, any order of batches); ``idle`` names inputs with nothing more to read right
        now. Records at offsets already covered (a replay after a restart) are skipped.
        Events ahead of the decisions in event time are held back (the module docstring);
        a call with no batches gives the join those that may go now. ``lap`` is the timing
        hook (``Stages.lap``)."""
        out = BatchOutput()
        events: list[Event] = []
        read: list[_Read] = []  # for dead letters
        check = self.engine.event_checker()
        for stream, _, offsets, values in batches:
            if stream == EVENTS:
                self._hold(offsets, values)
                lap("decode")
                continue
            fresh = self._decode(stream, offsets, values, out.counters)
            if fresh is None:
                continue
            read.append(fresh)
            lap("decode")
            self._check(fresh, check, events, out.dead_letters)
            lap("check")
        if self._held:
            fresh = self._release(idle, out.counters)
            if fresh is not None:
                read.append(fresh)
                lap("decode")
                self._check(fresh, check, events, out.dead_letters)
                lap("check")
        result = self.engine.ingest(events, self._watermark(idle), checked=True, lap=lap)
        self._rejected(result.rejected, read, out)
        excluded = result.excluded
        if excluded:
            out.counters.machine += excluded["machine"]
            out.counters.scanner += excluded["scanner"]
            out.counters.unsent += excluded["unsent"]
        lap("join")
        if result.closed is not None:
            out.joined = joined.pack_closed(result.closed)
            out.counters.joined += len(result.closed)
            lap("closed blocks")
        out.counters.dead_letters += len(out.dead_letters)
        self.counters.add(out.counters)
        self.seq += 1
        return out

    def _decode(self, stream: str, offsets: list[int], values: list[bytes | None],
                counters: Counters) -> _Read | None:
        """Decode the records of one batch of ``.decisions`` past the input's next offset
        (None: nothing new) and move that offset past them."""
        skip = bisect_left(offsets, self.offsets[stream])
        if skip == len(offsets):
            return None
        if skip:
            offsets, values = offsets[skip:], values[skip:]
        self.offsets[stream] = offsets[-1] + 1
        counters.records += len(values)
        offsets, values, lines, decoded = _decisions(offsets, values)
        counters.decisions += sum(len(d) if type(d) is DecisionLog else n is not None
                                  for n, d in zip(lines, decoded, strict=True))
        return self._kept(stream, offsets, values, decoded, lines, counters)

    @staticmethod
    def _kept(stream: str, offsets: list[int], values: list[bytes | None],
              decoded: Sequence[Any], lines: list[int | None] | None,
              counters: Counters) -> _Read:
        """The _Read of decoded items, consent-less ones stripped of context and segments
        (before the checks: such a decision's context is neither checked nor kept)."""
        kept, stripped = strip_consentless(decoded)
        counters.stripped += stripped
        changed = frozenset(i for i, (a, b) in enumerate(zip(kept, decoded, strict=True))
                            if a is not b) if stripped else frozenset()
        return _Read(stream, offsets, values, kept, lines, changed)

    def _hold(self, offsets: list[int], values: list[bytes | None]) -> None:
        """Decode the records of one batch of ``.events`` past those read already and hold
        them (``_release`` gives them to the join)."""
        skip = bisect_left(offsets, self._read_to)
        if skip == len(offsets):
            return
        if skip:
            offsets, values = offsets[skip:], values[skip:]
        self._read_to = offsets[-1] + 1
        decoded = decode_many(values)
        ts = np.fromiter(map(_event_ts, decoded), dtype=np.float64, count=len(decoded))
        self._held.append(_Held(offsets, values, decoded, ts))

    def _release(self, idle: AbstractSet[str], counters: Counters) -> _Read | None:
        """The held events that may go to the join now (None: none), oldest first: all of
        them when the decisions are idle, else those before the first one not older than the
        newest decision read (one of its time may come yet), and beyond ``HOLD_EVENTS`` held
        the oldest whatever their time.
        The input's next offset (the checkpoint's) is the first event still held."""
        bound = math.inf if DECISIONS in idle else self.newest[DECISIONS]
        over = self.holding - HOLD_EVENTS
        taken: list[_Held] = []
        while self._held:
            first = self._held[0]
            n = len(first.offsets)
            if bound == math.inf or over >= n or first.ts.max() < bound:
                taken.append(self._held.pop(0))
                over -= n
                continue
            k = max(int(np.argmax(first.ts >= bound)), over)
            if k > 0:
                go, self._held[0] = first.split(k)
                taken.append(go)
            break
        self.offsets[EVENTS] = self._held[0].offsets[0] if self._held else self._read_to
        if not taken:
            return None
        if len(taken) == 1:
            offsets, values, decoded, _ = taken[0]
        else:
            offsets = [o for h in taken for o in h.offsets]
            values = [v for h in taken for v in h.values]
            decoded = [d for h in taken for d in h.decoded]
        counters.records += len(values)
        return self._kept(EVENTS, offsets, values, decoded, None, counters)

    def _check(self, fresh: _Read, check: EventChecker, events: list[Event],
               dead_letters: list[DeadLetter]) -> None:
        """Check one batch's decoded items, adding its events to ``events`` and its refused
        items to ``dead_letters``, and move the input's newest event time."""
        stream, decoded = fresh.stream, fresh.decoded
        newest = self.newest
        if set(map(type, decoded)) <= _JOINABLE[stream]:
            try:  # the usual batch: every item an event of its topic's kinds
                for _ in map(check, decoded):
                    pass
            except InvalidInputError:
                pass  # the loop below finds it (and its reason)
            else:
                events += decoded
                newest[stream] = max(newest[stream], float(max(map(_ts, decoded))))
                return
        if set(map(type, decoded)) == {DecisionLog} and not any(
                _misfits(run, check) for run in decoded):  # the usual batch of binary blocks
            events += cast("list[Event]", decoded)  # runs: the join takes them as they are
            newest[stream] = max(newest[stream], *(float(np.max(run.ts)) for run in decoded))
            return
        top = newest[stream]
        for i, event in enumerate(decoded):
            if type(event) is DecisionLog:
                top = max(top, self._check_run(fresh, i, check, events, dead_letters))
                continue
            try:
                if type(event) is Refused:
                    raise event
                if event.type == "watermark":
                    top = max(top, float(event.ts))
                    continue
                check(event)
            except (Refused, InvalidInputError) as exc:
                dead_letters.append(self._letter(fresh, i, str(exc)))
                continue
            events.append(event)
            if event.ts > top:
                top = float(event.ts)
        newest[stream] = top

    def _check_run(self, fresh: _Read, i: int, check: EventChecker,
                   events: list[Event], dead_letters: list[DeadLetter]) -> float:
        """Check the run of item ``i`` (a binary block): whole when every decision fits the
        campaigns, else decision by decision (its misfits dead-lettered with their number in
        the block); returns its newest event time."""
        run = cast(DecisionLog, fresh.decoded[i])
        bad = _misfits(run, check)
        if not bad:  # the join takes a log as a run of its decisions (Joiner.add)
            events.append(cast("Event", run))
        else:
            why = dict(bad)
            for j, decision in enumerate(run.logged()):
                if j in why:
                    dead_letters.append(self._letter(fresh, i, why[j], j))
                else:
                    events.append(decision)
        return float(np.max(run.ts))

    def _letter(self, fresh: _Read, i: int, reason: str, row: int | None = None) -> DeadLetter:
        """The dead letter of item ``i``: its bytes (a text block's line: the line's, its
        number in the reason; decision ``row`` of a binary block: its JSON, its number), or
        those of its stripped copy when it lost context and segments (a consent-less
        decision's are kept nowhere)."""
        stream, offset, value = fresh.stream, fresh.offsets[i], fresh.values[i]
        line = fresh.lines[i] if fresh.lines is not None else None
        if row is not None:
            value = encode(cast(DecisionLog, fresh.decoded[i]).logged([row])[0])
            reason = f"decision {row + 1} of the block: {reason}"
        elif i in fresh.stripped:
            value = encode(fresh.decoded[i])
            reason += " (context and segments dropped: decided without consent)"
        elif stream == EVENTS and value is not None and value.startswith(_BLOCK):
            reason = (f"a {value[:value.find(b' ')].decode(errors='replace')!r:.40} block on "
                      f"the {EVENTS} topic, not an event: decision blocks go to "
                      f"<prefix>.{DECISIONS}")
        if line is not None:
            reason = f"line {line} of the block: {reason}"
        return DeadLetter(value, reason, f"{stream}/{self.partition}/{offset}")

    def _watermark(self, idle: AbstractSet[str]) -> float:
        """The slower of the inputs that are not idle (of all, if every input is idle)."""
        busy = [self.newest[s] for s in STREAMS if s not in idle]
        return min(busy) if busy else max(self.newest.values())

    def _rejected(self, rejected: list[Rejected], read: list[_Read], out: BatchOutput) -> None:
        """Count what the join rejected and dead-letter it with its item's original bytes
        (duplicates and erased subjects' decisions are only counted)."""
        source: dict[int, tuple[_Read, int]] = {}  # id of a decoded event -> its item
        runs: dict[str, tuple[_Read, int, int]] = {}  # decision id -> (item, row) of a run
        if any(r.reason is not ERASED and not r.reason.startswith("duplicate")
               for r in rejected):
            source = {id(event): (fresh, i) for fresh in read
                      for i, event in enumerate(fresh.decoded)}
            runs = {d: (fresh, i, j) for fresh in read for i, event in enumerate(fresh.decoded)
                    if type(event) is DecisionLog for j, d in enumerate(event.decision_ids)}
        for rejection in rejected:
            if rejection.reason.startswith("duplicate"):
                out.counters.duplicates += 1
                continue
            if rejection.reason is ERASED:  # counted, never dead-lettered: it holds their data
                out.counters.erased += 1
                continue
            if rejection.reason.startswith("late"):
                out.counters.late += 1
            elif rejection.reason.startswith(OVER_CAPACITY):
                out.counters.over_capacity += 1
            item = source.get(id(rejection.event))
            if item is not None:
                out.dead_letters.append(self._letter(*item, rejection.reason))
                continue
            decision_id = getattr(rejection.event, "decision_id", None)
            if rejection.event.type == "decision" and decision_id in runs:  # a run's decision
                fresh, i, j = runs[decision_id]
                out.dead_letters.append(self._letter(fresh, i, rejection.reason, j))
                continue
            # An event that waited for its decision came in an earlier batch: re-encoded. The
            # join rejects only what it was given, decoded events: models or their mirrors.
            event = cast("Event", rejection.event)
            out.dead_letters.append(DeadLetter(encode(event), rejection.reason,
                                               f"{EVENTS}/{self.partition}/join"))

    def checkpoint(self) -> bytes:
        """The partition's whole state as one record value."""
        return self.engine.to_bytes(extra={
            "checkpoint": CHECKPOINT_FORMAT, "partition": self.partition, "seq": self.seq,
            "offsets": self.offsets,
            "newest": {s: (t if math.isfinite(t) else None) for s, t in self.newest.items()},
            "counters": vars(self.counters), "campaigns": self.campaigns,
            "ledger": {"end": self.ledger.end, "retired": self.ledger.retired}})

    @classmethod
    def restore(cls, data: bytes, *, what: str = "checkpoint",
                model_only: bool = False) -> PartitionJoin:
        """The PartitionJoin a ``checkpoint`` came from (IncompatibleStateError if damaged);
        ``model_only``: without its open windows (for reading the model, not for resuming)."""
        engine, extra = Engine.from_bytes(data, what=what, model_only=model_only)
        try:
            if extra is None:  # an engine snapshot: Python's words for indexing it
                raise TypeError("'NoneType' object is not subscriptable")
            if extra["checkpoint"] == 2:
                raise IncompatibleStateError(
                    f"{what}: a format-2 worker checkpoint, of the impressions and clicks "
                    "topics; this worker reads <prefix>.decisions and <prefix>.events. Start it "
                    "on fresh topics (a new topic prefix), or replay the events into the new "
                    "topics with an empty state topic")
            if extra["checkpoint"] != CHECKPOINT_FORMAT:
                raise ValueError(f"format {extra['checkpoint']}")
            return cls(int(extra["partition"]), engine,
                       offsets={s: int(extra["offsets"][s]) for s in STREAMS},
                       newest={s: (-math.inf if extra["newest"][s] is None
                                   else float(extra["newest"][s])) for s in STREAMS},
                       counters=Counters(**extra["counters"]), seq=int(extra["seq"]),
                       campaigns=int(extra.get("campaigns", 0)),
                       ledger=LedgerRefs.of(extra.get("ledger"), engine))
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleStateError(f"{what}: not a worker checkpoint ({exc})") from None


class Transport(Protocol):
    """What the worker needs from an event log (Kafka, or the in-process one)."""

    def poll(self, timeout_ms: int) -> list[Batch]:
        """The next records of the assigned partitions, a Batch per input and partition (may
        call the worker's on_assigned / on_revoked first, as Kafka's rebalance does)."""

    def idle(self, partition: int) -> set[str]:
        """Inputs of ``partition`` with nothing more to read right now."""

    def campaign_records(self) -> list[dict[str, Any]]:
        """Campaign records published since the last call (all of them on the first)."""

    def latest_checkpoint(self, partition: int) -> bytes | None: ...

    def seek(self, partition: int, offsets: dict[str, int]) -> None: ...

    def send_joined(self, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """Write ``.joined`` records (key, block) to ``partition``."""

    def send_dead_letters(self, letters: list[DeadLetter]) -> None: ...

    def flush(self) -> None: ...

    def send_checkpoint(self, partition: int, data: bytes) -> None:
        """Write one checkpoint in a batch of its own (so the partition's end is exact); it is
        durable once ``flush`` returns."""

    def send_ledger(self, partition: int, key: str, value: bytes) -> int:
        """Write and flush one sealed ledger chunk to the ledger topic; returns its offset."""

    def read_ledger(self, partition: int, offsets: list[int]
                    ) -> list[tuple[bytes | None, bytes | None]]:
        """The (key, value) of the ledger topic's records at ``offsets``."""

    def ledger_records(self, partition: int, start: int
                       ) -> list[tuple[int, bytes | None, bytes | None]]:
        """(offset, key, value) of every ledger topic record from ``start`` to its end."""

    def retire_ledger(self, partition: int, keys: list[str]) -> None:
        """Write and flush a tombstone for each of ``keys`` on the ledger topic."""

    def commit(self, offsets: dict[int, dict[str, int]]) -> None:
        """Tell the log how far each partition is (for lag monitoring, not for restarts)."""

    def close(self) -> None: ...


def _describe_batch(span: Span, partition: int, batches: list[Batch], out: BatchOutput) -> None:
    """A recording batch span's attributes (records, decisions, events, learned: closed
    decisions written to .joined, dead letters) and its links to the decisions' spans that
    events of the batch name (their ``traceparent``)."""
    events = sum(len(b.offsets) for b in batches if b.stream == EVENTS)
    c = out.counters
    span.set_attributes({"cmab.partition": partition, "cmab.records": c.records,
                         "cmab.decisions": c.decisions, "cmab.events": events,
                         "cmab.learned": c.joined, "cmab.dead_letters": c.dead_letters})
    for batch in batches:
        if batch.stream == EVENTS:
            link_traceparents(span, batch.values)


class Worker:
    """The worker loop over a transport: restore on assignment, then batch after batch,
    process and write the outputs; checkpoint as the module docstring says
    (``checkpoint_interval_ms`` 0: after every batch). ``clock`` (seconds) is for tests.

    ``on_batch`` (optional) is called with each partition's output after it is written;
    ``stages`` (optional) sums the time of each stage of the batches (``Stages``);
    ``max_pending`` caps each partition's open decisions per campaign (``bandit.engine.join``);
    ``erasure_ledger``: the learned decisions each partition keeps so that erase records take
    them out of its model (``Engine.keep_ledger``; 0: none, erasure drops pending decisions
    only).
    """

    def __init__(self, transport: Transport, *, seed: int = 0,
                 on_batch: Callable[[int, BatchOutput], None] | None = None,
                 checkpoint_interval_ms: int = 1000,
                 clock: Callable[[], float] = time.monotonic,
                 stages: Stages | None = None, max_pending: int = MAX_PENDING,
                 erasure_ledger: int = ERASURE_LEDGER) -> None:
        if checkpoint_interval_ms < 0:
            raise InvalidInputError(
                f"checkpoint_interval_ms: expected >= 0, got {checkpoint_interval_ms}")
        if erasure_ledger < 0:
            raise InvalidInputError(f"erasure_ledger: expected >= 0, got {erasure_ledger}")
        self.transport = transport
        self.seed = seed
        self.on_batch = on_batch
        self.checkpoint_interval_ms = checkpoint_interval_ms
        self.clock = clock
        self.stages = stages
        self.max_pending = max_pending
        self.erasure_ledger = erasure_ledger
        self._lap = _no_lap if stages is None else stages.lap
        self.partitions: dict[int, PartitionJoin] = {}
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.erasures: dict[bytes, float] = {}  # every erase record read: subject key -> time
        self.campaigns_read = 0  # campaign records read from the topic's start
        self.counters = Counters()
        self.campaign_errors = 0
        self.checkpoints = 0  # written by this worker
        self._pending: set[int] = set()  # partitions with records after their last checkpoint
        self._written_at: dict[int, float] = {}  # partition -> clock() of its last checkpoint
        self._cost: dict[int, float] = {}  # partition -> seconds its last checkpoint took

    # -- assignment -------------------------------------------------------------------

    def on_assigned(self, partitions: Iterable[int]) -> None:
        self._sync_campaigns()
        for p in partitions:
            if p in self.partitions:
                continue
            data = self.transport.latest_checkpoint(p)
            if data is None:
                part = PartitionJoin(p, Engine(seed=self.seed))
            else:
                part = PartitionJoin.restore(data, what=f"checkpoint of partition {p}")
            self._restore_ledger(part)
            part.engine.ledger.apart = True
            part.engine.limit_pending(self.max_pending)
            part.engine.keep_ledger(self.erasure_ledger)
            part.engine.guarding = False
            self._apply_campaigns(part, self.campaigns.values())
            self._erase(part, self.erasures)
            self.partitions[p] = part
            self._written_at[p] = self.clock()
            self.transport.seek(p, part.offsets)
            log.info("partition %d: from offsets %s (checkpoint %d)", p, part.offsets, part.seq)

    def _restore_ledger(self, part: PartitionJoin) -> None:
        """Read the restored checkpoint's sealed ledger chunks by offset, then tombstone the
        keys it retired and those written after its end that it does not reference (the
        module docstring)."""
        p, ledger, refs = part.partition, part.engine.ledger, part.engine.ledger.references()
        what = f"checkpoint of partition {p}"
        values = []
        for (key, at), (got, value) in zip(
                refs, self.transport.read_ledger(p, [at for _, at in refs]), strict=True):
            if got != key.encode() or value is None:
                raise IncompatibleStateError(
                    f"{what}: its ledger chunk {key} is not at offset {at} of the ledger topic")
            values.append(value)
        try:
            ledger.load(values)
        except ValueError as exc:
            raise IncompatibleStateError(f"{what}: {exc}") from None
        stray = set(part.ledger.retired)
        for offset, written, chunk in self.transport.ledger_records(p, part.ledger.end):
            name = None if written is None else written.decode()
            if chunk is not None and name is not None and name not in part.ledger.keys:
                stray.add(name)
            part.ledger.end = offset + 1
        if stray:
            self.transport.retire_ledger(p, sorted(stray))

    def _store_ledger(self, part: PartitionJoin) -> None:
        """Write the partition's sealed ledger chunks not stored yet (before the checkpoint
        that references them) and note the keys that checkpoint retires."""
        p, ledger = part.partition, part.engine.ledger
        for chunk in ledger.unstored():
            key = f"{p}/{os.urandom(8).hex()}"
            at = self.transport.send_ledger(p, key, ledger.chunk_value(chunk))
            ledger.stored(chunk, key, at)
            part.ledger.end = max(part.ledger.end, at + 1)
        keys = ledger.stored_keys()
        part.ledger.retired = sorted(part.ledger.keys - keys)
        part.ledger.keys = keys

    def on_revoked(self, partitions: Iterable[int]) -> None:
        # The next owner starts from the newest checkpoint: write what is pending first (its
        # outputs flushed before it), then forget the partition.
        gone = [p for p in partitions if p in self.partitions]
        self.write_checkpoints(gone)
        for p in gone:
            self.partitions.pop(p)
            self._written_at.pop(p, None)
            self._cost.pop(p, None)

    def on_lost(self, partitions: Iterable[int]) -> None:
        """The group evicted this worker (it stalled past its session timeout): the
        partitions' new owner restored them from their last checkpoints and may be far ahead,
        so what is pending here is dropped, not checkpointed (that checkpoint would be stale:
        consistent, but behind). Outputs still in the producer's buffer go out as usual;
        nothing is lost, since the new owner re-processes the records after the checkpoint it
        restored."""
        for p in partitions:
            self.partitions.pop(p, None)
            self._written_at.pop(p, None)
            self._cost.pop(p, None)
            self._pending.discard(p)

    # -- campaigns --------------------------------------------------------------------

    def _sync_campaigns(self) -> None:
        fresh = self.transport.campaign_records()
        if not fresh:
            return
        self.campaigns_read += len(fresh)
        erasures: dict[bytes, float] = {}
        for record in [r for r in fresh if isinstance(r, dict) and "erase" in r]:
            try:
                key, at = _erasure(record)
            except InvalidInputError as exc:
                self.campaign_errors += 1
                log.error("erase record refused: %s", exc)
                continue
            erasures[key] = max(at, erasures.get(key, -math.inf))
        fresh = [r for r in fresh if not (isinstance(r, dict) and "erase" in r)]
        for record in fresh:
            name = record.get("spec", {}).get("name") if isinstance(record, dict) else None
            if isinstance(name, str):
                self.campaigns[name] = record
        for key, at in erasures.items():
            self.erasures[key] = max(at, self.erasures.get(key, -math.inf))
        for part in self.partitions.values():
            self._apply_campaigns(part, fresh)
            self._erase(part, erasures)

    def _erase(self, part: PartitionJoin, erasures: dict[bytes, float]) -> None:
        """Apply erasures to a partition (pending and learned decisions); its next checkpoint
        is then due (the last one may hold the subjects, and it shows how far erasure went),
        unless those erasures were applied before its last one."""
        if not erasures:
            return
        dropped, changed = part.engine.erase_subjects(erasures)
        part.counters.erased += dropped
        self.counters.erased += dropped
        if changed or part.campaigns != self.campaigns_read:
            self._pending.add(part.partition)
        part.campaigns = self.campaigns_read

    def _apply_campaigns(self, part: PartitionJoin, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            try:
                part.engine.sync_campaign(record)
            except BanditError as exc:
                self.campaign_errors += 1
                log.error("partition %d: campaign record refused: %s", part.partition, exc)

    # -- the loop ---------------------------------------------------------------------

    def step(self, timeout_ms: int = 100) -> int:
        """One poll and its batch; returns how many records it read (when it read none: how
        many held events it gave the join)."""
        lap = self._lap
        lap(None)
        batches = self.transport.poll(timeout_ms)
        records = sum(len(batch.offsets) for batch in batches)
        # After the poll, once a step (a read of the campaigns topic to its end costs a round
        # trip to the broker): a campaign created just before its first events is known first.
        self._sync_campaigns()
        by_partition: dict[int, list[Batch]] = {}
        for batch in batches:
            by_partition.setdefault(batch.partition, []).append(batch)
        # Partitions without records wait: their next record (or watermark) closes windows.
        # But one holding events back gives them to the join once its decisions are idle.
        for p, held in self.partitions.items():
            if p not in by_partition and held.holding:
                by_partition[p] = []
        lap("transport")
        outputs = {}
        for p, mine in by_partition.items():
            part = self.partitions.get(p)
            if part is None:  # revoked during the poll
                continue
            idle = self.transport.idle(p)
            lap("transport")
            if not mine and DECISIONS not in idle:
                continue
            with tracer.start_as_current_span("cmab.worker.batch") as span:
                outputs[p] = part.process(mine, idle, lap=lap)
                if span.is_recording():
                    _describe_batch(span, p, mine, outputs[p])
        if outputs:
            for p, out in outputs.items():
                self.transport.send_joined(p, out.joined)
                self.transport.send_dead_letters(out.dead_letters)
            self._pending.update(outputs)
            lap("output")
        now = self.clock()
        self.write_checkpoints([p for p in self._pending
                                if not records or self._due(p, outputs, now)])
        lap("checkpoint")
        for p, out in outputs.items():
            self.counters.add(out.counters)
            if self.on_batch is not None:
                self.on_batch(p, out)
        return max(records, sum(out.counters.records for out in outputs.values()))

    def _due(self, p: int, outputs: dict[int, BatchOutput], now: float) -> bool:
        """Whether partition ``p``'s checkpoint is due at ``now`` while the worker is behind:
        the interval passed or the batch closed windows, and (unless checkpoints go after
        every batch) ``CHECKPOINT_SHARE`` times its last checkpoint's cost passed too."""
        interval = self.checkpoint_interval_ms
        if not interval:
            return True
        since = now - self._written_at.get(p, -math.inf)
        return ((p in outputs and bool(outputs[p].joined)) or since * 1000 >= interval) and (
            since >= CHECKPOINT_SHARE * self._cost.get(p, 0.0))

    def write_checkpoints(self, partitions: Iterable[int] | None = None) -> None:
        """Checkpoint the given partitions (default: all) that have records no checkpoint
        covers yet, after flushing the outputs sent so far (which they cover). Returns once
        the checkpoints are flushed (one flush for all of them)."""
        due = sorted(p for p in (self._pending if partitions is None else partitions)
                     if p in self._pending and p in self.partitions)
        if not due:
            return
        self.transport.flush()  # the outputs these checkpoints cover, first
        made: dict[int, float] = {}  # partition -> seconds its checkpoint took to make and send
        for p in due:
            start = self.clock()
            part = self.partitions[p]
            with tracer.start_as_current_span("cmab.worker.checkpoint") as span:
                self._store_ledger(part)
                data = part.checkpoint()
                self.transport.send_checkpoint(p, data)
                if part.ledger.retired:  # only now: a successor may restore the last checkpoint
                    self.transport.flush()
                    self.transport.retire_ledger(p, part.ledger.retired)
                if span.is_recording():
                    span.set_attributes({"cmab.partition": p, "cmab.bytes": len(data),
                                         "cmab.seq": part.seq})
            made[p] = self.clock() - start
        # One wait for the broker's acknowledgements of all of them, not one per partition.
        start = self.clock()
        self.transport.flush()
        done = self.clock()
        for p in due:
            self._written_at[p] = done
            self._cost[p] = made[p] + (done - start)
            self._pending.discard(p)
            self.checkpoints += 1
        self.transport.commit({p: self.partitions[p].offsets for p in due})

    def run(self, should_stop: Callable[[], bool], timeout_ms: int = 100) -> None:
        """Steps until ``should_stop()``, writes the pending checkpoints, then closes the
        transport (a Kafka consumer leaves its group, so the partitions move at once). When a
        step raises, its batch may be half applied: the partitions are dropped unwritten
        (``on_lost``), so closing (which revokes them) checkpoints nothing, and the error is
        raised; the next owner re-processes the records after the last checkpoint."""
        try:
            while not should_stop():
                self.step(timeout_ms)
            self.write_checkpoints()
        except BaseException:
            self.on_lost(list(self.partitions))
            raise
        finally:
            self.transport.close()
