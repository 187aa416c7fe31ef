"""``Engine.decide_one``: the single-row path gives what ``decide_batch`` of one row gives (the
same JSON bytes: decision id, holdout, arms, propensities, expected rewards, bonuses,
explanations) and the same errors, for every policy kind, conditioning, eligibility, consent,
holdout, pause and retired arms. Two engines built and trained alike stay in lockstep: one
answers by ``decide_one``, the other by ``decide_batch``."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine, decision_draws, slot_draws
from bandit.errors import BanditError
from bandit.models import Arm, CampaignSpec, Click, DecisionRequest

KINDS = ["beta_ts", "lin_ucb", "hybrid_lin_ucb", "lin_ts", "epsilon_greedy", "bart", "vw"]
PLANS = ["free", "pro", "team"]  # "team" is not in the schema: the unknown bucket


def spec(kind: str) -> CampaignSpec:
    """Three slots of ``kind``: plain arms; arm features, conditioned on the first, with an
    eligibility rule; and a third conditioned on both."""
    scenes = ["calm", "action", "comedy"]
    return CampaignSpec.model_validate({
        "name": kind, "holdout": 0.2, "attribution_window_ms": 1000,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "numeric", "name": "tenure", "default": 0.5},
                                 {"kind": "categorical", "name": "plan",
                                  "values": PLANS[:2]}],
                    "segments": ["region"]},
        "slots": [
            {"name": "subject", "default_arm": "plain", "policy": {"kind": kind},
             "arms": [{"id": a, "features": {"f": i / 2}}
                      for i, a in enumerate(["plain", "urgent", "ask"])],
             "arm_features": [{"kind": "numeric", "name": "f"}]},
            {"name": "artwork", "default_arm": "calm", "condition_on": ["subject"],
             "arms": [{"id": s, "features": {"scene": s}} for s in scenes],
             "arm_features": [{"kind": "categorical", "name": "scene", "values": scenes}],
             "eligibility": [{"arm": "action", "feature": "region", "op": "eq",
                              "value": "eu"}],
             "policy": {"kind": kind}},
            {"name": "offer", "default_arm": "o0", "condition_on": ["subject", "artwork"],
             "arms": [{"id": f"o{p}", "features": {"f": p / 10}} for p in (0, 10, 20)],
             "arm_features": [{"kind": "numeric", "name": "f"}], "policy": {"kind": kind}},
        ]})


def trained(kind: str) -> Engine:
    """An engine with the campaign, some decisions learned (clicks on 'urgent'), an arm added
    and one retired."""
    engine = Engine(seed=11, id_seed=11)  # twins: the same ids
    engine.create_campaign(spec(kind))
    requests = [DecisionRequest(campaign=kind, user_id=f"t{i}", consent=i % 5 != 0,
                                context={"engagement": (i % 7) / 6, "plan": PLANS[i % 3]},
                                segments={"region": ("eu", "us")[i % 2]})
                for i in range(60)]
    batch = engine.decide_batch(kind, requests)
    engine.record(batch.impressions(requests, ts_ms=0))
    subject = batch.slots[0]
    engine.record([Click(event_id=f"c{i}", decision_id=batch.decision_ids[i], campaign=kind,
                         ts=1) for i, a in enumerate(subject.arms.tolist())
                   if subject.arm_ids[a] == "urgent"])
    engine.record([Click(event_id="flush", decision_id="0" * 32, campaign=kind, ts=10**9)])
    engine.add_arm(kind, "offer", Arm(id="o30", features={"f": 3.0}))
    engine.retire_arm(kind, "offer", "o10")
    return engine


@pytest.fixture(scope="module")
def twins() -> dict[str, tuple[Engine, Engine]]:
    return {kind: (trained(kind), trained(kind)) for kind in KINDS}


contexts = st.fixed_dictionaries(
    {"engagement": st.floats(-3, 3, allow_nan=False)},
    optional={"tenure": st.integers(-5, 5) | st.floats(0, 1),
              "plan": st.sampled_from(PLANS)})
bad_contexts = st.sampled_from([{"engagement": "high"}, {"plan": 1.0, "engagement": 0.0},
                                {"tenure": 1.0}, {"engagement": 1.0, "age": 3.0}])
requests = st.builds(
    dict,
    user_id=st.text("abcxyz019", min_size=1, max_size=6),
    context=contexts | bad_contexts,
    segments=st.sampled_from([{}, {"region": "eu"}, {"region": "us"}]),
    consent=st.booleans(),
    explain=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), sent=st.lists(requests, min_size=1, max_size=6),
       paused=st.booleans())
def test_decide_one_is_decide_batch_of_one_row(twins, kind, sent, paused):
    one, batch = twins[kind]
    for engine in (one, batch):
        engine.pause(kind, paused)
    for fields in sent:
        request = DecisionRequest(campaign=kind, **fields)
        try:
            expected = batch.decide_batch(kind, [request]).lines()[0].decode()
        except BanditError as error:
            with pytest.raises(type(error)) as raised:
                one.decide_one(request)
            assert str(raised.value) == str(error)
            continue
        got = one.decide_one(request)
        assert got.json == expected
        # Not Decision.model_validate_json: a VW slot writes NaN (as null) for contexts with
        # tiny numbers such as 4.7e-194, in decide_batch as here.
        slots = orjson.loads(got.json)["slots"]
        assert (got.slots, got.arms) == ([s["slot"] for s in slots], [s["arm"] for s in slots])


def test_decide_is_decide_batch_of_one_row(twins):
    one, batch = twins["lin_ucb"]
    request = DecisionRequest(campaign="lin_ucb", user_id="u", explain=True,
                              context={"engagement": 0.5, "plan": "pro"})
    assert one.decide(request) == batch.decide_batch("lin_ucb", [request]).decisions()[0]


def test_unknown_campaign_draws_nothing(twins):
    """As in decide_batch, the campaign is looked up before any draw: the twins stay alike."""
    one, batch = twins["beta_ts"]
    request = DecisionRequest(campaign="nope", user_id="u")
    with pytest.raises(BanditError, match="no campaign 'nope'"):
        one.decide_one(request)
    request = DecisionRequest(campaign="beta_ts", user_id="u", context={"engagement": 1.0})
    expected = batch.decide_batch("beta_ts", [request]).lines()[0].decode()
    assert one.decide_one(request).json == expected


@given(seed=st.integers(0, 2**64 - 1), n_slots=st.integers(1, 6), width=st.integers(1, 40))
def test_slot_draws_are_each_slots_decision_draws(seed, n_slots, width):
    grid = slot_draws(seed, n_slots, width)
    seeds = np.array([seed], dtype=np.uint64)
    expected = np.vstack([decision_draws(seeds, i, width) for i in range(n_slots)])
    np.testing.assert_array_equal(grid, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_decide_one_follows_state_changes(kind):
    """What the single-row path keeps between decisions (Beta TS's CDFs, Bart's coefficients)
    follows every change of model and campaign: decide, learn, absorb partitions, add and
    retire arms, then decide again; each time the same bytes as decide_batch."""
    one, batch = trained(kind), trained(kind)
    partial = trained(kind)
    sent = [DecisionRequest(campaign=kind, user_id=f"s{i}", consent=i % 4 != 0,
                            context={"engagement": i / 3 - 1, "plan": PLANS[i % 3]},
                            segments={"region": ("eu", "us")[i % 2]}) for i in range(12)]

    def agree() -> None:
        for request in sent:
            assert one.decide_one(request).json == \
                batch.decide_batch(kind, [request]).lines()[0].decode()

    def learn(ts: int) -> None:
        # Both learn the same events: decisions of a third engine, clicks on every 'urgent'.
        decided = partial.decide_batch(kind, sent)
        subject = decided.slots[0]
        clicks = [Click(event_id=f"c{ts}-{i}", decision_id=decided.decision_ids[i],
                        campaign=kind, ts=ts + 1)
                  for i, a in enumerate(subject.arms.tolist()) if subject.arm_ids[a] != "plain"]
        for engine in (one, batch):
            engine.record(decided.impressions(sent, ts_ms=ts))
            engine.record(clicks)
            engine.record([Click(event_id=f"flush{ts}", decision_id="0" * 32, campaign=kind,
                                 ts=ts + 10**6)])

    agree()
    learn(10**9)
    agree()
    for engine in (one, batch):
        engine.absorb([partial])
    agree()
    for engine in (one, batch):
        engine.add_arm(kind, "subject", Arm(id="new", features={"f": 2.0}))
    agree()
    for engine in (one, batch):
        engine.retire_arm(kind, "subject", "urgent")
    agree()
    learn(2 * 10**9)
    agree()


values = (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2 * 10**9, 2 * 10**9)
          | st.sampled_from(["free", "pro", "team", None]))


@given(row=st.dictionaries(st.sampled_from(["engagement", "tenure", "plan", "age"]), values,
                           max_size=4))
def test_encode_one_is_encode_of_one_row(twins, row):
    """The single-row encoder gives encode's row, or its error (unknown, missing, wrong type,
    beyond the feature limit), with the same message."""
    encoder = twins["lin_ucb"][0]._campaigns["lin_ucb"].context
    try:
        expected = encoder.encode([row])[0]
    except BanditError as error:
        with pytest.raises(type(error)) as raised:
            encoder.encode_one(row)
        assert str(raised.value) == str(error)
        return
    np.testing.assert_array_equal(encoder.encode_one(row), expected)
