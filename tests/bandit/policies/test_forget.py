"""Forgetting (``forget_many``): learned rows taken out of the sums of every policy with sums
give the policy that never learned them; rows never learned are refused; VW refuses."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, VWPolicy

K, D = 4, 3
ARM_FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
FACTORIES = {
    "lin_ucb": lambda **kw: LinUCB(K, D, alpha=0.8, rng=0, **kw),
    "lin_ts": lambda **kw: LinTS(K, D, v=0.4, rng=0, **kw),
    "epsilon_greedy": lambda **kw: EpsilonGreedy(K, D, epsilon=0.2, rng=0, **kw),
    "hybrid_lin_ucb": lambda **kw: HybridLinUCB(D, ARM_FEATURES, alpha=0.5, rng=0, **kw),
    "beta_ts": lambda **kw: BetaTS(K, dim=D, rng=0, **kw),
    "bart": lambda **kw: Bart(D, ARM_FEATURES, epsilon=0.2, rng=0, **kw),
}
KINDS = sorted(FACTORIES)
# A whole-number half-life (references on one grid, rescales exact powers of two) and one
# that is not (rescales powers of two within rounding).
HALF_LIVES = [None, 5_000.0, 1_000 / 3]


def _rows(seed, n, subscribers, span_ms):
    """n rows of ``subscribers`` subscribers, in arrival order (stragglers included): arms,
    contexts with an intercept, rewards in [0, 1], event times, each row's subscriber."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.uniform(-2.0, 2.0, size=(n, D - 1))])
    return (rng.integers(K, size=n), X, rng.uniform(0.0, 1.0, size=n),
            1.8e12 + rng.uniform(0.0, span_ms, size=n), rng.integers(subscribers, size=n))


def _learn(policy, rows, cuts, forget=False):
    """Learn (or forget) ``rows`` in the batches that ``cuts`` (fractions) split them into."""
    arms, X, r, ts = rows
    n = len(arms)
    edges = [0, *sorted(int(c * n) for c in cuts), n]
    for lo, hi in zip(edges, edges[1:], strict=False):
        if hi > lo:
            verb = policy.forget_many if forget else policy.learn_many
            verb(arms[lo:hi], X[lo:hi], r[lo:hi], ts_ms=ts[lo:hi])


def _at_clock(policy, like):
    """``policy`` with its sums seen from ``like``'s reference and ``like``'s newest event
    time: the model that learned the same rows, its clock advanced to ``like``'s."""
    mine, theirs = policy.state(), like.state()
    arrays = {**policy.sums_at(theirs["t_ref_ms"]), "active": mine["arrays"]["active"]}
    return type(policy).from_state(dict(mine, t_ref_ms=theirs["t_ref_ms"],
                                        t_newest_ms=theirs["t_newest_ms"], arrays=arrays))


def assert_same_model(forgot, never):
    """``forgot`` (learned R, forgot S) is ``never`` (learned R without S): the sums agree to
    1e-9 seen from a common time (forgetting leaves the clock where S's rows moved it), and
    so do the decisions once ``never``'s clock is advanced to ``forgot``'s."""
    refs = [t for t in (forgot.state()["t_ref_ms"], never.state()["t_ref_ms"]) if t is not None]
    common = max(refs) if refs else None
    ours, theirs = forgot.sums_at(common), never.sums_at(common)
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        np.testing.assert_allclose(value, theirs[name], rtol=0, atol=1e-9, err_msg=name)
    assert (forgot.state()["arrays"]["counts"] >= 0).all()
    advanced = _at_clock(never, forgot)
    Q = np.column_stack([np.ones(6), np.random.default_rng(99).uniform(-2, 2, size=(6, D - 1))])
    scores = advanced.scores(Q)
    np.testing.assert_allclose(forgot.scores(Q), scores, rtol=0, atol=1e-9)
    # Decisions agree wherever the best arm wins by more than rounding: an exact tie in one
    # model is a win by 1e-16 in the other, and a tie splits the choice (BaRT: its
    # propensities), a win does not.
    top = np.sort(scores, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-7
    np.testing.assert_allclose(forgot.propensities(Q)[clear], advanced.propensities(Q)[clear],
                               atol=1e-8)
    draws = np.random.default_rng(5).random((6, 2 + K))
    np.testing.assert_array_equal(forgot.choose_many(Q, draws=draws)[clear],
                                  advanced.choose_many(Q, draws=draws)[clear])


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 60), subscribers=st.integers(1, 6),
       erased=st.sets(st.integers(0, 5), min_size=1), half_life=st.sampled_from(HALF_LIVES),
       span_half_lives=st.floats(0.0, 8.0),
       learn_cuts=st.lists(st.floats(0.0, 1.0), max_size=3),
       forget_cuts=st.lists(st.floats(0.0, 1.0), max_size=3), order_seed=st.integers(0, 2**31))
def test_forgetting_subscribers_gives_the_model_that_never_learned_them(
        kind, seed, n, subscribers, erased, half_life, span_half_lives, learn_cuts, forget_cuts,
        order_seed):
    span = span_half_lives * (half_life or 5_000.0)
    arms, X, r, ts, who = _rows(seed, n, subscribers, span)
    kw = {} if half_life is None else {"half_life_ms": half_life}
    forgot, never = FACTORIES[kind](**kw), FACTORIES[kind](**kw)
    _learn(forgot, (arms, X, r, ts), learn_cuts)
    keep = ~np.isin(who, list(erased))
    _learn(never, (arms[keep], X[keep], r[keep], ts[keep]), learn_cuts)
    # The erased subscribers' rows in any order (one after another or interleaved).
    gone = np.random.default_rng(order_seed).permutation(np.flatnonzero(~keep))
    _learn(forgot, (arms[gone], X[gone], r[gone], ts[gone]), forget_cuts, forget=True)
    assert_same_model(forgot, never)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("half_life", HALF_LIVES)
def test_forgetting_everything_gives_the_untouched_policy(kind, half_life):
    arms, X, r, ts, _ = _rows(1, 80, 1, 4 * (half_life or 1.0))
    kw = {} if half_life is None else {"half_life_ms": half_life}
    policy, fresh = FACTORIES[kind](**kw), FACTORIES[kind](**kw)
    policy.learn_many(arms, X, r, ts_ms=ts)
    policy.forget_many(arms[::-1], X[::-1], r[::-1], ts_ms=ts[::-1])
    # Exactly zero, not rounding: arms with nothing left tie as untouched arms do.
    for name, value in policy.sums_at(None).items():
        np.testing.assert_array_equal(value, fresh.sums_at(None)[name], err_msg=name)
    Q = X[:7]
    draws = np.random.default_rng(3).random((7, 2 + K))
    np.testing.assert_array_equal(policy.choose_many(Q, draws=draws),
                                  fresh.choose_many(Q, draws=draws))
    np.testing.assert_array_equal(policy.propensities(Q), fresh.propensities(Q))


@pytest.mark.parametrize("kind", ["lin_ucb", "lin_ts", "epsilon_greedy"])
def test_forgetting_refits_what_the_per_event_path_updated_in_place(kind):
    # learn_one keeps the arm's inverse by rank-one updates; forgetting refits it from the sums.
    arms, X, r, _, _ = _rows(4, 40, 1, 0.0)
    policy, never = FACTORIES[kind](), FACTORIES[kind]()
    for a, x, y in zip(arms, X, r, strict=True):
        policy.learn_one(int(a), x, float(y))
    never.learn_many(arms[10:], X[10:], r[10:])
    policy.forget_many(arms[:10], X[:10], r[:10])
    assert_same_model(policy, never)


def _unchanged(policy, before):
    after = policy.state()
    assert (after["t_ref_ms"], after["t_newest_ms"]) == (before["t_ref_ms"], before["t_newest_ms"])
    for name, value in before["arrays"].items():
        np.testing.assert_array_equal(after["arrays"][name], value, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_that_were_never_learned_are_refused_and_change_nothing(kind):
    arms, X, r, ts, _ = _rows(6, 30, 1, 3_000.0)
    arms = np.where(arms == 3, 0, arms)  # arm 3 never learned anything
    policy = FACTORIES[kind](half_life_ms=1_000.0)
    policy.learn_many(arms, X, r, ts_ms=ts)
    before = policy.state()
    scores = policy.scores(X[:4])
    fell = r"(counts|successes) at \(3,\) would fall from 0 to -"
    with pytest.raises(InvalidInputError, match=fell):
        policy.forget_many([0, 3], X[:2], r[:2], ts_ms=ts[:2])
    with pytest.raises(InvalidInputError, match="later than the newest event learned"):
        policy.forget_many([0], X[:1], r[:1], ts_ms=[ts.max() + 1.0])
    with pytest.raises(InvalidInputError, match="ts_ms: event times are required"):
        policy.forget_many([0], X[:1], r[:1])
    _unchanged(policy, before)
    np.testing.assert_array_equal(policy.scores(X[:4]), scores)
    with pytest.raises(InvalidInputError, match="nothing was learned"):
        FACTORIES[kind](half_life_ms=1_000.0).forget_many([0], X[:1], r[:1], ts_ms=ts[:1])


def test_beta_ts_refuses_to_forget_successes_it_never_counted():
    policy = BetaTS(2)
    policy.learn_many([0, 0, 1], np.zeros((3, 0)), [0.0, 0.0, 1.0])
    before = policy.state()
    with pytest.raises(InvalidInputError, match=r"successes at \(0,\) would fall from 0 to -1"):
        policy.forget_many([0], np.zeros((1, 0)), [1.0])
    _unchanged(policy, before)


@pytest.mark.parametrize("kind", ["lin_ucb", "hybrid_lin_ucb", "bart"])
def test_a_gram_diagonal_taken_below_zero_is_refused(kind):
    # The count stays positive (another row of the arm), the feature's square sum does not.
    policy = FACTORIES[kind]()
    policy.learn_many([0, 0], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [1.0, 0.0])
    before = policy.state()
    with pytest.raises(InvalidInputError, match="the diagonal of"):
        policy.forget_many([0], [[1.0, 2.0, 0.0]], [1.0])
    _unchanged(policy, before)


def test_vw_refuses_to_forget_and_says_to_retrain_from_the_log():
    policy = VWPolicy(D, ARM_FEATURES, rng=0)
    arms, X, r, _, _ = _rows(8, 20, 1, 0.0)
    policy.learn_many(arms, X, r)
    model = policy.model_bytes()
    with pytest.raises(IncompatibleStateError, match="retrain the slot from the log"):
        policy.forget_many(arms[:5], X[:5], r[:5])
    assert policy.model_bytes() == model


@pytest.mark.parametrize("kind", KINDS)
def test_after_forgetting_the_model_goes_on_learning_as_the_one_that_never_learned(kind):
    # Later rows move both references to the same point: from there the two are one model.
    arms, X, r, ts, who = _rows(10, 120, 5, 20_000.0)
    forgot, never = (FACTORIES[kind](half_life_ms=2_000.0) for _ in range(2))
    first, later = slice(0, 80), slice(80, 120)
    keep = who[first] != 2
    forgot.learn_many(arms[first], X[first], r[first], ts_ms=ts[first])
    never.learn_many(arms[first][keep], X[first][keep], r[first][keep], ts_ms=ts[first][keep])
    forgot.forget_many(arms[first][~keep], X[first][~keep], r[first][~keep],
                       ts_ms=ts[first][~keep])
    for policy in (forgot, never):
        policy.learn_many(arms[later], X[later], r[later], ts_ms=ts[later] + 30_000.0)
    assert forgot.state()["t_ref_ms"] == never.state()["t_ref_ms"]
    assert forgot.state()["t_newest_ms"] == never.state()["t_newest_ms"]
    assert_same_model(forgot, never)
