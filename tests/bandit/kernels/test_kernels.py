"""Every kernel against its slow twin in tests/reference.py, to 1e-9, over several shapes."""

import numpy as np
import pytest

from bandit.kernels import beta, choice, hybrid, linear
from bandit.policies import (
    _BETA_NODES,
    _BETA_PIECE_SDS,
    _BETA_WEIGHTS,
    _GL_NODES,
    _GL_WEIGHTS,
    _RADIUS,
    _STEPS,
)
from tests import reference

SHAPES = [(1, 1), (4, 1), (1, 3), (4, 3), (3, 16)]  # (n_arms, dim)


def _events(rng, k, d, n=57):
    return rng.integers(k, size=n), rng.normal(size=(n, d)), rng.normal(size=n)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_accumulate_matches_outer_products(rng, k, d, sparse):
    arms, X, r = _events(rng, k, d)
    w = rng.random(len(arms))
    if sparse:  # mostly zero contexts (categorical features), some rows dense
        X[rng.random(X.shape) < 0.7] = 0.0
        X[: len(X) // 10] = rng.normal(size=(len(X) // 10, d))
    S, b, counts = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    linear.accumulate(S, b, counts, arms, X, r, w)
    S_ref, b_ref, c_ref = reference.sums(arms, X, r, k, w)
    np.testing.assert_allclose(S, S_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(counts, c_ref, rtol=1e-12)
    # A sparse row adds, bit for bit, what the whole square adds over its nonzero features
    # alone (a dense row of them), and nothing elsewhere.
    S_rows, b_rows, c_rows = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    for a, x, reward, weight in zip(arms, X, r, w, strict=True):
        on = np.flatnonzero(x)
        sub_S, sub_b = S_rows[a][np.ix_(on, on)][None].copy(), b_rows[a, on][None].copy()
        linear.accumulate(sub_S, sub_b, c_rows, np.zeros(1, dtype=np.int64), x[None, on],
                          np.array([reward]), np.array([weight]))
        S_rows[a][np.ix_(on, on)], b_rows[a, on] = sub_S[0], sub_b[0]
    np.testing.assert_array_equal(S, S_rows)
    np.testing.assert_array_equal(b, b_rows)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("k", "d", "m"), [(1, 1, 1), (4, 3, 2), (5, 9, 6), (4, 15, 1)])
def test_accumulate_interactions_matches_explicit_features(rng, k, d, m, sparse):
    arms, X, r = _events(rng, k, d)
    F, w = rng.normal(size=(k, m)), rng.random(len(arms))
    if sparse:  # one-hot arm features, contexts mostly zero (some rows all zero, some dense)
        F = np.eye(k, m)
        X[rng.random(X.shape) < 0.7] = 0.0
        X[: len(X) // 10] = rng.normal(size=(len(X) // 10, d))
        r[::7] = 0.0
    p = d + m + d * m
    S, b = np.zeros((p, p)), np.zeros(p)
    linear.accumulate_interactions(S, b, arms, X, F, r, w)
    S_ref, b_ref = reference.bart_sums(arms, X, r, F, w)
    np.testing.assert_allclose(S, S_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-12)
    # What ``accumulate`` sums over the features, bit for bit.
    Phi = np.array([np.concatenate([x, F[a], np.multiply.outer(x, F[a]).ravel()])
                    for x, a in zip(X, arms, strict=True)])
    S_rows, b_rows = np.zeros((1, p, p)), np.zeros((1, p))
    linear.accumulate(S_rows, b_rows, np.zeros(1), np.zeros(len(arms), dtype=np.int64), Phi, r, w)
    np.testing.assert_array_equal(S, S_rows[0])
    np.testing.assert_array_equal(b, b_rows[0])


@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_learn_one_keeps_inverse_and_estimate_exact(rng, k, d):
    arms, X, r = _events(rng, k, d)
    l2 = 0.7
    S, b, counts = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
    Ainv = np.repeat(np.eye(d)[None] / l2, k, axis=0)
    theta = np.zeros((k, d))
    for a, x, ri in zip(arms, X, r, strict=True):
        assert linear.learn_one(S, b, counts, Ainv, theta, a, x, ri, 1.0)
    theta_ref, A_inv = reference.ridge(arms, X, r, k, l2)
    np.testing.assert_allclose(S, reference.sums(arms, X, r, k)[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Ainv, A_inv, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(theta, theta_ref, rtol=1e-9, atol=1e-9)


def test_learn_one_refuses_non_finite_without_touching_state(rng):
    S, b, counts = np.zeros((2, 3, 3)), np.zeros((2, 3)), np.zeros(2)
    Ainv, theta = np.repeat(np.eye(3)[None], 2, axis=0), np.zeros((2, 3))
    before = [a.copy() for a in (S, b, counts, Ainv, theta)]
    x = np.array([1.0, np.nan, 0.0])
    assert not linear.learn_one(S, b, counts, Ainv, theta, 0, x, 1.0, 1.0)
    assert not linear.learn_one(S, b, counts, Ainv, theta, 0, np.ones(3), np.inf, 1.0)
    for got, want in zip((S, b, counts, Ainv, theta), before, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_moments_and_scores_match_naive_inverse(rng, k, d):
    arms, X, r = _events(rng, k, d)
    theta_ref, A_inv = reference.ridge(arms, X, r, k, 1.0)
    Q = rng.normal(size=(6, d))
    mean, sd = np.empty((6, k)), np.empty((6, k))
    linear.moments(theta_ref, A_inv, Q, mean, sd)
    mean_ref, sd_ref = reference.moments(arms, X, r, Q, k)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sd, sd_ref, rtol=1e-9, atol=1e-12)
    # The fused choose kernel scores exactly what Algorithm 1 scores.
    arms_out, probs = np.empty(6, dtype=np.int64), np.empty(6)
    mask = np.ones((1, k), dtype=np.bool_)
    linear.choose(theta_ref, A_inv, Q, 0.7, np.empty((0, k)), mask, 0.0, rng.random((6, 2)),
                  arms_out, probs)
    want = reference.linucb(arms, X, r, Q, k, 0.7)
    np.testing.assert_array_equal(arms_out, want.argmax(axis=1))
    # Thompson sampling's values are mean + width * noise; the one-row kernel agrees.
    noise = rng.normal(size=(6, k))
    linear.choose(theta_ref, A_inv, Q, 0.0, noise, mask, 0.0, rng.random((6, 2)), arms_out, probs)
    np.testing.assert_array_equal(arms_out, (mean_ref + sd_ref * noise).argmax(axis=1))
    for i in range(6):
        arm, p = linear.choose_one(theta_ref, A_inv, Q[i], 0.0, noise[i], mask[0], 0.0, 0.5, 0.5)
        assert (arm, p) == (arms_out[i], 1.0)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("per_row", [False, True])
def test_choose_floor_matches_twin(rng, epsilon, per_row):
    n, k = 200, 5
    values = rng.integers(3, size=(n, k)).astype(float)  # small integers: many exact ties
    mask = rng.random((n if per_row else 1, k)) < 0.7
    mask[:, 0] = True
    U = rng.random((n, 2))
    arms, probs = np.empty(n, dtype=np.int64), np.empty(n)
    choice.choose_floor(values, mask, epsilon, U, arms, probs)
    np.testing.assert_array_equal(arms, reference.choose_floor(values, mask, epsilon, U))
    full = np.empty((n, k))
    choice.floor_probabilities(values, mask, epsilon, full)
    want = reference.floor_probabilities(values, mask, epsilon)
    np.testing.assert_allclose(full, want, rtol=1e-12)
    np.testing.assert_allclose(probs, want[np.arange(n), arms], rtol=1e-12)


def test_choose_floor_flags_rows_without_a_winner():
    values = np.array([[np.nan, np.nan], [1.0, 2.0]])
    arms, probs = np.empty(2, dtype=np.int64), np.empty(2)
    choice.choose_floor(values, np.ones((1, 2), dtype=np.bool_), 0.0, np.zeros((2, 2)), arms, probs)
    assert arms[0] == -1 and np.isnan(probs[0])
    assert arms[1] == 1 and probs[1] == 1.0


GAUSSIAN_CASES = {
    "alike": ([0.0, 0.1, -0.1, 0.05], [1.0, 1.0, 1.0, 1.0]),
    "one arm": ([0.3], [0.2]),
    "narrow beside wide": ([0.0, 0.5, 0.2], [1e-3, 1.0, 0.3]),
    "far apart": ([0.0, 50.0, 3.0], [1.0, 0.5, 2.0]),
    "exact tie": ([1.0, 1.0], [0.5, 0.5]),
    "ten arms": (list(np.linspace(-1, 1, 10)), list(np.linspace(0.1, 1.0, 10))),
}


@pytest.mark.parametrize("case", sorted(GAUSSIAN_CASES))
def test_gaussian_max_probabilities_match_adaptive_quadrature(case):
    mean, sd = (np.array(v, dtype=float) for v in GAUSSIAN_CASES[case])
    out = np.empty((1, len(mean)))
    choice.gaussian_max_probabilities(mean[None], sd[None], np.ones((1, len(mean)), dtype=np.bool_),
                                      _GL_NODES, _GL_WEIGHTS, _RADIUS, _STEPS, out)
    np.testing.assert_allclose(out[0], reference.gaussian_max_probabilities(mean, sd), atol=1e-9)
    assert abs(out.sum() - 1.0) < 1e-12


def test_gaussian_max_probabilities_masks_and_degenerate_rows():
    mean = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 1.0]])
    sd = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [True, True, True]])
    out = np.empty((2, 3))
    choice.gaussian_max_probabilities(mean, sd, mask, _GL_NODES, _GL_WEIGHTS, _RADIUS, _STEPS,
                                      out)
    np.testing.assert_allclose(out[0, :2],
                               reference.gaussian_max_probabilities(mean[0, :2], sd[0, :2]),
                               atol=1e-9)
    assert out[0, 2] == 0.0
    np.testing.assert_array_equal(out[1], [0.0, 0.5, 0.5])  # all widths 0: a tie of the maxima



def _random_posterior(seed):
    """Seeded (mean, sd) of 2..6 arms: near ties, mixed scales, W1-like or huge and tiny sds."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    kind = seed % 4
    if kind == 0:
        return rng.normal(0.0, 0.01, k), rng.uniform(0.5, 1.5, k)
    if kind == 1:
        return rng.normal(0.0, 1.0, k), 10.0 ** rng.uniform(-4, 1, k)
    if kind == 2:
        return rng.normal(0.0, 0.3, k), rng.uniform(0.08, 0.3, k)
    return rng.normal(0.0, 1e3, k) * 10.0 ** rng.uniform(-6, 0), 10.0 ** rng.uniform(-6, 3, k)


def _gaussian(mean, sd, mask=None, steps=_STEPS):
    mean, sd = np.atleast_2d(mean), np.atleast_2d(sd)
    mask = np.ones_like(mean, dtype=np.bool_) if mask is None else np.atleast_2d(mask)
    out = np.empty_like(mean)
    choice.gaussian_max_probabilities(mean, sd, mask, _GL_NODES, _GL_WEIGHTS, _RADIUS, steps,
                                      out)
    return out


@pytest.mark.parametrize("seed", range(4))  # one of each kind
def test_gaussian_max_probabilities_random_posteriors(seed):
    mean, sd = _random_posterior(seed)
    np.testing.assert_allclose(_gaussian(mean, sd)[0],
                               reference.gaussian_max_probabilities(mean, sd), atol=1e-9)


def test_gaussian_max_probabilities_fifty_arms_with_masks():
    # K = 50 is too slow for the adaptive reference; a grid 4 times as fine stands in for it
    # (it matches the reference on every smaller case), and a masked arm must drop out exactly.
    rng = np.random.default_rng(5)
    mean = np.vstack([rng.normal(0.0, 0.3, 50), rng.normal(0.0, 0.01, 50)])
    sd = np.vstack([rng.uniform(0.08, 0.3, 50), 10.0 ** rng.uniform(-5, 0, 50)])
    mask = rng.random((2, 50)) < 0.8
    out = _gaussian(mean, sd, mask)
    np.testing.assert_allclose(out, _gaussian(mean, sd, mask, steps=4 * _STEPS), atol=1e-9)
    assert np.all(out[~mask] == 0.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    some = np.flatnonzero(mask[0])[:5]
    np.testing.assert_allclose(_gaussian(mean[0, some], sd[0, some])[0],
                               reference.gaussian_max_probabilities(mean[0, some], sd[0, some]),
                               atol=1e-9)


def test_normal_cdf_pdf_matches_scipy():
    z = np.concatenate([np.linspace(-40.0, 40.0, 20_001), [-9.0, -8.999999, 0.0, 9.0, 1e6]])
    got = np.array([choice.normal_cdf_pdf(v) for v in z])
    # Relative accuracy where the table is; beyond |z| = 9 the tail is below 1e-19 and its
    # asymptotic series is within 1e-4 of it, far below what any integral can see.
    inner = np.abs(z) < 9.0
    np.testing.assert_allclose(got[inner, 0], reference.normal_cdf(z[inner]), rtol=1e-13, atol=0.0)
    np.testing.assert_allclose(got[:, 0], reference.normal_cdf(z), rtol=1e-4, atol=1e-300)
    np.testing.assert_allclose(got[:, 1], reference.normal_pdf(z), rtol=1e-13, atol=1e-300)
    assert np.isnan(choice.normal_cdf_pdf(np.nan)).all()


def test_mills_polynomial_matches_the_exact_ratio():
    # One polynomial in w = c / (c + a) over all of [0, MILLS_END]: the node loop's CDF is
    # only as good as this.
    a = np.concatenate([np.linspace(0.0, choice.MILLS_END, 20_001), [1e-12, 2.0, 8.3]])
    got = np.array([choice._mills_poly(v) for v in a])
    np.testing.assert_allclose(got, reference.mills_ratio(a), rtol=2e-14, atol=0.0)


def test_node_terms_match_the_exact_cdf_and_density():
    # The vectorized node loop (inline exp, no branch) against scipy over the z a grid can
    # see: z from -9 (below -radius, the table's end) to far above the CDF's rounding to 1.
    mu, inv = 0.25, 2.0
    z = np.concatenate([np.linspace(-9.0, 12.0, 40_001), [0.0, -_RADIUS, 8.3, 8.30001, 1e6]])
    t = mu + z / inv
    z = (t - mu) * inv
    prod, ratio = np.full(t.shape, 0.5), np.empty(t.shape)
    choice._node_terms(t, len(t), mu, inv, prod, ratio)
    cdf = reference.normal_cdf(z)
    one = z > 8.3
    np.testing.assert_allclose(prod[~one], 0.5 * cdf[~one], rtol=1e-13, atol=0.0)
    np.testing.assert_allclose(ratio[~one], reference.normal_pdf(z[~one]) * inv / cdf[~one],
                               rtol=1e-12, atol=0.0)
    assert np.all(prod[one] == 0.5) and np.all(ratio[one] == 0.0)


def test_count_at_most_is_searchsorted_right():
    # How many nodes an arm takes, without a branch per node: ties count, n bounds the nodes.
    t = np.array([-1.0, 0.0, 0.0, 0.5, 2.0, 3.0, 3.0, 7.0, 9.0])
    for top in (-2.0, -1.0, 0.0, 0.25, 3.0, 8.0, 9.0, 10.0):
        for n in (0, 1, 5, len(t)):
            assert choice._count_at_most(t, n, top) == np.searchsorted(t[:n], top, side="right")


def test_gaussian_max_probabilities_of_two_arms_are_closed_form():
    # P(A > B) = Phi((mu_A - mu_B) / sqrt(sd_A^2 + sd_B^2)): windows that overlap a little,
    # much, or one inside the other, at mixed widths.
    for mean, sd in [([0.0, 2.0], [0.3, 0.25]), ([0.0, 0.1], [1.0, 0.02]),
                     ([1.0, -3.0], [0.5, 2.0]), ([0.0, 13.0], [1.0, 1.0])]:
        p = _gaussian(np.array(mean), np.array(sd))[0]
        want = reference.normal_cdf((mean[0] - mean[1]) / np.hypot(*sd))
        np.testing.assert_allclose(p, [want, 1.0 - want], atol=1e-11)


def test_thompson_choose_is_choose_then_the_propensity_of_the_arm(rng):
    k, d, n = 5, 3, 200
    arms, X, r = _events(rng, k, d, n=300)
    theta, Ainv = reference.ridge(arms, X, r, k)
    Q, Z, U = rng.normal(size=(n, d)), rng.normal(size=(n, k)), rng.random((n, 2))
    noise = 0.3 * Z
    mask = rng.random((n, k)) < 0.7
    mask[:, 0] = True
    chosen, p = np.empty(n, dtype=np.int64), np.empty(n)
    linear.thompson_choose(theta, Ainv, Q, Z, mask, U, 0.3, _GL_NODES, _GL_WEIGHTS, _RADIUS,
                           _STEPS, chosen, p)
    want, _ = np.empty(n, dtype=np.int64), np.empty(n)
    linear.choose(theta, Ainv, Q, 0.0, noise, mask, 0.0, U, want, _)
    np.testing.assert_array_equal(chosen, want)
    mean, sd = np.empty((n, k)), np.empty((n, k))
    linear.moments(theta, Ainv, Q, mean, sd)
    P = _gaussian(mean, 0.3 * sd, mask)
    np.testing.assert_array_equal(p, P[np.arange(n), chosen])


def test_gaussian_grid_of_alike_arms_takes_even_pieces():
    # Ten arms of alike widths a few sds apart: their ends split [lo, U] into short segments,
    # which equal pieces of the narrowest arm's bound replace (and the answer stays the same).
    mean, sd = np.linspace(0.0, 0.3, 10), np.linspace(0.1, 0.106, 10)
    order, grid = np.empty(10, dtype=np.int64), np.empty(10 * (2 * _STEPS + 1) + 1)
    lo = float((mean - _RADIUS * sd).max())
    start = choice._gaussian_grid(mean, sd, 10, lo, _RADIUS, _STEPS, order, grid)
    pieces = np.diff(grid[start:])
    even = int(np.ceil((grid[-1] - lo) / (0.1 * _RADIUS / _STEPS)))
    assert grid[start] == lo and len(pieces) == even
    np.testing.assert_allclose(pieces, pieces[0], rtol=1e-9)
    np.testing.assert_allclose(_gaussian(mean, sd)[0],
                               reference.gaussian_max_probabilities(mean, sd), atol=1e-9)


BETA_CASES = {
    "uniform priors": ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
    "skewed small ctr": ([3.0, 1.0, 12.0], [900.0, 1000.0, 3000.0]),
    "one sure arm": ([500.0, 2.0], [10.0, 2.0]),
    "below one": ([0.5, 2.0], [0.5, 3.0]),
    "one arm": ([4.0], [7.0]),
}


@pytest.mark.parametrize("case", sorted(BETA_CASES))
def test_beta_max_probabilities_match_adaptive_quadrature(case):
    a, b = (np.array(v) for v in BETA_CASES[case])
    got = np.empty((1, len(a)))
    beta.beta_max_probabilities(a, b, np.ones((1, len(a)), dtype=bool), _BETA_NODES,
                                _BETA_WEIGHTS, _BETA_PIECE_SDS, got)
    np.testing.assert_allclose(got[0], reference.beta_max_probabilities(a, b), atol=1e-8)


@pytest.mark.parametrize(("k", "d", "m"), [(1, 1, 1), (3, 2, 2), (4, 5, 3)])
def test_hybrid_kron_kernels_match_explicit_matrices(rng, k, d, m):
    F = rng.normal(size=(k, m))
    p = d * m
    C, c = rng.normal(size=(k, d, d)), rng.normal(size=(k, d))
    P, v = rng.normal(size=(p, p)), rng.normal(size=p)
    A0, b0 = np.eye(p), np.ones(p)  # the kernels add to what is there
    hybrid.kron_sum(C, F, A0)
    hybrid.kron_vector_sum(c, F, b0)
    np.testing.assert_allclose(A0, np.eye(p) + reference.hybrid_kron_sum(C, F), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(b0, 1.0 + reference.hybrid_kron_vector_sum(c, F), rtol=1e-12,
                               atol=1e-12)
    vectors, forms = np.full((k, d), np.nan), np.full((k, d, d), np.nan)
    hybrid.kron_vectors(v, F, vectors)
    hybrid.kron_forms(P, F, forms)
    np.testing.assert_allclose(vectors, reference.hybrid_kron_vectors(v, F, d), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(forms, reference.hybrid_kron_forms(P, F, d), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize(("k", "d", "m"), [(1, 1, 1), (3, 2, 2), (4, 5, 3)])
def test_hybrid_scores_match_algorithm_2(rng, k, d, m):
    from bandit.policies import HybridLinUCB

    F = rng.normal(size=(k, m))
    arms, X, r = _events(rng, k, d, n=40)
    policy = HybridLinUCB(dim=d, arm_features=F, alpha=0.6, l2=1.3, epsilon=0.0)
    policy.learn_many(arms, X, r)  # per-arm sums, the Schur complement, then linear kernels
    Q = rng.normal(size=(5, d))
    want = reference.hybrid_linucb(arms, X, r, Q, F, alpha=0.6, l2=1.3)
    np.testing.assert_allclose(policy.scores(Q), want, rtol=1e-9, atol=1e-9)
    assert [policy.choose_one(x) for x in Q] == list(want.argmax(axis=1))


@pytest.mark.parametrize(("k", "d", "m", "l2", "one_hot"),
                         [(1, 1, 1, 1.0, False), (4, 3, 2, 0.5, False), (3, 5, 3, 2.0, False),
                          (5, 3, 4, 1.0, True)])
def test_hybrid_learn_one_moves_every_factor_to_its_refactorized_value(rng, k, d, m, l2, one_hot):
    # one_hot: a constant and a category per arm, as OBD's item features (learn_one reads
    # only the rows of A0^-1 where an arm's features are nonzero).
    F = rng.normal(size=(k, m))
    if one_hot:
        F = np.column_stack([np.ones(k), np.eye(m - 1)[np.arange(k) % (m - 1)]])
    arms, X, r = _events(rng, k, d, n=40)
    Sxx, bx, counts = reference.sums(arms, X, r, k)
    f = {name: np.ascontiguousarray(v)
         for name, v in reference.hybrid_factors(Sxx, bx, F, l2).items()}
    for a, x, ri in zip(*_events(rng, k, d, n=25), strict=True):
        assert hybrid.learn_one(Sxx, bx, counts, F, f["A_inv"], f["A0_inv"], f["N"], f["c"],
                                f["b0"], f["beta"], f["Mbeta"], f["theta"], f["Q"], l2, a, x, ri)
    want = reference.hybrid_factors(Sxx, bx, F, l2)
    for name, value in want.items():
        np.testing.assert_allclose(f[name], value, rtol=1e-9, atol=1e-12 * np.abs(value).max(),
                                   err_msg=name)
    before = Sxx.copy()
    assert not hybrid.learn_one(Sxx, bx, counts, F, f["A_inv"], f["A0_inv"], f["N"], f["c"],
                                f["b0"], f["beta"], f["Mbeta"], f["theta"], f["Q"], l2, 0,
                                np.full(d, np.nan), 1.0)
    np.testing.assert_array_equal(Sxx, before)
