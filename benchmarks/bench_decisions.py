"""Batch decisions: ``choose_many(X, with_propensities=True)`` for one send of 280,000 contexts.

Every policy first learns the same 20,000 uniformly logged W1 events (untimed), so its state is
that of a campaign in progress. The REFERENCE is plain NumPy scoring the same batch with the
same state: LinUCB means and widths by einsum (BLAS underneath), then argmax, no propensities.
The ratio is reference time / policy time (above 1: the policy is faster).

Run on its own: ``pytest benchmarks/bench_decisions.py [--quick]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandit.policies import Policy
from benchmarks import workloads
from benchmarks.bench_learning import ALPHA, L2, make_policy
from benchmarks.common import ratio, record, rounds
from benchmarks.workloads import Workload

BENCH = "decisions"
N_SEND = 280_000
N_TRAIN = 20_000
CHUNK = 16_384  # rows per einsum: big enough for BLAS, small enough to stay in memory
REF = "REFERENCE NumPy einsum LinUCB + argmax"


def training_events(wl: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly logged events (arms, X, rewards) from rows after the send batch."""
    arms = np.random.default_rng(17).integers(wl.n_arms, size=N_TRAIN)
    rows = N_SEND + np.arange(N_TRAIN)
    return arms, wl.X[rows], wl.R[rows, arms]


def reference_state(wl: Workload) -> tuple[np.ndarray, np.ndarray]:
    """theta (k, d) and A^-1 (k, d, d) of LinUCB after `training_events`, in NumPy."""
    arms, X, r = training_events(wl)
    k, d = wl.n_arms, wl.dim
    A = np.repeat(L2 * np.eye(d)[None], k, axis=0)
    b = np.zeros((k, d))
    np.add.at(A, arms, np.einsum("nd,ne->nde", X, X))
    np.add.at(b, arms, r[:, None] * X)
    Ainv = np.linalg.inv(A)
    return np.einsum("kde,ke->kd", Ainv, b), Ainv


def reference_choose(theta: np.ndarray, Ainv: np.ndarray, X: np.ndarray) -> np.ndarray:
    """REFERENCE: argmax_a theta_a . x + alpha sqrt(x^T A_a^-1 x) per row, in chunks."""
    out = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], CHUNK):
        Xc = X[s : s + CHUNK]
        T = np.einsum("nd,kde->nke", Xc, Ainv, optimize=True)  # one GEMM: (n, k, d)
        q = np.einsum("nke,ne->nk", T, Xc)
        out[s : s + CHUNK] = np.argmax(Xc @ theta.T + ALPHA * np.sqrt(q), axis=1)
    return out


def trained(name: str, wl: Workload) -> Policy:
    """Policy `name` after the training events (BetaTS takes the W1 rows, reads no column)."""
    policy = make_policy(name, wl)
    policy.learn_many(*training_events(wl))
    policy.choose_many(wl.X[:3], with_propensities=True)  # compile or load the cache, untimed
    return policy


@pytest.fixture(scope="module")
def send(quick: bool) -> tuple[Workload, np.ndarray]:
    """W1 with the send and the training rows, and the rows timed (a tenth when quick)."""
    wl = workloads.build("W1", N_SEND + N_TRAIN)
    return wl, wl.X[: N_SEND // 10 if quick else N_SEND]


def _scaled(n: int) -> tuple[float, str]:
    """Quick runs time a tenth of the send and scale up: the factor and the note."""
    return N_SEND / n, "" if n == N_SEND else f"timed on {n:,} rows, scaled to {N_SEND:,}"


def test_reference(benchmark, send, quick):
    wl, X = send
    theta, Ainv = reference_state(wl)
    reference_choose(theta, Ainv, X[:10])
    benchmark.pedantic(reference_choose, args=(theta, Ainv, X), rounds=rounds(quick))
    scale, note = _scaled(X.shape[0])
    record(benchmark, BENCH, REF, "W1", X.shape[0], "s/280k", scale=scale, note=note)


@pytest.mark.parametrize("name", ["LinUCB", "EpsilonGreedy", "LinTS", "BetaTS"])
def test_choose_many(benchmark, send, quick, name):
    wl, X = send
    policy = trained(name, wl)
    # LinTS propensities are a quadrature per row: one round, not the best of three.
    arms, _ = benchmark.pedantic(policy.choose_many, args=(X,),
                                 kwargs={"with_propensities": True},
                                 rounds=1 if name == "LinTS" else rounds(quick))
    scale, note = _scaled(X.shape[0])
    notes = [note] if note else []
    if name == "LinUCB":
        # Same state, same scores: apart from the epsilon draws the arms must agree.
        agree = np.mean(arms == reference_choose(*reference_state(wl), X))
        notes.append(f"agrees with reference on {agree:.1%} of rows (epsilon=0.05)")
    if name == "LinTS":
        notes.append("one round")
    record(benchmark, BENCH, f"{name} choose_many + propensities", "W1", X.shape[0], "s/280k",
           scale=scale, note="; ".join(notes),
           target=("<", 1.0) if name == "LinUCB" else None,
           ratios=[ratio(f"{name} choose_many+propensities vs NumPy reference (time ratio)",
                         REF)])
