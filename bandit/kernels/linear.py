"""Kernels of the disjoint linear policies (LinUCB, linear TS, epsilon-greedy over the ridge fit).

Pure functions over C-contiguous float64 / int64 / bool arrays; outputs go into caller-owned
arrays. Shapes: ``S`` (k, d, d) raw sums of x x^T (no prior), ``b`` (k, d) sums of r x,
``counts`` (k,) event weights, ``Ainv`` (k, d, d) inverses of ``A = l2 * I + S`` and ``theta``
(k, d) ridge estimates (both derived from the sums, never part of the state), ``X`` (n, d).
Linear TS also keeps ``reward_sums`` (k,) sums of w r and ``x_sums`` (k, d) sums of w x, for a
prior centred on the pooled mean reward (``accumulate_means``, ``learn_one_centred``).

Small products are written as loops: at d <= 64 they are as fast as BLAS calls from Numba and
need no SciPy at compile time.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bandit.kernels.choice import gaussian_row, gaussian_scratch, pick

# Reassociation lets LLVM vectorize the dot products; NaN and inf keep their IEEE meaning
# (no "nnan"/"ninf"), so the finiteness checks below stay valid.
_FAST = {"reassoc", "contract"}
# Learning adds to the sums in row order, an event at a time (fused multiply-adds allowed, no
# reordering): the sums are then one function of the event sequence, however it was batched.
_ORDERED = {"contract"}


@njit(cache=True, inline="always")
def _nonzero(x, out):
    """Write the positions of x's nonzero entries to the front of out; returns their count
    (a row with few of them adds only to their rows and columns of the sums)."""
    q = 0
    for j in range(x.shape[0]):
        if x[j] != 0.0:
            out[q] = j
            q += 1
    return q


@njit(cache=True, fastmath=_ORDERED)
def accumulate(S, b, counts, arms, X, rewards, weights):
    """Add a batch of weighted events to the sums, row after row. arms (n,), X (n, d), rewards,
    weights (n,), all finite (the policies check them). Learning a sequence in any split into
    batches gives the same sums, bit for bit; a row with few nonzero features adds only to
    their rows and columns (a term with a zero factor adds a zero, which leaves a finite sum
    as it is: no sum is ever -0.0)."""
    # Sums, never inverses: partial states of disjoint event sets then add up exactly.
    d = X.shape[1]
    nonzero = np.empty(d, dtype=np.int64)
    for i in range(X.shape[0]):
        a = arms[i]
        w = weights[i]
        counts[a] += w
        q = _nonzero(X[i], nonzero)
        if 2 * q > d:
            for j in range(d):
                wx = w * X[i, j]
                b[a, j] += wx * rewards[i]
                for m in range(d):
                    S[a, j, m] += wx * X[i, m]
            continue
        # A sparse row: only its nonzero rows and columns (as accumulate_interactions).
        for jj in range(q):
            j = nonzero[jj]
            wx = w * X[i, j]
            b[a, j] += wx * rewards[i]
            for mm in range(q):
                m = nonzero[mm]
                S[a, j, m] += wx * X[i, m]


@njit(cache=True, fastmath=_ORDERED)
def accumulate_interactions(S, b, arms, X, F, rewards, weights):
    """BaRT's sums over phi(x, a) = [x, f_a, x (x) f_a] (p = d + m + d m): what ``accumulate``
    adds for the rows of phi, bit for bit, with phi formed one row at a time (never (n, p)),
    and a row with few nonzero features adding only to their rows and columns (X, F and the
    rewards are finite: the policies check them).
    S (p, p), b (p,), arms (n,), X (n, d), F (n_arms, m), rewards, weights (n,)."""
    n, d = X.shape
    m = F.shape[1]
    p = b.shape[0]
    phi = np.empty(p)
    nonzero = np.empty(p, dtype=np.int64)
    for i in range(n):
        a = arms[i]
        w = weights[i]
        for j in range(d):
            phi[j] = X[i, j]
        for k in range(m):
            phi[d + k] = F[a, k]
        for j in range(d):
            for k in range(m):
                phi[d + m + j * m + k] = X[i, j] * F[a, k]
        q = _nonzero(phi, nonzero)
        if 2 * q > p:
            for j in range(p):
                wx = w * phi[j]
                b[j] += wx * rewards[i]
                for k in range(p):  # the whole square: a triangle's ragged rows vectorize worse
                    S[j, k] += wx * phi[k]
            continue
        # A sparse row (one-hot arm features, categorical contexts): a term with a zero
        # factor adds a zero, which leaves a finite sum as it is (no sum is ever -0.0), so
        # only the nonzero rows and columns are added to, bit for bit the same sums.
        for jj in range(q):
            j = nonzero[jj]
            wx = w * phi[j]
            b[j] += wx * rewards[i]
            for kk in range(q):
                k = nonzero[kk]
                S[j, k] += wx * phi[k]


@njit(cache=True, fastmath=_ORDERED)
def accumulate_means(reward_sums, x_sums, arms, X, rewards, weights):
    """Add a batch of weighted events to the per-arm sums of w r (k,) and w x (k, d), row
    after row, like ``accumulate``."""
    d = X.shape[1]
    for i in range(X.shape[0]):
        a = arms[i]
        w = weights[i]
        reward_sums[a] += w * rewards[i]
        for j in range(d):
            x_sums[a, j] += w * X[i, j]


@njit(cache=True, fastmath=_FAST)
def learn_one_centred(S, b, counts, reward_sums, x_sums, Ainv, theta_b, theta_s, theta, arm, x,
                      reward, weight):
    """``learn_one`` for a prior centred on the pooled mean reward m = sum reward_sums /
    sum counts: also adds the event to reward_sums and x_sums, updates arm's theta_b = A^-1 b
    and theta_s = A^-1 x_sums by Sherman-Morrison (the same u and c), then every arm's
    theta = theta_b - m theta_s (the fit to the rewards less m) in O(k d). Returns m, or NaN,
    touching nothing, when x or reward is not finite."""
    d = x.shape[0]
    if not math.isfinite(reward):
        return np.nan
    for j in range(d):
        if not math.isfinite(x[j]):
            return np.nan
    u = np.empty(d)
    xu = 0.0
    xb = 0.0
    xs = 0.0
    for j in range(d):
        acc = 0.0
        for m in range(d):
            acc += Ainv[arm, j, m] * x[m]
        u[j] = acc
        xu += x[j] * acc
        xb += x[j] * theta_b[arm, j]
        xs += x[j] * theta_s[arm, j]
    c = 1.0 + weight * xu
    gb = weight * (reward - xb) / c
    gs = weight * (1.0 - xs) / c
    h = weight / c
    counts[arm] += weight
    reward_sums[arm] += weight * reward
    for j in range(d):
        wx = weight * x[j]
        b[arm, j] += wx * reward
        x_sums[arm, j] += wx
        theta_b[arm, j] += gb * u[j]
        theta_s[arm, j] += gs * u[j]
        hu = h * u[j]
        for m in range(d):
            S[arm, j, m] += wx * x[m]
            Ainv[arm, j, m] -= hu * u[m]
    total = 0.0
    rewards = 0.0
    for a in range(counts.shape[0]):
        total += counts[a]
        rewards += reward_sums[a]
    mean = rewards / total if total > 0.0 else 0.0
    for a in range(theta.shape[0]):
        for j in range(d):
            theta[a, j] = theta_b[a, j] - mean * theta_s[a, j]
    return mean


@njit(cache=True, fastmath=_FAST)
def learn_one(S, b, counts, Ainv, theta, arm, x, reward, weight):
    """Add one event to the sums and update arm's A^-1 and estimate in O(d^2).

    Sherman-Morrison: with u = A^-1 x and c = 1 + w x.u, the new inverse is A^-1 - w u u^T / c
    and the new estimate theta + w (r - x.theta) u / c. Returns False, touching nothing, when x
    or reward is not finite.
    """
    d = x.shape[0]
    if not math.isfinite(reward):
        return False
    for j in range(d):
        if not math.isfinite(x[j]):
            return False
    u = np.empty(d)
    xu = 0.0
    xt = 0.0
    for j in range(d):
        acc = 0.0
        for m in range(d):
            acc += Ainv[arm, j, m] * x[m]
        u[j] = acc
        xu += x[j] * acc
        xt += x[j] * theta[arm, j]
    c = 1.0 + weight * xu
    g = weight * (reward - xt) / c
    h = weight / c
    counts[arm] += weight
    for j in range(d):
        wx = weight * x[j]
        b[arm, j] += wx * reward
        theta[arm, j] += g * u[j]
        hu = h * u[j]
        for m in range(d):
            S[arm, j, m] += wx * x[m]
            Ainv[arm, j, m] -= hu * u[m]
    return True


@njit(cache=True, fastmath=_FAST)
def _mean_width(theta, Ainv, a, x):
    """theta_a . x and sqrt(x^T A_a^-1 x) for one arm."""
    mu = 0.0
    q = 0.0
    d = x.shape[0]
    for j in range(d):
        mu += theta[a, j] * x[j]
        acc = 0.0
        for m in range(d):
            acc += Ainv[a, j, m] * x[m]
        q += x[j] * acc
    # A^-1 is positive definite; rounding can only take a zero width a hair below 0.
    return mu, math.sqrt(max(q, 0.0))


@njit(cache=True, fastmath=_FAST)
def moments(theta, Ainv, X, mean_out, sd_out):
    """Ridge mean and width sqrt(x^T A_a^-1 x) of every arm for every row; fills (n, k) each."""
    for i in range(X.shape[0]):
        for a in range(theta.shape[0]):
            mean_out[i, a], sd_out[i, a] = _mean_width(theta, Ainv, a, X[i])


@njit(cache=True, fastmath=_FAST)
def _values(theta, Ainv, x, alpha, noise, mask, out):
    """out[a] = mean + width * (alpha + noise[a]) for eligible arms; noise (k,) or (0,)."""
    has_noise = noise.shape[0] > 0
    for a in range(theta.shape[0]):
        if mask[a]:
            mu, w = _mean_width(theta, Ainv, a, x)
            out[a] = mu + w * (alpha + (noise[a] if has_noise else 0.0))


@njit(cache=True, fastmath=_FAST)
def choose(theta, Ainv, X, alpha, noise, mask, epsilon, U, arms_out, probs_out):
    """Score the eligible arms and pick one per row, in one call.

    Values are mean + width * (alpha + noise): LinUCB passes its alpha and no noise (0, k);
    Thompson sampling passes alpha 0 and v times standard normals (n, k). The choice and its
    probability are those of ``choice.pick``; mask (1, k) or (n, k), U (n, 2).
    """
    row = np.empty(theta.shape[0])
    per_row = mask.shape[0] > 1
    has_noise = noise.shape[0] > 0
    no_noise = np.empty(0)
    for i in range(X.shape[0]):
        m = mask[i if per_row else 0]
        if has_noise:
            _values(theta, Ainv, X[i], alpha, noise[i], m, row)
        else:
            _values(theta, Ainv, X[i], alpha, no_noise, m, row)
        arms_out[i], probs_out[i] = pick(row, m, epsilon, U[i, 0], U[i, 1])


@njit(cache=True)  # no fast-math here: the quadrature's own arithmetic stays as written
def thompson_choose(theta, Ainv, X, Z, mask, U, v, nodes, weights, radius, steps, arms_out,
                    probs_out):
    """Linear Thompson sampling with propensities, in one pass over the rows: each arm's mean
    and width once per row, the arm of ``choose`` with noise v Z (alpha 0, no floor: U[i, 1]
    breaks ties; Z (n, k) standard normals) and its win probability, ``choice.gaussian_row``
    over N(mean, (v width)^2), the number ``moments`` then
    ``choice.gaussian_max_probabilities`` give for that row and arm."""
    n = X.shape[0]
    k = theta.shape[0]
    per_row = mask.shape[0] > 1
    row = np.empty(k)
    mean = np.empty(k)
    sd = np.empty(k)
    pmf = np.empty(k)
    work, iwork, breaks, nwork = gaussian_scratch(k, steps, nodes.shape[0])
    for i in range(n):
        m = mask[i if per_row else 0]
        for a in range(k):
            mean[a], w = _mean_width(theta, Ainv, a, X[i])
            sd[a] = v * w
            row[a] = mean[a] + w * (0.0 + v * Z[i, a])
        arm, _ = pick(row, m, 0.0, U[i, 0], U[i, 1])
        arms_out[i] = arm
        if arm < 0:
            probs_out[i] = np.nan
            continue
        gaussian_row(mean, sd, m, nodes, weights, radius, steps, pmf, work, iwork, breaks, nwork)
        probs_out[i] = pmf[arm]


@njit(cache=True, fastmath=_FAST)
def choose_one(theta, Ainv, x, alpha, noise, mask, epsilon, u0, u1):
    """``choose`` for a single context x (d,), mask (k,), noise (k,) or (0,): (arm, probability)."""
    row = np.empty(theta.shape[0])
    _values(theta, Ainv, x, alpha, noise, mask, row)
    return pick(row, mask, epsilon, u0, u1)


@njit(cache=True, fastmath=_FAST)
def chosen_moments(theta, Ainv, X, arms, mean_out, sd_out):
    """Mean and width of one given arm per row: arms (n,); fills mean_out, sd_out (n,)."""
    for i in range(X.shape[0]):
        mean_out[i], sd_out[i] = _mean_width(theta, Ainv, arms[i], X[i])
