"""The simulated subscriber of the email contract: sampled events against the documented
truth (rates, learned events, rewards), machine opens and scanner clicks, the contract's models,
the harmful arms, the oracle and uniform values, and determinism.

Statistical checks compare means over many seeded subscribers with the truth within 4
standard errors (the spread of the sampled counts over the square root of their number)."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import orjson
import pytest
from pydantic import TypeAdapter

from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES, Event, RewardSpec
from bandit.wire.events import EVENTS
from simulators import outcomes
from simulators.email_campaign import SLOTS, EmailCampaign, Subscribers
from simulators.outcomes import EVENT_TYPES, EmailOutcomes, Inboxes

T0 = 1_767_225_600_000
DAY = 24 * 3600 * 1000
WINDOW = 3 * DAY
EVENT = TypeAdapter(Event)


def _ids(n: int, first: int = 0) -> list[str]:
    return [f"{i:032x}" for i in range(first, first + n)]


def _random_choices(env: EmailCampaign, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {slot: rng.integers(len(env.arm_ids[slot]), size=n) for slot in SLOTS}


def _within(sampled: np.ndarray, expected: np.ndarray, what: str) -> None:
    """The sampled mean is within 4 standard errors of the expected mean."""
    bound = 4.0 * max(sampled.std(), 1e-12) / np.sqrt(len(sampled))
    assert abs(sampled.mean() - expected.mean()) <= bound, (
        f"{what}: sampled {sampled.mean():.5f}, expected {expected.mean():.5f} +- {bound:.5f}")


@pytest.fixture(scope="module")
def big():
    """200,000 subscribers with random combinations, one send each."""
    rng = np.random.default_rng(16)
    env = EmailCampaign()
    model = EmailOutcomes(env)
    n = 200_000
    subs, inboxes = env.subscribers(n, rng), model.inboxes(n, rng)
    choices = _random_choices(env, n, rng)
    send = EmailOutcomes.send_times(T0, choices, env)
    out = model.sample(_ids(n), choices, send, subs, inboxes, rng, campaign="weekly")
    return model, subs, inboxes, choices, send, out


def test_doctests_pass():
    assert doctest.testmod(outcomes).failed == 0


def test_click_is_todays_click_and_never_above_the_open(rng):
    env = EmailCampaign(drift_steps=100)
    model = EmailOutcomes(env)
    subs = env.subscribers(50_000, rng)
    choices = _random_choices(env, 50_000, rng)
    p = model.probabilities(subs, choices, step=40)
    np.testing.assert_array_equal(p["click"], env.click_probability(subs, choices, step=40))
    assert (p["click"] < p["open"]).all()
    assert 0.2 <= p["open"].mean() <= 0.45  # human opens: about a third
    assert 0.05 <= (p["click"] / p["open"]).mean() <= 0.15  # click given open
    discount = np.array(env.DISCOUNTS)[choices["offer"]]
    np.testing.assert_allclose(p["value"], 60.0 * (1 - discount / 100))


def test_sampled_counts_match_the_rates(big):
    model, subs, inboxes, choices, _, out = big
    counts, rates = out.counts(), model.rates(subs, choices, inboxes)
    assert (counts["send"] == 1).all()
    for kind in OUTCOME_TYPES:
        _within(counts[kind].astype(float), rates[kind], kind)
    flagged = np.bincount(out.row[out.machine], minlength=len(subs)).astype(float)
    _within(flagged, rates["machine"], "machine opens")
    # Averaged over the address shares, the rates are the same in expectation.
    averaged = model.rates(subs, choices)
    for kind in OUTCOME_TYPES:
        _within(counts[kind].astype(float), averaged[kind], f"{kind} (shares)")


REWARDS = {
    "email": EmailCampaign.email_reward(),
    "short windows, max, every type": RewardSpec.model_validate({"outcomes": {
        "open": {"weight": 0.1, "window_ms": 3600 * 1000},
        "click": {"weight": 1.0, "window_ms": 6 * 3600 * 1000, "aggregation": "max"},
        "conversion": {"weight": 0.02, "window_ms": 12 * 3600 * 1000, "aggregation": "first"},
        "unsubscribe": {"weight": -3.0, "window_ms": 4 * 3600 * 1000},
        "complaint": {"weight": -10.0, "window_ms": 5 * 3600 * 1000},
        "bounce": {"weight": -1.0, "window_ms": 30 * 1000}}}),
    "scanner clicks learned": RewardSpec.model_validate({"outcomes": {
        "click": {"weight": 1.0}}, "scanner_ms": 0}),
    "a scanner time that eats human clicks": RewardSpec.model_validate({"outcomes": {
        "click": {"weight": 1.0, "aggregation": "first"}}, "scanner_ms": 2 * 3600 * 1000}),
}


@pytest.mark.parametrize("name", list(REWARDS))
def test_learned_events_and_rewards_match_the_truth(big, name):
    model, subs, inboxes, choices, _, out = big
    reward = REWARDS[name]
    counts, realized = out.realized(reward, WINDOW)
    expected = model.expected_events(subs, choices, reward, WINDOW, inboxes)
    assert list(expected) == list(OUTCOME_TYPES)
    for j, kind in enumerate(OUTCOME_TYPES):
        _within(counts[:, j].astype(float), expected[kind], f"learned {kind}")
    _within(realized, model.expected_reward(subs, choices, reward, WINDOW, inboxes), "reward")
    _within(realized, model.expected_reward(subs, choices, reward, WINDOW), "reward (shares)")


def test_the_windows_and_the_scanner_time_are_applied(big):
    model, subs, inboxes, choices, send, out = big
    reward = REWARDS["short windows, max, every type"]
    keep = out.learned(reward, WINDOW)
    delay = out.ts - send[out.row]
    windows = {"open": 3600e3, "click": 6 * 3600e3, "conversion": 12 * 3600e3,
               "unsubscribe": 4 * 3600e3, "complaint": 5 * 3600e3, "bounce": 30e3}
    for kind, window in windows.items():
        mine = out.kind == EVENT_TYPES.index(kind)
        assert (delay[mine & keep] <= window).all() and not (mine & keep & out.machine).any()
        assert (keep[mine & ~out.machine & (delay <= window)]).all(), kind
    clicks = out.kind == EVENT_TYPES.index("click")
    eaten = out.learned(REWARDS["a scanner time that eats human clicks"], WINDOW)
    assert not (eaten & clicks & (delay < 2 * 3600e3)).any()
    assert (eaten & clicks).any()


def test_machine_opens_come_within_minutes_and_are_partly_flagged(big):
    model, subs, inboxes, _, send, out = big
    opens = out.kind == EVENT_TYPES.index("open")
    delay = out.ts - send[out.row]
    proxied = inboxes.proxy[out.row]
    bounced = out.counts()["bounce"] > 0
    # Every delivered email to a proxy address has exactly one open, the proxy's, within
    # 1 s to 5 min of the send; no other open is flagged.
    per_decision = np.bincount(out.row[opens & proxied], minlength=len(subs))
    np.testing.assert_array_equal(per_decision[inboxes.proxy], (~bounced)[inboxes.proxy])
    assert ((delay[opens & proxied] >= 1000) & (delay[opens & proxied] < 300_000)).all()
    assert not out.machine[~(opens & proxied)].any()
    machine = out.machine[opens & proxied]
    share, m = machine.mean(), len(machine)
    assert abs(share - model.PROXY_FLAGGED) <= 4.0 * np.sqrt(0.6 * 0.4 / m)
    # Human opens come later: few within 5 minutes of the send.
    assert np.mean(delay[opens & ~proxied] < 300_000) < 0.2


def test_scanner_clicks_come_within_seconds_unflagged(big):
    model, subs, inboxes, _, send, out = big
    clicks = out.kind == EVENT_TYPES.index("click")
    scanned = clicks & (out.link > 0)
    delay = out.ts - send[out.row]
    assert scanned.any() and inboxes.scanner[out.row[scanned]].all()
    assert ((delay[scanned] >= 500) & (delay[scanned] < 15_000)).all()
    assert not out.machine[clicks].any()
    bounced = out.counts()["bounce"] > 0
    links = np.bincount(out.row[scanned], minlength=len(subs))
    np.testing.assert_array_equal(links[inboxes.scanner], 2 * (~bounced)[inboxes.scanner])
    # A 30 s scanner time catches every one of them; human clicks that early are rare.
    learned = out.learned(EmailCampaign.email_reward(scanner_ms=30_000), WINDOW)
    assert not (learned & scanned).any()
    human = clicks & (out.link == 0)
    assert np.mean(delay[human] < 30_000) < 0.01


def test_every_event_validates_against_the_contract(big):
    *_, out = big
    part = slice(0, 4000)
    head = np.flatnonzero(np.isin(out.row, np.arange(4000)))
    payloads = out.payloads()
    models = out.events()
    assert len(models) == len(out) == len(payloads)
    kinds = set()
    for i in head.tolist():
        model, payload = models[i], payloads[i]
        assert model.type == EVENT_TYPES[out.kind[i]]
        assert EVENT.validate_python(payload) == model
        assert type(EVENTS.decode(orjson.dumps(payload))).__name__ == type(model).__name__
        assert model.campaign == "weekly"
        kinds.add(model.type)
        if model.type == "conversion":
            assert model.amount == payload["value"] > 0
    assert kinds == set(EVENT_TYPES), part
    ids = [p["event_id"] for p in payloads]
    assert len(set(ids)) == len(ids)
    assert (np.diff(out.ts) >= 0).all()  # time order


def test_conversions_value_less_with_a_bigger_discount(big):
    model, subs, _, choices, _, out = big
    conversions = out.kind == EVENT_TYPES.index("conversion")
    offer = choices["offer"][out.row[conversions]]
    values = out.value[conversions]
    for o, d in enumerate(EmailCampaign.DISCOUNTS):
        mine = values[offer == o]
        _within(mine, np.array([60.0 * (1 - d / 100)]), f"value at {d}% off")
    p = model.probabilities(subs, choices)
    high = subs.price_sensitivity > 0.7
    assert (p["conversion"][high & (choices["offer"] == 3)].mean()
            > 1.5 * p["conversion"][high & (choices["offer"] == 0)].mean())


@pytest.mark.parametrize(("slot", "harmful", "harmless", "effect"),
                         [("subject_line", "urgency", "plain", 1.0),
                          ("send_hour", "h02", "h14", 0.8)])
def test_a_harmful_arm_raises_unsubscribes_by_the_designed_amount(slot, harmful, harmless,
                                                                  effect):
    rng = np.random.default_rng(7)
    env = EmailCampaign()
    model = EmailOutcomes(env)
    n = 300_000
    subs, inboxes = env.subscribers(n, rng), model.inboxes(n, rng)
    base = {"subject_line": "plain", "send_hour": "h14", "offer": "off10", "artwork": "calm"}
    rates = {}
    for arm in (harmful, harmless):
        choices = {s: [base[s]] * n for s in SLOTS} | {slot: [arm] * n}
        out = model.sample(_ids(n), choices, T0, subs, inboxes, rng)
        rates[arm] = out.counts()["unsubscribe"].astype(float)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    delivered = 1 - model.BOUNCE_RATE
    harmless_rate = delivered * sigmoid(model.UNSUBSCRIBE_BASE)
    harmful_rate = delivered * sigmoid(model.UNSUBSCRIBE_BASE + effect)
    _within(rates[harmless], np.array([harmless_rate]), harmless)
    _within(rates[harmful], np.array([harmful_rate]), harmful)
    difference = rates[harmful] - rates[harmless]  # same subscribers: paired
    _within(difference, np.array([harmful_rate - harmless_rate]), "the harm")
    assert harmful_rate / harmless_rate > 2.0  # the designed harm is large


def _brute_force(model: EmailOutcomes, subs: Subscribers, reward: RewardSpec, step: int
                 ) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """(n, combinations) expected rewards of every combination, eligible or not, and the
    combinations, from expected_reward on each subscriber repeated once per combination."""
    env = model.env
    combos = list(itertools.product(*(range(len(env.arm_ids[s])) for s in SLOTS)))
    n, k = len(subs), len(combos)
    rows = np.repeat(np.arange(n), k)
    many = Subscribers(tuple(np.array(subs.user_ids)[rows]), subs.style[rows],
                       subs.open_hour[rows], subs.price_sensitivity[rows], subs.region[rows],
                       subs.age_band[rows])
    grid = np.array(combos)
    choices = {s: np.tile(grid[:, j], n) for j, s in enumerate(SLOTS)}
    values = model.expected_reward(many, choices, reward, WINDOW, step=step)
    return values.reshape(n, k), combos


@pytest.mark.parametrize("options", [{}, {"new_arm_at": 10}])
@pytest.mark.parametrize("name", ["email", "short windows, max, every type"])
def test_oracle_and_uniform_value_match_brute_force(options, name, rng):
    env = EmailCampaign(**options)
    model = EmailOutcomes(env)
    subs = env.subscribers(12, rng)
    reward = REWARDS[name]
    V, combos = _brute_force(model, subs, reward, 0)
    eligible = np.array([all(env.eligible(0)[s][a] for s, a in zip(SLOTS, c, strict=True))
                         for c in combos])
    choice, best = model.oracle(subs, reward, WINDOW)
    np.testing.assert_allclose(best, V[:, eligible].max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(model.expected_reward(subs, choice, reward, WINDOW), best,
                               rtol=1e-12)
    np.testing.assert_allclose(model.uniform_value(subs, reward, WINDOW),
                               V[:, eligible].mean(axis=1), rtol=1e-10)


def test_the_oracle_beats_uniform_and_weighs_the_guardrail(rng):
    env = EmailCampaign()
    model = EmailOutcomes(env)
    subs = env.subscribers(3000, rng)
    reward = EmailCampaign.email_reward()
    choice, best = model.oracle(subs, reward, WINDOW)
    uniform = model.uniform_value(subs, reward, WINDOW)
    assert best.mean() > 0.05 > 10 * uniform.mean()
    assert (best > uniform).all()
    # The harmful arms are never worth their unsubscribes; uniform choice pays for them.
    assert not (choice["subject_line"] == 0).any() and not (choice["send_hour"] < 6).any()
    unsubscribes = model.expected_events(subs, choice, reward, WINDOW)["unsubscribe"]
    assert unsubscribes.mean() < 0.7 * model.rates(
        subs, _random_choices(env, 3000, rng))["unsubscribe"].mean()
    # Under clicks alone with a window nothing escapes, the oracle is today's click oracle.
    wide = RewardSpec.model_validate({"outcomes": {"click": {"weight": 1.0}}})
    today, _ = env.oracle(subs)
    mine, _ = model.oracle(subs, wide, 10**12)
    for slot in SLOTS:
        np.testing.assert_array_equal(mine[slot], today[slot])


def test_same_seed_same_events_and_another_seed_others():
    env = EmailCampaign()
    model = EmailOutcomes(env)

    def run(seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        subs, inboxes = env.subscribers(2000, rng), model.inboxes(2000, rng)
        choices = _random_choices(env, 2000, rng)
        return model.sample(_ids(2000), choices, T0, subs, inboxes, rng).payloads()

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_inboxes_shares_and_slices(rng):
    model = EmailOutcomes()
    inboxes = model.inboxes(100_000, rng)
    assert not (inboxes.proxy & inboxes.scanner).any()
    assert abs(inboxes.proxy.mean() - 0.35) < 0.01 and abs(inboxes.scanner.mean() - 0.04) < 0.005
    part = inboxes[10:20]
    assert isinstance(part, Inboxes) and len(part) == 10
    np.testing.assert_array_equal(part.proxy, inboxes.proxy[10:20])
    with pytest.raises(InvalidInputError, match="slice"):
        inboxes[3]  # type: ignore[index]  # the error a caller gets


def test_send_times_follow_the_send_hour():
    env = EmailCampaign()
    choices = {"subject_line": ["plain"] * 2, "send_hour": ["h00", "h17"],
               "offer": ["off0"] * 2, "artwork": ["calm"] * 2}
    np.testing.assert_array_equal(EmailOutcomes.send_times(T0, choices, env),
                                  [T0, T0 + 17 * 3600 * 1000])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": 3}, "3 decision ids and 4 inboxes for 4 subscribers"),
        ({"inboxes": 2}, "4 decision ids and 2 inboxes for 4 subscribers"),
        ({"send_ts": -1}, "send_ts: expected ms >= 0"),
        ({"send_ts": 1.5}, "send_ts: expected ms >= 0"),
        ({"send_ts": np.array([1, 2])}, "send_ts: expected ms >= 0"),
        ({"choices": {"offer": ["off15"] * 4}}, "no arm 'off15'"),
    ],
)
def test_bad_input_is_named(change, message, rng):
    env = EmailCampaign()
    model = EmailOutcomes(env)
    subs, inboxes = env.subscribers(4, rng), model.inboxes(4, rng)
    choices = {s: [0] * 4 for s in SLOTS} | change.get("choices", {})
    with pytest.raises(InvalidInputError, match=message):
        model.sample(_ids(change.get("ids", 4)), choices, change.get("send_ts", T0), subs,
                     inboxes[:change.get("inboxes", 4)], rng)


def test_bad_truth_arguments_are_named(rng):
    model = EmailOutcomes()
    subs = model.env.subscribers(4, rng)
    choices = {s: [0] * 4 for s in SLOTS}
    with pytest.raises(InvalidInputError, match="inboxes: 2 for 4 subscribers"):
        model.expected_reward(subs, choices, RewardSpec(), WINDOW, model.inboxes(2, rng))
    with pytest.raises(InvalidInputError, match="attribution_window_ms must be > 0"):
        model.oracle(subs, RewardSpec(), 0)
    with pytest.raises(InvalidInputError, match="inboxes: 2 for 4 subscribers"):
        model.rates(subs, choices, model.inboxes(2, rng))
