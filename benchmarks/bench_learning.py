"""Learning throughput: choose then learn, event after event, on the seeded workloads.

Paths timed, each on the same rows with the same pre-drawn rewards:

- micro-batch: ``choose_many`` + ``learn_many`` per 1,000 events, for every policy;
- per event: ``choose_one`` + ``learn_one``, in us/event;
- REFERENCE loop-in-kernel: one @njit call runs LinUCB learn+choose over all events, with each
  arm's A^-1 kept by Sherman-Morrison (no validation, no Python per event: the fastest honest
  design, and the yardstick the policy paths are divided by);
- per-event NumPy LinUCB (``np.linalg.solve`` per event), MABWiser LinUCB (per event and per
  1,000), Vowpal Wabbit ``--cb_explore_adf --squarecb -q UA`` per event, and bayesianbandits'
  UCB and Thompson agents (per event and per 1,000; ``benchmarks.peers``).

Rounds: the minimum of 3 (the policies, the reference), one for NumPy and the peers.
Run on its own: ``pytest benchmarks/bench_learning.py [--quick]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from numba import njit

from bandit.policies import BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from benchmarks import peers, workloads
from benchmarks.common import ratio, record, rounds
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


def numpy_state(wl: Workload, n: int) -> tuple:
    """Fresh sums and the first n rows for `numpy_per_event` (built outside the clock)."""
    k, d = wl.n_arms, wl.dim
    return (np.repeat(L2 * np.eye(d)[None], k, axis=0), np.zeros((k, d)), np.empty((k, d, 2)),
            list(wl.X[:n]), wl.R[:n].tolist())


def numpy_per_event(A: np.ndarray, b: np.ndarray, rhs: np.ndarray, rows: list[np.ndarray],
                    R: list[list[float]]) -> float:
    """Per-event NumPy LinUCB: one batched ``np.linalg.solve`` over all arms per event.

    Returns the total reward. No exploration floor: it only makes NumPy look better.
    """
    total = 0.0
    for i, x in enumerate(rows):
        rhs[:, :, 0] = b
        rhs[:, :, 1] = x
        Z = np.linalg.solve(A, rhs)  # theta_a and A_a^-1 x for every arm in one call
        scores = Z[:, :, 0] @ x + ALPHA * np.sqrt(Z[:, :, 1] @ x)
        a = int(np.argmax(scores))
        r = R[i][a]
        A[a] += np.outer(x, x)
        b[a] += r * x
        total += r
    return total


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
PEER_BUDGET_S = 4.0  # per-event peers stop here (a quarter in quick runs)
REF = "REFERENCE loop-in-kernel LinUCB"
POLICIES = {"W1": ["LinUCB", "LinTS", "EpsilonGreedy", "HybridLinUCB", "BetaTS"],
            "W2": ["LinUCB", "LinTS", "EpsilonGreedy"]}
BB_NOTE = "bayesianbandits draws one posterior sample per batch; LinTS draws one per row"


@dataclass(frozen=True)
class Setting:
    """One workload at the run's size: the rows, the sizes (SIZES order), W3 for BetaTS."""

    wl: Workload
    w3: Workload
    sizes: tuple[int, ...]
    quick: bool

    @property
    def budget_s(self) -> float:
        return PEER_BUDGET_S / (4 if self.quick else 1)


@pytest.fixture(scope="module")
def settings(quick: bool) -> dict[str, Setting]:
    div = QUICK_DIV if quick else 1
    w3 = workloads.build("W3", SIZES["W1"][0] // div)
    warm_up(workloads.build("W1", 3 * BATCH), w3)
    out = {}
    for name, full in SIZES.items():
        sizes = tuple(s // div for s in full)
        out[name] = Setting(workloads.build(name, max(sizes) + peers.WARMUP_EVENTS + BATCH), w3,
                            sizes, quick)
    return out


def _label(name: str) -> str:
    return f"{name} (m={HYBRID_M})" if name == "HybridLinUCB" else name


@pytest.mark.parametrize("wname", SIZES)
def test_reference(benchmark, settings, wname):
    s = settings[wname]
    n = s.sizes[2]
    total = benchmark.pedantic(run_reference, setup=lambda: ((reference_loop(s.wl, n),), {}),
                               rounds=rounds(s.quick))
    P = s.wl.probs[:n]  # what a mean reward means: uniform choice and the oracle, same rows
    record(benchmark, BENCH, REF, wname, n, "events/s", mean_reward=total / n,
           note=f"uniform {P.mean():.3f}, oracle {P.max(axis=1).mean():.3f}",
           ratios=[ratio(f"loop-in-kernel reference / {NUMPY}", NUMPY)])


CASES = [(w, name) for w, names in POLICIES.items() for name in names]


@pytest.mark.parametrize(("wname", "name"), CASES)
def test_micro_batch(benchmark, settings, wname, name):
    s = settings[wname]
    w = s.w3 if name == "BetaTS" else s.wl
    n = min(s.sizes[0], w.n // BATCH * BATCH)
    total = benchmark.pedantic(micro_batch, setup=lambda: ((make_policy(name, w), w, n), {}),
                               rounds=rounds(s.quick))
    label = _label(name)
    rs = []
    if name != "BetaTS":  # context-free on W3: nothing to compare with LinUCB's loop
        rs.append(ratio(f"{label} micro-batch / loop-in-kernel reference", REF, workload=wname,
                        target=0.5 if (name == "LinUCB" and wname == "W1") else None))
    if name == "LinUCB":
        rs += [ratio(f"LinUCB micro-batch / {peer}", peer)
               for peer in (MABWISER_BATCH, VW, BB_BATCH["UCB"])]
    if name == "LinTS":
        rs.append(ratio(f"LinTS micro-batch / {BB_BATCH['TS']}", BB_BATCH["TS"], note=BB_NOTE))
    record(benchmark, BENCH, f"{label} micro-batch", w.name, n, "events/s",
           mean_reward=total / n, ratios=rs)


@pytest.mark.parametrize(("wname", "name"), CASES)
def test_per_event(benchmark, settings, wname, name):
    s = settings[wname]
    w = s.w3 if name == "BetaTS" else s.wl
    # Hybrid refactorizes on every event: a tenth of the events says as much.
    n = s.sizes[1] // 10 if name == "HybridLinUCB" else s.sizes[1]
    total = benchmark.pedantic(per_event, setup=lambda: ((per_event_state(name, w, n),), {}),
                               rounds=rounds(s.quick))
    rs = []
    if name == "LinUCB":
        rs.append(ratio("LinUCB per event / loop-in-kernel reference", REF))
        rs += [ratio(f"LinUCB per event / {peer}", peer)
               for peer in (NUMPY, MABWISER_EVENT, VW, BB_EVENT["UCB"])]
    if name == "LinTS":
        rs.append(ratio(f"LinTS per event / {BB_EVENT['TS']}", BB_EVENT["TS"]))
    target = ("<=", 3.0) if (name == "LinUCB" and wname == "W1") else None
    record(benchmark, BENCH, f"{_label(name)} per event", w.name, n, "us/event",
           mean_reward=total / n, target=target, ratios=rs)


NUMPY = "NumPy LinUCB per event"
MABWISER_EVENT = "MABWiser LinUCB per event"
MABWISER_BATCH = "MABWiser LinUCB per 1,000"
VW = "VW squarecb -q UA per event"
BB_EVENT = {"UCB": "bayesianbandits UCB per event", "TS": "bayesianbandits Thompson per event"}
BB_BATCH = {"UCB": "bayesianbandits UCB per 1,000", "TS": "bayesianbandits Thompson per 1,000"}


@pytest.mark.parametrize("wname", SIZES)
def test_numpy_per_event(benchmark, settings, wname):
    s = settings[wname]
    n = s.sizes[3]
    total = benchmark.pedantic(numpy_per_event, setup=lambda: (numpy_state(s.wl, n), {}))
    record(benchmark, BENCH, NUMPY, wname, n, "events/s", mean_reward=total / n,
           note="one round")


@pytest.mark.parametrize("wname", SIZES)
def test_mabwiser_per_event(benchmark, settings, wname):
    s = settings[wname]
    done = benchmark.pedantic(peers.mabwiser_per_event, setup=lambda: (
        (peers.mabwiser(s.wl), peers.mabwiser_rows(s.wl, s.sizes[3]), s.wl, s.budget_s), {}))
    record(benchmark, BENCH, MABWISER_EVENT, wname, done, "events/s",
           note=f"one round, stopped at {s.budget_s:g} s")


@pytest.mark.parametrize("wname", SIZES)
def test_mabwiser_batched(benchmark, settings, wname):
    s = settings[wname]
    n = s.sizes[0] // BATCH * BATCH
    benchmark.pedantic(peers.mabwiser_batched,
                       setup=lambda: ((peers.mabwiser(s.wl), s.wl, n, BATCH), {}))
    record(benchmark, BENCH, MABWISER_BATCH, wname, n, "events/s", note="one round")


@pytest.mark.parametrize("wname", SIZES)
def test_vw_per_event(benchmark, settings, wname):
    s = settings[wname]
    done = benchmark.pedantic(peers.vw_per_event,
                              setup=lambda: ((*peers.vw(s.wl, s.sizes[0]), s.wl, s.budget_s), {}))
    record(benchmark, BENCH, VW, wname, done, "events/s",
           note=f"one round, stopped at {s.budget_s:g} s")


@pytest.mark.parametrize("policy", peers.BB_POLICIES)
@pytest.mark.parametrize("wname", SIZES)
def test_bayesianbandits_per_event(benchmark, settings, wname, policy):
    s = settings[wname]
    done = benchmark.pedantic(peers.bayesianbandits_per_event, setup=lambda: (
        (peers.bayesianbandits(s.wl, policy), peers.mabwiser_rows(s.wl, s.sizes[3]), s.wl,
         s.budget_s), {}))
    record(benchmark, BENCH, BB_EVENT[policy], wname, done, "events/s",
           note=f"one round, stopped at {s.budget_s:g} s")


@pytest.mark.parametrize("policy", peers.BB_POLICIES)
@pytest.mark.parametrize("wname", SIZES)
def test_bayesianbandits_batched(benchmark, settings, wname, policy):
    s = settings[wname]
    n = s.sizes[1] // BATCH * BATCH
    benchmark.pedantic(peers.bayesianbandits_batched,
                       setup=lambda: ((peers.bayesianbandits(s.wl, policy), s.wl, n, BATCH), {}))
    record(benchmark, BENCH, BB_BATCH[policy], wname, n, "events/s",
           note="one round" + ("; one posterior sample per batch" if policy == "TS" else ""))
