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
                                     {"exploration": "bag", "bag": 3},
                                     {"exploration": "cover", "cover": 2},
                                     {"exploration": "epsilon",
                                      "extra_args": ["--noconstant", "--cb_type", "dr"]},
                                     {"lrq": "ca2", "learning_rate": 0.3}])
def test_reused_examples_match_vw_fed_text_lines(rng, options):
    # The policy parses each arm once and refills one shared example per row, with indices
    # as setup_example scales them (bag and cover widen the scale, --noconstant drops the
    # constant setup adds); VW fed the same events as text, one multi-line example at a time,
    # must give the very same pmfs. The contexts are values VW's text parser reads exactly (it
    # can land an ulp off others).
    F = rng.normal(size=(K, 2))
    policy = VWPolicy(D, F, rng=0, **options)
    plain = pyvw.Workspace(arg_list=policy.arguments())
    fmt = VWFormat(D, F)
    X = rng.integers(-8, 9, size=(300, D)) / 4.0
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
    assert np.ptp(policy.propensities(X[:1])) > 0.1  # it learned something, not a uniform pmf


def _text_path(policy, X, mask):
    """The former batch decision, row by row: the policy's model fed text lines (a shared line
    per row) over each row's eligible arms; the pmfs (n, k) renormalized, zero elsewhere."""
    plain = pyvw.Workspace(arg_list=["--quiet", "-i", str(_model_file(policy))])
    fmt = VWFormat(D, policy.arm_features)
    P = np.zeros((X.shape[0], policy.n_arms))
    for i, x in enumerate(X):
        idx = np.flatnonzero(mask[i])
        P[i, idx] = plain.predict(fmt.lines(x, idx.tolist()))
    return P / P.sum(axis=1, keepdims=True)


def _model_file(policy):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "model.vw"
    path.write_bytes(policy.model_bytes())
    return path


@pytest.mark.parametrize("exact", [True, False])
def test_batch_decisions_match_the_text_path_for_the_same_model_and_draws(rng, exact):
    # Same model, same draws: the same arms and probabilities as VW fed a text line per row,
    # exactly for contexts VW's text parser reads exactly, else to float32 rounding; with a
    # per-row mask (rows grouped by eligible arms) and with zeros and sub-float32 values,
    # which both paths leave out.
    policy = VWPolicy(D, conformance.ARM_FEATURES, rng=0)
    arms, X, r = conformance._stream(3, 400)
    policy.learn_many(arms, X, r, propensities=np.full(400, 1 / K))
    Q = rng.integers(-8, 9, size=(200, D)) / 4.0 if exact else rng.normal(size=(200, D))
    Q[:20, 1] = 0.0
    Q[20:40, 2] = 1e-200
    mask = rng.random((200, K)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    U = rng.random((200, 2 + K))
    got_arms, got_p = policy.choose_many(Q, eligible=mask, draws=U, with_propensities=True)
    want = _text_path(policy, Q, mask)
    cdf = np.cumsum(want, axis=1)
    want_arms = np.minimum((cdf <= U[:, :1] * cdf[:, -1:]).sum(axis=1), K - 1)
    np.testing.assert_array_equal(got_arms, want_arms)
    tol = {"rtol": 1e-15} if exact else {"rtol": 1e-5, "atol": 1e-7}
    np.testing.assert_allclose(got_p, want[np.arange(200), want_arms], **tol)
    np.testing.assert_allclose(policy.propensities(Q, eligible=mask), want, **tol)


def test_batch_decisions_format_no_text(monkeypatch):
    # Formatting and parsing a text line per row cost more than VW's predict: the batch path
    # refills one shared example with pre-hashed features instead.
    policy = VWPolicy(D, n_arms=K, rng=0)

    def refuse(self, x):
        raise AssertionError("a text line was formatted for a decision")

    monkeypatch.setattr(VWFormat, "shared_line", refuse)
    arms, probs = policy.choose_many(np.ones((5, D)), with_propensities=True)
    assert arms.shape == probs.shape == (5,)


def test_a_batch_sets_the_shared_example_up_once_not_per_row(monkeypatch):
    # The shared example is set up at the start of a batch and refilled with its features
    # as setup_example leaves them: a row costs no setup_example / unsetup_example call.
    from bandit.policies import vw

    policy = VWPolicy(D, conformance.ARM_FEATURES, rng=0)
    calls = []
    for name in ("_setup", "_unsetup"):
        native = getattr(vw, name)
        monkeypatch.setattr(vw, name, lambda ws, ex, name=name, native=native: (
            calls.append(name), native(ws, ex))[1])
    X = np.random.default_rng(0).normal(size=(50, D))
    policy.choose_many(X, with_propensities=True)
    assert calls == ["_setup", "_unsetup"]


@pytest.mark.parametrize("exploration", ["squarecb", "bag"])
def test_batch_decisions_do_not_depend_on_the_chunking(monkeypatch, rng, exploration):
    # A batch turns its rows into Python floats a chunk at a time; chunks of 3 rows, with
    # zero and sub-float32 values, a per-row mask and the scores, give the same numbers.
    from bandit.policies import vw

    policy = VWPolicy(D, conformance.ARM_FEATURES, exploration=exploration, rng=0)
    arms, X, r = conformance._stream(4, 300)
    policy.learn_many(arms, X, r, propensities=np.full(300, 1 / K))
    Q = rng.normal(size=(40, D))
    Q[::4, 1] = 0.0
    Q[1::5, 2] = 1e-200
    mask = rng.random((40, K)) < 0.7
    mask[~mask.any(axis=1), 0] = True
    U = rng.random((40, 2 + K))

    def run():
        return (*policy.choose_many(Q, eligible=mask, draws=U, with_propensities=True),
                policy.propensities(Q, eligible=mask), policy.scores(Q))

    whole = run()
    monkeypatch.setattr(vw, "_CHUNK", 3)
    for got, want in zip(run(), whole, strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_empty_batch_decides_nothing():
    policy = VWPolicy(D, n_arms=K, rng=0)
    arms, probs = policy.choose_many(np.zeros((0, D)), with_propensities=True)
    assert arms.shape == probs.shape == (0,)
    assert policy.propensities(np.zeros((0, D))).shape == policy.scores(np.zeros((0, D))).shape \
        == (0, K)


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
        (lambda: VWPolicy(D, n_arms=2, gamma_scale=0.0), "gamma_scale"),
        (lambda: VWPolicy(D, n_arms=2, gamma_scale=float("nan")), "gamma_scale"),
        (lambda: VWPolicy(D, n_arms=2, gamma_exponent=1.5), "gamma_exponent"),
        (lambda: VWPolicy(D, n_arms=2, gamma_scale="big"), "gamma_scale"),
        (lambda: VWPolicy(D, n_arms=2, exploration="epsilon", gamma_scale=100.0),
         "gamma_scale: applies to exploration 'squarecb' only"),
        (lambda: VWPolicy(D, n_arms=2, gamma_scale=100.0, extra_args=["--gamma_scale", "5"]),
         "gamma_scale: given twice"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            call()


@pytest.mark.parametrize("bad, field", [
    ({"exploration": "softmax"}, "exploration"), ({"bag": 2.5}, "bag"), ({"cover": 0}, "cover"),
    ({"interactions": ["cz"]}, "interactions"), ({"lrq": "ca"}, "lrq"),
    ({"extra_args": ["--loss_function", "logistic"]}, "extra_args"),
    ({"learning_rate": 0}, "learning_rate"), ({"epsilon": 1.5}, "epsilon"), ({"bogus": 1}, "bogus"),
    ({"gamma_scale": 0}, "gamma_scale"), ({"gamma_exponent": -0.1}, "gamma_exponent"),
    ({"exploration": "cover", "gamma_scale": 50}, "squarecb"),
    ({"gamma_exponent": 0.5, "extra_args": ["--gamma_exponent", "0.5"]}, "given twice"),
])
def test_vw_spec_is_strict(bad, field):
    with pytest.raises(ValidationError, match=field):
        VWSpec.model_validate({"kind": "vw", **bad})
    spec = VWSpec.model_validate({"kind": "vw", "bag": 3.0,
                                  "extra_args": ["--cb_type", "dr", "--noconstant"]})
    assert spec.bag == 3


def test_vws_own_settings_reach_the_workspace_from_settings_strings_and_campaign_specs():
    from simulators.policy_args import parse_policy_args

    (arg,) = parse_policy_args("vw:gamma_scale=100:gamma_exponent=0.25:learning_rate=0.1:"
                               "interactions=ca+cca", ["vw"])
    policy = VWPolicy(D, n_arms=K, rng=0, **arg.settings)
    args = policy.arguments()
    pairs = set(zip(args, args[1:], strict=False))
    assert {("--gamma_scale", "100.0"), ("--gamma_exponent", "0.25"),
            ("--learning_rate", "0.1"), ("--interactions", "cca")} <= pairs
    restored = VWPolicy.from_state(policy.state())
    assert restored.gamma_scale == 100.0 and restored.gamma_exponent == 0.25
    with pytest.raises(InvalidInputError, match="policy vw: gamma_scale"):
        parse_policy_args("vw:gamma_scale=-1", ["vw"])
    with pytest.raises(InvalidInputError, match="squarecb"):
        parse_policy_args("vw:exploration=epsilon:gamma_scale=100", ["vw"])
    spec = CampaignSpec.model_validate({
        "name": "c", "context": {"features": [{"kind": "numeric", "name": "x"}]},
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                   "policy": {"kind": "vw", "gamma_scale": 1000, "gamma_exponent": 0.5}}]})
    engine = Engine()
    engine.create_campaign(spec)
    (slot_policy,) = [s.policy for s in engine._campaigns["c"].slots]
    assert "--gamma_scale" in slot_policy.arguments() and slot_policy.gamma_scale == 1000.0


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
