"""Seeded, network-free workloads shared by every benchmark.

A workload is a stream of contexts X (n, d) and a linear-logistic truth per arm,
P(click | x, a) = sigmoid(bias_a + theta_a . x). Rewards come from one pre-drawn uniform per row
(common random numbers: every policy sees the same luck for the same row and arm), and the whole
(n, k) reward matrix is built before any clock starts, so drawing rewards never shows up in a
timing.

    W1  k=10, d=20   the reference contextual case
    W2  k=10, d=64   a wide context
    W3  k=10, d=0    context-free Bernoulli arms (Beta TS); X has zero columns
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 20_240_601


@dataclass(frozen=True)
class Workload:
    """Contexts, truth and the pre-drawn rewards of one benchmark stream.

    X (n, d) float64 C-contiguous; theta (k, d) and bias (k,) the logistic truth; probs (n, k)
    click probabilities; R (n, k) float64 rewards in {0, 1}, R[i, a] = U[i] < probs[i, a].
    """

    name: str
    n_arms: int
    dim: int
    X: np.ndarray
    theta: np.ndarray
    bias: np.ndarray
    probs: np.ndarray
    R: np.ndarray

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def rewards(self, start: int, arms: np.ndarray) -> np.ndarray:
        """Rewards of rows start .. start + len(arms) for the chosen arms (len,), float64."""
        return self.R[start + np.arange(arms.shape[0]), arms]


_SHAPES = {"W1": (10, 20), "W2": (10, 64), "W3": (10, 0)}


def contexts(seed: int, n: int, dim: int) -> np.ndarray:
    """Contexts (n, dim): a constant 1 then N(0, 1 / dim) features, so ||x|| is about sqrt(2)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, dim))
    if dim:
        X[:, 0] = 1.0
        X[:, 1:] = rng.standard_normal((n, dim - 1)) / np.sqrt(dim)
    return X


def build(name: str, n: int, seed: int = SEED) -> Workload:
    """Workload `name` ("W1", "W2" or "W3") with n rows; same seed, same arrays."""
    n_arms, dim = _SHAPES[name]
    X = contexts(seed, n, dim)
    rng = np.random.default_rng([seed, dim, 1])
    # Base rates about 5-30% and a context effect of logit-sd about 1: arms win in different
    # regions of context space, so a context-blind policy is visibly worse.
    bias = rng.uniform(-3.0, -1.0, size=n_arms)
    theta = rng.standard_normal((n_arms, dim))
    logits = bias[None, :] + X @ theta.T
    probs = 1.0 / (1.0 + np.exp(-logits))
    U = rng.random(n)
    R = (U[:, None] < probs).astype(np.float64)
    return Workload(name, n_arms, dim, np.ascontiguousarray(X), theta, bias, probs, R)


def arm_features(n_arms: int, m: int, seed: int = SEED) -> np.ndarray:
    """Small arm features (n_arms, m) for hybrid LinUCB: a constant 1 then N(0, 1) columns."""
    rng = np.random.default_rng([seed, m, 2])
    F = np.empty((n_arms, m))
    F[:, 0] = 1.0
    F[:, 1:] = rng.standard_normal((n_arms, m - 1))
    return F
