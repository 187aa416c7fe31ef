"""Thompson-sampling propensities: the policies' quadrature against 10^5-draw Monte Carlo.

Both sides see the same posterior. LinTS (W1): after 2,000 uniformly logged events, arm a's score
for row x is N(theta_a . x, v^2 x^T A_a^-1 x); Monte Carlo gets those moments from a NumPy twin
of the state, built outside the clock, and times only the draws, argmax and counts (the cheapest
honest Monte Carlo). BetaTS (W3): after 300 events; one propensity vector per state, so "per row"
means per state there (the policy caches it for every later row with the same mask).

Reported: time per row of each, the speedup, and max |quadrature - MC|, also in units of each
value's MC standard error (over n values, a max near sqrt(2 ln n) is what exact answers give).
A third check draws 10^5 decisions from ``choose_many`` on repeated rows: the policy's own
choice frequencies must match its propensities too.

Run on its own: ``pytest benchmarks/bench_propensity.py [--quick]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandit.policies import Policy
from benchmarks import workloads
from benchmarks.bench_learning import L2, make_policy
from benchmarks.common import ratio, record, rounds
from benchmarks.workloads import Workload

BENCH = "propensity"
DRAWS = 100_000
V = 0.5  # LinTS v, as make_policy builds it
N_TRAIN = {"LinTS": 2_000, "BetaTS": 300}
Events = tuple[np.ndarray, np.ndarray, np.ndarray]  # arms (n,), X (n, d), rewards (n,)


def logged(wl: Workload, n: int, seed: int) -> Events:
    """n uniformly logged events (arms, X, rewards) from the rows after the first 1,000."""
    arms = np.random.default_rng(seed).integers(wl.n_arms, size=n)
    rows = 1000 + np.arange(n)
    return arms, wl.X[rows], wl.R[rows, arms]


def linear_moments(wl: Workload, events: Events, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of LinTS's posterior: score mean (n, k) and sd (n, k) for rows Xq."""
    arms, X, r = events
    k, d = wl.n_arms, wl.dim
    A = np.repeat(L2 * np.eye(d)[None], k, axis=0)
    b = np.zeros((k, d))
    np.add.at(A, arms, np.einsum("nd,ne->nde", X, X))
    np.add.at(b, arms, r[:, None] * X)
    Ainv = np.linalg.inv(A)
    theta = np.einsum("kde,ke->kd", Ainv, b)
    var = np.einsum("nd,kde,ne->nk", Xq, Ainv, Xq)
    return Xq @ theta.T, V * np.sqrt(var)


def mc_gaussian(mean: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo win frequencies (n, k) from DRAWS independent normal draws per row."""
    n, k = mean.shape
    out = np.empty((n, k))
    for i in range(n):
        draws = mean[i] + sd[i] * rng.standard_normal((DRAWS, k))
        out[i] = np.bincount(np.argmax(draws, axis=1), minlength=k) / DRAWS
    return out


def mc_beta(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Monte Carlo win frequencies (k,) from DRAWS Beta(a, b) draws per arm."""
    draws = rng.beta(a, b, size=(DRAWS, a.shape[0]))
    return np.bincount(np.argmax(draws, axis=1), minlength=a.shape[0]) / DRAWS


def mc_z(P: np.ndarray, P_mc: np.ndarray) -> float:
    """Largest |quadrature - MC| in units of each entry's MC standard error sqrt(p (1 - p) / N).

    p is the quadrature value (the claimed truth); the variance is floored at 1 / N so an arm
    with p ~ 1e-9 that MC happened to pick once does not count as a miss.
    """
    var = np.maximum(P * (1.0 - P), 1.0 / DRAWS) / DRAWS
    return float(np.max(np.abs(P - P_mc) / np.sqrt(var)))


def choice_frequencies(policy: Policy, x: np.ndarray) -> np.ndarray:
    """The policy's own choice frequencies (k,) over DRAWS decisions for the single row x."""
    arms = policy.choose_many(np.repeat(x[None, :], DRAWS, axis=0))
    return np.bincount(arms, minlength=policy.n_arms) / DRAWS


@pytest.fixture(scope="module")
def lints(quick: bool) -> tuple[Policy, Workload, Events, np.ndarray]:
    """LinTS after 2,000 W1 events, its events, and the rows whose propensities are timed."""
    wl = workloads.build("W1", 1000 + N_TRAIN["LinTS"])
    events = logged(wl, N_TRAIN["LinTS"], seed=29)
    policy = make_policy("LinTS", wl)
    policy.learn_many(*events)
    policy.propensities(wl.X[:2])  # compile or load the cache, untimed
    return policy, wl, events, wl.X[: 200 if quick else 2_000]


LINTS_QUAD, LINTS_MC = "LinTS quadrature", "LinTS Monte Carlo 10^5 draws"
BETA_QUAD = "BetaTS quadrature (per state)"
BETA_MC = "BetaTS Monte Carlo 10^5 draws (per state)"


def _check_note(P: np.ndarray, P_mc: np.ndarray) -> str:
    return (f"max |quad - MC| = {float(np.abs(P - P_mc).max()):.1e}, "
            f"within {mc_z(P, P_mc):.1f} MC s.e.")


def test_lints_quadrature(benchmark, lints, quick):
    policy, wl, events, Xq = lints
    P = benchmark.pedantic(policy.propensities, args=(Xq,), rounds=rounds(quick))
    n_mc = 4 if quick else 20
    mean, sd = linear_moments(wl, events, Xq[:n_mc])  # the same draws as test_lints_monte_carlo
    P_mc = mc_gaussian(mean, sd, np.random.default_rng(23))
    record(benchmark, BENCH, LINTS_QUAD, "W1", Xq.shape[0], "us/row",
           note=f"rows with 2+ arms above 1%: {np.mean((P > 0.01).sum(axis=1) >= 2):.0%}",
           ratios=[ratio("LinTS quadrature speedup over 10^5-draw MC", LINTS_MC, target=100.0,
                         note=_check_note(P[:n_mc], P_mc))])


def test_lints_monte_carlo(benchmark, lints, quick):
    policy, wl, events, Xq = lints
    n_mc, n_freq = (4, 1) if quick else (20, 3)
    mean, sd = linear_moments(wl, events, Xq[:n_mc])
    P_mc = benchmark.pedantic(mc_gaussian, args=(mean, sd, np.random.default_rng(23)))
    P = policy.propensities(Xq[:n_mc])
    freq = max(float(np.abs(choice_frequencies(policy, Xq[i]) - P[i]).max())
               for i in range(n_freq))
    record(benchmark, BENCH, LINTS_MC, "W1", n_mc, "us/row",
           note=f"one round; max |quad - MC| {float(np.abs(P - P_mc).max()):.1e} = "
                f"{mc_z(P, P_mc):.1f} MC s.e. over {P_mc.size} values; "
                f"max |choose_many freq - quad| {freq:.1e} on {n_freq} row(s)")


@pytest.fixture(scope="module")
def beta() -> tuple[Workload, Events]:
    w3 = workloads.build("W3", 1000 + N_TRAIN["BetaTS"])
    return w3, logged(w3, N_TRAIN["BetaTS"], seed=31)


def _fresh(w3: Workload, events: Events) -> Policy:
    """BetaTS after the events: its propensities not computed yet (no cache hit)."""
    p = make_policy("BetaTS", w3)
    p.learn_many(*events)
    return p


def _beta_posterior(w3: Workload, events: Events) -> tuple[np.ndarray, np.ndarray]:
    p = _fresh(w3, events)
    return (p.alpha + np.bincount(events[0], weights=events[2], minlength=w3.n_arms),
            p.beta + np.bincount(events[0], weights=1.0 - events[2], minlength=w3.n_arms))


def test_beta_quadrature(benchmark, beta, quick):
    w3, events = beta
    x0 = w3.X[:1]
    _fresh(w3, events).propensities(x0)  # compile or load the cache, untimed
    P = benchmark.pedantic(lambda p: p.propensities(x0),
                           setup=lambda: ((_fresh(w3, events),), {}), rounds=rounds(quick))
    P_mc = mc_beta(*_beta_posterior(w3, events), np.random.default_rng(23))
    record(benchmark, BENCH, BETA_QUAD, "W3", 1, "us/row",
           note=f"arms above 1%: {(P[0] > 0.01).sum()}",
           ratios=[ratio("BetaTS quadrature speedup over 10^5-draw MC", BETA_MC, target=100.0,
                         note=_check_note(P[0], P_mc))])


def test_beta_monte_carlo(benchmark, beta, quick):
    w3, events = beta
    a, b = _beta_posterior(w3, events)
    P_mc = benchmark.pedantic(mc_beta, args=(a, b, np.random.default_rng(23)),
                              rounds=rounds(quick))
    p = _fresh(w3, events)
    P = p.propensities(w3.X[:1])[0]
    freq = float(np.abs(choice_frequencies(p, w3.X[0]) - P).max())
    record(benchmark, BENCH, BETA_MC, "W3", 1, "us/row",
           note=f"max |quad - MC| {float(np.abs(P - P_mc).max()):.1e} = {mc_z(P, P_mc):.1f} "
                f"MC s.e. over {P_mc.size} values; max |choose_many freq - quad| {freq:.1e}")
