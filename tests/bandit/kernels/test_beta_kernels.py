"""The Beta kernels: the incomplete beta, density and log B against SciPy and the definition, and
Beta TS win probabilities against adaptive quadrature where the old SciPy route was fragile (flat
priors, lopsided and huge counts, non-integer counts from decay, K up to 50, masks)."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import special, stats

from bandit.kernels import beta
from bandit.policies import _BETA_NODES, _BETA_PIECE_SDS, _BETA_WEIGHTS, BetaTS
from tests import reference

# Parameters from 1e-3 (a decayed tiny prior) to 1e8 (counts of a big campaign).
_params = st.floats(-3.0, 8.0).map(lambda e: 10.0**e)


def _win(a, b, mask=None):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mask = np.ones((1, a.size), dtype=np.bool_) if mask is None else mask
    out = np.empty(mask.shape)
    beta.beta_max_probabilities(a, b, mask, _BETA_NODES, _BETA_WEIGHTS, _BETA_PIECE_SDS, out)
    return out


@pytest.mark.parametrize(("a", "b", "x"), [
    (1.0, 1.0, 0.3), (0.3, 0.7, 0.2), (0.05, 0.05, 0.999), (4.0, 25.0, 0.1), (30.0, 300.0, 0.12),
    (2.37, 17.2, 0.05), (150.0, 80.0, 0.6), (2.5, 0.4, 0.999), (0.7, 40.0, 1e-4), (9.5, 9.5, 0.5),
])
def test_betainc_matches_the_definition(a, b, x):
    assert beta.betainc(a, b, x) == pytest.approx(reference.betainc(a, b, x), rel=1e-12, abs=1e-14)


@settings(max_examples=300, deadline=None)
@given(a=_params, b=_params, z=st.floats(-12.0, 12.0),
       u=st.floats(0.0, 1.0, allow_subnormal=False), at_bulk=st.booleans())
@example(a=1e6, b=1e6, z=0.0, u=0.0, at_bulk=True)
@example(a=1.0, b=1e6, z=1.0, u=0.0, at_bulk=True)
@example(a=1e-3, b=1e-3, z=0.0, u=1e-300, at_bulk=False)
def test_betainc_matches_scipy_over_wide_ranges(a, b, z, u, at_bulk):
    # Uniform x alone would land in the far tails of every narrow posterior; z puts x at z sds
    # from the mean, where the CDF is neither 0 nor 1 and the continued fraction works hardest.
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    x = min(max(mean + z * sd, 0.0), 1.0) if at_bulk else u
    # (Subnormal x is left out: there SciPy is off, e.g. 6.018e-4 for I_{5e-324}(0.01, 10),
    # whose value x^a / (a B(a, b)) is 6.014e-4 to all digits.)
    got, want = beta.betainc(a, b, x), special.betainc(a, b, x)
    assert 0.0 <= got <= 1.0
    # Where one parameter is >= 1e6 and the other small, x sits just above the switch point
    # (a + 1) / (a + b + 2) near 0, and the fraction for (b, a, 1 - x) cancels in its first
    # terms: about b * eps lost (1.3e-9 at b = 8e7, a = 9, against the definition).
    assert got == pytest.approx(want, rel=1e-9, abs=1e-11 if max(a, b) < 1e6 else 3e-9)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-3.0, 4.0).map(lambda e: 10.0**e), b=st.floats(-3.0, 4.0).map(lambda e: 10.0**e),
       z=st.floats(-8.0, 8.0))
def test_beta_logpdf_matches_scipy(a, b, z):
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    x = min(max(mean + z * sd, 1e-12), 1.0 - 1e-12)
    assert beta.beta_logpdf(a, b, x) == pytest.approx(stats.beta.logpdf(x, a, b), abs=1e-9,
                                                      rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(a=_params, b=_params)
def test_log_beta_matches_scipy_and_its_recurrence(a, b):
    # SciPy's betaln is itself off in places (by 1e-12 at log B(1, 1000) = -log 1000, by 4e-9 at
    # a = 8.6e5, b = 0.18, from lgamma differences), so it bounds loosely; the recurrence
    # B(a + 1, b) = B(a, b) a / (a + b) and B(1, b) = 1 / b pin the digits.
    got = beta.log_beta(a, b)
    assert got == pytest.approx(special.betaln(a, b), rel=1e-8, abs=1e-8)
    step = beta.log_beta(a + 1.0, b) - got
    assert step == pytest.approx(math.log(a / (a + b)), abs=2e-14 * (abs(got) + 8.0))
    assert beta.log_beta(1.0, b) == pytest.approx(-math.log(b), rel=1e-15, abs=1e-14)


def test_log_density_keeps_its_digits_at_huge_counts():
    # Beta(n, n) at 1/2 has log density log Gamma(2n) - 2 log Gamma(n) - (2n - 2) log 2, which by
    # Stirling's series is log(4n / pi) / 2 - 1 / (8n) + O(n^-3). Three lgammas of size 2e9 (or
    # SciPy's logpdf) lose about 1e-7 of it at n = 1e8.
    for n in (1e4, 1e6, 1e8, 1e10):
        exact = 0.5 * math.log(4.0 * n / math.pi) - 1.0 / (8.0 * n)
        assert beta.beta_logpdf(n, n, 0.5) == pytest.approx(exact, abs=1e-12)


BETA_EDGES = {
    "flat priors k=2": ([1.0, 1.0], [1.0, 1.0]),
    "flat priors k=7": ([1.0] * 7, [1.0] * 7),
    "flat against lopsided": ([1.0, 1.0, 2.0], [1.0, 1e6, 3e5]),
    "lopsided": ([1.0, 2.0, 5.0], [1e6, 3e5, 2e6]),
    "huge counts": ([1e6, 1.0005e6], [1e6, 1e6]),
    "huge counts 1e8": ([1e8, 1e8 + 1e4, 1e8 - 3e4], [9e8, 9e8, 9e8]),
    "mixed scales": ([5.0, 50.0, 5000.0, 3e5], [20.0, 250.0, 20000.0, 1.2e6]),
    "decayed": ([2.37, 3.9, 1.01, 0.31], [17.2, 25.5, 9.99, 0.47]),
    "below one": ([0.5, 2.0, 0.05], [0.5, 3.0, 0.2]),
    "one sure arm": ([500.0, 2.0], [10.0, 2.0]),
    "dead arm": ([1.0, 900.0, 950.0], [1e4, 100.0, 100.0]),
}


# The reference's adaptive quadrature warns on some of these posteriors (its integrand, in the
# quantile of one arm, is steep near 0 and 1); the two independent routes still agree to 1e-9.
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("case", sorted(BETA_EDGES))
def test_win_probabilities_at_the_edges_match_adaptive_quadrature(case):
    a, b = (np.array(v) for v in BETA_EDGES[case])
    got = _win(a, b)[0]
    np.testing.assert_allclose(got, reference.beta_max_probabilities(a, b), atol=1e-9)
    assert abs(got.sum() - 1.0) < 1e-12 and (got >= 0.0).all()


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("k", [2, 5, 12])
def test_win_probabilities_of_random_posteriors_match_adaptive_quadrature(rng, k):
    # Click-rate posteriors like the benchmark's, with the non-integer counts decay makes.
    a = 1.0 + rng.uniform(0.0, 40.0, size=k)
    b = 1.0 + rng.uniform(20.0, 400.0, size=k)
    np.testing.assert_allclose(_win(a, b)[0], reference.beta_max_probabilities(a, b), atol=1e-9)


@pytest.mark.parametrize("k", [2, 13, 50])
def test_identical_arms_tie_and_order_does_not_matter(rng, k):
    np.testing.assert_allclose(_win(np.full(k, 3.5), np.full(k, 40.0))[0], 1.0 / k, atol=1e-12)
    a, b = 1.0 + rng.uniform(0.0, 30.0, size=k), 1.0 + rng.uniform(20.0, 300.0, size=k)
    perm = rng.permutation(k)
    np.testing.assert_allclose(_win(a[perm], b[perm])[0], _win(a, b)[0][perm], atol=1e-12)


def test_fifty_arms_sum_to_one_and_match_monte_carlo(rng):
    a, b = 1.0 + rng.uniform(0.0, 30.0, size=50), 1.0 + rng.uniform(20.0, 300.0, size=50)
    got = _win(a, b)[0]
    assert abs(got.sum() - 1.0) < 1e-12
    draws = rng.beta(a, b, size=(200_000, 50))
    freq = np.bincount(np.argmax(draws, axis=1), minlength=50) / draws.shape[0]
    np.testing.assert_allclose(got, freq, atol=4e-3)


def test_masked_arms_get_zero_and_the_rest_equal_the_subset(rng):
    a, b = 1.0 + rng.uniform(0.0, 30.0, size=6), 1.0 + rng.uniform(20.0, 300.0, size=6)
    mask = np.array([[True, False, True, True, False, True], [False] * 5 + [True]])
    got = _win(a, b, mask)
    assert (got[0, ~mask[0]] == 0.0).all()
    np.testing.assert_allclose(got[0, mask[0]], _win(a[mask[0]], b[mask[0]])[0], atol=1e-15)
    np.testing.assert_array_equal(got[1], [0.0] * 5 + [1.0])


def test_beta_ts_propensities_with_a_retired_arm_and_decay():
    policy = BetaTS(4, half_life_ms=5_000.0, rng=0)
    arms = np.array([0, 1, 2, 3, 1, 2, 2, 0] * 25)
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0] * 25)
    policy.learn_many(arms, np.zeros((200, 0)), rewards, ts_ms=np.arange(200) * 97.0)
    policy.retire_arm(3)
    a, b = policy._posterior()
    assert not np.allclose(a, np.round(a))  # decay leaves non-integer counts
    P = policy.propensities(np.zeros((1, 0)))[0]
    assert P[3] == 0.0
    np.testing.assert_allclose(P[:3], reference.beta_max_probabilities(a[:3], b[:3]), atol=1e-9)


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (0.3, 0.7), (2.5, 40.0), (500.0, 2000.0),
                                      (0.05, 3.0), (1e6, 3.0)])
def test_beta_draws_follow_the_beta_distribution(a, b):
    rng = np.random.default_rng([7, int(a * 100), int(b * 100)])
    buf = np.stack([rng.standard_normal(200_000), rng.random(200_000)])
    pos = np.zeros(2, dtype=np.int64)
    y = np.array([beta.beta_logit_draw(a, b, buf, pos)[0] for _ in range(20_000)])
    assert np.isfinite(y).all()
    # In the logit, where draws near 0 or 1 keep their digits: logit(X) ~ logit of Beta(a, b).
    cdf = stats.beta(a, b).cdf
    assert stats.kstest(y, lambda t: cdf(special.expit(t))).pvalue > 1e-3


def test_thompson_pick_matches_its_twin_and_reports_a_short_buffer():
    rng = np.random.default_rng(11)
    for _ in range(200):
        k = int(rng.integers(1, 8))
        s, f = rng.integers(0, 50, k).astype(float), rng.integers(0, 50, k).astype(float)
        alpha, prior_b, now = rng.choice([0.2, 1.0, 3.0]), rng.choice([0.5, 1.0]), rng.random()
        mask = rng.random(k) < 0.8
        mask[rng.integers(k)] = True
        buf = np.stack([rng.standard_normal(100), rng.random(100)])
        pos = np.zeros(2, dtype=np.int64)
        arm = beta.thompson_pick(s, f, alpha, prior_b, now, mask, buf, pos)
        assert (arm, *pos) == reference.thompson_pick(s, f, alpha, prior_b, now, mask, *buf)
    pos = np.array([99, 99])
    assert beta.thompson_pick(s, f, 1.0, 1.0, 1.0, np.ones(k, dtype=np.bool_), buf, pos) == -1
    assert list(pos) == [99, 99]
