"""VWPolicy (the conformance suite it shares with every policy is in test_policies.py): the
example conversion against VW's own text path, state, learning on the email simulator, the
engine (logged propensities, seeds, snapshots) and the ``cmab vw-export`` command."""

import pickle

import numpy as np
import pytest
from pydantic import ValidationError
from vowpalwabbit import pyvw

from bandit.cli import main
from bandit.engine import Engine, decision_draws, decision_seeds
from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.models import Arm, CampaignSpec, Click, DecisionRequest, VWSpec
from bandit.policies import VWPolicy, from_state
from bandit.policies.vw import VWFormat
from simulators.environments import Email
from tests.bandit.policies import test_policies as conformance

K, D = conformance.K, conformance.D


def test_format_lines():
    fmt = VWFormat(dim=3, arm_features=np.array([[1.0, 0.0], [0.0, 0.0], [-2.5, 1e-7]]))
    assert fmt.action_lines == ["|a id0 f0:1.0", "|a id1", "|a id2 f0:-2.5 f1:1e-07"]
    assert fmt.shared_line(np.array([1.0, 0.0, 0.125])) == "shared |c x0:1.0 x2:0.125"
    assert fmt.shared_line(np.zeros(3)) == "shared |c "
    assert fmt.label_line(2, reward=0.0, propensity=0.5) == "0:0.0:0.5 |a id2 f0:-2.5 f1:1e-07"
    assert fmt.lines(np.array([0.0, 1.0, 0.0]), [2, 0]) == [
        "shared |c x1:1.0", "|a id2 f0:-2.5 f1:1e-07", "|a id0 f0:1.0"]
    assert fmt.add_arm(np.array([0.0, 3.0])) == "|a id3 f1:3.0"


def test_values_too_small_for_vws_floats_are_left_out_not_turned_into_nan():
    # VW's text parser read 4.665e-194 as NaN and every propensity became NaN (found by the
    # single-decision fast path's hypothesis test); 2^-126 is the smallest normal float32.
    fmt = VWFormat(dim=2, arm_features=np.array([[1e-200], [2.0**-126]]))
    assert fmt.action_lines == ["|a id0", f"|a id1 f0:{2.0**-126!r}"]
    assert fmt.shared_line(np.array([4.665e-194, -1e-130])) == "shared |c "
    policy = VWPolicy(2, np.array([[0.5], [1e-150]]), rng=0)
    X = np.array([[10.0**e, 1.0] for e in range(-120, -230, -5)] + [[0.0, 1.0]])
    p = policy.propensities(X)
    assert np.isfinite(p).all() and (p == p[-1]).all()


@pytest.mark.parametrize("options", [{}, {"exploration": "epsilon", "epsilon": 0.2},
                                     {"lrq": "ca2", "learning_rate": 0.3}])
def test_reused_examples_match_vw_fed_text_lines(rng, options):
    # The policy parses each arm once and reuses it; VW fed the same events as text, one
    # multi-line example at a time, must give the very same pmfs.
    F = rng.normal(size=(K, 2))
    policy = VWPolicy(D, F, rng=0, **options)
    plain = pyvw.Workspace(arg_list=policy.arguments())
    fmt = VWFormat(D, F)
    X = rng.normal(size=(300, D))
    arms, rewards = rng.integers(K, size=300), (rng.random(300) < 0.3).astype(float)
    probs = rng.uniform(0.1, 1.0, size=300)
    for i in range(300):
        want = np.asarray(plain.predict(fmt.lines(X[i], range(K))), dtype=np.float64)
        np.testing.assert_allclose(policy.propensities(X[i : i + 1])[0], want / want.sum(),
                                   rtol=1e-15)
        lines = fmt.lines(X[i], range(K))
        lines[1 + arms[i]] = fmt.label_line(int(arms[i]), rewards[i], probs[i])
        plain.learn(lines)
        policy.learn_one(int(arms[i]), X[i], rewards[i], propensity=probs[i])
    assert policy.propensities(X[:1]).max() > 0.5  # it learned something, not a uniform pmf


def test_pmf_is_float32_renormalized_and_choice_follows_the_draw(rng):
    policy = VWPolicy(D, conformance.ARM_FEATURES, rng=0)
    arms, X, r = conformance._stream(1, 400)
    policy.learn_many(arms, X, r, propensities=np.full(400, 1 / K))
    P = policy.propensities(X[:5])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # A draw picks the arm whose slice of the CDF holds it.
    U = np.zeros((5, 2 + K))
    U[:, 0] = np.cumsum(P, axis=1)[:, 0] / 2  # inside arm 0's slice
    np.testing.assert_array_equal(policy.choose_many(X[:5], draws=U), 0)
    U[:, 0] = np.nextafter(1.0, 0.0)
    last = K - 1 - np.argmax(P[:, ::-1] > 0, axis=1)
    np.testing.assert_array_equal(policy.choose_many(X[:5], draws=U), last)


@pytest.mark.parametrize("options", [{}, {"exploration": "epsilon"}, {"lrq": "ca3"},
                                     {"exploration": "bag", "bag": 3},
                                     {"exploration": "cover", "cover": 3}])
def test_restart_is_the_same_model_and_goes_on_learning_the_same(options):
    arms, X, r = conformance._stream(2, 400)
    p = np.full(400, 1 / K)
    original = VWPolicy(D, conformance.ARM_FEATURES, rng=3, **options)
    original.learn_many(arms[:200], X[:200], r[:200], propensities=p[:200])
    restored = VWPolicy.from_state(original.state(), rng=5)
    np.testing.assert_array_equal(restored.propensities(X), original.propensities(X))
    if options.get("exploration") in ("bag", "cover"):
        return  # VW's model file lacks bag's bootstrap generator and cover's counter
    for policy in (original, restored):
        policy.learn_many(arms[200:], X[200:], r[200:], propensities=p[200:])
    np.testing.assert_array_equal(restored.propensities(X), original.propensities(X))
    np.testing.assert_array_equal(restored.scores(X), original.scores(X))


def test_state_keeps_added_and_retired_arms():
    policy = VWPolicy(D, n_arms=3, rng=0)
    policy.retire_arm(1)
    new = policy.add_arm()
    restored = from_state(pickle.loads(pickle.dumps(policy.state())))
    assert isinstance(restored, VWPolicy) and restored.n_arms == 4 and new == 3
    np.testing.assert_array_equal(restored.active, [True, False, True, True])
    X = np.ones((3, D))
    np.testing.assert_array_equal(restored.propensities(X), policy.propensities(X))


def test_corrupt_or_foreign_states_are_refused():
    policy = VWPolicy(D, n_arms=2, rng=0)
    state = policy.state()
    garbage = dict(state, arrays=dict(state["arrays"], model=np.frombuffer(b"nonsense", np.uint8)))
    cases = [
        (garbage, "does not load"),
        (dict(state, params=dict(state["params"], exploration="cover")),
         "not a cb_explore_adf cover"),
        (dict(state, arrays=dict(state["arrays"], active=np.zeros(2, bool))), "active"),
        (dict(state, params=dict(state["params"], lrq="zz9")), "lrq"),
        (dict(state, arrays={}), "missing"),
    ]
    for bad, message in cases:
        with pytest.raises(IncompatibleStateError, match=message):
            VWPolicy.from_state(bad)


def test_bad_arguments_get_clear_errors():
    cases = [
        (lambda: VWPolicy(D), "arm_features or n_arms"),
        (lambda: VWPolicy(D, n_arms=2, exploration="softmax"), "exploration"),
        (lambda: VWPolicy(D, n_arms=2, interactions=["cx"]), "interactions"),
        (lambda: VWPolicy(D, n_arms=2, interactions="ca"), "interactions"),
        (lambda: VWPolicy(D, n_arms=2, lrq="ca0"), "lrq"),
        (lambda: VWPolicy(D, n_arms=2, extra_args=["-b", "30"]), "not allowed"),
        (lambda: VWPolicy(D, n_arms=2, extra_args=["--cb_type", "ips", "--cb_type", "dr"]),
         "twice"),
        (lambda: VWPolicy(D, n_arms=2, extra_args=["--power_t", "nan"]), "power_t"),
        (lambda: VWPolicy(D, n_arms=3, arm_features=np.ones((2, 1))), "differs"),
        (lambda: VWPolicy(D, n_arms=2).learn_many([0], np.ones((1, D)), [1.0],
                                                  propensities=[0.0]), "row 0"),
        (lambda: VWPolicy(D, n_arms=2).learn_one(0, np.ones(D), 1.0, propensity=1.5),
         "propensity"),
        (lambda: VWPolicy(D, n_arms=2).add_arm(np.ones(1)), "features"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            call()


@pytest.mark.parametrize("bad, field", [
    ({"exploration": "softmax"}, "exploration"), ({"bag": 2.5}, "bag"), ({"cover": 0}, "cover"),
    ({"interactions": ["cz"]}, "interactions"), ({"lrq": "ca"}, "lrq"),
    ({"extra_args": ["--loss_function", "logistic"]}, "extra_args"),
    ({"learning_rate": 0}, "learning_rate"), ({"epsilon": 1.5}, "epsilon"), ({"bogus": 1}, "bogus"),
])
def test_vw_spec_is_strict(bad, field):
    with pytest.raises(ValidationError, match=field):
        VWSpec.model_validate({"kind": "vw", **bad})
    spec = VWSpec.model_validate({"kind": "vw", "bag": 3.0,
                                  "extra_args": ["--cb_type", "dr", "--noconstant"]})
    assert spec.bag == 3


def test_learns_the_context_dependent_best_arm_on_the_email_simulator():
    # 20,000 subscribers in batches of 100, learning at the logged propensities; in the last
    # quarter VW squarecb closes most of the uniform-oracle gap (held to 60%).
    env, rng = Email(), np.random.default_rng(0)
    policy = VWPolicy(env.dim, env.arm_features, rng=1)
    late = []
    for step in range(0, 20_000, 100):
        X = env.contexts(100, rng)
        arms, p = policy.choose_many(X, with_propensities=True)
        truth = env.expected_rewards(X)
        rewards = (rng.random(100) < truth[np.arange(100), arms]).astype(float)
        policy.learn_many(arms, X, rewards, propensities=p)
        if step >= 15_000:
            late.append((truth[np.arange(100), arms].mean(), truth.max(axis=1).mean(),
                         truth.mean()))
    got, oracle, uniform = np.mean(late, axis=0)
    assert (got - uniform) / (oracle - uniform) >= 0.6, (got, oracle, uniform)


def _campaign(name="vw", **policy):
    return CampaignSpec.model_validate({
        "name": name, "holdout": 0.0, "attribution_window_ms": 1000,
        "context": {"features": [
            {"kind": "numeric", "name": "engagement"},
            {"kind": "categorical", "name": "plan", "values": ["free", "pro"]}]},
        "slots": [
            {"name": "subject", "arms": [{"id": "plain"}, {"id": "urgent"}, {"id": "question"}],
             "default_arm": "plain", "policy": {"kind": "vw", **policy}},
            {"name": "artwork", "default_arm": "calm",
             "arms": [{"id": "calm", "features": {"scene": "calm"}},
                      {"id": "action", "features": {"scene": "action"}}],
             "arm_features": [{"kind": "categorical", "name": "scene",
                               "values": ["calm", "action"]}],
             "condition_on": ["subject"], "policy": {"kind": "vw", "lrq": "ca2"}},
        ]})


def _requests(n, campaign="vw"):
    return [DecisionRequest(campaign=campaign, user_id=f"u{i}", consent=i % 7 != 0,
                            context={"engagement": (i % 5) / 4, "plan": ("free", "pro")[i % 2]})
            for i in range(n)]


def _play(engine, rounds=3, n=120):
    """Decide, log, click (pro subscribers click 'urgent') and learn, a few times."""
    for k in range(rounds):
        requests = _requests(n)
        batch = engine.decide_batch("vw", requests)
        engine.record(batch.impressions(requests, ts_ms=k * 10_000))
        subject = batch.slots[0]
        clicks = [Click(event_id=f"c{k}-{i}", decision_id=batch.decision_ids[i], campaign="vw",
                        ts=k * 10_000 + 1)
                  for i, a in enumerate(subject.arms) if i % 2 and subject.arm_ids[a] == "urgent"]
        engine.record(clicks)
    engine.record([Click(event_id="flush", decision_id="0" * 32, campaign="vw", ts=10**9)])


def test_engine_logs_the_pmf_it_used_and_replays_a_decision_from_its_seed():
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(_campaign())
    _play(engine)
    requests = _requests(60)
    batch = engine.decide_batch("vw", requests)
    policy, columns, _ = engine.slot_policy("vw", "subject")
    assert columns == ["(intercept)", "engagement", "plan=free", "plan=pro", "plan=(unknown)"]
    given = [i for i, r in enumerate(requests) if r.consent]
    X = np.array([[1.0, r.context["engagement"], r.context["plan"] == "free",
                   r.context["plan"] == "pro", 0.0] for r in (requests[i] for i in given)])
    arms = batch.slots[0].arms[given]
    pmf = policy.propensities(X)
    assert pmf.max() > 0.5  # learned, so the check below is not about a uniform pmf
    np.testing.assert_array_equal(batch.slots[0].propensity[given], pmf[np.arange(len(given)),
                                                                          arms])
    # The decision's seed alone gives its choice again.
    draws = decision_draws(decision_seeds(batch.decision_ids), 0, 2 + 3)[given]
    np.testing.assert_array_equal(policy.choose_many(X, draws=draws), arms)
    # And the impressions carry those propensities to the learner.
    logged = batch.impressions(requests, ts_ms=0)
    assert [e.slots["subject"].propensity for e in logged] == batch.slots[0].propensity.tolist()


def test_engine_learns_at_the_logged_propensities(monkeypatch):
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(_campaign())
    seen = []
    original = VWPolicy.learn_many

    def spy(self, arms, X, rewards, *, propensities=None, ts_ms=None):
        seen.append(propensities)
        original(self, arms, X, rewards, propensities=propensities, ts_ms=ts_ms)

    monkeypatch.setattr(VWPolicy, "learn_many", spy)
    requests = _requests(40)
    batch = engine.decide_batch("vw", requests)
    engine.record(batch.impressions(requests, ts_ms=0))
    engine.record([Click(event_id="flush", decision_id="0" * 32, campaign="vw", ts=10**9)])
    logged = np.concatenate([s.propensity for s in batch.slots])
    assert seen and all(p is not None for p in seen)
    assert set(np.concatenate(seen).tolist()) <= set(logged.tolist())


def test_engine_snapshot_keeps_the_vw_models_and_arms(tmp_path):
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(_campaign(exploration="epsilon", epsilon=0.1))
    _play(engine, rounds=2)
    engine.add_arm("vw", "artwork", Arm(id="comic", features={"scene": "action"}))
    engine.add_arm("vw", "subject", Arm(id="emoji"))
    engine.save(tmp_path / "snap.npz")
    loaded = Engine.load(tmp_path / "snap.npz")
    for slot, n_arms in (("subject", 4), ("artwork", 3)):
        mine, theirs = engine.slot_policy("vw", slot)[0], loaded.slot_policy("vw", slot)[0]
        assert theirs.n_arms == mine.n_arms == n_arms
        X = np.random.default_rng(0).random((20, mine.dim))
        np.testing.assert_array_equal(theirs.propensities(X), mine.propensities(X))
    requests = _requests(30)
    assert loaded.decide_batch("vw", requests).decisions()[0].slots[0].arm in {
        "plain", "urgent", "question", "emoji"}


def test_cli_exports_a_readable_model(tmp_path, capsys):
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(_campaign())
    _play(engine, rounds=1)
    engine.save(tmp_path / "snap.npz")
    out = tmp_path / "model.txt"
    assert main(["vw-export", str(tmp_path / "snap.npz"), "--campaign", "vw", "--slot",
                 "artwork", "--out", str(out)]) == 0
    legend = capsys.readouterr().out
    assert "x1\tengagement" in legend and "id1\taction" in legend
    text = out.read_text()
    assert "c^x1*a^id1:" in text and "lrq ca2" in text.replace("--lrq ", "lrq ")
    # A bare VW model: weights by hash index.
    policy = engine.slot_policy("vw", "subject")[0]
    (tmp_path / "model.vw").write_bytes(policy.model_bytes())
    assert main(["vw-export", str(tmp_path / "model.vw"), "--out", str(tmp_path / "h.txt")]) == 0
    assert "squarecb" in (tmp_path / "h.txt").read_text()


@pytest.mark.parametrize("args, message", [
    (["--campaign", "vw", "--slot", "nope"], "no slot 'nope'"),
    (["--campaign", "vw"], "go together"),
    ([], "not a VW model"),
])
def test_cli_export_errors_are_one_line(tmp_path, capsys, args, message):
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(_campaign())
    engine.save(tmp_path / "snap.npz")
    code = main(["vw-export", str(tmp_path / "snap.npz"), "--out", str(tmp_path / "m.txt"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
