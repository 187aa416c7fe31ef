"""Simulated environments: shapes, the documented truth, a real contextual gap, drift, late arms."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from simulators.email_campaign import EmailCampaign
from simulators.environments import (
    Artwork,
    Email,
    Environment,
    LinearLogistic,
    SupervisedBandit,
    base,
    gaussian_blobs,
    make_environment,
    registry,
    supervised,
    synthetic,
)

ENVIRONMENTS = {
    "linear": lambda **options: LinearLogistic(seed=0, **options),
    "linear_small": lambda **options: LinearLogistic(n_arms=3, dim=4, seed=5, **options),
    "email": lambda **options: Email(**options),
    "artwork": lambda **options: Artwork(**options),
    "supervised": lambda **options: SupervisedBandit(*gaussian_blobs(n=500, seed=2), **options),
}


@pytest.fixture(params=sorted(ENVIRONMENTS))
def make_env(request):
    return ENVIRONMENTS[request.param]


def test_doctests_pass():
    for module in (base, registry, supervised, synthetic):
        assert doctest.testmod(module).failed == 0


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
    [(LinearLogistic(seed=0), 0.02, 0.30), (Email(), 0.005, 0.16), (Artwork(), 0.005, 0.20)],
    ids=["linear", "email", "artwork"],
)
def test_click_rates_are_realistic(env, low, high, rng):
    P = env.expected_rewards(env.contexts(50_000, rng))
    assert low <= P.min() and P.max() <= high
    assert 0.02 <= P.mean() <= 0.12


@pytest.mark.parametrize("env", [LinearLogistic(seed=0), Email(), Artwork()],
                         ids=["linear", "email", "artwork"])
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
    # (<=: the supervised rewards are deterministic, so there both sides are 0.)
    assert abs(rewards.mean() - p.mean()) <= 4.0 * np.sqrt(np.mean(p * (1 - p)) / n)


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
    assert isinstance(make_environment("artwork"), Artwork)
    campaign = make_environment("email4", drift_steps=7)
    assert isinstance(campaign, EmailCampaign) and campaign.drift_steps == 7
    supervised = make_environment("supervised", seed=4)
    assert isinstance(supervised, SupervisedBandit) and supervised.n_arms == 4
    with pytest.raises(InvalidInputError, match="unknown environment 'netflix'"):
        make_environment("netflix")


def test_artwork_implements_the_documented_table(rng):
    env = Artwork()
    X = env.contexts(1000, rng)
    np.testing.assert_allclose(X[:, 1:6].sum(axis=1), 1.0)
    table = 1.5 * np.array([[1.2, -0.2, 0.2, -0.5, 0.3, 0.2], [-0.2, 1.2, -0.3, 0.2, 0.6, -0.2],
                            [0.0, -0.2, 1.1, 0.4, 0.2, 0.1], [-0.5, 0.3, 0.4, 1.3, 0.1, 0.2],
                            [0.1, -0.3, 0.2, -0.3, 0.0, 1.0]])
    logit = (-4.1 + np.array([0.0, 0.0, 0.1, 0.0, 0.15, -0.1]) + X[:, 1:6] @ table
             + 0.8 * X[:, [6]])
    np.testing.assert_allclose(env.expected_rewards(X), 1.0 / (1.0 + np.exp(-logit)), rtol=1e-12)
    # A viewer of one genre only: action fans get the action shot, documentary fans landscapes.
    pure = np.zeros((5, 7))
    pure[:, 0] = 1.0
    pure[np.arange(5), 1 + np.arange(5)] = 1.0
    favourites = [env.arm_names[a] for a in env.expected_rewards(pure).argmax(axis=1)]
    assert favourites == ["action_shot", "comedic_moment", "dramatic_close_up",
                          "romantic_moment", "landscape"]


def test_supervised_truth_is_the_label():
    X, y = gaussian_blobs(n=300, seed=1)
    env = SupervisedBandit(X, y, class_names=("a", "b", "c", "d"))
    assert env.arm_names == ("a", "b", "c", "d") and env.dim == 6
    contexts = np.column_stack([np.ones(300), X])
    np.testing.assert_array_equal(env.expected_rewards(contexts), np.eye(4)[y])
    # Duplicated rows with different labels: the truth is their label shares.
    X2 = np.vstack([X[:1], X[:1], X[:1], X[1:2]])
    env2 = SupervisedBandit(X2, np.array([0, 0, 1, 2]))
    P = env2.expected_rewards(np.column_stack([np.ones(4), X2]))
    np.testing.assert_allclose(P[0], [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(P[3], [0.0, 0.0, 1.0])


def test_supervised_drift_moves_the_paying_class():
    X, y = gaussian_blobs(n=100, seed=1)
    env = SupervisedBandit(X, y, drift_steps=10)
    contexts = np.column_stack([np.ones(100), X])
    np.testing.assert_array_equal(env.expected_rewards(contexts, 10).argmax(axis=1), (y + 1) % 4)
    np.testing.assert_allclose(env.expected_rewards(contexts, 5).max(axis=1), 0.5)


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((3, 2)), np.array([0, 1]), "y: expected"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "non-empty"),
        (np.array([[0.0], [np.nan]]), np.array([0, 1]), "X row 1: not finite"),
        (np.zeros((2, 1)), np.array([0.0, 1.0]), "integer labels"),
        (np.zeros((2, 1)), np.array([0, -1]), "y row 1: label -1"),
        (np.zeros((2, 1)), np.array([0, 0]), "at least 2 classes"),
    ],
)
def test_supervised_bad_data_is_named(X, y, message):
    with pytest.raises(InvalidInputError, match=message):
        SupervisedBandit(X, y)


def test_supervised_refuses_foreign_contexts():
    env = SupervisedBandit(*gaussian_blobs(n=50, seed=1))
    with pytest.raises(InvalidInputError, match="context row 1: not a row of the dataset"):
        env.expected_rewards(np.vstack([env.contexts(1, np.random.default_rng(0)),
                                        np.full((1, env.dim), 9.0)]))
