"""Hybrid LinUCB keeps per-arm sums only: Algorithm 2's shared sums are functions of them."""

import numpy as np

from bandit.policies import HybridLinUCB, from_state


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
