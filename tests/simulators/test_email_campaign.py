"""The four-slot email campaign: the spec the engine runs, subscribers, the documented truth,
and the oracle, uniform value and per-slot losses against brute force over all combinations."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

from bandit.engine import Engine
from bandit.errors import InvalidInputError
from bandit.models import Arm, BatchDecisionRequest, CampaignSpec, LinTSSpec
from simulators import email_campaign
from simulators.email_campaign import SLOTS, EmailCampaign


def all_combinations(env: EmailCampaign, eligible_only_step: int | None = None):
    """Every combination of arm indices, one dict per combination (k_slot ints)."""
    sizes = [len(env.arm_ids[slot]) for slot in SLOTS]
    for combo in itertools.product(*(range(k) for k in sizes)):
        if eligible_only_step is not None:
            eligible = env.eligible(eligible_only_step)
            if not all(eligible[slot][a] for slot, a in zip(SLOTS, combo, strict=True)):
                continue
        yield dict(zip(SLOTS, combo, strict=True))


def brute_force(env, subs, step=0):
    """(n, combinations) click probabilities of every eligible combination, and the combos."""
    combos = list(all_combinations(env, step))
    n = len(subs)
    P = np.column_stack([
        env.click_probability(subs, {s: np.full(n, c[s]) for s in SLOTS}, step) for c in combos
    ])
    return P, combos


def test_doctests_pass():
    assert doctest.testmod(email_campaign).failed == 0


def test_campaign_spec_runs_in_the_engine(rng):
    env = EmailCampaign()
    spec = env.campaign_spec(name="weekly")
    assert isinstance(spec, CampaignSpec) and spec.name == "weekly"
    assert [s.name for s in spec.slots] == list(SLOTS)
    assert [f.name for f in spec.context.features] == [
        "style", "open_hour_sin", "open_hour_cos", "price_sensitivity"]
    assert spec.context.segments == ["region", "age_band"]
    assert 0 < spec.holdout <= 0.1 and spec.attribution_window_ms == 3 * 24 * 3600 * 1000
    for slot in spec.slots:
        assert [a.id for a in slot.arms] == list(env.arm_ids[slot.name])
        assert slot.policy.kind == email_campaign.DEFAULT_POLICIES[slot.name]["kind"]
    by_name = {s.name: s for s in spec.slots}
    assert by_name["offer"].arms[2].features == {"discount": 20}
    assert by_name["subject_line"].arms[0].features == {"tone": "urgency"}
    assert by_name["artwork"].arms[0].features == {"scene": "action"}
    assert by_name["offer"].condition_on == ["subject_line"]
    assert [by_name[s].default_arm for s in SLOTS] == ["plain", "h09", "off0", "product"]

    engine = Engine(seed=0)
    engine.create_campaign(spec)
    subs = env.subscribers(50, rng)
    batch = engine.decide_batch("weekly", subs.requests("weekly"))
    assert [s.slot for s in batch.slots] == list(SLOTS)
    choices = {s.slot: [s.arm_ids[a] for a in s.arms] for s in batch.slots}
    p = env.click_probability(subs, choices)
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()


def test_campaign_spec_policies_by_kind_dict_or_model():
    env = EmailCampaign()
    spec = env.campaign_spec(policies={"subject_line": "beta_ts",
                                       "send_hour": {"kind": "lin_ts", "v": 0.1},
                                       "artwork": LinTSSpec()})
    kinds = {s.name: s.policy.kind for s in spec.slots}
    assert kinds == {"subject_line": "beta_ts", "send_hour": "lin_ts",
                     "offer": email_campaign.DEFAULT_POLICIES["offer"]["kind"], "artwork": "lin_ts"}
    assert spec.slots[1].policy.v == 0.1
    with pytest.raises(InvalidInputError, match="unknown slot 'hero'"):
        env.campaign_spec(policies={"hero": "lin_ucb"})
    with pytest.raises(InvalidInputError, match=r"policies\['offer'\]"):
        env.campaign_spec(policies={"offer": "nope"})


def test_late_arm_is_left_out_of_the_spec_until_added():
    env = EmailCampaign(new_arm_at=100)
    spec = env.campaign_spec(holdout=0.0)
    assert [a.id for a in spec.slots[3].arms] == list(env.SCENES[:-1])
    engine = Engine(seed=0)
    engine.create_campaign(spec)
    for slot, arm in env.late_arms():
        engine.add_arm(spec.name, slot, Arm.model_validate(arm))
    assert engine.active_arms(spec.name, "artwork") == list(env.SCENES)
    assert EmailCampaign().late_arms() == []


def test_subscribers_columns_and_payloads(rng):
    env = EmailCampaign()
    subs = env.subscribers(1000, rng, first_id=5)
    assert len(subs) == 1000 and subs.user_ids[0] == "s0000005" and subs.user_ids[-1] == "s0001004"
    for column in (subs.style, subs.region, subs.age_band):
        assert column.dtype == np.int64 and column.shape == (1000,)
    assert ((subs.open_hour >= 0) & (subs.open_hour < 24)).all()
    assert ((subs.price_sensitivity >= 0) & (subs.price_sensitivity <= 1)).all()
    contexts, segments = subs.contexts(), subs.segments()
    assert set(contexts[0]) == {"style", "open_hour_sin", "open_hour_cos", "price_sensitivity"}
    assert contexts[7]["style"] == env.STYLES[subs.style[7]]
    np.testing.assert_allclose(
        np.mod(np.arctan2([c["open_hour_sin"] for c in contexts],
                          [c["open_hour_cos"] for c in contexts]) * 24 / (2 * np.pi), 24),
        subs.open_hour, atol=1e-9)
    assert segments[3] == {"region": env.REGIONS[subs.region[3]],
                           "age_band": env.AGE_BANDS[subs.age_band[3]]}
    # The payloads are valid batch bodies for the HTTP service.
    body = BatchDecisionRequest.model_validate({"campaign": "c", "requests": subs.payloads("c")})
    assert body.requests[0].user_id == "s0000005"
    part = subs[10:20]
    assert len(part) == 10 and part.user_ids[0] == "s0000015"
    np.testing.assert_array_equal(part.style, subs.style[10:20])
    with pytest.raises(InvalidInputError, match="slice"):
        subs[3]
    # Age 18-24 is more price sensitive: the trait a segment brings with it.
    young = subs.age_band == 0
    assert subs.price_sensitivity[young].mean() > subs.price_sensitivity[~young].mean()


def test_same_seed_same_subscribers():
    a = EmailCampaign().subscribers(100, np.random.default_rng(4))
    b = EmailCampaign().subscribers(100, np.random.default_rng(4))
    assert a.payloads("c") == b.payloads("c")


def test_click_probability_implements_the_documented_model(rng):
    env = EmailCampaign()
    subs = env.subscribers(2000, rng)
    n = len(subs)
    f, t, o, w = (rng.integers(k, size=n) for k in (5, 24, 4, 5))
    s, h, q = subs.style, subs.open_hour, subs.price_sensitivity
    framing = np.array([[0.35, -0.15, 0.85, 0.0, -0.2], [-0.15, 0.75, -0.05, 0.2, 0.0],
                        [0.3, -0.3, -0.15, 0.0, 0.65], [-0.2, 0.15, 0.05, 0.7, 0.3]])
    scene = np.array([[0.0, -0.1, 0.05, 0.3, 0.0], [0.2, -0.05, 0.0, -0.1, 0.35],
                      [-0.1, 0.25, 0.0, 0.1, -0.05], [-0.05, 0.05, 0.3, 0.0, 0.2]])
    logit = (
        -4.0 + np.array([0.0, 0.1, -0.1, 0.05])[subs.region]
        + np.array([0.1, 0.05, 0.0, -0.1])[subs.age_band]
        + framing[s, f] + np.array([0.3, 0, 0.55, 0, 0])[f] * (q - 0.5)
        + np.where(t < 6, -0.5, 0.0) + 0.4 * np.cos(2 * np.pi * (t - h) / 24)
        + np.array([0.0, 0.5, 0.85, 1.05])[o] * q - 0.012 * 10 * o
        + np.where((f == 2) & (o == 0), -0.5, 0.0)
        + scene[s, w]
    )
    expected = 1.0 / (1.0 + np.exp(-logit))
    by_index = env.click_probability(subs, {"subject_line": f, "send_hour": t, "offer": o,
                                            "artwork": w})
    np.testing.assert_allclose(by_index, expected, rtol=1e-12)
    by_id = env.click_probability(subs, {slot: [env.arm_ids[slot][a] for a in arms]
                                         for slot, arms in zip(SLOTS, (f, t, o, w), strict=True)})
    np.testing.assert_array_equal(by_id, by_index)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offer": None}, "missing slot 'offer'"),
        ({"hero": [0, 0]}, "unknown slot 'hero'"),
        ({"offer": ["off0", "off15"]}, "no arm 'off15'"),
        ({"send_hour": [0, 24]}, "arm index 24 outside 0..23"),
        ({"artwork": [0]}, "expected 2 arms"),
        ({"artwork": [0.5, 1.0]}, "arm ids or indices"),
    ],
)
def test_bad_choices_are_named(change, message, rng):
    env = EmailCampaign()
    subs = env.subscribers(2, rng)
    choices = {slot: [0, 0] for slot in SLOTS} | change
    choices = {k: v for k, v in choices.items() if v is not None}
    with pytest.raises(InvalidInputError, match=message):
        env.click_probability(subs, choices)


@pytest.mark.parametrize("options", [{}, {"new_arm_at": 10}, {"drift_steps": 10}])
def test_oracle_and_uniform_value_match_brute_force(options, rng):
    env = EmailCampaign(**options)
    subs = env.subscribers(30, rng)
    for step in (0, 20):
        P, combos = brute_force(env, subs, step)
        choice, best = env.oracle(subs, step)
        np.testing.assert_allclose(best, P.max(axis=1), rtol=1e-12)
        np.testing.assert_allclose(env.click_probability(subs, choice, step), best, rtol=1e-12)
        np.testing.assert_allclose(env.uniform_value(subs, step), P.mean(axis=1), rtol=1e-10)
    assert len(combos) == 2400


def test_uniform_value_spans_chunks(rng, monkeypatch):
    env = EmailCampaign(new_arm_at=5)
    subs = env.subscribers(23, rng)
    whole = env.uniform_value(subs, np.arange(23))
    monkeypatch.setattr(email_campaign, "_CHUNK_ROWS", 4)
    np.testing.assert_allclose(env.uniform_value(subs, np.arange(23)), whole, rtol=1e-12)


def test_slot_losses_match_brute_force(rng):
    env = EmailCampaign()
    subs = env.subscribers(40, rng)
    choices = {slot: rng.integers(len(env.arm_ids[slot]), size=40) for slot in SLOTS}
    losses = env.slot_losses(subs, choices)
    p = env.click_probability(subs, choices)
    for slot in SLOTS:
        alternatives = np.column_stack([
            env.click_probability(subs, choices | {slot: np.full(40, a)})
            for a in range(len(env.arm_ids[slot]))
        ])
        np.testing.assert_allclose(losses[slot], alternatives.max(axis=1) - p, atol=1e-15)
        assert (losses[slot] >= 0).all()
    best, _ = env.oracle(subs)
    for loss in env.slot_losses(subs, best).values():
        np.testing.assert_allclose(loss, 0.0, atol=1e-15)


def test_rates_are_realistic_and_every_slot_matters(rng):
    env = EmailCampaign()
    subs = env.subscribers(50_000, rng)
    choice, best = env.oracle(subs)
    uniform = env.uniform_value(subs)
    assert 0.07 <= best.mean() <= 0.12 and best.max() <= 0.25
    assert 0.02 <= uniform.mean() <= 0.035
    random_choices = {slot: rng.integers(len(env.arm_ids[slot]), size=50_000) for slot in SLOTS}
    p = env.click_probability(subs, random_choices)
    assert p.min() >= 0.0005 and p.max() <= 0.25
    # The best arm of every slot depends on the subscriber: no arm is best for most of them.
    for slot in SLOTS:
        share = np.bincount(choice[slot], minlength=len(env.arm_ids[slot])) / 50_000
        assert share.max() < 0.5, slot
        assert (share > 0.01).sum() >= 3, slot
    # The best single combination for everyone is far below the oracle.
    fixed = env.click_probability(subs, {"subject_line": np.full(50_000, 2),
                                         "send_hour": np.full(50_000, 10),
                                         "offer": np.full(50_000, 3),
                                         "artwork": np.full(50_000, 3)})
    assert fixed.mean() < 0.6 * best.mean()


def test_sampled_clicks_match_probabilities(rng):
    env = EmailCampaign()
    subs = env.subscribers(100_000, rng)
    choices = {slot: rng.integers(len(env.arm_ids[slot]), size=100_000) for slot in SLOTS}
    p = env.click_probability(subs, choices)
    clicks = env.sample_clicks(subs, choices, rng)
    assert set(np.unique(clicks)) <= {0.0, 1.0}
    assert abs(clicks.mean() - p.mean()) < 4.0 * np.sqrt(np.mean(p * (1 - p)) / 100_000)


def test_drift_moves_the_subject_line_preferences(rng):
    env = EmailCampaign(drift_steps=1000)
    subs = env.subscribers(5000, rng)
    start, _ = env.oracle(subs, 0)
    end, _ = env.oracle(subs, 1000)
    assert np.mean(start["subject_line"] != end["subject_line"]) > 0.3
    np.testing.assert_array_equal(start["send_hour"], end["send_hour"])
    still, _ = EmailCampaign().oracle(subs, 10**6)
    np.testing.assert_array_equal(still["subject_line"], start["subject_line"])


def test_late_arm_eligibility():
    env = EmailCampaign(new_arm_at=50)
    assert not env.eligible(49)["artwork"][-1] and env.eligible(50)["artwork"].all()
    mask = env.eligible(np.array([0, 60]))
    assert mask["send_hour"].shape == (2, 24) and mask["send_hour"].all()
    np.testing.assert_array_equal(mask["artwork"][:, -1], [False, True])


@pytest.mark.parametrize("options", [{"drift_steps": 0}, {"new_arm_at": -1}])
def test_bad_options_are_rejected(options):
    with pytest.raises(InvalidInputError):
        EmailCampaign(**options)


def test_campaign_spec_takes_the_email_reward_and_send_activation():
    env = EmailCampaign()
    spec = env.campaign_spec(reward=env.email_reward(), activation="send")
    assert spec.activation == "send" and spec.reward.scanner_ms == 30_000
    weights = {kind: rule.weight for kind, rule in spec.reward.outcomes.items()}
    assert weights == {"click": 1.0, "conversion": 0.01, "unsubscribe": -5.0}
    assert spec.reward.outcomes["click"].window_ms == 2 * 24 * 3600 * 1000
    as_dict = env.campaign_spec(reward={"outcomes": {"open": {"weight": 0.5}}})
    assert as_dict.reward.outcomes["open"].weight == 0.5
    # Today's defaults: clicks, learnable when decided.
    default = env.campaign_spec()
    assert default.activation == "decision" and list(default.reward.outcomes) == ["click"]
    assert env.email_reward(scanner_ms=5000).scanner_ms == 5000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reward": {"outcomes": {"click": {"weight": "x"}}}},
         r"campaign_spec: reward\.outcomes\.click\.weight: Input should be a valid number"),
        ({"reward": {"outcomes": {"click": {"weight": 1, "window_ms": 10**12}}}},
         "window_ms: 1e\\+12 is longer than attribution_window_ms"),
        ({"activation": "open"}, "campaign_spec: activation: Input should be 'decision' or"),
    ],
)
def test_bad_reward_or_activation_is_named(options, message):
    with pytest.raises(InvalidInputError, match=message):
        EmailCampaign().campaign_spec(**options)
