"""The attribution join: impressions and clicks in, closed decisions (JoinedEvent) out.

Pure logic in event time, no I/O and no clock: the same events give the same output whatever
the batching, so the in-process event path and the stream worker share it. A decision's window
opens at its impression's ts and closes once the watermark (the newest event time seen) is past
ts + attribution_window_ms; clicks in the window are aggregated per slot by the campaign's rule
(sum, max, earliest) and a window without clicks is learned as the campaign's default reward.

Erasure: the join keeps the erased subjects as ``subject_key`` hashes of their user ids, each
with the event time of its erasure. A decision of an erased subject whose impression is at or
before that time leaves the open windows, and such an impression arriving later (a replay, a
late sender) is rejected as ``ERASED``; an impression after it is a new decision (the
subscriber came back). The erased subjects are part of the state, and the interned strings
are compacted on erasure, so a snapshot holds neither the user id nor their string values.

Memory is bounded: at most ``max_pending`` decisions of one campaign stay open after a batch.
An impression that would leave more is refused with the reason ``OVER_CAPACITY`` (the stream
worker dead-letters it); one whose window closes within its own batch always fits. Which
impressions a campaign at its cap refuses can depend on batching (windows close at the end of
a batch): the cap is an overload guard, not part of the join's batching-independent results.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, cast

import msgspec
import numpy as np
import orjson

from bandit.engine.windows import _FIRST_ROWS, _WIDE, Closed, _OpenWindows
from bandit.models import CampaignSpec, Click, JoinedEvent
from bandit.wire import Joined
from bandit.wire.protocols import ClickLike, ImpressionLike

# Event ids and closed decision ids are remembered this many windows back, for deduplication
# and for telling a late click from an orphan.
_RETENTION_WINDOWS = 2
# One reason whether or not the window had closed yet, so that batching cannot change it.
_LATE = "late: outside the attribution window"
ERASED = "erased: the subject asked to be erased"  # never dead-lettered: it holds their data


def subject_key(user_id: str) -> bytes:
    """The 16-byte BLAKE2b hash by which erasures name a subject (the join's state and the
    stream's erase records hold no user id). Unkeyed: someone who guesses a user id can
    confirm that it was erased."""
    return blake2b(user_id.encode(), digest_size=16, person=b"cmab erasure").digest()


# Open decisions of one campaign a join holds after a batch (the service's CMAB_MAX_PENDING).
MAX_PENDING = 1_000_000
OVER_CAPACITY = "over capacity"  # the start of the reason of an impression over the cap


@dataclass(frozen=True)
class Rejected:
    """An event the join could not use, and why: duplicate, late, orphan."""

    event: ImpressionLike | ClickLike
    reason: str


@dataclass
class JoinResult:
    """Closed decisions (``closed``, columns; ``joined``, their events) and rejected events."""

    closed: Closed | None = None
    rejected: list[Rejected] = field(default_factory=list)
    _events: list[JoinedEvent | Joined] | None = field(default=None, repr=False)

    @property
    def joined(self) -> list[JoinedEvent | Joined]:
        """``closed`` as events (``wire.Joined`` for the stream worker's, else JoinedEvent),
        built on first use."""
        if self._events is None:
            self._events = self.closed.events() if self.closed is not None else []
        return self._events


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
        self._cache: dict[str, tuple[float, str, float]] = {}
        self._early: dict[str, list[ClickLike]] = {}
        self._seen: dict[str, float] = {}  # event id -> event time
        self._closed: dict[str, float] = {}  # decision id -> window close time
        self._longest = 1.0  # the longest attribution window seen, in ms
        self._pruned_at = float("-inf")
        self.watermark = float("-inf")
        # Erased subjects: subject_key -> event time of the erasure (ms), and the latest of
        # those times: a newer impression needs no hash.
        self._erased: dict[bytes, float] = {}
        self._erased_until = -math.inf

    def add(self, events: Sequence[ImpressionLike | ClickLike],
            watermark: float | None = None) -> JoinResult:
        """Apply events (any order), then close every window the new watermark passed.

        The watermark is the newest event time seen unless ``watermark`` is given: a join fed
        by several streams passes the slowest stream's progress, so that a click behind its
        stream's peers is not judged late because another stream ran ahead. It never goes back.
        """
        result = JoinResult()
        seen, row, closed = self._seen, self._row, self._closed
        early, free = self._early, self._free
        settings, newest, longest = self._cache, self.watermark, self._longest
        erased_until = self._erased_until
        # Impressions are checked and given their rows here, in order, and written to the
        # columns together (_insert) at the end. A click on a row not written yet reads the
        # impression's time, deadline and shape from ``waiting`` instead of the columns, so
        # that a batch whose clicks come early costs no small numpy write per click.
        pending: list[tuple[int, int, ImpressionLike]] = []
        waiting: dict[int, tuple[float, float, int]] = {}  # row -> ts, deadline, shape
        admission = _Admission(self, events, watermark)
        try:
            for event in events:
                event_id = event.event_id
                if event_id in seen:
                    result.rejected.append(Rejected(event, "duplicate event_id"))
                    continue
                ts = seen[event_id] = event.ts
                if ts > newest:
                    newest = ts
                window = (settings.get(event.campaign) or self._settings(event.campaign))[0]
                if window > longest:
                    longest = float(window)
                if event.type != "impression":
                    self._click(event, result, waiting)
                    continue
                if ts <= erased_until and ts <= self._erased.get(subject_key(event.user_id),
                                                                  -math.inf):
                    result.rejected.append(Rejected(event, ERASED))
                    continue
                decision_id = event.decision_id
                if decision_id in row or decision_id in closed:
                    result.rejected.append(Rejected(event, "second impression for the decision"))
                    continue
                if not admission.admit(event.campaign, ts + window):
                    result.rejected.append(Rejected(event, admission.reason(event.campaign)))
                    del seen[event_id]  # not taken: it may come again
                    continue
                if free:
                    r = free.pop()
                else:
                    r = self._size
                    self._size += 1
                row[decision_id] = r
                shape = self._shape_of(event)
                pending.append((r, shape, event))
                waiting[r] = (float(ts), float(ts + window), shape)
                if early and decision_id in early:
                    for click in early.pop(decision_id):
                        self._click(click, result, waiting)
        finally:  # rows handed out are written even if a campaign lookup failed half-way
            if pending:
                self._insert(pending)
            self._longest = longest
        if watermark is None:
            self.watermark = newest
        else:
            self.watermark = max(self.watermark, watermark)
        self._close(result)
        return result

    def over_cap(self, events: Sequence[ImpressionLike | ClickLike],
                 watermark: float | None = None) -> list[int]:
        """The positions in ``events`` of the impressions that ``add(events, watermark)``
        would refuse for ``max_pending``, without changing anything (the service refuses the
        whole request then)."""
        counts = Counter(e.campaign for e in events if e.type == "impression")
        if all(self._open.get(c, 0) + n <= self.max_pending for c, n in counts.items()):
            return []
        admission = _Admission(self, events, watermark)
        admission.opened = dict(self._open)
        seen, ids, refused = set(), set(), []
        for i, event in enumerate(events):  # add's checks, in add's order
            if event.event_id in self._seen or event.event_id in seen:
                continue
            seen.add(event.event_id)
            if event.type != "impression":
                continue
            decision_id = event.decision_id
            if decision_id in self._row or decision_id in self._closed or decision_id in ids:
                continue
            if admission.admit(event.campaign, event.ts + self._window(event.campaign)):
                ids.add(decision_id)
            else:
                refused.append(i)
        return refused

    def erase(self, subjects: Mapping[bytes, float]) -> tuple[int, bool]:
        """Erase subjects (``subject_key`` -> event time of the erasure, ms): their open
        decisions with an impression at or before it leave, their later impressions up to it
        are rejected, and strings no open decision uses leave the interned table. Returns how
        many open decisions left and whether anything changed (False: every erasure was
        applied already, so a restored join re-applies its erasures for nothing)."""
        fresh = {key: float(at) for key, at in subjects.items()
                 if at > self._erased.get(key, -math.inf)}
        if not fresh:
            return 0, False
        self._erased.update(fresh)
        latest = max(fresh.values())
        self._erased_until = max(self._erased_until, latest)
        n, users, ts = self._size, self._users, self._ts
        rows = np.flatnonzero(self._live[:n] & (self._ts[:n] <= latest)).tolist()
        gone = [r for r in rows if (user := users[r]) is not None  # live rows have users
                and ts[r] <= fresh.get(subject_key(user), -math.inf)]
        for r in gone:
            self._drop(r)
        self._compact()
        return len(gone), True

    @property
    def open_count(self) -> int:
        """How many attribution windows are open."""
        return len(self._row)

    # Campaign settings the loop reads per event; the spec lookup copies, so it is cached per
    # name (a campaign's window, rule and default reward never change once it exists). A
    # window is a whole number of ms, typed float as the spec types it.
    def _window(self, campaign: str) -> float:
        return self._settings(campaign)[0]

    def _rule(self, campaign: str) -> str:
        return self._settings(campaign)[1]

    def _default(self, campaign: str) -> float:
        return self._settings(campaign)[2]

    def _settings(self, campaign: str) -> tuple[float, str, float]:
        found = self._cache.get(campaign)
        if found is None:
            spec = self._campaign(campaign)
            found = self._cache[campaign] = (spec.attribution_window_ms,
                                             spec.reward_aggregation, spec.default_reward)
        return found

    def _click(self, click: ClickLike, result: JoinResult,
               waiting: dict[int, tuple[float, float, int]]) -> None:
        """Apply a click; ``waiting`` holds the time, deadline and shape of rows handed out
        in this batch but not written to the columns yet."""
        r = self._row.get(click.decision_id)
        if r is None:
            if click.decision_id in self._closed:
                result.rejected.append(Rejected(click, _LATE))
            else:  # its impression may still come: wait (until the orphan sweep in _close)
                self._early.setdefault(click.decision_id, []).append(click)
            return
        ts, deadline, shape = waiting.get(r) or (self._ts[r], self._deadline[r], self._shape[r])
        if click.ts > deadline or click.ts < ts:
            result.rejected.append(Rejected(click, _LATE))
            return
        campaign, names = self._shapes[shape][:2]
        slots = [click.slot] if click.slot is not None else names
        if click.slot is not None and click.slot not in names:
            result.rejected.append(Rejected(click, f"the decision has no slot {click.slot!r}"))
            return
        rule = self._rule(campaign)
        rewards = self._rewards.setdefault(r, {})
        first_ts = self._first_ts.setdefault(r, {})
        for slot in slots:
            if slot not in rewards:
                rewards[slot], first_ts[slot] = click.reward, click.ts
            elif rule == "sum":
                rewards[slot] += click.reward
            elif rule == "max":
                rewards[slot] = max(rewards[slot], click.reward)
            elif click.ts < first_ts[slot]:  # earliest
                rewards[slot], first_ts[slot] = click.reward, click.ts

    def _drop(self, r: int) -> None:
        """Free row ``r`` (its decision closed or was erased)."""
        self._open[self._shapes[self._shape[r]][0]] -= 1
        del self._row[cast(str, self._ids[r])]  # a live row has its decision id
        self._ids[r] = self._users[r] = None
        self._live[r] = False
        self._rewards.pop(r, None)
        self._first_ts.pop(r, None)
        self._free.append(r)

    def _close(self, result: JoinResult) -> None:
        # Strictly past: another event at exactly the deadline (a click in the window) may still
        # come in the next batch; closing at equality would make batching change the result.
        if self._next_deadline < self.watermark:
            n = self._size
            due = np.flatnonzero(self._live[:n] & (self._deadline[:n] < self.watermark))
            # In deadline order, then decision id: the same order whatever the rows.
            ids = self._ids
            due = due[np.lexsort((np.array([ids[r] for r in due.tolist()]), self._deadline[due]))]
            result.closed = self._closed_rows(due)
            rows = due.tolist()
            self._closed.update(zip(result.closed.ids, self._deadline[due].tolist(),
                                    strict=True))
            for decision_id in result.closed.ids:
                del self._row[decision_id]
            users, rewards, first_ts = self._users, self._rewards, self._first_ts
            for r in rows:
                ids[r] = users[r] = None
            self._live[due] = False
            # Few rows have clicks: their rewards are found among those, not row by row.
            for r in [r for r in rewards if not self._live[r]]:
                del rewards[r]
                first_ts.pop(r, None)
            self._free += rows  # as _drop row by row would
            self._uncount(self._shape[due])
            live = self._live[:n]
            self._next_deadline = float(self._deadline[:n][live].min()) if live.any() else math.inf
        # Forget what is older than the retention horizon, a few times per window, not per batch.
        horizon = self.watermark - _RETENTION_WINDOWS * self._longest
        if self.watermark - self._pruned_at < self._longest / 4:
            return
        self._pruned_at = self.watermark
        for d, clicks in list(self._early.items()):
            if all(c.ts < self.watermark - self._longest for c in clicks):
                del self._early[d]
                result.rejected += [Rejected(c, "orphan: no impression within the window")
                                    for c in clicks]
        self._seen = {e: t for e, t in self._seen.items() if t >= horizon}
        self._closed = {d: t for d, t in self._closed.items() if t >= horizon}

    def _uncount(self, shapes: np.ndarray) -> None:
        """Take closed rows (their shapes) off the open counts per campaign."""
        for shape, n in enumerate(np.bincount(shapes, minlength=len(self._shapes)).tolist()):
            if n:
                self._open[self._shapes[shape][0]] -= n

    def _still_open(self, campaign: str, watermark: float) -> int:
        """How many open decisions of ``campaign`` (rows written to the columns) a watermark
        of ``watermark`` leaves open."""
        n = min(self._size, len(self._live))
        mine = np.array([shape[0] == campaign for shape in self._shapes] or [False])
        return int(np.count_nonzero(self._live[:n] & (self._deadline[:n] >= watermark)
                                    & mine[self._shape[:n]]))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Open windows, waiting clicks, dedup memory and watermark: JSON-ready meta and binary
        arrays (the open windows' columns, live rows only; strings packed in blobs)."""
        live = np.flatnonzero(self._live[:self._size])
        clicked = [(r, k, rewards[slot], self._first_ts[r][slot])
                   for r, rewards in self._rewards.items()
                   for k, slot in enumerate(self._shapes[self._shape[r]][1]) if slot in rewards]
        click_rows, click_slots, click_rewards, click_ts = (
            zip(*clicked, strict=True) if clicked else ((), (), (), ()))
        saved_rows = np.searchsorted(live, np.array(click_rows, dtype=np.int64))
        arrays = {
            "ts": self._ts[live], "deadline": self._deadline[live], "shape": self._shape[live],
            "holdout": self._holdout[live], "wire": self._wire[live], "arm": self._arm[live],
            "propensity": self._propensity[live], "context": self._context[live],
            "segment": self._segment[live],
            # A free row holds None: the live rows' strings, in row order.
            "ids": _hex_blob([d for d in self._ids[:self._size] if d is not None]),
            "users": _json_blob([u for u in self._users[:self._size] if u is not None]),
            "click_row": saved_rows,
            "click_slot": np.array(click_slots, dtype=np.int32),
            "click_reward": np.array(click_rewards, dtype=np.float64),
            "click_ts": np.array(click_ts, dtype=np.float64),
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
            "early": [_plain(c) for cs in self._early.values() for c in cs],
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
        ids, users = _from_hex_blob(arrays["ids"]), orjson.loads(arrays["users"].tobytes())
        n = len(ids)
        columns = {"_ts": np.float64, "_deadline": np.float64, "_shape": np.int32,
                   "_holdout": np.bool_, "_wire": np.bool_, "_arm": np.int32,
                   "_propensity": np.float64, "_context": np.float64, "_segment": np.int32}
        for name, dtype in columns.items():
            column: np.ndarray = np.array(arrays[name[1:]], dtype=dtype)  # a writable copy
            if len(column) != n or column.ndim != (2 if name in _WIDE else 1):
                raise ValueError(f"open windows: {len(column)} {name[1:]} for {n} decisions")
            setattr(joiner, name, column)
        if len(users) != n or not all(isinstance(u, str) for u in users):
            raise ValueError("open windows: user ids do not match the decisions")
        if not (joiner._shape < len(joiner._shapes)).all() or (joiner._shape < 0).any():
            raise ValueError("open windows: unknown shape")
        for column in (joiner._arm, joiner._segment):  # indices of interned strings
            if n and (column.min() < 0 or column.max() >= max(len(joiner._names), 1)):
                raise ValueError("open windows: unknown string")
        joiner._live = np.ones(n, dtype=np.bool_)
        joiner._ids, joiner._users, joiner._size = list(ids), users, n
        joiner._row = {d: r for r, d in enumerate(ids)}
        joiner._next_deadline = float(joiner._deadline.min()) if n else math.inf
        for k, count in enumerate(np.bincount(joiner._shape, minlength=len(
                joiner._shapes)).tolist()):
            campaign_name = joiner._shapes[k][0]
            joiner._open[campaign_name] = joiner._open.get(campaign_name, 0) + count
        if n == 0:  # room for the next impressions
            joiner._allocate(_FIRST_ROWS, *(max(1, c.shape[1]) for c in (
                joiner._arm, joiner._context, joiner._segment)))
        for r, k, reward, ts in zip(arrays["click_row"].tolist(), arrays["click_slot"].tolist(),
                                    arrays["click_reward"].tolist(), arrays["click_ts"].tolist(),
                                    strict=True):
            if not 0 <= r < n or not 0 <= k < len(joiner._shapes[joiner._shape[r]][1]):
                raise ValueError(f"open windows: no slot {k} in row {r}")
            slot = joiner._shapes[joiner._shape[r]][1][k]
            joiner._rewards.setdefault(r, {})[slot] = reward
            joiner._first_ts.setdefault(r, {})[slot] = ts
        for item in meta["early"]:
            click = Click.model_validate(item)
            joiner._early.setdefault(click.decision_id, []).append(click)
        joiner._seen = dict(zip(orjson.loads(arrays["seen"].tobytes()),
                                arrays["seen_ts"].tolist(), strict=True))
        joiner._closed = dict(zip(_from_hex_blob(arrays["closed"]),
                                  arrays["closed_ts"].tolist(), strict=True))
        if "erased" in arrays:  # a state from before erasures were kept has none
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

    def __init__(self, joiner: Joiner,
                 events: Sequence[ImpressionLike | ClickLike],
                 watermark: float | None) -> None:
        self.joiner, self.events, self.watermark = joiner, events, watermark
        self.cap = joiner.max_pending
        # campaign -> open decisions, counting the batch's admitted: the join's own counts
        # (over_cap passes a copy)
        self.opened = joiner._open
        self.end: float | None = None  # the watermark after the batch, once needed
        self.admitted: list[tuple[str, float]] = []  # (campaign, deadline) until ``end``
        self.after: dict[str, int] = {}  # campaign -> its decisions still open at ``end``
        self.settled: set[str] = set()  # campaigns whose ``after`` counts the earlier batches'

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
                    ts = joiner._seen.get(event.event_id)
                    if ts is None:
                        if event.event_id in seen:
                            continue
                        seen.add(event.event_id)
                        ts = event.ts
                    end = max(end, ts)
            self.end = float(end)
            for c, deadline in self.admitted:
                if deadline >= self.end:
                    self.after[c] = self.after.get(c, 0) + 1
            self.admitted = []
        self.settled.add(campaign)
        self.after[campaign] = self.after.get(campaign, 0) + joiner._still_open(campaign,
                                                                                self.end)


def _hex_blob(decision_ids: list[str]) -> np.ndarray:
    """Decision ids (32 hex digits each, as both event models require) as 16 bytes each."""
    return np.frombuffer(bytes.fromhex("".join(decision_ids)), dtype=np.uint8)


def _from_hex_blob(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().hex()
    if len(text) % 32:
        raise ValueError("decision ids: not a whole number of ids")
    return [text[i:i + 32] for i in range(0, len(text), 32)]


def _json_blob(strings: list[str]) -> np.ndarray:
    return np.frombuffer(orjson.dumps(strings), dtype=np.uint8)


def _plain(event: ClickLike) -> dict[str, Any]:
    """An event as JSON-ready data (either kind: ``from_state`` reads both)."""
    if isinstance(event, Click):
        return event.model_dump(mode="json")
    return msgspec.to_builtins(event)
