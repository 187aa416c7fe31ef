"""Seeded decision logs and event streams with a known join, for the stream worker's tests.

``make`` decides with a real engine (``decide_batch`` calls, one every ``CALL_MS``) whose
``decision_sink`` captures each call's ``DecisionLog``: its lines are the logged decisions the
service writes to ``<prefix>.decisions`` in blocks (``blocks``). The senders' and trackers'
events for ``<prefix>.events`` (``events``) are sends (a campaign activated by sends: most
decisions are sent, some never) and outcomes of every type: opens, clicks, conversions with a
value, unsubscribes, complaints, bounces, some flagged as a machine's, some clicks a link
scanner's, some late, some sent twice. ``joined`` is what the join must produce, computed here
from the campaign's reward rules (``spec``), independently of the join.

Contexts, arm features, weights and amounts are multiples of 1/4, so every learned sum is
exact in float64 and two runs that learn the same events in another order or batching give
bit-equal states. With ``real=True`` the engagement values and click rewards are real numbers
instead, whose sums round: only a run that learns the same events in the same order gives the
same bits.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import orjson

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLog, partition_of
from bandit.engine.join import subject_key
from bandit.engine.pseudonyms import SubjectKeys
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent
from streams import blocks
from streams.codec import encode
from streams.memory import MemoryLog

WINDOW_MS = 1_000
STEP_MS = 10  # between decisions: about 100 decisions per window
CALL = 10  # decisions per decide call
CALL_MS = CALL * STEP_MS
WAIT_MS = 300  # activation window of a campaign activated by sends
SCANNER_MS = 20
UNSUBSCRIBE_MS = 500  # the unsubscribe's window (the others': the attribution window)
# Weighted types in the spec's order: open first-aggregated, click summed, conversion maxed.
REWARD = {"open": {"weight": 0.5, "aggregation": "first"},
          "click": {"weight": 1.0},
          "conversion": {"weight": 0.25, "aggregation": "max"},
          "unsubscribe": {"weight": -2.0, "window_ms": UNSUBSCRIBE_MS}}
KINDS = ("open", "click", "conversion", "unsubscribe", "complaint", "bounce")
SENT = 0.8  # share of the decisions of a campaign activated by sends that are sent


def spec(name: str = "news", half_life_ms: float | None = None,
         activation: str = "decision") -> CampaignSpec:
    """The campaign: three slots (LinUCB, hybrid LinUCB over arm features, Beta TS), each
    with ``half_life_ms`` decay when given; ``REWARD`` over its outcomes."""
    decay = {} if half_life_ms is None else {"half_life_ms": half_life_ms}
    return CampaignSpec.model_validate({
        "name": name, "holdout": 0.1, "attribution_window_ms": WINDOW_MS,
        "activation": activation, "activation_window_ms": WAIT_MS,
        "reward": {"outcomes": REWARD, "scanner_ms": SCANNER_MS},
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
    decisions: list[tuple[str, bytes]]  # (decision id, logged decision line), in event time
    events: list[dict[str, Any]]  # sends and outcomes in event time order, repeats, late ones
    joined: list[JoinedEvent]  # what the join must produce (every sent decision)
    late: int  # outcomes past their window: dead-lettered
    duplicates: int  # repeated outcome event ids
    end_ts: int
    excluded: Counter[str]  # "machine", "scanner" outcomes and "unsent" decisions
    user_ids: dict[str, str]  # decision id -> the user id it was decided for
    consent: dict[str, bool]  # decision id -> decided with consent
    # The deciding engine's secrets: the pseudonyms its decision log names subscribers by.
    subjects: SubjectKeys = field(default_factory=SubjectKeys)
    logs: list[DecisionLog] = field(default_factory=list)  # the calls' logs of ``decisions``


def make(n: int, seed: int, campaign: str = "news", t0: int = 0, real: bool = False,
         activation: str = "decision") -> Streams:
    """n decisions of ``spec(campaign, activation=activation)`` made by an engine, their
    events and the expected join (``real``: normal engagement values and uniform click
    rewards, not multiples of 1/4)."""
    rng = np.random.default_rng(seed)
    values = np.random.default_rng([seed, 1])  # drawn either way: ``real`` changes nothing else
    engine = Engine(seed=seed, id_seed=seed)  # seeded data: the same ids every run
    rules = spec(campaign, activation=activation)
    engine.create_campaign(rules)
    logs: list[DecisionLog] = []
    engine.decision_sink = logs.append
    requests = [DecisionRequest(
        campaign=campaign, user_id=f"u{seed}-{i}",
        consent=bool(rng.random() < 0.9),
        context={"engagement": (float(rng.integers(0, 5)) / 4, float(values.normal()))[real],
                 "plan": ["free", "pro", "gold"][int(rng.integers(0, 3))]},  # gold: unknown
        segments={"region": ["north", "south"][int(rng.integers(0, 2))]}) for i in range(n)]
    for k in range(0, n, CALL):
        engine.clock = lambda k=k: t0 + k * STEP_MS  # the call's time: the decisions' ts
        engine.decide_batch(campaign, requests[k:k + CALL])
    decisions = [(d, line) for log in logs
                 for d, line in zip(log.decision_ids, log.lines(), strict=True)]
    user_ids = dict(zip((d for log in logs for d in log.decision_ids),
                        (r.user_id for r in requests), strict=True))
    consent = {d: bool(c) for log in logs
               for d, c in zip(log.decision_ids, log.consent.tolist(), strict=True)}
    events: list[dict[str, Any]] = []
    joined, late, duplicates, excluded = [], 0, 0, Counter[str]()
    for d in (decision for log in logs for decision in log.decisions()):
        send_ts = d.ts
        if activation == "send":
            if rng.random() >= SENT:
                excluded["unsent"] += 1
                continue
            send_ts = d.ts + int(rng.integers(0, WAIT_MS + 1))
            events.append({"type": "send", "event_id": f"s-{d.decision_id}",
                           "decision_id": d.decision_id, "ts": send_ts})
        mine = []  # this decision's learned outcomes: (kind, slot, amount), in ts order
        for j in range(int(rng.choice([0] * 7 + [1, 2, 3]))):
            kind = KINDS[int(rng.choice(6, p=[0.35, 0.3, 0.15, 0.1, 0.05, 0.05]))]
            window = UNSUBSCRIBE_MS if kind == "unsubscribe" else WINDOW_MS
            slot = [None, *d.slots][int(rng.integers(0, len(d.slots) + 1))]
            is_late, machine = rng.random() < 0.05, rng.random() < 0.1
            delay = window + 1 + int(rng.integers(0, 50)) if is_late else int(
                rng.integers(0, window + 1))
            event: dict[str, Any] = {"type": kind, "event_id": f"o-{seed}-{d.decision_id}-{j}",
                                     "decision_id": d.decision_id, "ts": send_ts + delay}
            if rng.random() < 0.5:
                event["campaign"] = campaign
            if slot is not None:
                event["slot"] = slot
            if kind in ("open", "click") and machine:
                event["machine"] = True
            if kind == "click" and (real or rng.random() < 0.3):
                event["reward"] = (float(rng.integers(1, 5)) / 4, float(values.random()))[real]
            if kind == "conversion":
                event["value"] = float(rng.integers(1, 9))
            events.append(event)
            if is_late:
                late += 1
                continue
            if event.get("machine"):
                excluded["machine"] += 1
            elif kind == "click" and delay < SCANNER_MS:
                excluded["scanner"] += 1
            else:
                amount = event.get("value", event.get("reward", 1.0))
                mine.append((event["ts"], kind, slot, amount))
                if rng.random() < 0.1:  # the tracker sends it twice
                    events.append(dict(event))
                    duplicates += 1
        joined.append(_joined(d, mine))
    events.sort(key=lambda e: e["ts"])  # stable: a repeat stays right after its original
    end = t0 + n * STEP_MS + 2 * WINDOW_MS + WAIT_MS
    return Streams(decisions, events, joined, late, duplicates, end, excluded, user_ids, consent,
                   engine.subjects, logs)


def _joined(d: Any, outcomes: list[tuple[int, str, str | None, float]]) -> JoinedEvent:
    """The joined event of logged decision ``d`` and its learned outcomes, by ``REWARD``."""
    got: dict[tuple[str, str], float] = {}  # (slot, kind) -> aggregated amount
    for _, kind, slot, amount in sorted(outcomes, key=lambda o: o[0]):  # arrival: ts order
        if kind not in REWARD:
            continue
        for s in ([slot] if slot else list(d.slots)):
            rule = REWARD[kind].get("aggregation", "sum")
            if (s, kind) not in got:
                got[s, kind] = amount
            elif rule == "sum":
                got[s, kind] += amount
            elif rule == "max":
                got[s, kind] = max(got[s, kind], amount)
    rewards = {}
    for s in d.slots:
        parts = [float(rule["weight"]) * got[s, kind] for kind, rule in REWARD.items()
                 if (s, kind) in got]
        rewards[s] = (math.fsum(parts) if len(parts) > 1 else parts[0]) if parts else 0.0
    return JoinedEvent(
        decision_id=d.decision_id, campaign=d.campaign, subject=d.subject, ts=d.ts,
        slots={s: {"arm": c.arm, "propensity": c.propensity,
                   "probabilities": _vector(c.probabilities)} for s, c in d.slots.items()},
        context=d.context, segments=d.segments, holdout=d.holdout,
        model_version=d.model_version, outcomes=dict(Counter(k for _, k, _, _ in outcomes)),
        rewards=rewards)


def _vector(probabilities: Any) -> dict[str, float]:
    """A logged choice's probabilities: the pydantic model's dict, or a mirror's raw JSON."""
    if isinstance(probabilities, msgspec.Raw):
        return orjson.loads(bytes(probabilities))
    return dict(probabilities)


def joined_of(decision: Any, outcomes: list[tuple[int, str, str | None, float]]) -> JoinedEvent:
    """What the join must make of logged decision ``decision`` (a ``LoggedDecision``) and its
    learned outcomes, (ts, type, slot or None, amount) each, by ``REWARD``: for streams not
    made here (decisions made by a service)."""
    return _joined(decision, outcomes)


def of_joined(joined: list[JoinedEvent]) -> Streams:
    """Streams holding only an expected join (for ``reference``)."""
    return Streams([], [], joined, 0, 0, 0, Counter(), {}, {})


def blocks_of(decisions: list[tuple[str, bytes]], partitions: int,
              size: int = 25) -> dict[int, list[tuple[bytes, bytes]]]:
    """The (key, value) decision blocks of each partition (Kafka's default partitioner on
    the decision ids), ``size`` decisions each, in order."""
    where = partition_of([d for d, _ in decisions], partitions).tolist()
    mine: dict[int, list[tuple[str, bytes]]] = {}
    for p, item in zip(where, decisions, strict=True):
        mine.setdefault(p, []).append(item)
    return {p: blocks.DECISIONS.pack(items, max_examples=size) for p, items in mine.items()}


def binary_blocks_of(s: Streams, partitions: int,
                     size: int = 25) -> dict[int, list[tuple[bytes, bytes]]] | None:
    """``blocks_of`` in the format the service writes (``cmab.decisions/3``), made from the
    calls' logs, or None when ``s.decisions`` are not its logs' decisions (a test changed
    them)."""
    if not s.logs or s.decisions != [item for log in s.logs for item in zip(
            log.decision_ids, log.lines(), strict=True)]:
        return None
    return DecisionLog.concat(s.logs).blocks(partitions, blocks.MAX_BLOCK_BYTES, size)


def sentinels(partition: int, ts: int, campaign: str = "news") -> tuple[bytes, bytes]:
    """A decision block and a watermark far in event time, for one partition's
    ``.decisions`` and ``.events``: they move both inputs' watermark past every real window
    (the sentinel decision's own window stays open)."""
    decision_id = f"{partition:032x}"
    line = orjson.dumps({"decision_id": decision_id, "campaign": campaign,
                         "subject": subject_key("sentinel").hex(), "ts": ts,
                         "slots": {"hour": {"arm": "h09", "propensity": 1.0}}})
    [(_, block)] = blocks.DECISIONS.pack([(decision_id, line)])
    return block, encode({"type": "watermark", "ts": ts + 1})


def records(s: Streams, partitions: int, *, size: int = 25,
            sentinel: bool = True) -> list[tuple[str, int | None, bytes | None, bytes]]:
    """What the service, senders and trackers write, as (stream, partition or None, key,
    value): the decision blocks (with their partition; binary as the service writes them, or
    text when the decisions are not the logs'), then the events keyed by decision id, then
    (``sentinel``) each partition's sentinels (a text block: both formats in one stream)."""
    made = binary_blocks_of(s, partitions, size) or blocks_of(s.decisions, partitions, size)
    out: list[tuple[str, int | None, bytes | None, bytes]] = [
        ("decisions", p, key, value) for p, packed in sorted(made.items())
        for key, value in packed]
    out += [("events", None, e["decision_id"].encode(), encode(e)) for e in s.events]
    if sentinel:
        for p in range(partitions):
            block, mark = sentinels(p, s.end_ts + 10 * WINDOW_MS)
            out += [("decisions", p, None, block), ("events", p, None, mark)]
    return out


def fill(log: MemoryLog, s: Streams, *, size: int = 25, sentinel: bool = True) -> None:
    """Write ``records(s)`` to an in-process log."""
    for stream, p, key, value in records(s, log.partitions, size=size, sentinel=sentinel):
        log.append(getattr(log.topics, stream), value, key=key, partition=p)


def reference(streams: Streams, campaign: str = "news", activation: str = "decision") -> Engine:
    """An engine that learned the expected join directly, in one batch."""
    engine = Engine()
    engine.create_campaign(spec(campaign, activation=activation))
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
