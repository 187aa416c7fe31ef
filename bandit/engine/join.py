"""The attribution join: decisions, sends and outcomes in, closed decisions (JoinedEvent) out.

Pure logic in event time, no I/O and no clock: the same events give the same output whatever
the batching, so the in-process event path and the stream worker share it.

A decision comes from the decision log (``LoggedDecision``; or many as one run of columns, a
``DecisionLog`` read from a binary block, joined with the same outcome as its decisions one by
one) or as a legacy impression (a decision logged by its sender, sent at once; an impression of
a decision already logged is its send). A campaign activated by decisions learns a decision
from the time it was made; one activated by sends holds it until its ``Send`` comes, and a
decision not sent within the campaign's ``activation_window_ms`` leaves unlearned (counted:
``excluded["unsent"]``). The window of an active decision closes once the watermark (the newest
event time seen) is past its activation + ``attribution_window_ms``. Outcomes (open, click,
conversion, unsubscribe, complaint, bounce) count when they fall within their type's window
after the send; an outcome flagged ``machine`` and a click within the campaign's ``scanner_ms``
of the send are counted apart (``excluded``) and never learned. Per slot, each outcome type's
amounts are aggregated by the type's rule (sum, max, first) and the reward is the weighted sum
over the types the campaign's ``reward`` weighs (its default reward when none counted).

Outcomes and sends that come before their decision (or, for outcomes, before its send) wait
for it; what still waits a window later is an orphan. With activation by decision, a send
only times the scanner rule: a click before the send's arrival is timed from the decision.

Erasure: the join keeps the erased subjects as ``subject_key`` hashes of their user ids, each
with the event time of its erasure. A decision of an erased subject made at or before that
time leaves the open windows, and such a decision arriving later (a replay, a late log) is
rejected as ``ERASED``; a later one is a new decision (the subscriber came back). The erased
subjects are part of the state, and the interned strings are compacted on erasure, so a
snapshot holds neither the subject nor their string values.

Memory is bounded: at most ``max_pending`` decisions of one campaign stay open after a batch.
A decision that would leave more is refused with the reason ``OVER_CAPACITY`` (the stream
worker dead-letters it); one whose window closes within its own batch always fits. Which
decisions a campaign at its cap refuses can depend on batching (windows close at the end of
a batch): the cap is an overload guard, not part of the join's batching-independent results.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Annotated, Any, NamedTuple, cast

import msgspec
import numpy as np
import orjson
from pydantic import BaseModel, Field, TypeAdapter

from bandit.engine.decisionlog import DecisionLog
from bandit.engine.randomness import subject_key
from bandit.engine.windows import (
    _FIRST_ROWS,
    _RS,
    _WIDE,
    ACTIVE,
    SENT,
    UNSENT,
    Closed,
    _assign,
    _distinct_rows,
    _OpenWindows,
)
from bandit.models import OUTCOME_TYPES, CampaignSpec, JoinedEvent, Send
from bandit.models.events import Bounce, Click, Complaint, Conversion, Open, Unsubscribe
from bandit.wire import Joined
from bandit.wire.protocols import (
    DecisionLike,
    ImpressionLike,
    OutcomeLike,
    SendLike,
)

# What the join takes: decisions (logged, or legacy impressions), sends and outcomes.
Joinable = DecisionLike | SendLike | OutcomeLike
Waiting = SendLike | ImpressionLike | OutcomeLike  # what may wait for its decision
_WAITING: TypeAdapter[Any] = TypeAdapter(Annotated[
    Send | Open | Click | Conversion | Unsubscribe | Complaint | Bounce,
    Field(discriminator="type")])
_DECISIONS = frozenset({"decision", "impression"})
_KIND_INDEX = {kind: i for i, kind in enumerate(OUTCOME_TYPES)}

# Event ids and closed decision ids are remembered this many windows back, for deduplication
# and for telling a late event from an orphan.
_RETENTION_WINDOWS = 2
# Probability texts no open decision uses are dropped once they outnumber the used ones.
_TEXTS_SLACK = 4096
# One reason whether or not the window had closed yet, so that batching cannot change it.
_LATE = "late: outside the attribution window"
_LATE_SEND = "late: the decision's activation window had passed"
_ORPHAN = "orphan: no decision within the window"
_SECOND_DECISION = "duplicate decision: the decision is logged already"
_SECOND_IMP = "second impression for the decision"
ERASED = "erased: the subject asked to be erased"  # never dead-lettered: it holds their data

# Open decisions of one campaign a join holds after a batch (the service's CMAB_MAX_PENDING).
MAX_PENDING = 1_000_000
OVER_CAPACITY = "over capacity"  # the start of the reason of a decision over the cap


@dataclass(frozen=True)
class Rejected:
    """An event the join could not use, and why: duplicate, late, orphan."""

    event: Joinable
    reason: str


@dataclass
class JoinResult:
    """Closed decisions (``closed``, columns; ``joined``, their events), rejected events, and
    what was counted but not learned (``excluded``: "machine" and "scanner" outcomes,
    "unsent" decisions)."""

    closed: Closed | None = None
    rejected: list[Rejected] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    _events: list[JoinedEvent | Joined] | None = field(default=None, repr=False)

    @property
    def joined(self) -> list[JoinedEvent | Joined]:
        """``closed`` as events (``wire.Joined`` for the stream worker's, else JoinedEvent),
        built on first use."""
        if self._events is None:
            self._events = self.closed.events() if self.closed is not None else []
        return self._events


class _Rules(NamedTuple):
    """A campaign's settings the join reads per event (a campaign's spec never changes them
    once it exists). Windows are whole numbers of ms, typed float as the spec types them."""

    window: float  # attribution window: activation to close
    default: float  # the reward when no weighted outcome counted
    wait: float | None  # activation by send: how long a decision waits for it; else None
    weights: dict[str, float]  # outcome type -> weight, in the spec's order
    windows: dict[str, float]  # outcome type -> its window after the send
    rules: dict[str, str]  # outcome type -> aggregation: sum, max, first
    scanner: float  # clicks this soon after the send are a link scanner's


def _rules_of(spec: CampaignSpec) -> _Rules:
    reward = spec.reward.outcomes
    window = float(spec.attribution_window_ms)
    return _Rules(
        window=window, default=spec.default_reward,
        wait=None if spec.activation == "decision" else float(spec.activation_window_ms),
        weights={kind: rule.weight for kind, rule in reward.items()},
        windows={kind: float(reward[kind].window_ms or window) if kind in reward else window
                 for kind in OUTCOME_TYPES},
        rules={kind: reward[kind].aggregation if kind in reward else "sum"
               for kind in OUTCOME_TYPES},
        scanner=float(spec.reward.scanner_ms))


class Joiner(_OpenWindows):
    """Open attribution windows of one partition (or of the in-process event path).

    The open decisions are columns (``_OpenWindows``): a checkpoint writes them as binary
    arrays, so its cost per window is a few bytes copied, not an event re-serialized. Rows of
    closed or erased decisions are reused.

    >>> from bandit.models import CampaignSpec, Click, Impression
    >>> spec = CampaignSpec.model_validate({"name": "w", "attribution_window_ms": 1000,
    ...     "slots": [{"name": "s", "arms": [{"id": "a"}], "default_arm": "a"}]})
    >>> j = Joiner(lambda name: spec)
    >>> imp = Impression(event_id="i1", decision_id="0" * 32, campaign="w", user_id="u", ts=0,
    ...                  slots={"s": {"arm": "a", "propensity": 1.0}})
    >>> click = Click(event_id="c1", decision_id="0" * 32, campaign="w", ts=500)
    >>> j.add([imp, click]).joined, j.add([Click(event_id="c2", decision_id="1" * 32,
    ...     campaign="w", ts=1001)]).joined[0].rewards
    ([], {'s': 1.0})
    """

    def __init__(self, campaign: Callable[[str], CampaignSpec],
                 max_pending: int = MAX_PENDING) -> None:
        super().__init__()
        self._campaign = campaign
        self.max_pending = max_pending
        self._open: dict[str, int] = {}  # campaign -> its open decisions (live rows)
        self._cache: dict[str, _Rules] = {}
        self._spans: set[str] = set()  # campaigns whose windows ``_longest`` counts
        self._early: dict[str, list[Waiting]] = {}  # decision id -> sends and outcomes
        self._seen: dict[str, float] = {}  # event id -> event time
        self._closed: dict[str, float] = {}  # decision id -> window close time
        # The longest attribution (or activation) window seen, in ms; 0 until a campaign's
        # event comes (nothing is pruned before: an outcome may come before any decision).
        self._longest = 0.0
        self._pruned_at = float("-inf")
        self.watermark = float("-inf")
        # Erased subjects: subject_key -> event time of the erasure (ms), and the latest of
        # those times: a newer decision needs no hash.
        self._erased: dict[bytes, float] = {}
        self._erased_until = -math.inf

    def add(self, events: Sequence[Joinable], watermark: float | None = None) -> JoinResult:
        """Apply events (any order), then close every window the new watermark passed.

        The watermark is the newest event time seen unless ``watermark`` is given: a join fed
        by several streams passes the slowest stream's progress, so that an outcome behind
        its stream's peers is not judged late because another stream ran ahead. It never goes
        back.
        """
        result = JoinResult()
        seen, row, closed = self._seen, self._row, self._closed
        newest, longest = self.watermark, self._longest
        erased_until, spans = self._erased_until, self._spans
        # Decisions are checked and given their rows here, in order, and written to the
        # columns together (_insert) at the end. An event on a row not written yet reads and
        # moves the decision's timing in ``waiting`` instead of the columns, so that a batch
        # whose sends and outcomes come early costs no small numpy write per event.
        pending: list[tuple[int, int, DecisionLike]] = []
        # row -> (ts, deadline, shape, sent, send ts); tuples, which the GC does not track
        waiting: dict[int, tuple[float, ...]] = {}
        admission = _Admission(self, events, watermark)
        try:
            for event in events:
                kind = event.type
                if kind == "decisions":  # a binary block's decisions, as columns
                    if pending:  # rows before it first, as they came
                        self._insert(pending, waiting)
                        admission.written += [r for r, _, _ in pending]
                        pending.clear()
                        waiting.clear()
                    newest, longest = self._add_run(cast(DecisionLog, event), result,
                                                    admission, newest, longest)
                    continue
                if kind == "decision":
                    key = event.decision_id
                    if key in row or key in closed:
                        result.rejected.append(Rejected(event, _SECOND_DECISION))
                        continue
                    ts = event.ts
                else:
                    sent = cast("ImpressionLike | SendLike | OutcomeLike", event)
                    key = sent.event_id
                    if key in seen:
                        result.rejected.append(Rejected(event, "duplicate event_id"))
                        continue
                    ts = seen[key] = sent.ts
                if ts > newest:
                    newest = ts
                if kind != "decision" and kind != "impression":
                    named = cast("SendLike | OutcomeLike", event).campaign
                    if named is not None and named not in spans:
                        longest = max(longest, self._span(named))
                if kind == "send":
                    self._send(cast(SendLike, event), result, waiting)
                    continue
                if kind != "decision" and kind != "impression":
                    self._outcome(cast(OutcomeLike, event), result, waiting)
                    continue
                decision = cast(DecisionLike, event)
                decision_id = decision.decision_id
                if kind == "impression" and decision_id in row:  # the send of a logged one
                    self._send(cast(ImpressionLike, event), result, waiting)
                    continue
                rules = self._cache.get(decision.campaign) or self._rules(decision.campaign)
                if decision.campaign not in spans:
                    longest = max(longest, self._span(decision.campaign))
                if ts <= erased_until and ts <= self._erased.get(_subject_key(decision),
                                                                  -math.inf):
                    result.rejected.append(Rejected(event, ERASED))
                    continue
                if decision_id in row or decision_id in closed:
                    result.rejected.append(Rejected(event, _SECOND_DECISION
                                                    if kind == "decision" else _SECOND_IMP))
                    continue
                state = ACTIVE if rules.wait is None else SENT if kind == "impression" else UNSENT
                deadline = ts + (rules.window if state != UNSENT else cast(float, rules.wait))
                if not admission.admit(decision.campaign, deadline):
                    result.rejected.append(Rejected(event, admission.reason(decision.campaign)))
                    if kind != "decision":  # not taken: it may come again
                        del seen[cast(ImpressionLike, event).event_id]
                    continue
                if self._free:
                    r = self._free.pop()
                else:
                    r = self._size
                    self._size += 1
                row[decision_id] = r
                shape = self._shape_of(decision)
                pending.append((r, shape, decision))
                waiting[r] = (float(ts), float(deadline), shape, state, float(ts))
                if self._early and decision_id in self._early:
                    self._wake(decision_id, result, waiting)
        finally:  # rows handed out are written even if a campaign lookup failed half-way
            if pending:
                self._insert(pending, waiting)
            self._longest = longest
        if watermark is None:
            self.watermark = newest
        else:
            self.watermark = max(self.watermark, watermark)
        self._close(result)
        return result

    def _add_run(self, run: DecisionLog, result: JoinResult, admission: _Admission,
                 newest: float, longest: float) -> tuple[float, float]:
        """``add``'s work for each decision of ``run`` (a ``DecisionLog`` read from a binary
        block), in order, with the same outcome as its decisions one by one: per decision a
        few dict lookups (repeat, erased subject, admission, row); the columns written at once
        (``_write_run``); then, in order, the rejections and what waited for them. Returns
        ``add``'s newest event time and longest window."""
        ids, row, closed, free = run.decision_ids, self._row, self._closed, self._free
        times = np.broadcast_to(np.asarray(run.ts, dtype=np.float64), len(run))
        campaign, rules = run.campaign, None
        erased_until, erased, subjects = self._erased_until, self._erased, run.subjects
        deadline: list[float] = []
        after: list[tuple[int, str]] = []  # (position, reason): rejected, in order
        taken: list[int] = []
        rows: list[int] = []
        admit = admission.admit
        if self._clear(run, times, admission):  # every decision is new and fits: at once
            newest = max(newest, float(times.max()))
            rules = self._cache.get(campaign) or self._rules(campaign)
            if campaign not in self._spans:
                longest = max(longest, self._span(campaign))
            deadlines = times + (rules.window if rules.wait is None else rules.wait)
            admission.admit_run(campaign, deadlines)
            k = min(len(free), len(ids))  # rows as one pop per decision would hand them out
            rows = free[len(free) - k:][::-1]
            del free[len(free) - k:]
            rows += range(self._size, self._size + len(ids) - k)
            self._size += len(ids) - k
            row.update(zip(ids, rows, strict=True))
            taken = list(range(len(ids)))
            deadline = deadlines.tolist()
            ids = []  # nothing left for the loop below
        ts = times.tolist() if ids else []
        for i, decision_id in enumerate(ids):
            if decision_id in row or decision_id in closed:
                after.append((i, _SECOND_DECISION))
                continue
            t = ts[i]
            if t > newest:
                newest = t
            if rules is None:
                rules = self._cache.get(campaign) or self._rules(campaign)
                if campaign not in self._spans:
                    longest = max(longest, self._span(campaign))
                span = rules.window if rules.wait is None else rules.wait
            if t <= erased_until and t <= erased.get(bytes.fromhex(subjects[i]), -math.inf):
                after.append((i, ERASED))
                continue
            if not admit(campaign, t + span):
                after.append((i, admission.reason(campaign)))
                continue
            if free:
                r = free.pop()
            else:
                r = self._size
                self._size += 1
            row[decision_id] = r
            taken.append(i)
            rows.append(r)
            deadline.append(t + span)
        if taken:
            state = ACTIVE if cast(_Rules, rules).wait is None else UNSENT
            self._write_run(run, np.array(taken, dtype=np.intp), rows,
                            np.array(deadline, dtype=np.float64), state)
            admission.written += rows
        ids, early = run.decision_ids, self._early
        woken = [(i, "") for i in compress(taken, map(early.__contains__, ids if len(
            taken) == len(ids) else map(ids.__getitem__, taken)))] if early else []
        if after or woken:
            rejected = iter(run.logged([i for i, _ in after]) if after else ())
            for i, reason in sorted(after + woken):
                if reason:
                    result.rejected.append(Rejected(next(rejected), reason))
                else:
                    self._wake(ids[i], result, {})
        return newest, longest

    def _clear(self, run: DecisionLog, times: np.ndarray, admission: _Admission) -> bool:
        """Whether every decision of ``run`` is taken, as ``_add_run``'s loop would find
        decision by decision: none repeats one the join holds, closed, or another of the run;
        none is of an erased subject's time; the campaign has room for them all under
        ``max_pending`` (each would be admitted below the cap)."""
        ids = run.decision_ids
        return (len(ids) > 0 and admission.room(run.campaign, len(ids))
                and not bool(np.any(times <= self._erased_until))
                and self._row.keys().isdisjoint(ids) and self._closed.keys().isdisjoint(ids)
                and len(set(ids)) == len(ids))

    def over_cap(self, events: Sequence[Joinable], watermark: float | None = None) -> list[int]:
        """The positions in ``events`` of the decisions that ``add(events, watermark)``
        would refuse for ``max_pending``, without changing anything (the service refuses the
        whole request then)."""
        counts = Counter(cast(DecisionLike, e).campaign for e in events
                         if e.type in _DECISIONS)
        if all(self._open.get(c, 0) + n <= self.max_pending for c, n in counts.items()):
            return []
        admission = _Admission(self, events, watermark)
        admission.opened = dict(self._open)
        seen, ids, refused = set(), set(), []
        for i, event in enumerate(events):  # add's checks, in add's order
            if event.type != "decision":
                sent = cast("ImpressionLike | SendLike | OutcomeLike", event)
                if sent.event_id in self._seen or sent.event_id in seen:
                    continue
                seen.add(sent.event_id)
                if event.type != "impression":
                    continue
            decision = cast(DecisionLike, event)
            decision_id = decision.decision_id
            if decision_id in self._row or decision_id in self._closed or decision_id in ids:
                continue
            rules = self._rules(decision.campaign)
            unsent = rules.wait is not None and event.type == "decision"
            deadline = decision.ts + (cast(float, rules.wait) if unsent else rules.window)
            if admission.admit(decision.campaign, deadline):
                ids.add(decision_id)
            else:
                refused.append(i)
        return refused

    def erase(self, subjects: Mapping[bytes, float]) -> tuple[int, bool]:
        """Erase subjects (``subject_key`` -> event time of the erasure, ms): their open
        decisions made at or before it leave, their later decisions up to it are rejected,
        and strings no open decision uses leave the interned table. Returns how many open
        decisions left and whether anything changed (False: every erasure was applied
        already, so a restored join re-applies its erasures for nothing)."""
        fresh = {key: float(at) for key, at in subjects.items()
                 if at > self._erased.get(key, -math.inf)}
        if not fresh:
            return 0, False
        self._erased.update(fresh)
        latest = max(fresh.values())
        self._erased_until = max(self._erased_until, latest)
        n, subject, ts = self._size, self._subjects, self._ts
        rows = np.flatnonzero(self._live[:n] & (self._ts[:n] <= latest)).tolist()
        gone = [r for r in rows if ts[r] <= fresh.get(bytes.fromhex(cast(str, subject[r])),
                                                      -math.inf)]
        for r in gone:
            self._drop(r)
        self._compact()
        return len(gone), True

    @property
    def open_count(self) -> int:
        """How many decisions are open (active, or waiting for their send)."""
        return len(self._row)

    def _default(self, campaign: str) -> float:
        return self._rules(campaign).default

    def _weights(self, campaign: str) -> Mapping[str, float]:
        return self._rules(campaign).weights

    def _span(self, campaign: str) -> float:
        """How long a campaign's decisions may stay open (its attribution window, or its
        activation window if longer), noted once per campaign."""
        rules = self._rules(campaign)
        self._spans.add(campaign)
        return rules.window if rules.wait is None else max(rules.window, rules.wait)

    def _rules(self, campaign: str) -> _Rules:
        found = self._cache.get(campaign)
        if found is None:
            found = self._cache[campaign] = _rules_of(self._campaign(campaign))
        return found

    def _timing(self, r: int, waiting: dict[int, tuple[float, ...]]) -> tuple[float, ...]:
        """(ts, deadline, shape, sent, send ts) of row ``r``: from ``waiting`` for a row not
        written yet, else read from the columns."""
        found = waiting.get(r)
        if found is not None:
            return found
        return (self._ts.item(r), self._deadline.item(r), self._shape.item(r),
                self._sent.item(r), self._send_ts.item(r))

    def _move(self, r: int, timing: tuple[float, ...],
              waiting: dict[int, tuple[float, ...]]) -> None:
        """Write a row's new activation (a send came): into ``waiting`` or the columns."""
        if r in waiting:
            waiting[r] = timing
            return
        self._deadline[r], self._sent[r], self._send_ts[r] = timing[1], timing[3], timing[4]
        self._next_deadline = min(self._next_deadline, timing[1])

    def _wait(self, event: Waiting) -> None:
        self._early.setdefault(event.decision_id, []).append(event)

    def _row_of(self, event: SendLike | ImpressionLike | OutcomeLike, result: JoinResult,
                late: str) -> int | None:
        """The open row of an event's decision; None when there is none: the event is
        rejected with ``late`` if its decision closed, else it waits for the decision
        (until the orphan sweep in _close)."""
        r = self._row.get(event.decision_id)
        if r is None:
            if event.decision_id in self._closed:
                result.rejected.append(Rejected(event, late))
            else:
                self._wait(event)
        return r

    def _wake(self, decision_id: str, result: JoinResult,
              waiting: dict[int, tuple[float, ...]]) -> None:
        """Apply what waited for a decision: its sends first, then its outcomes."""
        early = self._early.pop(decision_id)
        if len(early) > 1:
            early.sort(key=_sends_first)
        for event in early:
            if event.type == "send" or event.type == "impression":
                self._send(cast("SendLike | ImpressionLike", event), result, waiting)
            else:
                self._outcome(cast(OutcomeLike, event), result, waiting)

    def _send(self, send: SendLike | ImpressionLike, result: JoinResult,
              waiting: dict[int, tuple[float, ...]]) -> None:
        """Apply a send (or the impression of a logged decision): it activates a decision
        waiting for it, or times the scanner rule of one active since it was made."""
        r = self._row_of(send, result, _LATE_SEND)
        if r is None:
            return
        timing = self._timing(r, waiting)
        ts, deadline, shape, state, _ = timing
        campaign = self._shapes[int(shape)][0]
        if send.campaign is not None and send.campaign != campaign:
            result.rejected.append(Rejected(send, f"the decision is of campaign {campaign!r}"))
            return
        if state == SENT:
            result.rejected.append(Rejected(send, "duplicate send for the decision"))
            return
        if state == UNSENT:
            if send.ts > deadline:  # the activation window, as if the decision had closed
                result.rejected.append(Rejected(send, _LATE_SEND))
                return
            at = max(float(send.ts), ts)
            self._move(r, (ts, at + self._rules(campaign).window, shape, SENT, at), waiting)
            if self._early and send.decision_id in self._early:
                self._wake(send.decision_id, result, waiting)
            return
        self._move(r, (ts, deadline, shape, SENT, max(float(send.ts), ts)), waiting)

    def _outcome(self, event: OutcomeLike, result: JoinResult,
                 waiting: dict[int, tuple[float, ...]]) -> None:
        """Apply an outcome; ``waiting`` holds the timing of rows not written yet."""
        r = self._row_of(event, result, _LATE)
        if r is None:
            return
        found = waiting.get(r)
        if found is None:  # the columns, read as the timing tuple holds them
            deadline, shape = self._deadline.item(r), self._shape.item(r)
            state, send_ts = self._sent.item(r), self._send_ts.item(r)
        else:
            _, deadline, shape, state, send_ts = found
        if state == UNSENT:  # no email yet: wait for the send, unless it can no longer come
            if event.ts > deadline:  # past the activation window, as if it had closed
                result.rejected.append(Rejected(event, _LATE))
            else:
                self._wait(event)
            return
        described = self._shapes[int(shape)]
        campaign, names = described[0], described[1]
        if event.campaign is not None and event.campaign != campaign:
            result.rejected.append(Rejected(event, f"the decision is of campaign {campaign!r}"))
            return
        rules = self._cache.get(campaign) or self._rules(campaign)
        kind, ts = event.type, event.ts
        if ts < send_ts or ts > min(deadline, send_ts + rules.windows[kind]):
            result.rejected.append(Rejected(event, _LATE))
            return
        if event.slot is not None and event.slot not in names:
            result.rejected.append(Rejected(event, f"the decision has no slot {event.slot!r}"))
            return
        if event.machine:
            result.excluded["machine"] += 1
            return
        if kind == "click" and event.ts - send_ts < rules.scanner:
            result.excluded["scanner"] += 1
            return
        if r >= len(self._counts):  # a row handed out in this batch, beyond the columns
            self._room(())
        self._counts[r, _KIND_INDEX[kind]] += 1
        if kind not in rules.weights:
            return
        rule, amount = rules.rules[kind], event.amount
        rewards = self._rewards.setdefault(r, {})
        first_ts = self._first_ts.setdefault(r, {})
        for slot in (names if event.slot is None else (event.slot,)):
            cell = (slot, kind)
            if cell not in rewards:
                rewards[cell], first_ts[cell] = amount, event.ts
            elif rule == "sum":
                rewards[cell] += amount
            elif rule == "max":
                rewards[cell] = max(rewards[cell], amount)
            elif event.ts < first_ts[cell]:  # first
                rewards[cell], first_ts[cell] = amount, event.ts

    def _drop(self, r: int) -> None:
        """Free row ``r`` (its decision was erased)."""
        self._open[self._shapes[self._shape[r]][0]] -= 1
        del self._row[cast(str, self._ids[r])]  # a live row has its decision id
        self._ids[r] = self._subjects[r] = None
        self._live[r] = False
        self._rewards.pop(r, None)
        self._first_ts.pop(r, None)
        self._counts[r] = 0
        self._free.append(r)

    def _close(self, result: JoinResult) -> None:
        # Strictly past: another event at exactly the deadline (an outcome in the window) may
        # still come in the next batch; closing at equality would make batching change the
        # result.
        if self._next_deadline < self.watermark:
            n = self._size
            due = np.flatnonzero(self._live[:n] & (self._deadline[:n] < self.watermark))
            # In deadline order, then decision id (32 lowercase hex digits: their order is
            # that of the two big-endian 64-bit numbers they spell): the same order whatever
            # the rows.
            ids = self._ids
            keys = cast("list[str]", list(map(ids.__getitem__, due.tolist())))
            number = _hex_blob(keys).view(">u8").astype(np.uint64).reshape(-1, 2)
            deadline = self._deadline[due]
            order = np.lexsort((number[:, 0], deadline))
            if len(order) > 1:  # ids alike in their first 64 bits (rarely): all 128
                first = number[order, 0]
                if ((first[1:] == first[:-1]) & (deadline[order[1:]] == deadline[order[:-1]])
                        ).any():
                    order = np.lexsort((number[:, 1], number[:, 0], deadline))
            due = due[order]
            keys = list(map(keys.__getitem__, order.tolist()))
            unsent = self._sent[due] == UNSENT
            if unsent.any():  # never sent: not learned, only counted
                result.excluded["unsent"] += int(unsent.sum())
            learned = due[~unsent]
            result.closed = self._closed_rows(learned, None if unsent.any() else keys)
            rows = due.tolist()
            self._closed.update(zip(keys, self._deadline[due].tolist(), strict=True))
            deque(map(self._row.__delitem__, keys), maxlen=0)
            for column in (ids, self._subjects):
                _assign(column, rows, repeat(None))
            self._live[due] = False
            # The closed rows' outcomes go (a dict lookup per closed row: the open rows with
            # outcomes may be many more).
            self._counts[due] = 0
            for held in (self._rewards, self._first_ts):
                if held:
                    deque(map(held.pop, rows, repeat(None)), maxlen=0)
            self._free += rows  # as _drop row by row would
            self._uncount(self._shape[due])
            live = self._live[:n]
            self._next_deadline = float(self._deadline[:n][live].min()) if live.any() else math.inf
            if len(self._texts) > 2 * self._texts_kept + _TEXTS_SLACK:
                self._compact_texts()
        # Forget what is older than the retention horizon, a few times per window, not per batch.
        if not self._longest:
            return
        horizon = self.watermark - _RETENTION_WINDOWS * self._longest
        if self.watermark - self._pruned_at < self._longest / 4:
            return
        self._pruned_at = self.watermark
        for d, events in list(self._early.items()):
            if all(e.ts < self.watermark - self._longest for e in events):
                del self._early[d]
                result.rejected += [Rejected(e, _ORPHAN) for e in events]
        self._seen = _recent(self._seen, horizon)
        self._closed = _recent(self._closed, horizon)

    def _uncount(self, shapes: np.ndarray) -> None:
        """Take closed rows (their shapes) off the open counts per campaign."""
        for shape, n in enumerate(np.bincount(shapes, minlength=len(self._shapes)).tolist()):
            if n:
                self._open[self._shapes[shape][0]] -= n

    def _still_open(self, campaign: str, watermark: float, fresh: Sequence[int] = ()) -> int:
        """How many open decisions of ``campaign`` (rows written to the columns, but the
        ``fresh`` ones: written in the batch under way, which its admission counts) a
        watermark of ``watermark`` leaves open."""
        n = min(self._size, len(self._live))
        mine = np.array([shape[0] == campaign for shape in self._shapes] or [False])
        still = self._live[:n] & (self._deadline[:n] >= watermark) & mine[self._shape[:n]]
        if len(fresh):
            still[np.asarray(fresh, dtype=np.intp)] = False
        return int(np.count_nonzero(still))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Open windows, waiting events, dedup memory and watermark: JSON-ready meta and binary
        arrays (the open windows' columns, live rows only; strings packed in blobs)."""
        live = np.flatnonzero(self._live[:self._size])
        # Each reward cell (row, slot, outcome type), in the order of rows, slots and types.
        slot_at = [{slot: k for k, slot in enumerate(shape[1])} for shape in self._shapes]
        cells = []
        for r, amounts in self._rewards.items():
            at, first_ts = slot_at[self._shape.item(r)], self._first_ts[r]
            cells += [(r, at[cell[0]], _KIND_INDEX[cell[1]], amount, first_ts[cell])
                      for cell, amount in amounts.items()]
        reward_rows, reward_slots, reward_kinds, reward_amounts, reward_ts = (
            zip(*cells, strict=True) if cells else ((), (), (), (), ()))
        by_cell = np.lexsort((reward_kinds, reward_slots, reward_rows))
        counts = self._counts[live]
        counted = np.flatnonzero(counts.any(axis=1))
        # Each distinct row of vectors once (few: a floor policy's rows share a handful), in
        # the order the live rows first have them, and per live row its index into them.
        distinct, which = _distinct_rows(self._vector_cells(live))
        first = np.full(len(distinct), len(live), dtype=np.int64)
        np.minimum.at(first, which, np.arange(len(live)))
        order = np.argsort(first)
        rank = np.empty(len(distinct), dtype=np.int64)
        rank[order] = np.arange(len(distinct))
        vector_of = rank[which].astype(np.int64)
        texts = self._texts
        table = [tuple(texts[i] for i in row if i >= 0) for row in distinct[order].tolist()]
        arrays = {
            "ts": self._ts[live], "deadline": self._deadline[live], "shape": self._shape[live],
            "holdout": self._holdout[live], "wire": self._wire[live], "arm": self._arm[live],
            "propensity": self._propensity[live], "context": self._context[live],
            "segment": self._segment[live], "sent": self._sent[live],
            "send_ts": self._send_ts[live], "model_version": self._model_version[live],
            # A free row holds None: the live rows' strings, in row order.
            "ids": _hex_blob(list(filter(None, self._ids[:self._size]))),
            "subjects": _hex_blob(list(filter(None, self._subjects[:self._size]))),
            # Per distinct row its slots' vectors, separated by _RS; rows by newlines.
            "vectors": np.frombuffer(b"\n".join(map(_RS.join, table)), dtype=np.uint8),
            "vector_of": vector_of,
            "reward_row": np.searchsorted(live, np.array(reward_rows, dtype=np.int64)[by_cell]),
            "reward_slot": np.array(reward_slots, dtype=np.int32)[by_cell],
            "reward_kind": np.array(reward_kinds, dtype=np.int32)[by_cell],
            "reward_amount": np.array(reward_amounts, dtype=np.float64)[by_cell],
            "reward_ts": np.array(reward_ts, dtype=np.float64)[by_cell],
            "count_row": counted,
            "counts": counts[counted].astype(np.int64),
            "seen": _json_blob(list(self._seen)),
            "seen_ts": np.fromiter(self._seen.values(), np.float64, len(self._seen)),
            "closed": _hex_blob(list(self._closed)),
            "closed_ts": np.fromiter(self._closed.values(), np.float64, len(self._closed)),
            "erased": np.frombuffer(b"".join(self._erased), dtype=np.uint8),
            "erased_at": np.fromiter(self._erased.values(), np.float64, len(self._erased)),
        }
        meta: dict[str, Any] = {
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
            "pruned_at": self._pruned_at if math.isfinite(self._pruned_at) else None,
            "longest": self._longest,
            "names": self._names,
            "shapes": self._shapes,
            "early": _plain_all([e for events in self._early.values() for e in events]),
        }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   campaign: Callable[[str], CampaignSpec],
                   max_pending: int = MAX_PENDING) -> Joiner:
        """The Joiner whose ``state()`` this was (KeyError, TypeError or ValueError if the
        state is damaged)."""
        joiner = cls(campaign, max_pending)
        if meta["watermark"] is not None:
            joiner.watermark = float(meta["watermark"])
        if meta["pruned_at"] is not None:
            joiner._pruned_at = float(meta["pruned_at"])
        joiner._longest = float(meta["longest"])
        joiner._names = [str(name) for name in meta["names"]]
        joiner._name_index = {name: i for i, name in enumerate(joiner._names)}
        for campaign_name, slots, context, segments in meta["shapes"]:
            context = None if context is None else tuple((str(k), bool(s)) for k, s in context)
            shape = (str(campaign_name), tuple(map(str, slots)), context, tuple(map(str, segments)))
            joiner._shape_index[(shape[0], shape[1], None if context is None else
                                 tuple(k for k, _ in context),
                                 None if context is None else tuple(s for _, s in context),
                                 shape[3])] = len(joiner._shapes)
            joiner._shapes.append(shape)
        ids, subjects = _from_hex_blob(arrays["ids"]), _from_hex_blob(arrays["subjects"])
        n = len(ids)
        columns = {"_ts": np.float64, "_deadline": np.float64, "_shape": np.int32,
                   "_holdout": np.bool_, "_wire": np.bool_, "_arm": np.int32,
                   "_propensity": np.float64, "_context": np.float64, "_segment": np.int32,
                   "_sent": np.int8, "_send_ts": np.float64, "_model_version": np.float64}
        for name, dtype in columns.items():
            column: np.ndarray = np.array(arrays[name[1:]], dtype=dtype)  # a writable copy
            if len(column) != n or column.ndim != (2 if name in _WIDE else 1):
                raise ValueError(f"open windows: {len(column)} {name[1:]} for {n} decisions")
            setattr(joiner, name, column)
        if "vector_of" in arrays:  # distinct rows and an index per row
            blob = arrays["vectors"].tobytes()
            table = [tuple(v.split(_RS)) for v in blob.split(b"\n")] if blob else []
            vector_of = np.asarray(arrays["vector_of"], dtype=np.int64)
            if vector_of.ndim != 1 or (n and (vector_of.min() < 0
                                              or vector_of.max() >= len(table))):
                raise ValueError("open windows: a probability row out of range")
        else:  # a checkpoint written before: every row's vectors
            blob = arrays["probabilities"].tobytes()
            rows = [tuple(v.split(_RS)) for v in blob.split(b"\n")] if n else []
            distinct = {v: i for i, v in enumerate(dict.fromkeys(rows))}
            table = list(distinct)
            vector_of = np.fromiter(map(distinct.__getitem__, rows), np.int64, len(rows))
        if len(subjects) != n or len(vector_of) != n:
            raise ValueError("open windows: subjects or probabilities do not match the "
                             "decisions")
        if not (joiner._shape < len(joiner._shapes)).all() or (joiner._shape < 0).any():
            raise ValueError("open windows: unknown shape")
        width = joiner._arm.shape[1]
        slots = np.array([len(shape[1]) for shape in joiner._shapes] or [0])
        lengths = np.array([len(row) for row in table], dtype=np.int64)
        if (lengths > width).any() or (n and (slots[joiner._shape] != lengths[vector_of]).any()):
            raise ValueError("open windows: a probability row is not one text per slot")
        cells = np.zeros((len(table), width), dtype=np.int32)
        for k, row in enumerate(table):  # few: each distinct row once
            cells[k, :len(row)] = joiner._intern_texts(list(row))
        joiner._vector = cells[vector_of] if n else np.zeros((0, width), dtype=np.int32)
        joiner._texts_kept = len(joiner._texts)
        joiner._counts = np.zeros((n, len(OUTCOME_TYPES)), dtype=np.int32)
        if ((joiner._sent < UNSENT) | (joiner._sent > SENT)).any():
            raise ValueError("open windows: unknown activation")
        for column in (joiner._arm, joiner._segment):  # indices of interned strings
            if n and (column.min() < 0 or column.max() >= max(len(joiner._names), 1)):
                raise ValueError("open windows: unknown string")
        joiner._live = np.ones(n, dtype=np.bool_)
        joiner._ids, joiner._subjects, joiner._size = list(ids), list(subjects), n
        joiner._row = dict(zip(ids, range(n), strict=True))
        joiner._next_deadline = float(joiner._deadline.min()) if n else math.inf
        for k, count in enumerate(np.bincount(joiner._shape, minlength=len(
                joiner._shapes)).tolist()):
            campaign_name = joiner._shapes[k][0]
            joiner._open[campaign_name] = joiner._open.get(campaign_name, 0) + count
        if n == 0:  # room for the next decisions
            joiner._allocate(_FIRST_ROWS, *(max(1, c.shape[1]) for c in (
                joiner._arm, joiner._context, joiner._segment)))
        for r, k, kind, amount, ts in zip(
                arrays["reward_row"].tolist(), arrays["reward_slot"].tolist(),
                arrays["reward_kind"].tolist(), arrays["reward_amount"].tolist(),
                arrays["reward_ts"].tolist(), strict=True):
            if (not 0 <= r < n or not 0 <= k < len(joiner._shapes[joiner._shape[r]][1])
                    or not 0 <= kind < len(OUTCOME_TYPES)):
                raise ValueError(f"open windows: no slot {k} or outcome type {kind} in row {r}")
            cell = (joiner._shapes[joiner._shape[r]][1][k], OUTCOME_TYPES[kind])
            joiner._rewards.setdefault(r, {})[cell] = amount
            joiner._first_ts.setdefault(r, {})[cell] = ts
        counts = np.asarray(arrays["counts"])
        if counts.ndim != 2 or counts.shape[1] != len(OUTCOME_TYPES):
            raise ValueError("open windows: outcome counts are not one per type")
        count_row = np.asarray(arrays["count_row"], dtype=np.int64)
        if len(count_row) != len(counts):
            raise ValueError("open windows: outcome counts do not match their rows")
        if len(count_row) and (count_row.min() < 0 or count_row.max() >= n):
            raise ValueError("open windows: outcome counts of no row")
        joiner._counts[count_row] = counts
        for item in meta["early"]:
            event = _WAITING.validate_python(item)
            joiner._early.setdefault(event.decision_id, []).append(event)
        joiner._seen = dict(zip(orjson.loads(arrays["seen"].tobytes()),
                                arrays["seen_ts"].tolist(), strict=True))
        joiner._closed = dict(zip(_from_hex_blob(arrays["closed"]),
                                  arrays["closed_ts"].tolist(), strict=True))
        keys = arrays["erased"].tobytes()
        if len(keys) % 16:
            raise ValueError("erased subjects: not a whole number of keys")
        joiner._erased = dict(zip((keys[i:i + 16] for i in range(0, len(keys), 16)),
                                  arrays["erased_at"].tolist(), strict=True))
        joiner._erased_until = max(joiner._erased.values(), default=-math.inf)
        return joiner


class _Admission:
    """Which impressions of one batch fit under the join's ``max_pending``: those that leave
    at most that many decisions of their campaign open once the batch's watermark closed what
    it closes. Counted on the way (``opened``); the batch's final watermark and the windows it
    leaves open are looked up only for a campaign that reaches the cap."""

    def __init__(self, joiner: Joiner, events: Sequence[Joinable],
                 watermark: float | None) -> None:
        self.joiner, self.events, self.watermark = joiner, events, watermark
        self.cap = joiner.max_pending
        # campaign -> open decisions, counting the batch's admitted: the join's own counts
        # (over_cap passes a copy)
        self.opened = joiner._open
        self.end: float | None = None  # the watermark after the batch, once needed
        self.admitted: list[tuple[str, float]] = []  # (campaign, deadline) until ``end``
        self.runs: list[tuple[str, np.ndarray]] = []  # (campaign, deadlines) until ``end``
        self.after: dict[str, int] = {}  # campaign -> its decisions still open at ``end``
        self.settled: set[str] = set()  # campaigns whose ``after`` counts the earlier batches'
        # Rows of this batch written to the columns before its end (the rows before a run,
        # and a run's): counted in ``opened``, so not again as open windows.
        self.written: list[int] = []

    def admit(self, campaign: str, deadline: float) -> bool:
        """Whether an impression of ``campaign`` whose window closes at ``deadline`` fits;
        if so it is counted."""
        n = self.opened.get(campaign, 0)
        if n >= self.cap:
            if campaign not in self.settled:
                self._settle(campaign)
            end = self.end
            if end is not None and deadline >= end and self.after.get(campaign, 0) >= self.cap:
                return False
        self.opened[campaign] = n + 1
        if self.end is None:
            self.admitted.append((campaign, deadline))
        elif deadline >= self.end:
            self.after[campaign] = self.after.get(campaign, 0) + 1
        return True

    def room(self, campaign: str, k: int) -> bool:
        """Whether ``k`` impressions of ``campaign`` are all admitted below the cap (each
        finds fewer than ``max_pending`` open): ``admit_run`` then counts them at once."""
        return self.opened.get(campaign, 0) + k <= self.cap

    def admit_run(self, campaign: str, deadlines: np.ndarray) -> None:
        """Count impressions of ``campaign`` whose windows close at ``deadlines``, as
        ``admit`` one by one would, given ``room`` for them."""
        self.opened[campaign] = self.opened.get(campaign, 0) + len(deadlines)
        if self.end is None:
            self.runs.append((campaign, deadlines))
        else:
            self.after[campaign] = self.after.get(campaign, 0) + int(
                np.count_nonzero(deadlines >= self.end))

    def reason(self, campaign: str) -> str:
        return (f"{OVER_CAPACITY}: campaign {campaign!r} already has {self.cap} decisions "
                "waiting for their attribution windows (setting max_pending)")

    def _settle(self, campaign: str) -> None:
        """The batch's final watermark, and how many decisions of ``campaign`` it leaves
        open: from before the batch and admitted in it so far."""
        joiner = self.joiner
        if self.end is None:
            end = joiner.watermark
            if self.watermark is not None:
                end = max(end, self.watermark)
            else:  # add's newest event time: an event id's first time counts
                # (ids the join has seen: in an earlier batch, at most its watermark; in this
                # one, when add passed them, their first time)
                seen: set[str] = set()
                for event in self.events:
                    if event.type == "decision":
                        end = max(end, event.ts)
                        continue
                    if event.type == "decisions":  # a run: its decisions' times
                        end = max(end, float(np.max(cast(DecisionLog, event).ts)))
                        continue
                    key = cast("ImpressionLike | SendLike | OutcomeLike", event).event_id
                    ts = joiner._seen.get(key)
                    if ts is None:
                        if key in seen:
                            continue
                        seen.add(key)
                        ts = event.ts
                    end = max(end, ts)
            self.end = float(end)
            for c, deadline in self.admitted:
                if deadline >= self.end:
                    self.after[c] = self.after.get(c, 0) + 1
            for c, deadlines in self.runs:
                self.after[c] = self.after.get(c, 0) + int(np.count_nonzero(deadlines >= self.end))
            self.admitted, self.runs = [], []
        self.settled.add(campaign)
        self.after[campaign] = self.after.get(campaign, 0) + joiner._still_open(
            campaign, self.end, self.written)


def _recent(times: dict[str, float], horizon: float) -> dict[str, float]:
    """``times`` without the keys whose time is before ``horizon`` (itself if none is)."""
    kept = np.fromiter(times.values(), np.float64, len(times)) >= horizon
    return times if kept.all() else dict(compress(times.items(), kept.tolist()))


def _hex_blob(decision_ids: list[str]) -> np.ndarray:
    """Decision ids (32 hex digits each, as both event models require) as 16 bytes each."""
    return np.frombuffer(bytes.fromhex("".join(decision_ids)), dtype=np.uint8)


def _from_hex_blob(blob: np.ndarray) -> list[str]:
    data = blob.tobytes()
    if len(data) % 16:
        raise ValueError("decision ids: not a whole number of ids")
    return data.hex("\n", -16).split("\n") if data else []


def _json_blob(strings: list[str]) -> np.ndarray:
    return np.frombuffer(orjson.dumps(strings), dtype=np.uint8)


def _plain_all(events: list[Waiting]) -> list[dict[str, Any]]:
    """Waiting events as JSON-ready data (either kind: ``from_state`` reads both); the
    stream's (msgspec) in one call."""
    if not any(isinstance(event, BaseModel) for event in events):
        return cast("list[dict[str, Any]]", msgspec.to_builtins(events))
    return [event.model_dump(mode="json") if isinstance(event, BaseModel)
            else cast("dict[str, Any]", msgspec.to_builtins(event)) for event in events]


def _subject_key(decision: DecisionLike) -> bytes:
    """The subject key of a decision: logged as hex, or hashed from an impression's user id."""
    if decision.type == "decision":
        return bytes.fromhex(decision.subject)
    return subject_key(decision.user_id)


def _sends_first(event: Waiting) -> tuple[bool, float]:
    return event.type not in ("send", "impression"), event.ts
