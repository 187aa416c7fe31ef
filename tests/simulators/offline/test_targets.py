"""Targets trained on the log (progressive, cross-fitted, fixed from a snapshot) and the
joined-log reader's arm features: policies that differ get different estimates, a policy
evaluated on its own log finds its realized reward, no event is scored by a model that
learned it, and BaRT and hybrid slots of a demo-like log evaluate."""

import numpy as np
import orjson
import pytest

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, JoinedEvent, SlotChoice
from bandit.policies import EpsilonGreedy, LinTS, LinUCB
from simulators.email_campaign import SLOTS, EmailCampaign
from simulators.offline import ope, targets
from simulators.offline.logs import LoggedBandit, read_joined
from simulators.replay import compare, make_targets

_FIVE = ("lin_ucb", "lin_ts", "beta_ts", "epsilon_greedy", "uniform")


def _demo_log(tmp_path, n=3000, batch=250, seed=0):
    """The demo's four-slot campaign run through a real engine on simulated subscribers, in
    weekly-like batches (decide, draw clicks from the true model, learn the joined events):
    the joined log, the spec file and the engine's snapshot at the end."""
    env = EmailCampaign()
    spec = env.campaign_spec()
    engine = Engine(seed=seed)
    engine.create_campaign(spec)
    rng = np.random.default_rng(seed)
    lines = []
    for start in range(0, n, batch):
        subs = env.subscribers(batch, rng, first_id=start)
        requests = subs.requests(spec.name)
        decisions = engine.decide_many(spec.name, requests)
        choices = {slot: [next(s.arm for s in d.slots if s.slot == slot) for d in decisions]
                   for slot in SLOTS}
        clicks = env.sample_clicks(subs, choices, rng)
        events = []
        for request, decision, click in zip(requests, decisions, clicks.tolist(), strict=True):
            events.append(JoinedEvent(
                decision_id=decision.decision_id, campaign=spec.name,
                subject=subject_key(request.user_id).hex(), ts=1000 + start,
                slots={s.slot: SlotChoice(arm=s.arm, propensity=s.propensity)
                       for s in decision.slots},
                context=request.context, segments=request.segments, holdout=decision.holdout,
                rewards={slot: click for slot in SLOTS}))
        engine.learn(events)
        lines += [e.model_dump_json() for e in events]
    joined, spec_file, snapshot = (tmp_path / "joined.jsonl", tmp_path / "spec.json",
                                   tmp_path / "engine.npz")
    joined.write_text("\n".join(lines) + "\n")
    spec_file.write_text(spec.model_dump_json())
    engine.save(snapshot)
    return joined, spec, spec_file, snapshot


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return _demo_log(tmp_path_factory.mktemp("demo"))


def test_policies_that_differ_get_different_estimates(demo):
    # The reported bug: untrained, all five gave the same IPS and DR on the demo's log.
    joined, spec, _, _ = demo
    log = read_joined(joined, spec, "subject_line")
    for mode in ("progressive", "cross-fit"):
        result = compare(log, make_targets(list(_FIVE), log), ["ips", "dr"], n_boot=50,
                         progress=False, target_mode=mode)
        for estimator in ("ips", "dr"):
            values = [result.estimates[p][estimator].value for p in _FIVE]
            assert len(set(values)) == len(_FIVE), (mode, estimator, values)
    # As they stand, the untrained policies are uniform: the old answer, kept as "fixed".
    fixed = compare(log, make_targets(list(_FIVE), log), ["ips"], n_boot=50, progress=False,
                    target_mode="fixed")
    assert len({round(fixed.estimates[p]["ips"].value, 12) for p in _FIVE}) == 1


def _world(n, seed, dim=3, k=4):
    """Contexts with an intercept and Bernoulli rewards whose best arm depends on them."""
    rng = np.random.default_rng(seed)
    X = np.c_[np.ones(n), rng.normal(size=(n, dim - 1))]
    W = rng.normal(scale=0.8, size=(k, dim))
    return X, 1.0 / (1.0 + np.exp(-(X @ W.T - 1.5))), rng


def _self_logged(make_policy, n=4000, batch=50, seed=0):
    """A log a learning policy wrote itself: per batch it samples from its propensities, logs
    the chosen arm's, then learns the batch."""
    X, p_click, rng = _world(n, seed)
    policy = make_policy()
    k = policy.n_arms
    actions, propensities = np.empty(n, dtype=np.int64), np.empty(n)
    rewards = np.empty(n)
    for start in range(0, n, batch):
        rows = np.arange(start, min(start + batch, n))
        P = np.ascontiguousarray(policy.propensities(X[rows]))
        a = np.empty(rows.size, dtype=np.int64)
        ope.sample_actions(P, rng.random(rows.size), a)
        actions[rows], propensities[rows] = a, P[np.arange(rows.size), a]
        rewards[rows] = (rng.random(rows.size) < p_click[rows, a]).astype(float)
        policy.learn_many(a, X[rows], rewards[rows])
    return LoggedBandit(X, actions, rewards, propensities, k, name="self-logged")


@pytest.mark.parametrize("make_policy", [
    lambda: LinTS(4, 3, v=0.5, rng=1),
    lambda: EpsilonGreedy(4, 3, epsilon=0.2, rng=1),
    lambda: LinUCB(4, 3, alpha=0.5, epsilon=0.1, rng=1),
], ids=["lin_ts", "epsilon_greedy", "lin_ucb"])
def test_progressive_on_policy_finds_the_realized_reward(make_policy):
    log = _self_logged(make_policy, batch=50)
    scored = targets.progressive(make_policy(), log, batch_size=50)
    # The target retraces the logging policy: it gives every logged action the logged
    # probability, so every weight is 1 and IPS is the mean logged reward.
    np.testing.assert_allclose(scored.pi[np.arange(log.n), log.actions], log.propensities,
                               rtol=1e-9)
    ips = ope.evaluate(log, scored.pi, ("ips", "dr"), qhat=scored.qhat, n_boot=300)
    realized = ope.on_policy(log, n_boot=300)
    assert ips["ips"].value == pytest.approx(realized.value, rel=1e-9)
    assert ips["ips"].low <= realized.value <= ips["ips"].high
    assert ips["dr"].low <= realized.value <= ips["dr"].high


def _paired_log(n_pairs=30, k=3, seed=0):
    """Each context (a one-hot of its own coordinate) occurs twice, with the same arm and reward
    1: a linear model's expected reward at an event is 0 until it learns that context, and
    positive once it has, so q_hat shows which events the scoring model learned."""
    rng = np.random.default_rng(seed)
    pair = rng.permutation(np.repeat(np.arange(n_pairs), 2))
    X = np.eye(n_pairs)[pair]
    arm_of_pair = rng.integers(k, size=n_pairs)
    log = LoggedBandit(X, arm_of_pair[pair], np.ones(2 * n_pairs), np.full(2 * n_pairs, 1 / k), k)
    return log, pair


@pytest.mark.parametrize("folds", [2, 5, 7])
def test_cross_fit_never_scores_an_event_with_a_model_that_learned_it(folds):
    log, pair = _paired_log()
    scored = targets.cross_fit(EpsilonGreedy(3, log.dim, rng=0), log, folds=folds, seed=folds)
    fold = scored.fold
    assert fold is not None and np.bincount(fold).max() - np.bincount(fold).min() <= 1
    q = scored.qhat[np.arange(log.n), log.actions]
    twin = np.array([np.flatnonzero((pair == pair[i]) & (np.arange(log.n) != i))[0]
                     for i in range(log.n)])
    # Learned: exactly the twins in other folds (the model learned every other fold), never
    # the event itself.
    np.testing.assert_array_equal(q > 0, fold[twin] != fold)
    assert (q[fold[twin] == fold] == 0).all() and (fold[twin] == fold).any()


@pytest.mark.parametrize("batch_size", [1, 4, 25])
def test_progressive_scores_each_event_before_learning_it(batch_size):
    log, pair = _paired_log()
    scored = targets.progressive(LinUCB(3, log.dim, rng=0), log, batch_size=batch_size)
    q = scored.qhat[np.arange(log.n), log.actions]
    batch = np.arange(log.n) // batch_size
    first = {}
    for i, p in enumerate(pair.tolist()):
        first.setdefault(p, i)
    learned_before = np.array([batch[first[p]] < batch[i] for i, p in enumerate(pair.tolist())])
    np.testing.assert_array_equal(q > 0, learned_before)


def test_the_policy_passed_in_is_not_changed():
    log = _self_logged(lambda: LinUCB(4, 3, rng=1), n=600)
    policy = LinUCB(4, 3, rng=1)
    before = policy.state()
    targets.progressive(policy, log)
    targets.cross_fit(policy, log, folds=3)
    after = policy.state()
    for name, array in before["arrays"].items():
        np.testing.assert_array_equal(after["arrays"][name], array)


@pytest.mark.parametrize("slot", ["offer", "artwork"])
def test_bart_and_hybrid_slots_of_a_demo_log_evaluate(demo, slot):
    joined, spec, _, _ = demo
    log = read_joined(joined, spec, slot)
    s = spec.slots[[x.name for x in spec.slots].index(slot)]
    assert log.action_features is not None and log.action_features.shape[0] == len(s.arms)
    if slot == "offer":  # discount, as given
        assert log.action_features[:, 0].tolist() == [0.0, 10.0, 20.0, 30.0]
    else:  # scene, one-hot in the arms' order, and the unknown bucket
        np.testing.assert_array_equal(log.action_features[:, :5], np.eye(5))
    result = compare(log, make_targets(["bart", "hybrid_lin_ucb"], log), ["ips", "dr"],
                     n_boot=50, progress=False)
    for policy in ("bart", "hybrid_lin_ucb"):
        for e in result.estimates[policy].values():
            assert np.isfinite([e.value, e.low, e.high]).all() and e.low <= e.value <= e.high


def test_a_spec_whose_arms_do_not_match_the_log_is_refused(demo):
    joined, spec, _, _ = demo
    data = spec.model_dump()
    offer = next(s for s in data["slots"] if s["name"] == "offer")
    offer["arms"] = [a for a in offer["arms"] if a["id"] != "off30"]
    with pytest.raises(InvalidInputError, match=r"line \d+: slot 'offer' logged arm 'off30', "
                       r"which the spec's slot does not list"):
        read_joined(joined, CampaignSpec.model_validate(data), "offer")


def test_cmab_replay_cross_fit_with_a_snapshot_target(demo, tmp_path, capsys):
    from bandit.cli import main

    joined, spec, spec_file, snapshot = demo
    code = main(["replay", "--log", str(joined), "--spec", str(spec_file), "--slot", "artwork",
                 "--policy", "bart,hybrid_lin_ucb,uniform", "--estimators", "ips,snips,dr",
                 "--target-mode", "cross-fit", "--folds", "3", "--target-snapshot",
                 str(snapshot), "--n-boot", "50", "--no-progress", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    assert set(results["estimates"]) == {"bart", "hybrid_lin_ucb", "uniform", "snapshot"}
    assert results["parameters"]["target_mode"] == "cross-fit"
    assert results["parameters"]["folds"] == 3
    # The snapshot's slot policy, fixed: its probabilities on the log, as the engine has them.
    log = read_joined(joined, spec, "artwork")
    policy, _, _ = Engine.load(snapshot).slot_policy(spec.name, "artwork")
    fixed = ope.evaluate(log, policy.propensities(log.X), ("ips",), n_boot=50)["ips"]
    assert results["estimates"]["snapshot"]["ips"]["value"] == pytest.approx(fixed.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-mode", "online"], "--target-mode"),
        (["--folds", "1"], "--folds"),
        (["--target-snapshot", "{spec}"], "not an engine snapshot"),
    ],
)
def test_cmab_replay_bad_target_options_are_one_line(demo, tmp_path, capsys, args, message):
    from bandit.cli import main

    joined, _, spec_file, _ = demo
    code = main(["replay", "--log", str(joined), "--spec", str(spec_file), "--slot", "artwork",
                 *[a.format(spec=spec_file) for a in args], "--policy", "uniform",
                 "--estimators", "ips", "--n-boot", "10", "--no-progress", "--out",
                 str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err


def test_a_snapshot_whose_slot_does_not_match_the_log_is_refused(demo):
    joined, spec, _, snapshot = demo
    log = read_joined(joined, spec, "artwork")
    renamed = LoggedBandit(log.X, log.actions, log.rewards, log.propensities, log.n_actions,
                           action_names=("a", "b", "c", "d", "e"),
                           context_names=log.context_names)
    with pytest.raises(InvalidInputError, match=r"slot 'artwork' has arms \['action'"):
        targets.snapshot_policy(snapshot, renamed, "artwork")
    with pytest.raises(InvalidInputError, match="no slot 'hero'"):
        targets.snapshot_policy(snapshot, log, "hero")
    with pytest.raises(InvalidInputError, match="no campaign 'daily'"):
        targets.snapshot_policy(snapshot, log, "artwork", "daily")
    assert targets.snapshot_policy(snapshot, log, "artwork").kind == "bart"


def test_bad_target_arguments_are_named():
    log = _self_logged(lambda: LinUCB(4, 3, rng=1), n=200)
    with pytest.raises(InvalidInputError, match=r"folds: expected an integer in 2..200"):
        targets.cross_fit(LinUCB(4, 3), log, folds=201)
    with pytest.raises(InvalidInputError, match="batch_size: expected an integer >= 1"):
        targets.progressive(LinUCB(4, 3), log, batch_size=0)
    with pytest.raises(InvalidInputError, match="target mode: expected one of progressive"):
        targets.score(LinUCB(4, 3), log, "online")
    with pytest.raises(InvalidInputError, match="target mode: expected one of"):
        compare(log, {"uniform": np.full((log.n, 4), 0.25)}, ["ips"], progress=False,
                target_mode="online")
