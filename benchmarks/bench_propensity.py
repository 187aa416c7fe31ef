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

Run on its own: ``python -m benchmarks.bench_propensity [--quick]``.
"""

from __future__ import annotations

import numpy as np

from bandit.policies import Policy
from benchmarks import workloads
from benchmarks.bench_learning import L2, make_policy
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main
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


def run(quick: bool = False) -> Results:
    """Quadrature vs Monte Carlo for LinTS (W1) and BetaTS (W3)."""
    n_quad, n_mc, n_freq = (200, 4, 1) if quick else (2_000, 20, 3)
    repeat = 1 if quick else 3
    rng = np.random.default_rng(23)
    ms: list[Measurement] = []
    rs: list[Ratio] = []

    # LinTS, W1: per row, each row its own integral.
    wl = workloads.build("W1", 1000 + N_TRAIN["LinTS"])
    events = logged(wl, N_TRAIN["LinTS"], seed=29)
    policy = make_policy("LinTS", wl)
    policy.learn_many(*events)
    Xq = wl.X[:n_quad]
    policy.propensities(Xq[:2])  # compile or load the cache, untimed
    t_quad, P = best_time(lambda: None, lambda _: policy.propensities(Xq), repeat)
    mean, sd = linear_moments(wl, events, Xq[:n_mc])
    t_mc, P_mc = best_time(lambda: None, lambda _: mc_gaussian(mean, sd, rng), 1)
    diff = float(np.abs(P[:n_mc] - P_mc).max())
    z = mc_z(P[:n_mc], P_mc)
    freq = max(float(np.abs(choice_frequencies(policy, Xq[i]) - P[i]).max()) for i in range(n_freq))
    us_quad, us_mc = t_quad / n_quad * 1e6, t_mc / n_mc * 1e6
    ms += [
        Measurement(BENCH, "LinTS quadrature", "W1", us_quad, "us/row", n_quad,
                    f"rows with 2+ arms above 1%: {np.mean((P > 0.01).sum(axis=1) >= 2):.0%}"),
        Measurement(BENCH, "LinTS Monte Carlo 10^5 draws", "W1", us_mc, "us/row", n_mc,
                    f"max |quad - MC| {diff:.1e} = {z:.1f} MC s.e. over {P_mc.size} values; "
                    f"max |choose_many freq - quad| {freq:.1e} on {n_freq} row(s)"),
    ]
    rs.append(Ratio(BENCH, "LinTS quadrature speedup over 10^5-draw MC", "W1", us_mc / us_quad,
                    100.0,
                    f"max |quad - MC| = {diff:.1e}, within {z:.1f} MC s.e."))

    # BetaTS, W3: one integral per state; time it fresh after a learn (no cache hit).
    w3 = workloads.build("W3", 1000 + N_TRAIN["BetaTS"])
    events = logged(w3, N_TRAIN["BetaTS"], seed=31)
    x0 = w3.X[:1]

    def fresh() -> Policy:
        p = make_policy("BetaTS", w3)
        p.learn_many(*events)
        return p

    fresh().propensities(x0)
    t_quad, P = best_time(fresh, lambda p: p.propensities(x0), repeat)
    p_b = fresh()
    a = p_b.alpha + np.bincount(events[0], weights=events[2], minlength=w3.n_arms)
    b = p_b.beta + np.bincount(events[0], weights=1.0 - events[2], minlength=w3.n_arms)
    t_mc, P_mc = best_time(lambda: None, lambda _: mc_beta(a, b, rng), repeat)
    diff = float(np.abs(P[0] - P_mc).max())
    z = mc_z(P[0], P_mc)
    freq = float(np.abs(choice_frequencies(p_b, x0[0]) - P[0]).max())
    ms += [
        Measurement(BENCH, "BetaTS quadrature (per state)", "W3", t_quad * 1e6, "us/row", 1,
                    f"arms above 1%: {(P[0] > 0.01).sum()}"),
        Measurement(BENCH, "BetaTS Monte Carlo 10^5 draws (per state)", "W3", t_mc * 1e6,
                    "us/row", 1,
                    f"max |quad - MC| {diff:.1e} = {z:.1f} MC s.e. over {P_mc.size} values; "
                    f"max |choose_many freq - quad| {freq:.1e}"),
    ]
    rs.append(Ratio(BENCH, "BetaTS quadrature speedup over 10^5-draw MC", "W3", t_mc / t_quad,
                    100.0,
                    f"max |quad - MC| = {diff:.1e}, within {z:.1f} MC s.e."))
    return ms, rs


if __name__ == "__main__":
    script_main(run)
