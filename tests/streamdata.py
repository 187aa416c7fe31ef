"""Seeded impression and click streams with a known join, for the stream worker's tests.

Contexts and arm features are multiples of 1/4, so every learned sum is exact in float64 and
two runs that learn the same events in another order or batching give bit-equal states. With
``real=True`` the engagement values and click rewards are real numbers instead, whose sums
round: only a run that learns the same events in the same order gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent

WINDOW_MS = 1_000
STEP_MS = 10  # between decisions: about 100 decisions per window


def spec(name: str = "news", half_life_ms: float | None = None) -> CampaignSpec:
    """The campaign: three slots (LinUCB, hybrid LinUCB over arm features, Beta TS), each
    with ``half_life_ms`` decay when given."""
    decay = {} if half_life_ms is None else {"half_life_ms": half_life_ms}
    return CampaignSpec.model_validate({
        "name": name, "holdout": 0.1, "attribution_window_ms": WINDOW_MS,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "categorical", "name": "plan",
                                  "values": ["free", "pro"]}],
                    "segments": ["region"]},
        "slots": [
            {"name": "subject", "arms": [{"id": "plain"}, {"id": "urgent"}, {"id": "quiz"}],
             "default_arm": "plain", "policy": {"kind": "lin_ucb", "alpha": 0.5, **decay}},
            {"name": "artwork", "default_arm": "calm", "condition_on": ["subject"],
             "arms": [{"id": "action", "features": {"brightness": 0.75}},
                      {"id": "calm", "features": {"brightness": 0.25}}],
             "arm_features": [{"kind": "numeric", "name": "brightness"}],
             "policy": {"kind": "hybrid_lin_ucb", "epsilon": 0.2, **decay}},
            {"name": "hour", "arms": [{"id": "h09"}, {"id": "h18"}], "default_arm": "h09",
             "policy": {"kind": "beta_ts", **decay}},
        ]})


@dataclass
class Streams:
    impressions: list[dict[str, Any]]  # in event time order
    clicks: list[dict[str, Any]]  # in event time order, with duplicates and late ones
    joined: list[JoinedEvent]  # what the join must produce (every decision)
    late: int  # clicks past their window
    duplicates: int  # repeated click event ids
    end_ts: int


def make(n: int, seed: int, campaign: str = "news", t0: int = 0, real: bool = False) -> Streams:
    """n decisions of ``spec(campaign)`` made by an engine, their clicks and the expected join
    (``real``: normal engagement values and uniform click rewards, not multiples of 1/4)."""
    rng = np.random.default_rng(seed)
    values = np.random.default_rng([seed, 1])  # drawn either way: ``real`` changes nothing else
    engine = Engine(seed=seed, id_seed=seed)  # seeded data: the same ids every run
    engine.create_campaign(spec(campaign))
    requests = [DecisionRequest(
        campaign=campaign, user_id=f"u{seed}-{i}",
        consent=bool(rng.random() < 0.9),
        context={"engagement": (float(rng.integers(0, 5)) / 4, float(values.normal()))[real],
                 "plan": ["free", "pro", "gold"][int(rng.integers(0, 3))]},  # gold: unknown
        segments={"region": ["north", "south"][int(rng.integers(0, 2))]}) for i in range(n)]
    batch = engine.decide_batch(campaign, requests)
    impressions = []
    for i, imp in enumerate(batch.impressions(requests, ts_ms=0)):
        impressions.append(imp.model_copy(update={"ts": t0 + i * STEP_MS,
                                                  "event_id": f"i-{seed}-{i}"}))
    clicks, joined, late, duplicates = [], [], 0, 0
    for i, imp in enumerate(impressions):
        rewards = dict.fromkeys(imp.slots, 0.0)
        learned = 0
        for j in range(int(rng.choice([0, 0, 0, 1, 2]))):
            slot = [None, *imp.slots][int(rng.integers(0, len(imp.slots) + 1))]
            is_late = rng.random() < 0.05
            delay = WINDOW_MS + 1 + int(rng.integers(0, 50)) if is_late else int(
                rng.integers(0, WINDOW_MS + 1))
            click = {"type": "click", "event_id": f"c-{seed}-{i}-{j}",
                     "decision_id": imp.decision_id, "campaign": campaign,
                     "ts": imp.ts + delay, "reward": (1.0, float(values.random()))[real]}
            if slot is not None:
                click["slot"] = slot
            clicks.append(click)
            if is_late:
                late += 1
                continue
            learned += 1
            for s in ([slot] if slot else list(imp.slots)):
                rewards[s] += click["reward"]
            if rng.random() < 0.1:  # the tracker sends it twice
                clicks.append(dict(click))
                duplicates += 1
        joined.append(JoinedEvent(
            decision_id=imp.decision_id, campaign=campaign,
            subject=subject_key(imp.user_id).hex(), ts=imp.ts,
            slots={s: {"arm": c.arm, "propensity": c.propensity} for s, c in imp.slots.items()},
            context=imp.context, segments=imp.segments, holdout=imp.holdout,
            model_version=imp.model_version, outcomes={"click": learned} if learned else {},
            rewards=rewards))
    clicks.sort(key=lambda c: c["ts"])  # stable: a duplicate stays right after its original
    return Streams([imp.model_dump(mode="json", exclude_none=True) for imp in impressions],
                   clicks, joined, late, duplicates, t0 + n * STEP_MS + 2 * WINDOW_MS)


def sentinels(partition: int, ts: int, campaign: str = "news") -> list[dict[str, Any]]:
    """An impression and a click far in event time, for one partition: they move both inputs'
    watermark past every real window (the sentinel's own window stays open)."""
    decision_id = f"{partition:032x}"
    return [{"type": "impression", "event_id": f"sentinel-i-{partition}",
             "decision_id": decision_id, "campaign": campaign, "user_id": "sentinel", "ts": ts,
             "slots": {"hour": {"arm": "h09", "propensity": 1.0}}},
            {"type": "click", "event_id": f"sentinel-c-{partition}", "decision_id": decision_id,
             "campaign": campaign, "ts": ts + 1}]


def reference(streams: Streams, campaign: str = "news") -> Engine:
    """An engine that learned the expected join directly, in one batch."""
    engine = Engine()
    engine.create_campaign(spec(campaign))
    engine.learn(streams.joined)
    return engine


def assert_same_model(actual: Engine, expected: Engine, campaign: str = "news") -> None:
    """Bit-equal policy sums and equal report tallies in every slot."""
    a, e = actual._campaigns[campaign], expected._campaigns[campaign]
    for sa, se in zip(a.slots, e.slots, strict=True):
        for pa, pe in ((sa.policy, se.policy), (sa.fallback, se.fallback)):
            ta, te = pa.state()["arrays"], pe.state()["arrays"]
            assert ta.keys() == te.keys()
            for name in ta:
                np.testing.assert_array_equal(ta[name], te[name], err_msg=f"{sa.spec.name} {name}")
        assert {k: vars(t) for k, t in sa.arm_tally.items()} == {
            k: vars(t) for k, t in se.arm_tally.items()}
    assert vars(a.personalized) == vars(e.personalized)
    assert vars(a.holdout) == vars(e.holdout)


class Clock:
    """A worker's clock that moves one second per reading: checkpoints every few steps, by count."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now
