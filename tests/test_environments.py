"""Simulated environments: shapes, the documented truth, a real contextual gap, drift, late arms."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from simulators import environments
from simulators.environments import Email, Environment, LinearLogistic, make_environment

ENVIRONMENTS = {
    "linear": lambda **options: LinearLogistic(seed=0, **options),
    "linear_small": lambda **options: LinearLogistic(n_arms=3, dim=4, seed=5, **options),
    "email": lambda **options: Email(**options),
}


@pytest.fixture(params=sorted(ENVIRONMENTS))
def make_env(request):
    return ENVIRONMENTS[request.param]


def test_doctests_pass():
    assert doctest.testmod(environments).failed == 0


def test_shapes_and_dtypes(make_env, rng):
    env: Environment = make_env()
    X = env.contexts(257, rng)
    assert X.shape == (257, env.dim) and X.dtype == np.float64 and X.flags.c_contiguous
    np.testing.assert_array_equal(X[:, 0], 1.0)
    assert env.arm_features.shape[0] == env.n_arms == len(env.arm_names)
    assert env.arm_features.dtype == np.float64 and env.arm_features.flags.c_contiguous
    P = env.expected_rewards(X)
    assert P.shape == (257, env.n_arms) and P.dtype == np.float64
    assert ((P >= 0.0) & (P <= 1.0)).all()
    rewards = env.sample_rewards(X, np.zeros(257, dtype=np.int64), rng)
    assert rewards.shape == (257,) and rewards.dtype == np.float64
    assert set(np.unique(rewards)) <= {0.0, 1.0}


def test_same_seed_same_truth_and_contexts(make_env):
    a, b = make_env(), make_env()
    Xa = a.contexts(100, np.random.default_rng(3))
    Xb = b.contexts(100, np.random.default_rng(3))
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(a.expected_rewards(Xa), b.expected_rewards(Xb))


@pytest.mark.parametrize(
    ("env", "low", "high"),
    [(LinearLogistic(seed=0), 0.02, 0.30), (Email(), 0.005, 0.16)],
    ids=["linear", "email"],
)
def test_click_rates_are_realistic(env, low, high, rng):
    P = env.expected_rewards(env.contexts(50_000, rng))
    assert low <= P.min() and P.max() <= high
    assert 0.02 <= P.mean() <= 0.12


@pytest.mark.parametrize("env", [LinearLogistic(seed=0), Email()], ids=["linear", "email"])
def test_oracle_beats_best_fixed_arm_beats_uniform(env, rng):
    P = env.expected_rewards(env.contexts(50_000, rng))
    oracle, best_fixed, uniform = P.max(axis=1).mean(), P.mean(axis=0).max(), P.mean()
    assert oracle > 1.4 * best_fixed
    assert best_fixed > 1.1 * uniform
    # The best arm really depends on the context: no arm is best for most subscribers.
    best_share = np.bincount(P.argmax(axis=1), minlength=env.n_arms) / P.shape[0]
    assert best_share.max() < 0.5


def test_sampled_clicks_match_expected_rates(make_env, rng):
    env = make_env()
    n = 200_000
    X = env.contexts(n, rng)
    arms = rng.integers(env.n_arms, size=n)
    p = env.expected_rewards(X)[np.arange(n), arms]
    rewards = env.sample_rewards(X, arms, rng)
    # Four standard errors of a mean of independent Bernoullis.
    assert abs(rewards.mean() - p.mean()) < 4.0 * np.sqrt(np.mean(p * (1 - p)) / n)


def test_email_implements_the_documented_table(rng):
    env = Email()
    X = env.contexts(1000, rng)
    style = X[:, 1:5].argmax(axis=1)
    hour = np.mod(np.arctan2(X[:, 5], X[:, 6]) * 24.0 / (2.0 * np.pi), 24.0)
    price = X[:, 7]
    region = X[:, 8:12].argmax(axis=1)
    table = np.array(
        [
            [0.5, -0.2, 1.2, 0.0, -0.3],
            [-0.2, 1.1, -0.1, 0.3, 0.0],
            [0.4, -0.4, -0.2, 0.0, 0.9],
            [-0.3, 0.2, 0.1, 1.0, 0.4],
        ]
    )
    logit = (
        -3.9
        + table[style]
        + np.outer(price - 0.5, [0.4, 0.0, 0.8, 0.0, 0.0])
        + (0.35 * np.cos(2.0 * np.pi * (hour - 9.0) / 24.0))[:, None]
        + np.array([0.0, 0.1, -0.1, 0.05])[region][:, None]
    )
    np.testing.assert_allclose(env.expected_rewards(X), 1.0 / (1.0 + np.exp(-logit)), rtol=1e-12)
    # Each style's favourite framing, at middling price sensitivity.
    favourites = [env.arm_names[a] for a in table.argmax(axis=1)]
    assert favourites == ["offer", "curiosity", "plain", "personal"]


def test_drift_changes_the_best_arm(make_env, rng):
    env = make_env(drift_steps=1000)
    still = make_env()
    X = env.contexts(5000, rng)
    at_start = env.expected_rewards(X, step=0)
    at_end = env.expected_rewards(X, step=1000)
    np.testing.assert_array_equal(at_start, still.expected_rewards(X))
    assert np.mean(at_start.argmax(axis=1) != at_end.argmax(axis=1)) > 0.3
    # Preferences stop moving once the drift is complete.
    np.testing.assert_array_equal(env.expected_rewards(X, step=5000), at_end)
    # A step per row gives each row its own point on the path.
    steps = np.where(np.arange(5000) % 2 == 0, 0, 1000)
    mixed = env.expected_rewards(X, step=steps)
    np.testing.assert_array_equal(mixed[::2], at_start[::2])
    np.testing.assert_array_equal(mixed[1::2], at_end[1::2])


def test_no_drift_ignores_the_step(make_env, rng):
    env = make_env()
    X = env.contexts(100, rng)
    np.testing.assert_array_equal(env.expected_rewards(X, step=10**6), env.expected_rewards(X))


def test_new_arm_is_ineligible_until_it_arrives(make_env):
    env = make_env(new_arm_at=50)
    assert not env.eligible(0)[-1] and env.eligible(0)[:-1].all()
    assert not env.eligible(49)[-1]
    assert env.eligible(50).all() and env.eligible(10**6).all()
    mask = env.eligible(np.array([0, 49, 50, 51]))
    assert mask.shape == (4, env.n_arms) and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask[:, -1], [False, False, True, True])
    assert make_env().eligible(0).all()


@pytest.mark.parametrize("options", [{"drift_steps": 0}, {"new_arm_at": -1}])
def test_bad_options_are_rejected(make_env, options):
    with pytest.raises(InvalidInputError):
        make_env(**options)


def test_make_environment():
    assert isinstance(make_environment("email"), Email)
    linear = make_environment("linear", seed=3, drift_steps=10, new_arm_at=5)
    assert isinstance(linear, LinearLogistic)
    assert (linear.drift_steps, linear.new_arm_at) == (10, 5)
    with pytest.raises(InvalidInputError, match="unknown environment 'artwork'"):
        make_environment("artwork")
