"""The Engine: campaigns, decisions (holdout, consent, pause, eligibility, conditioning),
reproducibility, learning through the attribution join, report, erasure and snapshots."""

import re
import tracemalloc
import zlib

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine, decision_draws, decision_seeds
from bandit.engine.encoding import _Encoder
from bandit.errors import (
    ConflictError,
    IncompatibleStateError,
    InvalidInputError,
    NotFoundError,
    UnknownArmError,
)
from bandit.models import (
    Arm,
    CampaignSpec,
    Click,
    DecisionRequest,
    Impression,
    JoinedEvent,
)

SUBJECTS = ["urgency", "curiosity", "offer", "personal", "plain"]


def campaign_spec(**overrides) -> CampaignSpec:
    spec = {
        "name": "weekly",
        "holdout": 0.1,
        "attribution_window_ms": 1000,
        "context": {
            "features": [{"kind": "numeric", "name": "engagement"},
                         {"kind": "categorical", "name": "style", "values": ["deal", "busy"]}],
            "segments": ["region"],
        },
        "slots": [
            {"name": "subject", "arms": [{"id": a} for a in SUBJECTS], "default_arm": "plain",
             "policy": {"kind": "lin_ucb", "alpha": 0.5}},
            {"name": "artwork", "default_arm": "drama", "policy": {"kind": "hybrid_lin_ucb"},
             "arms": [{"id": a, "features": {"scene": a}} for a in ["action", "drama", "comedy"]],
             "arm_features": [{"kind": "categorical", "name": "scene",
                               "values": ["action", "drama", "comedy"]}]},
            {"name": "offer", "default_arm": "o0", "policy": {"kind": "lin_ts"},
             "condition_on": ["subject"],
             "arms": [{"id": f"o{p}"} for p in (0, 10, 20, 30)],
             "eligibility": [{"arm": "o30", "feature": "region", "op": "eq", "value": "eu"}]},
            {"name": "send_hour", "default_arm": "h9", "policy": {"kind": "beta_ts"},
             "arms": [{"id": f"h{h}"} for h in range(24)]},
        ],
    }
    spec.update(overrides)
    return CampaignSpec.model_validate(spec)


def requests(n, *, seed=0, consent=True, explain=False):
    rng = np.random.default_rng(seed)
    return [
        DecisionRequest(campaign="weekly", user_id=f"user-{seed}-{i}",
                        context={"engagement": float(rng.normal()),
                                 "style": ["deal", "busy", "new"][i % 3]},
                        segments={"region": ["eu", "us"][i % 2]}, consent=consent, explain=explain)
        for i in range(n)
    ]


@pytest.fixture
def engine():
    e = Engine(seed=3)
    e.create_campaign(campaign_spec())
    return e


def test_decisions_name_declared_arms_with_propensities(engine):
    reqs = requests(300)
    decisions = engine.decide_many("weekly", reqs)
    spec = engine.campaign("weekly")
    assert len(decisions) == 300 and len({d.decision_id for d in decisions}) == 300
    for d in decisions:
        assert [s.slot for s in d.slots] == [s.name for s in spec.slots]
        for s, slot_spec in zip(d.slots, spec.slots, strict=True):
            assert s.arm in {a.id for a in slot_spec.arms}
            assert 0 < s.propensity <= 1
        if d.holdout:  # holdout subscribers get every default arm, for sure
            assert [(s.arm, s.propensity) for s in d.slots] == [
                (x.default_arm, 1.0) for x in spec.slots]


def test_eligibility_rule_keeps_an_arm_out_of_a_segment(engine):
    decisions = engine.decide_many("weekly", requests(400))
    us = [d for d, r in zip(decisions, requests(400), strict=True) if r.segments["region"] == "us"]
    assert all(d.slots[2].arm != "o30" for d in us)
    eu = [d for d, r in zip(decisions, requests(400), strict=True) if r.segments["region"] == "eu"]
    assert any(d.slots[2].arm == "o30" for d in eu)


# Derandomized: a share test is a tail bound, and a search over salts finds the tail (a run
# found salt "È" at 4.1 sd); fixed examples keep it a test of the hash, not of luck.
@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(fraction=st.sampled_from([0.0, 0.05, 0.2, 0.5]), salt=st.text(min_size=1, max_size=8))
def test_holdout_share_matches_the_fraction_and_is_stable(fraction, salt):
    e = Engine()
    e.create_campaign(campaign_spec(name=f"c-{zlib.crc32(salt.encode()) % 10**6}",
                                    holdout=fraction))
    name = e.campaigns()[0].name
    users = [f"{salt}-{i}" for i in range(4000)]
    flags = np.array([e.in_holdout(name, u) for u in users])
    sd = np.sqrt(fraction * (1 - fraction) / len(users))
    assert abs(flags.mean() - fraction) <= 5 * sd + 1e-12
    assert [e.in_holdout(name, u) for u in users[:50]] == list(flags[:50])


def test_consent_less_requests_ignore_and_do_not_log_their_context(engine):
    reqs = [DecisionRequest(campaign="weekly", user_id=f"u{i}", consent=False,
                            context={"not-a-feature": "anything"}) for i in range(50)]
    batch = engine.decide_batch("weekly", reqs)  # the context is not even read
    impressions = batch.impressions(reqs, ts_ms=0)
    assert all(imp.context is None for imp in impressions)
    assert all(0 < p <= 1 for s in batch.slots for p in s.propensity)


def test_a_decision_replays_from_its_id_alone(engine):
    reqs = requests(60)
    batch = engine.decide_batch("weekly", reqs)
    alone = engine.decide_batch("weekly", reqs[:1])  # another id, another draw; same machinery
    assert alone.decision_ids[0] != batch.decision_ids[0]
    seeds = decision_seeds(batch.decision_ids)
    k = len(SUBJECTS)
    draws = decision_draws(seeds, 0, 2 + k)
    np.testing.assert_array_equal(draws[7:8], decision_draws(seeds[7:8], 0, 2 + k))
    assert ((draws >= 0) & (draws < 1)).all() and abs(draws.mean() - 0.5) < 0.05


def test_pause_sends_everyone_to_default_arms_until_resumed(engine):
    engine.pause("weekly")
    assert engine.is_paused("weekly")
    for d in engine.decide_many("weekly", requests(40)):
        assert [s.arm for s in d.slots] == ["plain", "drama", "o0", "h9"]
    engine.pause("weekly", False)
    arms = {d.slots[0].arm for d in engine.decide_many("weekly", requests(200))}
    assert len(arms) > 1


def test_arms_can_be_added_and_retired_while_running(engine):
    engine.retire_arm("weekly", "subject", "urgency")
    engine.add_arm("weekly", "artwork", Arm(id="horror", features={"scene": "action"}))
    engine.add_arm("weekly", "subject", Arm(id="question"))
    decisions = engine.decide_many("weekly", requests(600))
    assert "urgency" not in {d.slots[0].arm for d in decisions}
    assert "question" in {d.slots[0].arm for d in decisions}
    assert "horror" in {d.slots[1].arm for d in decisions}
    assert "question" in engine.active_arms("weekly", "subject")
    cases = [
        (lambda: engine.retire_arm("weekly", "subject", "plain"), ConflictError, "default arm"),
        (lambda: engine.retire_arm("weekly", "subject", "nope"), UnknownArmError, "nope"),
        (lambda: engine.add_arm("weekly", "subject", Arm(id="offer")), ConflictError, "exists"),
        (lambda: engine.add_arm("weekly", "artwork", Arm(id="x", features={"tone": "a"})),
         InvalidInputError, "unknown arm features"),
        (lambda: engine.add_arm("weekly", "nope", Arm(id="x")), NotFoundError, "no slot"),
        (lambda: engine.create_campaign(campaign_spec()), ConflictError, "already exists"),
        (lambda: engine.decide(DecisionRequest(campaign="other", user_id="u")), NotFoundError,
         "no campaign"),
        (lambda: engine.decide(DecisionRequest(campaign="weekly", user_id="u",
                                               context={"engagment": 1.0})),
         InvalidInputError, "unknown feature 'engagment'"),
        (lambda: engine.decide(DecisionRequest(campaign="weekly", user_id="u",
                                               context={"style": "deal"})),
         InvalidInputError, "missing numeric feature 'engagement'"),
        (lambda: engine.decide(DecisionRequest(campaign="weekly", user_id="u",
                                               context={"engagement": "high"})),
         InvalidInputError, "expects a number"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_explanations_name_the_features_that_mattered(engine):
    decisions = engine.decide_many("weekly", requests(20, explain=True))
    explained = [d for d in decisions if not d.holdout]
    assert explained and all(d.slots[0].explanation is not None for d in explained)
    columns = {"(intercept)", "engagement", "style=deal", "style=busy", "style=(unknown)"}
    for d in explained:
        assert {c.feature for c in d.slots[0].explanation} <= columns


def _play(engine, n, seed, ts, click_rule):
    """Decide for n subscribers, log impressions at ts, click by rule, return the batch."""
    reqs = requests(n, seed=seed)
    batch = engine.decide_batch("weekly", reqs)
    events = batch.impressions(reqs, ts_ms=ts)
    clicks = [Click(event_id=f"c-{d}", decision_id=d, campaign="weekly", ts=ts + 10)
              for d, r in zip(batch.decision_ids, reqs, strict=True) if click_rule(r)]
    engine.record(events + clicks)
    return batch


def test_recorded_events_are_joined_learned_and_reported(engine):
    _play(engine, 500, 1, ts=0, click_rule=lambda r: r.context["style"] == "deal")
    assert engine.model_version("weekly") == 0  # windows still open
    _play(engine, 10, 2, ts=5000, click_rule=lambda r: False)  # the watermark passes them
    assert engine.model_version("weekly") == 1
    report = engine.report("weekly")
    assert report.impressions == 500
    subject = report.slots[0]
    assert sum(a.impressions for a in subject.arms) == 500
    assert abs(sum(a.share for a in subject.arms) - 1) < 1e-12
    clicks = sum(a.reward for a in subject.arms)
    assert clicks == sum(1 for r in requests(500, seed=1) if r.context["style"] == "deal")
    assert report.lift is not None and report.lift.low <= report.lift.estimate <= report.lift.high
    assert {(s.segment, s.value) for s in subject.segments} == {("region", "eu"), ("region", "us")}


def test_record_refuses_bad_events_before_changing_anything(engine):
    reqs = requests(3)
    events = engine.decide_batch("weekly", reqs).impressions(reqs, ts_ms=0)
    bad = Impression.model_validate({**events[1].model_dump(),
                                     "slots": {"subject": {"arm": "nope", "propensity": 0.5}}})
    with pytest.raises(InvalidInputError, match="event 1 .*no arm 'nope'"):
        engine.record([events[0], bad])
    assert engine.record(events) == 3  # nothing of the refused batch was kept


def test_record_counts_only_its_own_events(engine):
    """A click waits for its impression; when a later call's time turns it into an orphan,
    that call still counts what its own events did."""
    early = Click(event_id="c-early", decision_id="e" * 32, campaign="weekly", ts=0)
    assert engine.record([early]) == 1  # held: its impression may still come
    reqs = requests(1)
    later = engine.decide_batch("weekly", reqs).impressions(reqs, ts_ms=100_000)
    assert engine.record(later) == 1
    assert engine.rejected_events == 1  # the orphan, counted where orphans are


def test_erasure_drops_pending_decisions(engine):
    reqs = requests(10)
    engine.record(engine.decide_batch("weekly", reqs).impressions(reqs, ts_ms=0))
    assert engine.erase(reqs[3].user_id, 0).dropped == 1
    assert engine.erase(reqs[3].user_id, 0).dropped == 0
    _play(engine, 1, 9, ts=10_000, click_rule=lambda r: False)
    assert engine.report("weekly").impressions == 9


def test_an_erased_subject_leaves_the_snapshot_and_is_not_learned_from_a_replay(engine):
    reqs = requests(10)
    alice = DecisionRequest(campaign="weekly", user_id="alice@example.org",
                            context={"engagement": 0.5, "style": "alice-style"},
                            segments={"region": "alice-town"})
    batch = engine.decide_batch("weekly", [*reqs, alice])
    events = batch.impressions([*reqs, alice], ts_ms=0)
    engine.record(events)
    secrets = [b"alice-style", b"alice-town"]
    assert all(s in engine.to_bytes() for s in secrets)
    assert b"alice@example.org" not in engine.to_bytes()  # the join keeps subject keys only
    assert engine.erase("alice@example.org", 0).dropped == 1
    assert not any(s in engine.to_bytes() for s in secrets)
    restored = Engine.from_bytes(engine.to_bytes())[0]
    replayed = events[-1].model_copy(update={"event_id": "sent again"})
    assert restored.record([replayed]) == 0  # refused: the decision predates the erasure
    assert not any(s in restored.to_bytes() for s in secrets)
    _play(restored, 1, 9, ts=10_000, click_rule=lambda r: False)
    report = restored.report("weekly")
    assert report.impressions == 10
    assert "alice-town" not in {s.value for slot in report.slots for s in slot.segments}


def test_snapshot_round_trip_keeps_everything(engine, tmp_path):
    _play(engine, 300, 1, ts=0, click_rule=lambda r: r.context["style"] == "busy")
    _play(engine, 50, 2, ts=5000, click_rule=lambda r: True)  # closes the first 300, opens 50
    engine.add_arm("weekly", "subject", Arm(id="question"))
    engine.retire_arm("weekly", "subject", "urgency")
    engine.pause("weekly")
    path = tmp_path / "engine.snapshot"
    engine.save(path)
    restored = Engine.load(path)
    assert restored.report("weekly") == engine.report("weekly")
    assert restored.campaign("weekly") == engine.campaign("weekly")
    for a, b in zip(engine._campaigns["weekly"].slots, restored._campaigns["weekly"].slots,
                    strict=True):
        for name, value in a.policy.state()["arrays"].items():
            np.testing.assert_array_equal(b.policy.state()["arrays"][name], value)
    # The 50 open windows came along: closing them counts them once.
    for e in (engine, restored):
        e.pause("weekly", False)
        _play(e, 1, 3, ts=20_000, click_rule=lambda r: False)
    assert restored.report("weekly") == engine.report("weekly")
    assert restored.report("weekly").impressions == 350


@pytest.mark.parametrize("content", [b"", b"not a snapshot", None])
def test_corrupt_or_foreign_snapshot_is_refused(tmp_path, content):
    path = tmp_path / "bad.snapshot"
    if content is None:  # a real npz, someone else's
        with path.open("wb") as f:
            np.savez(f, meta=np.frombuffer(b'{"magic": "other"}', dtype=np.uint8))
    else:
        path.write_bytes(content)
    with pytest.raises(IncompatibleStateError, match="snapshot"):
        Engine.load(path)


def test_warm_up_makes_the_engine_ready():
    e = Engine()
    assert not e.ready
    e.warm_up()
    assert e.ready and e.campaigns() == []


def test_a_spec_too_large_to_hold_is_refused_with_its_size():
    big = {"kind": "categorical", "name": "zip", "values": [f"z{i}" for i in range(256)]}
    spec = campaign_spec(context={"features": [{**big, "name": f"zip{i}"} for i in range(4)],
                                  "segments": ["region"]})
    with pytest.raises(InvalidInputError, match="slot 'artwork': hybrid_lin_ucb .* MiB of state"):
        Engine().create_campaign(spec)


def _segment_events(n, clicks, region, band, start):
    """n joined decisions of one segment value, the first `clicks` rewarded, arms in turn."""
    return [JoinedEvent(decision_id=f"{start + i:032x}", campaign="weekly",
                        subject=f"{start + i:032x}",
                        ts=0, context={"engagement": 0.0, "style": "deal"},
                        segments={"region": region, "band": band},
                        slots={"subject": {"arm": SUBJECTS[i % 5], "propensity": 0.2}},
                        rewards={"subject": float(i < clicks)})
            for i in range(n)]


def test_bias_audit_flags_real_large_reward_gaps_only(engine):
    # eu 30% vs us 5%: real and large. Bands a/b: 17.5% each. Allocation is even everywhere.
    engine.learn(_segment_events(200, 60, "eu", "a", 0) + _segment_events(200, 25, "us", "b", 200)
                 + _segment_events(200, 45, "eu", "b", 400)
                 + _segment_events(200, 10, "us", "a", 600))
    audit = {(s.segment, s.value): s for s in engine.report("weekly").slots[0].segments}
    eu, us = audit[("region", "eu")], audit[("region", "us")]
    assert eu.flagged and us.flagged and "reward rate" in eu.reason
    assert "allocation" not in eu.reason
    assert eu.ctr_gap.low > 0 and us.ctr_gap.high < 0
    assert eu.ctr_gap.estimate == pytest.approx(105 / 400 - 35 / 400)
    assert not audit[("band", "a")].flagged and not audit[("band", "b")].flagged
    assert audit[("band", "a")].ctr_gap.low < 0 < audit[("band", "a")].ctr_gap.high


def test_bias_audit_does_not_flag_tiny_samples():
    e = Engine(seed=3)
    e.create_campaign(campaign_spec())
    e.learn(_segment_events(20, 20, "eu", "a", 0) + _segment_events(20, 0, "us", "a", 20))
    segments = e.report("weekly").slots[0].segments
    assert {s.value for s in segments} == {"eu", "us", "a"}
    assert not any(s.flagged for s in segments)  # 100% vs 0%, but 20 impressions each


@pytest.fixture(scope="module")
def trained():
    """An engine that learned one send, so that its policies no longer choose uniformly."""
    e = Engine(seed=5, id_seed=5)  # seeded ids: the frequency test below sees the same draws
    e.create_campaign(campaign_spec())
    _play(e, 600, 1, ts=0, click_rule=lambda r: r.context["style"] == "deal")
    _play(e, 1, 2, ts=5000, click_rule=lambda r: False)
    assert e.model_version("weekly") == 1
    return e


@settings(max_examples=8, deadline=None, derandomize=True)
@given(consent=st.booleans(), region=st.sampled_from(["eu", "us"]),
       engagement=st.floats(-3, 3), user=st.integers(0, 10**6))
def test_logged_propensities_are_choice_frequencies_summing_to_one(trained, consent, region,
                                                                   engagement, user):
    """The same subscriber decided n times (fresh ids, fresh draws): per slot, each arm's logged
    propensity is the frequency it is chosen with, and they add up to 1 (given the earlier
    choices a slot conditions on)."""
    n = 2500
    request = DecisionRequest(campaign="weekly", user_id=f"p{user}", consent=consent,
                              context={"engagement": engagement, "style": "busy"},
                              segments={"region": region})
    batch = trained.decide_batch("weekly", [request] * n)
    spec = trained.campaign("weekly")
    arms = {s.slot: [s.arm_ids[a] for a in s.arms.tolist()] for s in batch.slots}
    for slot_spec, s in zip(spec.slots, batch.slots, strict=True):
        given_earlier = list(zip(*(arms[prev] for prev in slot_spec.condition_on),
                                 strict=True)) or [()] * n
        logged: dict[tuple, dict[str, float]] = {}
        counts: dict[tuple, dict[str, int]] = {}
        for key, arm, p in zip(given_earlier, arms[s.slot], s.propensity.tolist(), strict=True):
            assert logged.setdefault(key, {}).setdefault(arm, p) == pytest.approx(p, abs=1e-12)
            counts.setdefault(key, {}).setdefault(arm, 0)
            counts[key][arm] += 1
        for key, ps in logged.items():
            total = sum(counts[key].values())
            # An arm unseen in `total` draws has p < 20 / total (else unseen with odds e^-20).
            unseen = (len(s.arm_ids) - len(ps)) * min(1.0, 20 / total)
            assert 1 - unseen - 1e-9 <= sum(ps.values()) <= 1 + 1e-9
            for arm, p in ps.items():
                assert abs(counts[key][arm] / total - p) <= 5 * np.sqrt(p * (1 - p) / total) + 1e-9
        if region == "us" and s.slot == "offer":
            assert "o30" not in arms["offer"]  # eligibility: the mass is on the others


@settings(max_examples=30, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=20))
def test_consent_less_requests_never_log_context(trained, flags):
    reqs = [DecisionRequest(campaign="weekly", user_id=f"c{i}", consent=flag,
                            context={"engagement": float(i), "style": "deal"},
                            segments={"region": "eu"}) for i, flag in enumerate(flags)]
    impressions = trained.decide_batch("weekly", reqs).impressions(reqs, ts_ms=0)
    for imp, r in zip(impressions, reqs, strict=True):
        assert imp.context == (r.context if r.consent else None)
        assert "engagement" not in imp.model_dump_json() or r.consent


_SLOTS = {"subject": ["plain", "urgent", "quiz"], "artwork": ["action", "calm"],
          "hour": ["h09", "h18"]}
_decisions = st.lists(st.fixed_dictionaries({
    "slots": st.permutations(list(_SLOTS)).flatmap(lambda names: st.integers(1, 3).flatmap(
        lambda k: st.tuples(*(st.tuples(st.just(n), st.sampled_from(_SLOTS[n]),
                                        st.floats(0.01, 1.0)) for n in names[:k])))),
    "context": st.none() | st.tuples(st.floats(-4, 4), st.sampled_from(["free", "pro", "gold",
                                                                          None]), st.booleans()),
    "segments": st.dictionaries(st.sampled_from(["region", "age"]), st.sampled_from("abc")),
    "holdout": st.booleans(),
    "clicks": st.lists(st.tuples(st.sampled_from([None, *_SLOTS]),
                                 st.sampled_from([1.0, 0.5, -2.0, 3.25])), max_size=3)}),
    min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(decisions=_decisions, as_wire=st.booleans())
def test_learning_from_the_join_columns_equals_learning_its_events(decisions, as_wire):
    """Engine.learn_closed (the join's columns) and Engine.learn (events) give the same model,
    byte for byte, whatever the decisions' slot subsets and orders, contexts and segments."""
    from bandit import wire
    from bandit.engine.join import Joiner
    from streams.codec import encode
    from tests import streamdata

    spec = streamdata.spec()
    events = []
    for i, d in enumerate(decisions):
        context = None
        if d["context"] is not None:
            engagement, plan, plan_first = d["context"]
            items = [("engagement", engagement)] + ([("plan", plan)] if plan else [])
            context = dict(items[::-1] if plan_first else items)
        imp = Impression(event_id=f"i{i}", decision_id=f"{i:032x}", campaign="news",
                         user_id=f"u{i}", ts=i, holdout=d["holdout"], context=context,
                         segments=d["segments"], slots={
                             name: {"arm": arm, "propensity": p} for name, arm, p in d["slots"]})
        events.append(imp)
        for j, (slot, reward) in enumerate(d["clicks"]):
            if slot is None or slot in imp.slots:
                events.append(Click(event_id=f"c{i}-{j}", decision_id=imp.decision_id,
                                    campaign="news", ts=i, reward=reward, slot=slot))
    if as_wire:
        events = [wire.EVENTS.decode(encode(e)) for e in events]
    joiner = Joiner(lambda name: spec)
    closed = joiner.add(events, watermark=10 * streamdata.WINDOW_MS).closed
    assert len(closed) == len(decisions)
    by_columns, by_events = Engine(), Engine()
    for engine in (by_columns, by_events):
        engine.create_campaign(spec)
        engine.keep_ledger(1000)  # and the erasure ledgers are the same
    by_columns.learn_closed(closed)
    by_events.learn(closed.events())
    assert by_columns.to_bytes() == by_events.to_bytes()
    models = [JoinedEvent.model_validate_json(wire.joined_json(e)) if as_wire else e
              for e in closed.events()]
    assert [v for _, v in closed.json()] == [
        orjson.dumps(m.model_dump(mode="json", exclude_none=True)) for m in models]


_GOOD_IMP = {"event_id": "i", "decision_id": "0" * 32, "campaign": "news", "user_id": "u",
             "ts": 1, "slots": {"subject": {"arm": "plain", "propensity": 0.5},
                                "hour": {"arm": "h18", "propensity": 0.5}},
             "context": {"engagement": 0.5, "plan": "pro"}}
_GOOD_CLICK = {"event_id": "c", "decision_id": "0" * 32, "campaign": "news", "ts": 2,
               "slot": "hour"}


@pytest.mark.parametrize("bad", [
    Impression(**{**_GOOD_IMP, "campaign": "other"}),
    Impression(**{**_GOOD_IMP, "slots": {"subject": {"arm": "plain", "propensity": 0.5},
                                         "colour": {"arm": "h18", "propensity": 0.5}}}),
    Impression(**{**_GOOD_IMP, "slots": {"hour": {"arm": "plain", "propensity": 0.5}}}),
    Impression(**{**_GOOD_IMP, "slots": {"subject": {"arm": "h18", "propensity": 0.5}}}),
    Impression(**{**_GOOD_IMP, "context": {"engagement": "high"}}),
    Impression(**{**_GOOD_IMP, "context": {"engagement": 1.0, "zone": "x"}}),
    Impression(**{**_GOOD_IMP, "context": {"plan": "free"}}),
    Click(**{**_GOOD_CLICK, "slot": "colour"}), Click(**{**_GOOD_CLICK, "slot": "h18"}),
    Click(**{**_GOOD_CLICK, "campaign": "other"})])
def test_a_batch_checker_refuses_what_check_event_refuses_with_its_message(bad):
    """The worker's per-batch checker remembers what passed: a bad event after good ones of
    the same campaign, slots and arms still gets check_event's error."""
    from tests import streamdata
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    good = [Impression(**_GOOD_IMP), Click(**_GOOD_CLICK), Click(**{**_GOOD_CLICK, "slot": None})]
    with pytest.raises(InvalidInputError) as expected:
        engine.check_event(bad)
    check = engine.event_checker()
    for _ in range(2):
        for e in good:
            engine.check_event(e)
            check(e)
        with pytest.raises(InvalidInputError) as got:
            check(bad)
        assert str(got.value) == str(expected.value)


def _scaled_spec(**feature) -> dict:
    return {"name": "scaled", "context": {"features": [{"kind": "numeric", "name": "x",
                                                        **feature}]},
            "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                       "policy": {"kind": kind}} for kind in ("epsilon_greedy",)]
            + [{"name": "t", "arms": [{"id": "a", "features": {"f": 1.0}}, {"id": "b"}],
                "default_arm": "a", "arm_features": [{"kind": "numeric", "name": "f",
                                                      "default": 0.0}],
                "policy": {"kind": "lin_ucb"}}]}


@pytest.mark.parametrize("value", [1e200, -1e10, 1e9 + 1])
def test_numeric_values_beyond_the_limit_are_refused_before_they_reach_a_policy(value):
    # 1e200 gave epsilon-greedy arm -1 with a NaN propensity, and learned, it turned the
    # linear sums to inf for good; VW reads 32-bit floats. So the engine refuses them.
    engine = Engine(seed=3)
    engine.create_campaign(CampaignSpec.model_validate(_scaled_spec()))
    before = engine.to_bytes()
    why = re.escape(f"feature 'x' is {value!r}, beyond")
    with pytest.raises(InvalidInputError, match=f"row 0: {why}"):
        engine.decide(DecisionRequest(campaign="scaled", user_id="u", context={"x": value}))
    rows = [DecisionRequest(campaign="scaled", user_id=f"u{i}", context={"x": 0.5})
            for i in range(4)]
    rows[2] = rows[2].model_copy(update={"context": {"x": value}})
    with pytest.raises(InvalidInputError, match=f"row 2: {why}"):
        engine.decide_batch("scaled", rows)
    impression = Impression(event_id="e", decision_id="0" * 32, campaign="scaled", user_id="u",
                            ts=0, slots={"s": {"arm": "b", "propensity": 0.5}},
                            context={"x": value})
    for check in (engine.check_event, engine.event_checker()):
        with pytest.raises(InvalidInputError, match=why):
            check(impression)
        check(impression.model_copy(update={"context": {"x": 1e9}}))  # the limit itself
    joined = JoinedEvent(decision_id="0" * 32, campaign="scaled", subject="0" * 32, ts=0,
                         slots={"s": {"arm": "b", "propensity": 0.5}}, context={"x": value},
                         rewards={"s": 1.0})
    with pytest.raises(InvalidInputError, match=why):
        engine.learn([joined])
    assert engine.to_bytes() == before  # nothing learned
    engine.decide(DecisionRequest(campaign="scaled", user_id="u", context={"x": -1e9}))


def test_arm_features_and_defaults_beyond_the_limit_are_refused_with_the_campaign():
    spec = _scaled_spec()
    spec["slots"][1]["arms"][0]["features"]["f"] = 2e9
    with pytest.raises(ValueError, match="arm feature 'f' is 2000000000.0, beyond"):
        CampaignSpec.model_validate(spec)
    with pytest.raises(ValueError, match="less than or equal to 1000000000"):
        CampaignSpec.model_validate(_scaled_spec(default=1e10))


@pytest.mark.parametrize(("policy", "field"), [
    ({"kind": "beta_ts", "alpha": 1e-300}, "alpha"),  # with beta 1e-300: divided by zero
    ({"kind": "beta_ts", "beta": 1e7}, "beta"),
    ({"kind": "lin_ucb", "alpha": 1e300}, "alpha"),  # NaN exploration bonus
    ({"kind": "lin_ucb", "l2": 1e-300}, "l2"),
    ({"kind": "hybrid_lin_ucb", "l2": 1e-300}, "l2"),  # singular factorization: arm -1
    ({"kind": "lin_ts", "v": 1e300}, "v"),  # NaN propensity
    ({"kind": "lin_ts", "l2": 1e7}, "l2"),
    ({"kind": "epsilon_greedy", "l2": 1e-7}, "l2"),
    ({"kind": "bart", "l2": 1e-300}, "l2"),
])
def test_policy_settings_beyond_their_bounds_are_refused_with_the_campaign(policy, field):
    spec = _scaled_spec()
    spec["slots"][1]["policy"] = policy
    with pytest.raises(ValueError, match=rf"slots\.1\.policy\.{policy['kind']}\.{field}\n"):
        CampaignSpec.model_validate(spec)
    spec["slots"][1]["policy"] = {**policy, field: 1e-6 if policy[field] < 1 else 1e6}
    CampaignSpec.model_validate(spec)  # the bounds themselves are fine


@pytest.mark.parametrize("value", [1e200, -1e10, float("inf"), float("nan")])
def test_the_bound_check_of_a_batch_copies_none_of_it_and_still_names_the_row(value):
    # A copy of the numeric columns (and its absolute values) of a 280,000-row batch is fresh
    # memory the size of the batch, slow to touch: the check reads the matrix in place.
    spec = CampaignSpec.model_validate(_scaled_spec())
    spec = spec.model_copy(update={"context": spec.context.model_validate({"features": [
        {"kind": "numeric", "name": "x"}, {"kind": "categorical", "name": "plan",
                                           "values": ["free", "pro"]},
        {"kind": "numeric", "name": "y"}]})})
    context = _Encoder(spec.context.features, spec.context.intercept, "context")
    X = np.ones((20_000, context.dim))
    tracemalloc.start()
    try:
        context._bounded(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes // 100
    X[7, context.columns.index("y")] = value
    with pytest.raises(InvalidInputError, match=re.escape(f"row 7: feature 'y' is {value!r}")):
        context._bounded(X)
