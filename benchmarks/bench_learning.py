"""Learning throughput: choose then learn, event after event, on the seeded workloads.

Paths timed, each on the same rows with the same pre-drawn rewards:

- micro-batch: ``choose_many`` + ``learn_many`` per 1,000 events, for every policy;
- per event: ``choose_one`` + ``learn_one``, in us/event;
- REFERENCE loop-in-kernel: one @njit call runs LinUCB learn+choose over all events, with each
  arm's A^-1 kept by Sherman-Morrison (no validation, no Python per event: the fastest honest
  design, and the yardstick the policy paths are divided by);
- per-event NumPy LinUCB (``np.linalg.solve`` per event), MABWiser LinUCB (per event and per
  1,000) and Vowpal Wabbit ``--cb_explore_adf --squarecb -q UA`` per event.

Run on its own: ``python -m benchmarks.bench_learning [--quick]``.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
from numba import njit

from bandit.policies import BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from benchmarks import peers, workloads
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main
from benchmarks.workloads import Workload

BENCH = "learning"
BATCH = 1000
ALPHA, L2, EPSILON = 1.0, 1.0, 0.05
HYBRID_M = 4


# Reassociation lets LLVM vectorize the dot products (the policies' kernels use the same flags).
_FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FAST)
def linucb_loop(Ainv, theta, X, R, alpha, epsilon, U, u):
    """REFERENCE: LinUCB choose + learn for every row of X in one call; returns total reward.

    Ainv (k, d, d) per-arm inverses and theta (k, d), both updated in place; X (n, d); R (n, k)
    pre-drawn rewards; U (n, 2) uniforms for the epsilon floor; u (d,) scratch.
    """
    n, d = X.shape
    k = theta.shape[0]
    total = 0.0
    for i in range(n):
        x = X[i]
        best = -np.inf
        chosen = 0
        for a in range(k):
            # x^T A^-1 x from the lower triangle (A^-1 is symmetric): half the flops.
            mu = 0.0
            q = 0.0
            for j in range(d):
                mu += theta[a, j] * x[j]
                acc = 0.0
                for m in range(j):
                    acc += Ainv[a, j, m] * x[m]
                q += x[j] * (2.0 * acc + Ainv[a, j, j] * x[j])
            s = mu + alpha * math.sqrt(max(q, 0.0))
            if s > best:
                best = s
                chosen = a
        if U[i, 0] < epsilon:
            chosen = int(U[i, 1] * k)
        r = R[i, chosen]
        total += r
        # Sherman-Morrison with u = A^-1 x, c = 1 + x.u: A^-1 -= u u^T / c, and the ridge
        # estimate moves along u, theta += (r - x.theta) u / c, so b is never needed.
        xu = 0.0
        xt = 0.0
        for j in range(d):
            acc = 0.0
            for m in range(d):
                acc += Ainv[chosen, j, m] * x[m]
            u[j] = acc
            xu += x[j] * acc
            xt += x[j] * theta[chosen, j]
        c = 1.0 + xu
        g = (r - xt) / c
        for j in range(d):
            theta[chosen, j] += g * u[j]
            hu = u[j] / c
            for m in range(d):
                Ainv[chosen, j, m] -= hu * u[m]
    return total


def reference_loop(wl: Workload, n: int) -> dict:
    """Fresh state for `linucb_loop` over the first n rows (built outside the clock)."""
    k, d = wl.n_arms, wl.dim
    return {
        "Ainv": np.repeat(np.eye(d)[None] / L2, k, axis=0),
        "theta": np.zeros((k, d)),
        "X": wl.X[:n],
        "R": np.ascontiguousarray(wl.R[:n]),
        "U": np.random.default_rng(5).random((n, 2)),
        "u": np.empty(d),
    }


def run_reference(s: dict) -> float:
    return linucb_loop(s["Ainv"], s["theta"], s["X"], s["R"], ALPHA, EPSILON, s["U"], s["u"])


def numpy_per_event(wl: Workload, n: int) -> tuple[float, float]:
    """Per-event NumPy LinUCB: one batched ``np.linalg.solve`` over all arms per event.

    Returns (seconds, total reward). No exploration floor: it only makes NumPy look better.
    """
    k, d = wl.n_arms, wl.dim
    A = np.repeat(L2 * np.eye(d)[None], k, axis=0)
    b = np.zeros((k, d))
    rhs = np.empty((k, d, 2))
    rows = list(wl.X[:n])
    R = wl.R[:n].tolist()
    total = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        x = rows[i]
        rhs[:, :, 0] = b
        rhs[:, :, 1] = x
        Z = np.linalg.solve(A, rhs)  # theta_a and A_a^-1 x for every arm in one call
        scores = Z[:, :, 0] @ x + ALPHA * np.sqrt(Z[:, :, 1] @ x)
        a = int(np.argmax(scores))
        r = R[i][a]
        A[a] += np.outer(x, x)
        b[a] += r * x
        total += r
    return time.perf_counter() - t0, total


def make_policy(name: str, wl: Workload, seed: int = 3) -> Policy:
    """A fresh policy `name` sized for `wl`, with the issue's default parameters."""
    k, d = wl.n_arms, wl.dim
    if name == "LinUCB":
        return LinUCB(k, d, alpha=ALPHA, l2=L2, epsilon=EPSILON, rng=seed)
    if name == "LinTS":
        return LinTS(k, d, v=0.5, l2=L2, rng=seed)
    if name == "EpsilonGreedy":
        return EpsilonGreedy(k, d, epsilon=0.1, l2=L2, rng=seed)
    if name == "BetaTS":
        return BetaTS(k, dim=d, rng=seed)  # context-free: X's columns are accepted, not read
    if name == "HybridLinUCB":
        F = workloads.arm_features(k, HYBRID_M)
        return HybridLinUCB(d, F, alpha=ALPHA, l2=L2, epsilon=EPSILON, rng=seed)
    raise ValueError(f"unknown policy {name!r}")


def micro_batch(policy: Policy, wl: Workload, n: int) -> float:
    """choose_many + learn_many per BATCH rows over the first n rows; returns total reward."""
    X, R = wl.X, wl.R
    idx = np.arange(BATCH)
    total = 0.0
    for s in range(0, n, BATCH):
        Xb = X[s : s + BATCH]
        arms = policy.choose_many(Xb)
        r = R[s + idx[: arms.shape[0]], arms]
        policy.learn_many(arms, Xb, r)
        total += r.sum()
    return total


def per_event_state(name: str, wl: Workload,
                    n: int) -> tuple[Policy, list[np.ndarray], list[list[float]]]:
    """A fresh policy `name`, the first n rows of `wl` and their reward lists, for `per_event`."""
    return make_policy(name, wl), list(wl.X[:n]), wl.R[:n].tolist()


def per_event(state: tuple[Policy, list[np.ndarray], list[list[float]]]) -> float:
    """choose_one + learn_one per row; state = (policy, rows, reward lists); total reward."""
    policy, rows, R = state
    choose, learn = policy.choose_one, policy.learn_one
    total = 0.0
    for i, x in enumerate(rows):
        a = choose(x)
        r = R[i][a]
        learn(a, x, r)
        total += r
    return total


def warm_up(wl_ctx: Workload, wl_free: Workload) -> None:
    """Compile (or load from the cache) every kernel the timed paths call, outside the clock."""
    for name in ("LinUCB", "LinTS", "EpsilonGreedy", "HybridLinUCB", "BetaTS"):
        wl = wl_free if name == "BetaTS" else wl_ctx
        policy = make_policy(name, wl)
        micro_batch(policy, wl, 2 * BATCH)
        per_event((policy, list(wl.X[:5]), wl.R[:5].tolist()))
        policy.choose_many(wl.X[:5], with_propensities=True)
        policy.propensities(wl.X[:5])
    run_reference(reference_loop(wl_ctx, 10))


SIZES = {  # workload: (micro-batch, per event, reference, NumPy per event) events, full run
    "W1": (100_000, 30_000, 200_000, 10_000),
    "W2": (40_000, 10_000, 60_000, 4_000),
}
QUICK_DIV = 5
PEER_BUDGET_S = {"mabwiser": 4.0, "vw": 3.0}  # quick runs take a quarter
REF = "REFERENCE loop-in-kernel LinUCB"


class _Recorder:
    """Collects one workload's measurements and remembers events/s per case for the ratios."""

    def __init__(self, wname: str) -> None:
        self.wname = wname
        self.ms: list[Measurement] = []
        self.rs: list[Ratio] = []
        self.eps: dict[str, float] = {}

    def rate(self, case: str, n: int, seconds: float, reward: float | None = None,
             note: str = "", wl_name: str | None = None) -> None:
        notes = [f"mean reward {reward / n:.3f}"] if reward is not None else []
        self.ms.append(Measurement(BENCH, case, wl_name or self.wname, n / seconds, "events/s", n,
                                   "; ".join([*notes, note] if note else notes)))
        self.eps[case] = n / seconds

    def latency(self, case: str, n: int, seconds: float, reward: float, wl_name: str,
                target_us: float | None) -> None:
        us = seconds / n * 1e6
        target = f"<= {target_us:g} us" if target_us else ""
        met = None if target_us is None else us <= target_us
        self.ms.append(Measurement(BENCH, case, wl_name, us, "us/event", n,
                                   f"mean reward {reward / n:.3f}", target, met))
        self.eps[case] = n / seconds

    def ratio(self, what: str, num_case: str, den_case: str, target: float | None = None) -> None:
        if num_case in self.eps and den_case in self.eps:
            self.rs.append(Ratio(BENCH, what, self.wname, self.eps[num_case] / self.eps[den_case],
                                 target))


def _policy_cases(rec: _Recorder, wl: Workload, w3: Workload, sizes: tuple[int, ...],
                  repeat: int) -> list[str]:
    """Micro-batch and per-event runs of every policy on `wl`; returns the labels timed."""
    n_mb, n_pe = sizes[0], sizes[1]
    names = ["LinUCB", "LinTS", "EpsilonGreedy"]
    if rec.wname == "W1":
        names += ["HybridLinUCB", "BetaTS"]
    labels = []
    for name in names:
        w = w3 if name == "BetaTS" else wl
        label = f"{name} (m={HYBRID_M})" if name == "HybridLinUCB" else name
        labels.append(label)
        n = min(n_mb, w.n // BATCH * BATCH)
        t, tot = best_time(functools.partial(make_policy, name, w),
                           functools.partial(micro_batch, wl=w, n=n), repeat)
        rec.rate(f"{label} micro-batch", n, t, tot, wl_name=w.name)
        # Hybrid refactorizes on every event: a tenth of the events says as much.
        n_ev = n_pe // 10 if name == "HybridLinUCB" else n_pe
        t, tot = best_time(functools.partial(per_event_state, name, w, n_ev), per_event, repeat)
        target = 3.0 if (name == "LinUCB" and rec.wname == "W1") else None
        rec.latency(f"{label} per event", n_ev, t, tot, w.name, target)
    return labels


def _peer_cases(rec: _Recorder, wl: Workload, sizes: tuple[int, ...],
                budget: dict[str, float]) -> None:
    """NumPy per event, MABWiser per event and per 1,000, VW per event."""
    n_mb, n_np = sizes[0], sizes[3]
    t, tot = numpy_per_event(wl, n_np)
    rec.rate("NumPy LinUCB per event", n_np, t, tot)
    out = peers.mabwiser_per_event(wl, n_np, budget["mabwiser"])
    if out:
        rec.rate("MABWiser LinUCB per event", *out)
    out = peers.mabwiser_batched(wl, n_mb)
    if out:
        rec.rate("MABWiser LinUCB per 1,000", *out)
    out = peers.vw_per_event(wl, n_mb, budget["vw"])
    if out:
        rec.rate("VW squarecb -q UA per event", *out)


def run(quick: bool = False) -> Results:
    """All learning measurements and their ratios, W1 and W2 (BetaTS on W3)."""
    repeat = 1 if quick else 3
    div = QUICK_DIV if quick else 1
    budget = {k: v / (4 if quick else 1) for k, v in PEER_BUDGET_S.items()}
    w3 = workloads.build("W3", SIZES["W1"][0] // div)
    warm_up(workloads.build("W1", 3 * BATCH), w3)
    ms: list[Measurement] = []
    rs: list[Ratio] = []
    for wname, full_sizes in SIZES.items():
        sizes = tuple(s // div for s in full_sizes)
        wl = workloads.build(wname, max(sizes) + peers.WARMUP_EVENTS + BATCH)
        rec = _Recorder(wname)

        n_ref = sizes[2]
        t, tot = best_time(functools.partial(reference_loop, wl, n_ref), run_reference, repeat)
        P = wl.probs[:n_ref]  # what a mean reward means: uniform choice and the oracle, same rows
        rec.rate(REF, n_ref, t, tot, f"uniform {P.mean():.3f}, oracle {P.max(axis=1).mean():.3f}")
        labels = _policy_cases(rec, wl, w3, sizes, repeat)
        _peer_cases(rec, wl, sizes, budget)

        for label in labels:
            if label != "BetaTS":  # context-free on W3: nothing to compare with LinUCB's loop
                target = 0.5 if (label == "LinUCB" and wname == "W1") else None
                rec.ratio(f"{label} micro-batch / loop-in-kernel reference", f"{label} micro-batch",
                          REF, target)
        rec.ratio("LinUCB per event / loop-in-kernel reference", "LinUCB per event", REF)
        for peer in ("NumPy LinUCB per event", "MABWiser LinUCB per event",
                     "VW squarecb -q UA per event"):
            rec.ratio(f"LinUCB per event / {peer}", "LinUCB per event", peer)
        for peer in ("MABWiser LinUCB per 1,000", "VW squarecb -q UA per event"):
            rec.ratio(f"LinUCB micro-batch / {peer}", "LinUCB micro-batch", peer)
        rec.ratio("loop-in-kernel reference / NumPy LinUCB per event", REF,
                  "NumPy LinUCB per event")
        ms += rec.ms
        rs += rec.rs
    return ms, rs


if __name__ == "__main__":
    script_main(run)
