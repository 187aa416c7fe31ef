"""Erasure from the report tallies (``bandit.engine.erase.untally``): an engine that learned a
stream and then erased some subscribers reports, and holds in its tallies (clustered ones too),
what an engine that learned the stream without their decisions does: as joined events or
through the engine's own join, across snapshots; counts exactly, float sums to 1e-9; entries
left without decisions vanish. Decisions never learned refuse the erasure and change nothing;
the guardrails' baseline loses the decisions learned before the resume."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.engine import guardrails as _guardrails
from bandit.engine.erase import forget_joined
from bandit.engine.tally import GROUPS
from bandit.errors import InvalidInputError
from bandit.models import (
    OUTCOME_TYPES,
    Bounce,
    CampaignSpec,
    Click,
    Complaint,
    Conversion,
    JoinedEvent,
    LoggedChoice,
    LoggedDecision,
    Open,
    Unsubscribe,
)

# Subject keys of their own (not subject_key's): a subscriber is an index into KEYS.
KEYS = [hashlib.sha256(f"subscriber-{u}".encode()).hexdigest()[:32] for u in range(6)]
SLOTS = {"subject": ("lin_ucb", 3), "offer": ("beta_ts", 2), "hour": ("epsilon_greedy", 2)}
T0, STEP_MS, WINDOW_MS = int(1.8e12), 1000, 60_000
EVENT = {"open": Open, "click": Click, "conversion": Conversion, "unsubscribe": Unsubscribe,
         "complaint": Complaint, "bounce": Bounce}
DYADIC = [0.0, 1.0, 0.5, 2.25, -1.0]  # float sums of these are exact in any order
UNEVEN = [0.1, 0.3, 1.7, 2.9, -0.7, 0.0]  # and of these are not


def spec(guardrails: list[dict[str, Any]] | None = None) -> CampaignSpec:
    return CampaignSpec.model_validate({
        "name": "weekly", "holdout": 0.2, "attribution_window_ms": WINDOW_MS,
        "lift_horizon": 200,
        "context": {"features": [{"kind": "numeric", "name": "engagement"}],
                    "segments": ["region", "plan"]},
        "reward": {"outcomes": {"click": {"weight": 1.0}, "conversion": {"weight": 0.25},
                                "unsubscribe": {"weight": -1.0}}},
        "slots": [{"name": name, "default_arm": f"{name}-0", "policy": {"kind": kind},
                   "arms": [{"id": f"{name}-{j}"} for j in range(k)]}
                  for name, (kind, k) in SLOTS.items()],
        "guardrails": guardrails or []})


def _decisions(rewards: list[float]) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Decisions of the subscribers, each numbered (``i``: its time and id)."""
    return st.lists(st.fixed_dictionaries({
        "user": st.integers(0, len(KEYS) - 1),
        "holdout": st.booleans(),
        "consent": st.booleans(),
        "engagement": st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
        "segments": st.dictionaries(st.sampled_from(["region", "plan"]),
                                    st.sampled_from(["a", "b", "c"])),
        "slots": st.dictionaries(st.sampled_from(list(SLOTS)), st.integers(0, 2), min_size=1),
        "rewards": st.lists(st.sampled_from(rewards), min_size=len(SLOTS),
                            max_size=len(SLOTS)),
        "outcomes": st.dictionaries(st.sampled_from(OUTCOME_TYPES), st.integers(1, 2)),
        "value": st.sampled_from([1.0, 2.5, 10.0])}), min_size=1, max_size=40).map(_numbered)


def _numbered(decisions: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    return [dict(d, i=start + i) for i, d in enumerate(decisions)]


def _id(d: dict[str, Any]) -> str:
    """A decision's id: its last digit odd with consent (``decided_with_consent``)."""
    return f"{d['i']:031x}{'1' if d['consent'] else '0'}"


def _ts(d: dict[str, Any]) -> int:
    return T0 + d["i"] * STEP_MS


def _choices(d: dict[str, Any]) -> dict[str, LoggedChoice]:
    return {name: LoggedChoice(arm=f"{name}-{a % SLOTS[name][1]}", propensity=0.5)
            for name, a in d["slots"].items()}


def joined(decisions: list[dict[str, Any]]) -> list[JoinedEvent]:
    """The decisions as closed (joined) events: a consent-less one without context and
    segments; rewards per slot as drawn."""
    return [JoinedEvent(
        decision_id=_id(d), campaign="weekly", subject=KEYS[d["user"]],
        ts=_ts(d), holdout=d["holdout"],
        context={"engagement": d["engagement"]} if d["consent"] else None,
        segments=d["segments"] if d["consent"] else {}, slots=_choices(d),
        outcomes=d["outcomes"],
        rewards={name: d["rewards"][k] for k, name in enumerate(SLOTS) if name in d["slots"]})
        for d in decisions]


def logged(decisions: list[dict[str, Any]]) -> list[Any]:
    """The decisions as the service logs them, each with its outcome events (a click and a
    conversion about its first slot, the rest about every slot), in time order."""
    events: list[Any] = []
    for d in decisions:
        ts, decision_id, i = _ts(d), _id(d), d["i"]
        events.append(LoggedDecision(
            decision_id=decision_id, campaign="weekly", subject=KEYS[d["user"]], ts=ts,
            holdout=d["holdout"], slots=_choices(d), context={"engagement": d["engagement"]},
            segments=d["segments"]))
        first = next(iter(d["slots"]))
        for kind, count in d["outcomes"].items():
            extra: dict[str, Any] = {"value": d["value"]} if kind == "conversion" else {}
            events += [EVENT[kind](event_id=f"{kind}-{i}-{j}", decision_id=decision_id,
                                   ts=ts + 10 + j, campaign="weekly",
                                   slot=first if kind in ("click", "conversion") else None,
                                   **extra)
                       for j in range(count)]
    return sorted(events, key=lambda e: e.ts)


def _engine(guardrails: list[dict[str, Any]] | None = None, ledger: int = 10**6) -> Engine:
    engine = Engine(seed=3)
    engine.create_campaign(spec(guardrails))
    engine.keep_ledger(ledger)
    return engine


def _learn(engine: Engine, decisions: list[dict[str, Any]], path: str) -> None:
    """Learn the decisions as joined events, or through the engine's join (in two batches,
    every window closed at the end)."""
    if not decisions:
        return
    if path == "events":
        engine.learn(joined(decisions))
        return
    events = logged(decisions)
    for part in (events[:len(events) // 2], events[len(events) // 2:]):
        engine.ingest(part)
    engine.ingest([], watermark=T0 + 10**9)
    assert engine.open_windows() == 0


def _round_trip(engine: Engine) -> Engine:
    restored = Engine.from_bytes(engine.to_bytes(), seed=3)[0]
    restored.keep_ledger(10**6)
    return restored


def _close(a: float, b: float, rel: float, near_zero: float = 1e-9) -> bool:
    """Equal, or with ``rel`` close (to ``near_zero`` absolute, where the sum left is near
    zero and the rounding of the larger sums it came from is what remains)."""
    return a == b or (rel > 0 and math.isclose(a, b, rel_tol=rel, abs_tol=near_zero))


def assert_same_tallies(forgot: Engine, never: Engine, rel: float = 0.0) -> None:
    """Every report tally of the campaign, as dicts (entries without decisions would show):
    counts exactly, float sums to ``rel`` (0: exactly); the clustered ones bucket by bucket."""
    mine, theirs = forgot._get("weekly"), never._get("weekly")

    def same(a: Any, b: Any, what: str) -> None:
        if isinstance(a, dict):
            assert a.keys() == b.keys(), what
            for k in a:
                same(a[k], b[k], f"{what} {k!r}")
        elif isinstance(a, float):
            assert _close(a, b, rel), f"{what}: {a!r} != {b!r}"
        elif isinstance(a, np.ndarray):
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, rtol=rel, atol=1e-9 if rel else 0,
                                           err_msg=what)
            else:
                np.testing.assert_array_equal(a, b, err_msg=what)
        elif hasattr(a, "__dict__"):
            same(vars(a), vars(b), what)
        else:
            assert a == b, f"{what}: {a!r} != {b!r}"

    for s, t in zip(mine.slots, theirs.slots, strict=True):
        for name in ("arm_tally", "group_tally", "outcome_tally", "segment_tally",
                     "segment_outcomes", "segment_counts", "clustered"):
            same(getattr(s, name), getattr(t, name), f"{s.spec.name} {name}")
    for name in ("personalized", "holdout", "outcomes", "clustered", "baseline"):
        same(getattr(mine, name), getattr(theirs, name), name)


def assert_same_report(forgot: Engine, never: Engine, interval_tolerance: float = 0.0
                       ) -> None:
    """``Engine.report`` of both, its model version aside: every count exactly; with a
    ``interval_tolerance``, floats to 1e-9 relative and interval bounds (a square root of a
    variance float rounding moves by up to its own square root where it is near zero) to
    that; without, exactly."""
    a = forgot.report("weekly").model_dump()
    b = never.report("weekly").model_dump()
    a["model_version"] = b["model_version"]
    if not interval_tolerance:
        assert a == b
        return

    def same(x: Any, y: Any, what: str) -> None:
        if isinstance(x, dict):
            assert x.keys() == y.keys(), what
            for k in x:
                same(x[k], y[k], f"{what}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), what
            for k, (u, v) in enumerate(zip(x, y, strict=True)):
                same(u, v, f"{what}[{k}]")
        elif isinstance(x, float) and not isinstance(y, bool):
            bound = what.endswith((".low", ".high"))
            assert _close(x, y, 1e-9, interval_tolerance if bound else 1e-9), (
                f"{what}: {x!r} != {y!r}")
        else:
            assert x == y, f"{what}: {x!r} != {y!r}"

    same(a, b, "report")


def _cut(decisions: list[dict[str, Any]], users: set[int], at: int | None
         ) -> tuple[dict[bytes, float], list[dict[str, Any]]]:
    """The erasure of ``users`` at decision index ``at`` (None: at any time), and the
    decisions an engine that never learned theirs learns."""
    at_ms = math.inf if at is None else T0 + at * STEP_MS
    gone = {bytes.fromhex(KEYS[u]): at_ms for u in users}
    kept = [d for d in decisions if d["user"] not in users or _ts(d) > at_ms]
    return gone, kept


@settings(max_examples=60, deadline=None)
@given(decisions=_decisions(DYADIC), users=st.sets(st.integers(0, len(KEYS) - 1), min_size=1,
                                                   max_size=3),
       at=st.one_of(st.none(), st.integers(0, 40)), path=st.sampled_from(["events", "join"]),
       snapshot=st.sampled_from(["none", "before", "after"]))
def test_an_erased_engine_reports_what_one_that_never_learned_the_subscribers_does(
        decisions, users, at, path, snapshot):
    """Sums of dyadic rewards and integer counts are exact in any order: the report (its
    model version aside) and every tally equal the never-learned engine's exactly."""
    gone, kept = _cut(decisions, users, at)
    forgot, never = _engine(), _engine()
    _learn(forgot, decisions, path)
    _learn(never, kept, path)
    if snapshot == "before":
        forgot = _round_trip(forgot)
    version = forgot.model_version("weekly")
    dropped, changed = forgot.erase_subjects(gone)
    erased = len(decisions) - len(kept)
    assert dropped == 0 and changed
    assert forgot.model_version("weekly") == version + bool(erased)
    if snapshot == "after":
        forgot = _round_trip(forgot)
    assert_same_tallies(forgot, never)
    assert_same_report(forgot, never)


@settings(max_examples=60, deadline=None)
@given(decisions=_decisions(UNEVEN), users=st.sets(st.integers(0, len(KEYS) - 1), min_size=1,
                                                   max_size=3),
       at=st.one_of(st.none(), st.integers(0, 40)))
def test_float_sums_lose_the_subscribers_rewards_to_1e_9(decisions, users, at):
    """Rewards whose sums round: every float sum to 1e-9 relative, counts exactly; the
    report's numbers too, its interval bounds to 1e-6 (see ``assert_same_report``)."""
    gone, kept = _cut(decisions, users, at)
    forgot, never = _engine(), _engine()
    _learn(forgot, decisions, "events")
    _learn(never, kept, "events")
    forgot.erase_subjects(gone)
    assert_same_tallies(forgot, never, rel=1e-9)
    assert_same_report(forgot, never, interval_tolerance=1e-6)


def test_erasing_every_subscriber_leaves_the_tallies_of_an_engine_that_learned_nothing():
    rng = np.random.default_rng(0)
    decisions = [{"i": i, "user": int(rng.integers(len(KEYS))), "holdout": bool(i % 3 == 0),
                  "consent": bool(i % 2), "engagement": 0.5,
                  "segments": {"region": "abc"[i % 3]}, "slots": {"subject": i, "offer": i},
                  "rewards": [0.1 * i, 0.3, 0.0], "outcomes": {"click": 1, "bounce": 2},
                  "value": 1.0} for i in range(30)]
    forgot = _engine()
    _learn(forgot, decisions, "events")
    forgot.erase_subjects({bytes.fromhex(k): math.inf for k in KEYS})
    assert_same_tallies(forgot, _engine())  # sums over no decisions are exactly zero
    assert_same_report(forgot, _engine())


def test_decisions_the_tallies_never_learned_refuse_the_erasure_and_change_nothing():
    """Tallies that no longer hold the ledger's decisions (a slot's reward per arm replaced
    by an empty one) refuse the erasure: neither policies, tallies, ledger nor join change."""
    decisions = [{"i": i, "user": i % 3, "holdout": False, "consent": True, "engagement": 1.0,
                  "segments": {}, "slots": {"subject": i}, "rewards": [1.0, 0.0, 0.0],
                  "outcomes": {}, "value": 1.0} for i in range(12)]
    engine = _engine()
    _learn(engine, decisions, "events")
    s = engine._get("weekly").slot("subject")
    kept, s.arm_tally = s.arm_tally, {}
    before = engine.to_bytes()
    with pytest.raises(InvalidInputError, match=r"slot 'subject': arm_tally 'subject-0': n "
                                                r"would fall from 0 to -\d+: these decisions "
                                                r"were not all learned"):
        engine.erase_subjects({bytes.fromhex(KEYS[0]): math.inf})
    assert engine.to_bytes() == before
    s.arm_tally = kept
    before = engine.to_bytes()
    unknown = joined(decisions[:1])[0].model_copy(update={"decision_id": "9" * 32,
                                                          "outcomes": {"complaint": 1}})
    with pytest.raises(InvalidInputError, match=r"outcome_tally .*: reached\[4\] would fall "
                                                r"from 0 to -1"):
        forget_joined(engine._get("weekly"), [unknown])
    assert engine.to_bytes() == before


# -- the guardrails' baseline --------------------------------------------------------------

HARM = {"outcome": "unsubscribe", "max_lift": 0.1, "min_decisions": 20}
RESUME_MS = T0 + 239 * STEP_MS + STEP_MS // 2  # decisions 0-239 made, 0-179 closed


def _harm() -> list[dict[str, Any]]:
    """300 decisions of the subscribers in turn, every fourth in the holdout; the first 180
    personalized ones unsubscribe (the harm), the rest do not."""
    return [{"i": i, "user": i % len(KEYS), "holdout": i % 4 == 0, "consent": True,
             "engagement": 0.0, "segments": {}, "slots": {"subject": 1},
             "rewards": [-1.0 if i < 180 and i % 4 else 0.0, 0.0, 0.0], "value": 1.0,
             "outcomes": {"unsubscribe": 1} if i < 180 and i % 4 else {}}
            for i in range(300)]


def _guarded(engine: Engine, decisions: list[dict[str, Any]], path: str) -> None:
    """The harmful decisions trip the guardrail; a person resumes at ``RESUME_MS``, when
    (through the join) the last 60 decisions made are still open; the later ones and those
    close after it."""
    if path == "events":
        engine.learn(joined([d for d in decisions if _ts(d) <= RESUME_MS]))
        assert engine.is_paused("weekly")
        engine.pause("weekly", False)
        engine.learn(joined([d for d in decisions if _ts(d) > RESUME_MS]))
        return
    events = logged(decisions)
    engine.ingest([e for e in events if e.ts <= RESUME_MS], watermark=RESUME_MS)
    assert engine.is_paused("weekly") and engine.open_windows() == len(
        [d for d in decisions if _ts(d) + WINDOW_MS > RESUME_MS >= _ts(d)])
    engine.pause("weekly", False)
    engine.ingest([e for e in events if e.ts > RESUME_MS], watermark=T0 + 10**9)
    assert not engine.is_paused("weekly") and engine.open_windows() == 0


# Since the resume, without the subscriber's decisions up to the erasure (a sixth of each
# stretch of decisions, a quarter of them held out): (personalized, holdout) per path.
SINCE = {("events", math.inf): (40, 10), ("join", math.inf): (80, 20),
         ("events", RESUME_MS): (45, 15), ("join", RESUME_MS): (85, 25)}


@pytest.mark.parametrize("ledger", [10**6, 640])  # one open chunk; sealed ones of 40
@pytest.mark.parametrize("at_ms", [math.inf, RESUME_MS])
@pytest.mark.parametrize("path", ["events", "join"])
def test_erasure_takes_the_decisions_learned_before_the_resume_out_of_the_baseline(
        path, at_ms, ledger):
    """The subscriber's decisions learned before the resume leave the baseline; those made
    before it but learned after (open at the resume) and those after it do not: the
    guardrails test what an engine that never learned the subscriber's decisions (up to the
    erasure) tests. Erased up to the resume, the subscriber keeps later decisions in the
    bucket, where cutting the baseline to the sums left would not do."""
    decisions = _harm()
    forgot, never = _engine([HARM], ledger), _engine([HARM])
    _guarded(forgot, decisions, path)
    _guarded(never, [d for d in decisions if d["user"] != 2 or _ts(d) > at_ms], path)
    assert forgot._ledger.complete and len(forgot._ledger._chunks) == (1 if ledger > 640 else 8)
    assert forgot.erase_subjects({bytes.fromhex(KEYS[2]): at_ms}) == (0, True)
    assert_same_tallies(forgot, never)
    assert_same_report(forgot, never)
    (g,) = forgot.report("weekly").guardrails
    assert (g.personalized, g.holdout) == SINCE[(path, at_ms)]


def test_without_the_learn_order_the_baseline_stays_within_the_sums_left():
    """Joined events carry no learn order (nor does an incomplete ledger's erasure): the
    baseline keeps the subscriber's decisions, cut bucket by bucket to the sums left, so the
    guardrails never test a negative count since the resume."""
    decisions = _harm()
    engine = _engine([HARM])
    _guarded(engine, decisions, "events")
    c = engine._get("weekly")
    assert c.baseline is not None
    before = {g: (c.baseline[g].n.copy(), c.baseline[g].reached.copy()) for g in GROUPS}
    forget_joined(c, [e for e in joined(decisions) if e.subject == KEYS[2]])
    shrunk = False
    for g in GROUPS:
        n, reached = before[g]
        assert np.array_equal(c.baseline[g].n, np.minimum(n, c.clustered[g].n))
        assert np.array_equal(c.baseline[g].reached, np.minimum(reached, c.clustered[g].reached))
        shrunk |= bool((c.baseline[g].n < n).any())
    assert shrunk  # the subscriber's bucket had fewer decisions since than before the resume
    since = _guardrails._since(c)
    assert all((since[g].n >= 0).all() and (since[g].reached >= 0).all() for g in GROUPS)
