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

from bandit.models import CampaignSpec, Click, Impression, JoinedEvent

# Event ids and closed decision ids are remembered this many windows back, for deduplication
# and for telling a late click from an orphan.
_RETENTION_WINDOWS = 2
# One reason whether or not the window had closed yet, so that batching cannot change it.
_LATE = "late: outside the attribution window"


@dataclass
class _Open:
    impression: Impression
    deadline: float
    rewards: dict[str, float] = field(default_factory=dict)
    first_ts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """An event the join could not use, and why: duplicate, late, orphan."""

    event: Impression | Click
    reason: str


@dataclass
class JoinResult:
    joined: list[JoinedEvent] = field(default_factory=list)
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
        self._open: dict[str, _Open] = {}
        self._early: dict[str, list[Click]] = {}
        self._seen: dict[str, float] = {}  # event id -> event time
        self._closed: dict[str, float] = {}  # decision id -> window close time
        self._deadlines: list[tuple[float, str]] = []  # heap; erased decisions are skipped
        self._longest = 1.0  # the longest attribution window seen, in ms
        self._pruned_at = float("-inf")
        self.watermark = float("-inf")

    def add(self, events: Sequence[Impression | Click],
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
            self._longest = max(self._longest,
                                float(self._campaign(event.campaign).attribution_window_ms))
            if isinstance(event, Impression):
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

    def _impression(self, imp: Impression, result: JoinResult) -> None:
        if imp.decision_id in self._open or imp.decision_id in self._closed:
            result.rejected.append(Rejected(imp, "second impression for the decision"))
            return
        deadline = imp.ts + self._campaign(imp.campaign).attribution_window_ms
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
        rule = self._campaign(o.impression.campaign).reward_aggregation
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
            default = self._campaign(imp.campaign).default_reward
            result.joined.append(JoinedEvent(
                decision_id=imp.decision_id, campaign=imp.campaign, user_id=imp.user_id,
                ts=imp.ts, slots=imp.slots, context=imp.context, segments=imp.segments,
                holdout=imp.holdout,
                rewards={slot: o.rewards.get(slot, default) for slot in imp.slots}))
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
            "open": [{"impression": o.impression.model_dump(mode="json"), "rewards": o.rewards,
                      "first_ts": o.first_ts} for o in self._open.values()],
            "early": [c.model_dump(mode="json") for cs in self._early.values() for c in cs],
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
