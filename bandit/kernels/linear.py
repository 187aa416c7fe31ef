"""Kernels of the disjoint linear policies (LinUCB, linear TS, epsilon-greedy over the ridge fit).

Pure functions over C-contiguous float64 / int64 / bool arrays; outputs go into caller-owned
arrays. Shapes: ``S`` (k, d, d) raw sums of x x^T (no prior), ``b`` (k, d) sums of r x,
``counts`` (k,) event weights, ``L`` (k, d, d) lower Cholesky factors of ``l2 * I + S``,
``theta`` (k, d) ridge estimates, ``X`` (n, d) contexts.

Small products are written as loops: at d <= 64 they are as fast as BLAS calls from Numba and
need no SciPy at compile time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bandit.kernels.choice import choose_floor


@njit(cache=True)
def accumulate(S, b, counts, arms, X, rewards, weights):
    """Add a batch of weighted events to the sums. arms (n,), X (n, d), rewards, weights (n,)."""
    # Sums, never inverses: partial states of disjoint event sets then add up exactly.
    d = X.shape[1]
    for i in range(X.shape[0]):
        a = arms[i]
        w = weights[i]
        counts[a] += w
        for j in range(d):
            wx = w * X[i, j]
            b[a, j] += wx * rewards[i]
            for m in range(d):
                S[a, j, m] += wx * X[i, m]


@njit(cache=True)
def forward_solve(L, v, out):
    """Solve L y = v for lower-triangular L (d, d); fills out (d,)."""
    d = v.shape[0]
    for j in range(d):
        acc = v[j]
        for m in range(j):
            acc -= L[j, m] * out[m]
        out[j] = acc / L[j, j]


@njit(cache=True)
def backward_solve(L, v, out):
    """Solve L^T y = v for lower-triangular L (d, d); fills out (d,)."""
    d = v.shape[0]
    for j in range(d - 1, -1, -1):
        acc = v[j]
        for m in range(j + 1, d):
            acc -= L[m, j] * out[m]
        out[j] = acc / L[j, j]


@njit(cache=True)
def cholesky_rank1_update(L, x, work):
    """Turn L (d, d), the factor of A, into the factor of A + x x^T in place. work (d,) scratch."""
    d = x.shape[0]
    for i in range(d):
        work[i] = x[i]
    for k in range(d):
        lkk = L[k, k]
        r = math.sqrt(lkk * lkk + work[k] * work[k])
        c = r / lkk
        s = work[k] / lkk
        L[k, k] = r
        for i in range(k + 1, d):
            L[i, k] = (L[i, k] + s * work[i]) / c
            work[i] = c * work[i] - s * L[i, k]


@njit(cache=True)
def learn_one(S, b, counts, L, theta, arm, x, reward, weight, work, work2):
    """Add one event to the sums and update arm's factor and estimate in O(d^2).

    Returns False, touching nothing, when x or reward is not finite.
    """
    d = x.shape[0]
    if not math.isfinite(reward):
        return False
    for j in range(d):
        if not math.isfinite(x[j]):
            return False
    counts[arm] += weight
    sw = math.sqrt(weight)
    for j in range(d):
        wx = weight * x[j]
        b[arm, j] += wx * reward
        for m in range(d):
            S[arm, j, m] += wx * x[m]
        work2[j] = sw * x[j]
    cholesky_rank1_update(L[arm], work2, work)
    forward_solve(L[arm], b[arm], work)
    backward_solve(L[arm], work, theta[arm])
    return True


@njit(cache=True)
def _mean_width(theta, L, a, x, y):
    """theta_a . x and sqrt(x^T A_a^-1 x) = ||L_a^-1 x|| for one arm; y (d,) is scratch."""
    mu = 0.0
    q = 0.0
    for j in range(x.shape[0]):
        mu += theta[a, j] * x[j]
        acc = x[j]
        for m in range(j):
            acc -= L[a, j, m] * y[m]
        y[j] = acc / L[a, j, j]
        q += y[j] * y[j]
    return mu, math.sqrt(q)


@njit(cache=True)
def moments(theta, L, X, mean_out, sd_out):
    """Ridge mean and width sqrt(x^T A_a^-1 x) of every arm for every row; fills (n, k) each."""
    y = np.empty(X.shape[1])
    for i in range(X.shape[0]):
        for a in range(theta.shape[0]):
            mean_out[i, a], sd_out[i, a] = _mean_width(theta, L, a, X[i], y)


@njit(cache=True)
def choose(theta, L, X, alpha, noise, mask, epsilon, U, values, arms_out, probs_out):
    """Score eligible arms and pick one per row, in one call (the per-decision hot path).

    values[i, a] = mean + width * (alpha + noise[i, a]), where noise is (n, k) for Thompson
    sampling (v times standard normals) or (0, k) for none; ineligible arms are not scored.
    The choice and the probability of the chosen arm are those of ``choice.choose_floor``.
    """
    y = np.empty(X.shape[1])
    per_row = mask.shape[0] > 1
    has_noise = noise.shape[0] > 0
    for i in range(X.shape[0]):
        r = i if per_row else 0
        for a in range(theta.shape[0]):
            if mask[r, a]:
                mu, w = _mean_width(theta, L, a, X[i], y)
                values[i, a] = mu + w * (alpha + (noise[i, a] if has_noise else 0.0))
    choose_floor(values, mask, epsilon, U, arms_out, probs_out)
