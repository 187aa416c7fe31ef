"""The attribution join: impressions and clicks in, closed decisions (JoinedEvent) out.

Pure logic in event time, no I/O and no clock: the same events give the same output whatever
the batching, so the in-process event path and the stream worker share it. A decision's window
opens at its impression's ts and closes once the watermark (the newest event time seen) is past
ts + attribution_window_ms; clicks in the window are aggregated per slot by the campaign's rule
(sum, max, earliest) and a window without clicks is learned as the campaign's default reward.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from bandit import wire
from bandit.models import CampaignSpec, Click, Impression, JoinedEvent

# Event ids and closed decision ids are remembered this many windows back, for deduplication
# and for telling a late click from an orphan.
_RETENTION_WINDOWS = 2
# One reason whether or not the window had closed yet, so that batching cannot change it.
_LATE = "late: outside the attribution window"


@dataclass
class _Open:
    impression: Impression | wire.Impression
    deadline: float
    rewards: dict[str, float] = field(default_factory=dict)
    first_ts: dict[str, float] = field(default_factory=dict)
    plain: dict | None = None  # the impression as JSON-ready data, made once for checkpoints

    def keep_plain(self) -> dict:
        self.plain = _plain(self.impression)
        return self.plain


@dataclass(frozen=True)
class Rejected:
    """An event the join could not use, and why: duplicate, late, orphan."""

    event: Impression | Click | wire.Impression | wire.Click
    reason: str


@dataclass
class JoinResult:
    """Closed decisions (``wire.Joined`` for events decoded by the stream worker, JoinedEvent
    for pydantic events) and rejected events."""

    joined: list[JoinedEvent | wire.Joined] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Joiner:
    """Open attribution windows of one partition (or of the in-process event path).

    >>> from bandit.models import CampaignSpec
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

    def __init__(self, campaign: Callable[[str], CampaignSpec]) -> None:
        self._campaign = campaign
        self._cache: dict[str, tuple[int, str, float]] = {}
        self._open: dict[str, _Open] = {}
        self._early: dict[str, list[Click]] = {}
        self._seen: dict[str, float] = {}  # event id -> event time
        self._closed: dict[str, float] = {}  # decision id -> window close time
        self._deadlines: list[tuple[float, str]] = []  # heap; erased decisions are skipped
        self._longest = 1.0  # the longest attribution window seen, in ms
        self._pruned_at = float("-inf")
        self.watermark = float("-inf")

    def add(self, events: Sequence[Impression | Click | wire.Impression | wire.Click],
            watermark: float | None = None) -> JoinResult:
        """Apply events (any order), then close every window the new watermark passed.

        The watermark is the newest event time seen unless ``watermark`` is given: a join fed
        by several streams passes the slowest stream's progress, so that a click behind its
        stream's peers is not judged late because another stream ran ahead. It never goes back.
        """
        result = JoinResult()
        for event in events:
            if event.event_id in self._seen:
                result.rejected.append(Rejected(event, "duplicate event_id"))
                continue
            self._seen[event.event_id] = event.ts
            if watermark is None:
                self.watermark = max(self.watermark, event.ts)
            self._longest = max(self._longest, float(self._window(event.campaign)))
            if event.type == "impression":
                self._impression(event, result)
            else:
                self._click(event, result)
        if watermark is not None:
            self.watermark = max(self.watermark, watermark)
        self._close(result)
        return result

    def erase(self, user_id: str) -> int:
        """Drop the subject's open decisions; returns how many were dropped."""
        gone = [d for d, o in self._open.items() if o.impression.user_id == user_id]
        for d in gone:
            del self._open[d]
        return len(gone)

    # Campaign settings the loop reads per event; the spec lookup copies, so it is cached per
    # name (a campaign's window, rule and default reward never change once it exists).
    def _window(self, campaign: str) -> int:
        return self._settings(campaign)[0]

    def _rule(self, campaign: str) -> str:
        return self._settings(campaign)[1]

    def _default(self, campaign: str) -> float:
        return self._settings(campaign)[2]

    def _settings(self, campaign: str) -> tuple[int, str, float]:
        found = self._cache.get(campaign)
        if found is None:
            spec = self._campaign(campaign)
            found = self._cache[campaign] = (spec.attribution_window_ms,
                                             spec.reward_aggregation, spec.default_reward)
        return found

    def _impression(self, imp: Impression, result: JoinResult) -> None:
        if imp.decision_id in self._open or imp.decision_id in self._closed:
            result.rejected.append(Rejected(imp, "second impression for the decision"))
            return
        deadline = imp.ts + self._window(imp.campaign)
        self._open[imp.decision_id] = _Open(imp, deadline)
        heapq.heappush(self._deadlines, (deadline, imp.decision_id))
        for click in self._early.pop(imp.decision_id, []):
            self._click(click, result)

    def _click(self, click: Click, result: JoinResult) -> None:
        o = self._open.get(click.decision_id)
        if o is None:
            if click.decision_id in self._closed:
                result.rejected.append(Rejected(click, _LATE))
            else:  # its impression may still come: wait (until the orphan sweep in _close)
                self._early.setdefault(click.decision_id, []).append(click)
            return
        if click.ts > o.deadline or click.ts < o.impression.ts:
            result.rejected.append(Rejected(click, _LATE))
            return
        slots = [click.slot] if click.slot is not None else list(o.impression.slots)
        if click.slot is not None and click.slot not in o.impression.slots:
            result.rejected.append(Rejected(click, f"the decision has no slot {click.slot!r}"))
            return
        rule = self._rule(o.impression.campaign)
        for slot in slots:
            if slot not in o.rewards:
                o.rewards[slot], o.first_ts[slot] = click.reward, click.ts
            elif rule == "sum":
                o.rewards[slot] += click.reward
            elif rule == "max":
                o.rewards[slot] = max(o.rewards[slot], click.reward)
            elif click.ts < o.first_ts[slot]:  # earliest
                o.rewards[slot], o.first_ts[slot] = click.reward, click.ts

    def _close(self, result: JoinResult) -> None:
        # Strictly past: another event at exactly the deadline (a click in the window) may still
        # come in the next batch; closing at equality would make batching change the result.
        while self._deadlines and self._deadlines[0][0] < self.watermark:
            _, d = heapq.heappop(self._deadlines)
            o = self._open.pop(d, None)
            if o is None:  # erased while open
                continue
            imp = o.impression
            default = self._default(imp.campaign)
            rewards = {slot: o.rewards.get(slot, default) for slot in imp.slots}
            if type(imp) is wire.Impression:  # validated when decoded: no second validation
                joined = wire.Joined(
                    decision_id=imp.decision_id, campaign=imp.campaign, user_id=imp.user_id,
                    ts=float(imp.ts), slots=imp.slots, context=imp.context,
                    segments=imp.segments, holdout=imp.holdout, rewards=rewards)
            else:
                joined = JoinedEvent(
                    decision_id=imp.decision_id, campaign=imp.campaign, user_id=imp.user_id,
                    ts=imp.ts, slots=imp.slots, context=imp.context, segments=imp.segments,
                    holdout=imp.holdout, rewards=rewards)
            result.joined.append(joined)
            self._closed[d] = o.deadline
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

    def state(self) -> dict:
        """Open windows, waiting clicks, dedup memory and watermark, as JSON-ready data."""
        return {
            "watermark": self.watermark if math.isfinite(self.watermark) else None,
            "open": [{"impression": o.plain or o.keep_plain(), "rewards": o.rewards,
                      "first_ts": o.first_ts} for o in self._open.values()],
            "early": [_plain(c) for cs in self._early.values() for c in cs],
            "seen": self._seen,
            "closed": self._closed,
            "longest": self._longest,
        }

    @classmethod
    def from_state(cls, state: dict, campaign: Callable[[str], CampaignSpec]) -> Joiner:
        joiner = cls(campaign)
        if state["watermark"] is not None:
            joiner.watermark = float(state["watermark"])
        for item in state["open"]:
            imp = Impression.model_validate(item["impression"])
            deadline = imp.ts + campaign(imp.campaign).attribution_window_ms
            joiner._open[imp.decision_id] = _Open(imp, deadline, dict(item["rewards"]),
                                                  dict(item["first_ts"]))
            heapq.heappush(joiner._deadlines, (deadline, imp.decision_id))
        for item in state["early"]:
            click = Click.model_validate(item)
            joiner._early.setdefault(click.decision_id, []).append(click)
        joiner._seen = {str(k): float(v) for k, v in state["seen"].items()}
        joiner._closed = {str(k): float(v) for k, v in state["closed"].items()}
        joiner._longest = float(state["longest"])
        return joiner


def _plain(event: Impression | Click | wire.Impression | wire.Click) -> dict:
    """An event as JSON-ready data (either kind: ``from_state`` reads both)."""
    if isinstance(event, msgspec.Struct):
        return msgspec.to_builtins(event)
    return event.model_dump(mode="json")
