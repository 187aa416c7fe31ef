"""Outcome tallies and their report: the share of decisions per outcome type (open, click,
conversion, unsubscribe, complaint, bounce) per slot, arm, group and segment value, against a
one-decision-at-a-time twin; partition merges and snapshots; the rates' Wilson intervals and
Newcombe's on hand-checked numbers; the lift's clustered intervals against their twin and over
seeded runs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.engine import snapshot as _snapshot
from bandit.engine.intervals import clusters_of, fixed_interval
from bandit.engine.join import Joiner, subject_key
from bandit.engine.report import outcome_rate, rate_lift
from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES, CampaignSpec, Click, Impression, JoinedEvent
from bandit.wire import Joined, SlotChoice
from tests import reference, streamdata

_SLOTS = {"subject": ["plain", "urgent", "quiz"], "artwork": ["action", "calm"],
          "hour": ["h09", "h18"]}
_decisions = st.lists(st.fixed_dictionaries({
    "slots": st.permutations(list(_SLOTS)).flatmap(lambda names: st.integers(1, 3).flatmap(
        lambda k: st.tuples(*(st.tuples(st.just(n), st.sampled_from(_SLOTS[n]),
                                        st.floats(0.01, 1.0)) for n in names[:k])))),
    "segments": st.dictionaries(st.sampled_from(["region", "age"]), st.sampled_from("abc")),
    "holdout": st.booleans(),
    "clicks": st.lists(st.tuples(st.sampled_from([None, *_SLOTS]),
                                 st.sampled_from([1.0, 0.5, -2.0, 3.25])), max_size=2),
    "outcomes": st.lists(st.integers(0, 3), min_size=len(OUTCOME_TYPES),
                         max_size=len(OUTCOME_TYPES)),
    "partition": st.integers(0, 2),
    "user": st.integers(0, 9)}), min_size=1, max_size=40)  # subscribers get several decisions


def _closed(decisions, spec):
    """The join's closed columns of ``decisions``, with their outcome counts set."""
    events = []
    for i, d in enumerate(decisions):
        imp = Impression(event_id=f"i{i}", decision_id=f"{i:032x}", campaign=spec.name,
                         user_id=f"u{d['user']}", ts=i, holdout=d["holdout"],
                         segments=d["segments"],
                         slots={name: {"arm": arm, "propensity": p}
                                for name, arm, p in d["slots"]})
        events.append(imp)
        events += [Click(event_id=f"c{i}-{j}", decision_id=imp.decision_id, campaign=spec.name,
                         ts=i, reward=reward, slot=slot)
                   for j, (slot, reward) in enumerate(d["clicks"])
                   if slot is None or slot in imp.slots]
    closed = Joiner(lambda name: spec).add(events, watermark=10 * streamdata.WINDOW_MS).closed
    closed.outcomes = np.array([decisions[int(i, 16)]["outcomes"] for i in closed.ids],
                               dtype=np.int32).reshape(-1, len(OUTCOME_TYPES))
    return closed


def _joined(closed):
    """``closed.events()`` carrying their outcome counts."""
    return [e.model_copy(update={"outcomes": {
                t: int(k) for t, k in zip(OUTCOME_TYPES, row, strict=True) if k}})
            for e, row in zip(closed.events(), closed.outcomes.tolist(), strict=True)]


def _engine(spec=None):
    e = Engine()
    e.create_campaign(spec or streamdata.spec())
    return e


def _tallies(engine, name="news"):
    """Every outcome tally of campaign ``name`` as plain values, in the dicts' order."""
    c = engine._campaigns[name]
    plain = lambda d: [(k, (t.n, t.reached, t.events)) for k, t in d.items()]  # noqa: E731
    return ({s.spec.name: (plain(s.outcome_tally), plain(s.segment_outcomes))
             for s in c.slots if s.outcome_tally}, plain(c.outcomes))


@settings(max_examples=60, deadline=None)
@given(decisions=_decisions)
def test_outcome_tallies_from_columns_and_from_events_equal_the_one_at_a_time_twin(decisions):
    spec = streamdata.spec()
    closed = _closed(decisions, spec)
    by_columns, by_events = _engine(spec), _engine(spec)
    by_columns.learn_closed(closed)
    joined = _joined(closed)
    by_events.learn(joined)
    slots, campaign = reference.outcome_tallies(joined, OUTCOME_TYPES)
    expected = ({slot: (list(groups.items()), list(segments.items()))
                 for slot, (groups, segments) in slots.items()}, list(campaign.items()))
    assert _tallies(by_columns) == _tallies(by_events) == expected
    assert by_columns.to_bytes() == by_events.to_bytes()
    for s in by_columns._campaigns["news"].slots:  # reward per (arm, group) adds up per arm
        for arm, t in s.arm_tally.items():
            assert sum(g.n for (a, _), g in s.group_tally.items() if a == arm) == t.n


@settings(max_examples=40, deadline=None)
@given(decisions=_decisions)
def test_merged_partitions_hold_the_tallies_of_one_engine(decisions):
    spec = streamdata.spec()
    one = _engine(spec)
    one.learn_closed(_closed(decisions, spec))
    parts = []
    for p in range(3):
        mine = [d for d in decisions if d["partition"] == p]
        part = _engine(spec)
        if mine:
            part.learn_closed(_closed(mine, spec))
        parts.append(part)
    merged = _engine(spec)
    merged.absorb(parts)
    # Outcome counts are integers, the click rewards dyadic: every sum is exact, in any order.
    (slots_m, campaign_m), (slots_o, campaign_o) = _tallies(merged), _tallies(one)
    assert dict(campaign_m) == dict(campaign_o)
    assert {k: (dict(g), dict(s)) for k, (g, s) in slots_m.items()} == {
        k: (dict(g), dict(s)) for k, (g, s) in slots_o.items()}
    for sm, so in zip(merged._campaigns["news"].slots, one._campaigns["news"].slots,
                      strict=True):
        assert {k: vars(t) for k, t in sm.group_tally.items()} == {
            k: vars(t) for k, t in so.group_tally.items()}
    assert merged.report("news").model_dump() == one.report("news").model_dump() | {
        "model_version": merged.report("news").model_version}


def test_snapshot_keeps_outcome_tallies_and_an_older_snapshot_loads_without_them():
    spec = streamdata.spec()
    rng = np.random.default_rng(5)
    decisions = [{"slots": (("subject", ["plain", "urgent", "quiz"][i % 3], 0.5),
                            ("hour", ["h09", "h18"][i % 2], 0.5)),
                  "segments": {"region": "ns"[i % 2]}, "holdout": bool(i % 5 == 0),
                  "clicks": [(None, 1.0)] if i % 4 == 0 else [],
                  "outcomes": rng.integers(0, 2, len(OUTCOME_TYPES)).tolist(), "partition": 0,
                  "user": i % 25}
                 for i in range(60)]
    engine = _engine(spec)
    engine.learn_closed(_closed(decisions, spec))
    restored = Engine.from_bytes(engine.to_bytes())[0]
    assert _tallies(restored) == _tallies(engine)
    assert restored.report("news") == engine.report("news")
    assert restored.to_bytes() == engine.to_bytes()

    # What the writer of before this change wrote: no outcome tallies, no (arm, group) sums.
    meta, arrays = _snapshot.read(engine.to_bytes(), "x", False)
    for key in [k for k in arrays if k.startswith("clustered/")]:
        del arrays[key]
    for item in meta["campaigns"]:
        del item["outcomes"]
        for slot in item["slots"]:
            del slot["groups"]
            slot["segments"] = [entry[:4] for entry in slot["segments"]]
    older = Engine.from_bytes(_snapshot.to_bytes(meta, arrays))[0]
    assert _tallies(older) == ({}, [])
    report, before = older.report("news"), engine.report("news")
    assert (report.impressions, report.personalized_ctr) == (
        before.impressions, before.personalized_ctr)
    # No clustered sums: the lifts have no interval until decisions are learned again.
    assert report.lift is None and before.lift is not None
    assert report.groups["personalized"].decisions == before.groups["personalized"].decisions
    assert report.groups["personalized"].outcomes["click"].rate is None  # no outcome data
    assert set(report.outcome_lift) == {"unsubscribe", "complaint"}
    assert all(x.lift is None for x in report.outcome_lift.values())
    again = Engine.from_bytes(older.to_bytes())[0]  # and it saves and loads again
    assert again.report("news") == report


def test_wilson_and_newcombe_intervals_on_hand_checked_numbers():
    # Wilson 4/10: (0.4 + z²/20 ± z·sqrt(0.024 + z²/400)) / (1 + z²/10), z = 1.95996.
    rate, interval = outcome_rate(4, 10)
    assert rate == 0.4
    assert (interval.low, interval.high) == pytest.approx((0.16818, 0.68733), abs=5e-6)
    # 0/10: from 0 to z²/(10 + z²).
    _, zero = outcome_rate(0, 10)
    assert (zero.low, zero.high) == pytest.approx((0.0, 3.841459 / 13.841459), abs=1e-7)
    _, full = outcome_rate(10, 10)
    assert (full.low, full.high) == pytest.approx((1 - 3.841459 / 13.841459, 1.0), abs=1e-7)
    assert outcome_rate(0, 0) == (None, None)
    # Newcombe (1998), Stat. Med. 17:873, table II, example (a): 56/70 - 48/80, method 10.
    lift = rate_lift((56, 70), (48, 80))
    assert (lift.estimate, lift.low, lift.high) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-5)
    assert rate_lift((1, 1), (0, 0)) is None


def _spec():
    return CampaignSpec.model_validate({
        "name": "w", "holdout": 0.1, "attribution_window_ms": 1000,
        "slots": [{"name": "subject", "arms": [{"id": "plain"}, {"id": "bold"}],
                   "default_arm": "plain", "policy": {"kind": "beta_ts"}}]})


def _event(i, arm, holdout, outcomes, reward=0.0):
    return JoinedEvent(decision_id=f"{i:032x}", campaign="w",
                       subject=subject_key(f"u{i}").hex(), ts=i,
                       slots={"subject": {"arm": arm, "propensity": 0.5}}, holdout=holdout,
                       outcomes=outcomes, rewards={"subject": reward})


def test_report_rates_and_lift_on_a_hand_checked_campaign():
    """Personalized: 70 decisions on "bold", 56 clicked (one twice), 7 converted, 2 opened;
    holdout: 80 on "plain", 48 clicked, 1 unsubscribed, each decision its own subscriber. The
    lifts' intervals are the clustered ones of the one-at-a-time twin."""
    events = [_event(i, "bold", False,
                     ({"click": 2 if i == 0 else 1} if i < 56 else {})
                     | ({"conversion": 1} if i < 7 else {}) | ({"open": 3} if i < 2 else {}),
                     reward=1.0 if i < 56 else 0.0)
              for i in range(70)]
    events += [_event(100 + i, "plain", True, ({"click": 1} if i < 48 else {})
                      | ({"unsubscribe": 1} if i == 79 else {}), reward=1.0 if i < 48 else 0.0)
               for i in range(80)]
    engine = Engine()
    engine.create_campaign(_spec())
    engine.learn(events)
    report = engine.report("w")
    personalized, holdout = report.groups["personalized"], report.groups["holdout"]
    assert (personalized.decisions, personalized.reward) == (70, 56.0)
    assert (holdout.decisions, holdout.reward) == (80, 48.0)
    click = personalized.outcomes["click"]
    assert (click.decisions, click.reached, click.events, click.rate) == (70, 56, 57, 0.8)
    assert personalized.outcomes["conversion"].events == 7
    assert (personalized.outcomes["open"].reached, personalized.outcomes["open"].events) == (2, 6)
    assert holdout.outcomes["unsubscribe"].rate == 1 / 80
    assert personalized.outcomes["bounce"].rate == 0.0
    # Lift for the types with events, and always for the guardrails.
    assert list(report.outcome_lift) == ["open", "click", "conversion", "unsubscribe",
                                         "complaint"]
    lift = report.outcome_lift["click"]
    assert (lift.personalized, lift.holdout) == (70, 80)
    clicked = np.array([e.outcomes.get("click", 0) > 0 for e in events], dtype=float)
    groups = np.array([not e.holdout for e in events], dtype=int)
    clusters = clusters_of([e.subject for e in events])
    fixed = fixed_interval(*reference.clustered_difference(groups, clicked, clusters))
    assert (lift.lift.estimate, lift.lift.low, lift.lift.high) == pytest.approx(
        (0.2, fixed.low, fixed.high), rel=1e-12)
    assert lift.always_valid.low < lift.lift.low and lift.always_valid.high > lift.lift.high
    complaint = report.outcome_lift["complaint"].lift
    # No complaint in either group: no variation to measure, the clustered interval is the point.
    assert (complaint.estimate, complaint.low, complaint.high) == (0.0, 0.0, 0.0)
    assert report.outcome_lift["unsubscribe"].lift.estimate == pytest.approx(-1 / 80)
    # The reward lift: personalized minus holdout mean reward, the same two intervals.
    assert report.lift.estimate == pytest.approx(0.2)
    assert report.lift_always_valid.low < report.lift.low
    # Per slot and arm: the slot's groups and lift are the campaign's (one slot), the arms'
    # rates their own decisions'.
    slot = report.slots[0]
    assert slot.groups == report.groups and slot.outcome_lift == report.outcome_lift
    arms = {a.arm: a for a in slot.arms}
    assert arms["bold"].outcomes["click"].rate == 0.8
    assert set(arms["bold"].groups) == {"personalized"}
    assert set(arms["plain"].groups) == {"holdout"}
    assert arms["plain"].groups["holdout"].outcomes["unsubscribe"].reached == 1
    # Without a holdout decision, the lift has no interval but names its n.
    alone = Engine()
    alone.create_campaign(_spec())
    alone.learn(events[:70])
    none = alone.report("w").outcome_lift["unsubscribe"]
    assert (none.personalized, none.holdout, none.lift) == (70, 0, None)


@pytest.mark.parametrize("bad, reason", [({"clicks": 1}, "not an outcome type"),
                                         ({"click": -1}, "count -1 is negative")])
def test_learning_refuses_unknown_outcome_types_and_negative_counts(bad, reason):
    engine = Engine()
    engine.create_campaign(_spec())
    good = Joined(decision_id="0" * 32, campaign="w", subject="0" * 32, ts=0,
                  slots={"subject": SlotChoice(arm="plain", propensity=1.0)},
                  rewards={"subject": 0.0})
    bad_event = Joined(decision_id="1" * 32, campaign="w", subject="0" * 32, ts=0,
                       slots={"subject": SlotChoice(arm="plain", propensity=1.0)}, outcomes=bad,
                       rewards={"subject": 0.0})
    with pytest.raises(InvalidInputError, match=f"event 1: outcomes: .*{reason}"):
        engine.learn([good, bad_event])
    assert engine.report("w").impressions == 0  # nothing of the batch was learned


def test_rate_and_lift_intervals_cover_the_true_rates_in_95_percent_of_seeded_runs():
    """400 seeded campaigns (personalized click rate 0.3 over 150 decisions, holdout 0.2 over
    100, a subscriber each) through Engine.learn and the report: the 95% intervals of the
    personalized rate and of the lift (fixed-horizon) each cover the truth in 92% to 98% of
    the runs. (Subscribers in several sends: tests/bandit/engine/test_lift_coverage.py.)"""
    subjects = [subject_key(f"u{i}").hex() for i in range(250)]
    runs, covered_rate, covered_lift = 400, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        clicks = np.concatenate([rng.random(150) < 0.3, rng.random(100) < 0.2])
        events = [Joined(decision_id=f"{i:032x}", campaign="w", subject=subjects[i], ts=i,
                         slots={"subject": SlotChoice(arm="bold" if i < 150 else "plain",
                                                      propensity=0.5)},
                         holdout=i >= 150, outcomes={"click": 1} if c else {},
                         rewards={"subject": float(c)})
                  for i, c in enumerate(clicks.tolist())]
        engine = Engine()
        engine.create_campaign(_spec())
        engine.learn(events)
        report = engine.report("w")
        rate = report.groups["personalized"].outcomes["click"].interval
        lift = report.outcome_lift["click"].lift
        covered_rate += rate.low <= 0.3 <= rate.high
        covered_lift += lift.low <= 0.1 <= lift.high
    assert 0.92 <= covered_rate / runs <= 0.98
    assert 0.92 <= covered_lift / runs <= 0.98
