"""Hybrid LinUCB keeps per-arm sums only: Algorithm 2's shared sums are functions of them."""

import numpy as np

from bandit.policies import HybridLinUCB, from_state
from tests import reference


def _learned(seed: int = 0) -> tuple[HybridLinUCB, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, d, m = 4, 3, 2
    policy = HybridLinUCB(dim=d, arm_features=rng.normal(size=(k, m)), alpha=0.7, rng=0)
    arms, X = rng.integers(0, k, 60), rng.normal(size=(60, d))
    policy.learn_many(arms, X, rng.random(60))
    return policy, rng.normal(size=(8, d))


def test_the_state_holds_per_arm_sums_only():
    policy, _ = _learned()
    arrays = policy.state()["arrays"]
    assert set(arrays) == {"arm_features", "Sxx", "bx", "counts", "active"}


def test_a_state_with_the_shared_sums_of_earlier_versions_loads_and_decides_the_same():
    # Snapshots written before kept sum z z^T, r z and x z^T as well: they are redundant
    # (z = kron(x, f_a)), so a policy read from one ignores them and scores as it did.
    policy, Q = _learned()
    state = policy.state()
    k, d = state["arrays"]["Sxx"].shape[:2]
    p = d * np.asarray(state["arrays"]["arm_features"]).shape[1]
    old = dict(state, arrays=dict(state["arrays"], Szz=np.ones((p, p)).tolist(),
                                  bz=np.ones(p).tolist(), Sxz=np.ones((k, d, p)).tolist()))
    np.testing.assert_array_equal(from_state(old).scores(Q), policy.scores(Q))


def _refactorized(policy: HybridLinUCB) -> HybridLinUCB:
    fresh = from_state(policy.state())
    assert isinstance(fresh, HybridLinUCB)
    fresh._refresh()
    return fresh


def _assert_factors_match(policy: HybridLinUCB) -> None:
    """The factors learn_one keeps in place against those rebuilt from the same sums."""
    want = _refactorized(policy)
    for name in ("_theta", "_Ainv", "_A_inv", "_A0_inv", "_N", "_c", "_b0", "_beta", "_Mbeta"):
        value = getattr(want, name)
        np.testing.assert_allclose(getattr(policy, name), value, rtol=1e-9,
                                   atol=1e-12 * np.abs(value).max(), err_msg=name)


def _events(seed: int, n: int, k: int, d: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.normal(size=(n, d)), rng.random(n)


def test_events_learned_one_at_a_time_keep_the_refactorized_factors():
    policy, Q = _learned()
    k, d = policy.n_arms, policy.dim
    arms, X, r = _events(1, 300, k, d)
    batch = from_state(policy.state())
    for a, x, ri in zip(arms[:150].tolist(), X[:150], r[:150].tolist(), strict=True):
        policy.learn_one(a, x, ri)
    assert not policy._dirty  # updated in place, not refactorized
    _assert_factors_match(policy)
    # A snapshot round trip, then more events one at a time on the restored policy.
    restored = from_state(policy.state())
    restored.choose_one(Q[0])
    for a, x, ri in zip(arms[150:].tolist(), X[150:], r[150:].tolist(), strict=True):
        restored.learn_one(a, x, ri)
    _assert_factors_match(restored)
    batch.learn_many(arms, X, r)
    for name, value in batch.state()["arrays"].items():  # the same sums, bit for bit
        np.testing.assert_array_equal(restored.state()["arrays"][name], value)
    np.testing.assert_allclose(restored.scores(Q), batch.scores(Q), rtol=1e-9)


def test_forgetting_after_events_learned_one_at_a_time_takes_out_exactly_what_they_added():
    policy, Q = _learned()
    before = policy.state()
    arms, X, r = _events(2, 80, policy.n_arms, policy.dim)
    for a, x, ri in zip(arms.tolist(), X, r.tolist(), strict=True):
        policy.learn_one(a, x, ri)
    policy.forget_many(arms, X, r)
    for name, value in before["arrays"].items():
        np.testing.assert_allclose(policy.state()["arrays"][name], value, rtol=1e-12,
                                   atol=1e-12)
    for a, x, ri in zip(arms[:30].tolist(), X[:30], r[:30].tolist(), strict=True):
        policy.learn_one(a, x, ri)  # and one at a time again from the refactorized state
    _assert_factors_match(policy)


def test_events_learned_one_at_a_time_with_decay_match_the_batch():
    rng = np.random.default_rng(3)
    F = rng.normal(size=(3, 2))
    one = HybridLinUCB(dim=2, arm_features=F, half_life_ms=500.0, rng=0)
    many = HybridLinUCB(dim=2, arm_features=F, half_life_ms=500.0, rng=0)
    arms, X, r = _events(4, 60, 3, 2)
    ts = np.arange(60) * 40.0
    for a, x, ri, t in zip(arms.tolist(), X, r.tolist(), ts.tolist(), strict=True):
        one.learn_one(a, x, ri, ts_ms=t)
    many.learn_many(arms, X, r, ts_ms=ts)
    Q = rng.normal(size=(5, 2))
    np.testing.assert_allclose(one.scores(Q), many.scores(Q), rtol=1e-9)
    _assert_factors_match(one)


def test_events_learned_one_at_a_time_follow_algorithm_2():
    rng = np.random.default_rng(5)
    k, d, m = 4, 3, 2
    F = rng.normal(size=(k, m))
    policy = HybridLinUCB(dim=d, arm_features=F, alpha=0.6, l2=0.7, epsilon=0.0, rng=0)
    arms, X, r = _events(6, 120, k, d)
    for a, x, ri in zip(arms.tolist(), X, r.tolist(), strict=True):
        policy.learn_one(a, x, ri)
        if a == 0:
            policy.choose_one(x)  # decisions between events read the factors kept in place
    Q = rng.normal(size=(6, d))
    np.testing.assert_allclose(policy.scores(Q),
                               reference.hybrid_linucb(arms, X, r, Q, F, 0.6, 0.7), rtol=1e-9)


def test_a_batch_too_small_for_a_refactorization_keeps_the_factors_in_place():
    # p = 5 * 8 shared features: refactorizing costs far more than one event's updates.
    rng = np.random.default_rng(8)
    policy = HybridLinUCB(dim=5, arm_features=rng.normal(size=(3, 8)), rng=0)
    arms, X, r = _events(7, 50, 3, 5)
    policy.learn_many(arms[:40], X[:40], r[:40])
    whole = from_state(policy.state())
    policy.choose_one(X[0])
    for s in range(40, 50):
        policy.learn_many(arms[s : s + 1], X[s : s + 1], r[s : s + 1])
        assert not policy._dirty
    _assert_factors_match(policy)
    whole.learn_many(arms[40:], X[40:], r[40:])
    for name, value in whole.state()["arrays"].items():
        np.testing.assert_array_equal(policy.state()["arrays"][name], value)
