"""Choice kernels shared by every policy: argmax with an exploration floor, and the exact
probability of each arm, closed-form (floor) or by one-dimensional quadrature (Gaussian TS).

``values`` (n, k) per-row arm values; ``mask`` (m, k) bool eligible arms with m = 1 (one mask for
all rows) or m = n (a mask per row); outputs fill caller-owned arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def pick(values, mask, epsilon, u0, u1):
    """Argmax of one row with an epsilon-uniform floor: (arm, exact probability of that arm).

    values (k,), mask (k,) bool. u0 < epsilon means explore; u1 picks among the eligible arms
    (explore) or the tied maxima (exploit). P(a) = epsilon / n_eligible
    + (1 - epsilon) [a is a maximum] / n_maxima. Returns (-1, nan) when no eligible value is a
    number (no eligible arm, or NaN values), which the caller turns into an error.
    """
    best = -np.inf
    n_elig = 0
    n_ties = 0
    for a in range(values.shape[0]):
        if mask[a]:
            n_elig += 1
            v = values[a]
            if v > best:
                best = v
                n_ties = 1
            elif v == best:
                n_ties += 1
    if n_ties == 0:
        return -1, np.nan
    explore = u0 < epsilon
    target = int(u1 * (n_elig if explore else n_ties))
    seen = 0
    chosen = -1
    for a in range(values.shape[0]):
        if mask[a] and (explore or values[a] == best):
            if seen == target:
                chosen = a
                break
            seen += 1
    p = epsilon / n_elig
    if values[chosen] == best:
        p += (1.0 - epsilon) / n_ties
    return chosen, p


@njit(cache=True)
def choose_floor(values, mask, epsilon, U, arms_out, probs_out):
    """``pick`` for every row: values (n, k), U (n, 2) uniforms; fills arms_out, probs_out (n,)."""
    per_row = mask.shape[0] > 1
    for i in range(values.shape[0]):
        arms_out[i], probs_out[i] = pick(values[i], mask[i if per_row else 0], epsilon,
                                         U[i, 0], U[i, 1])


@njit(cache=True)
def floor_probabilities(values, mask, epsilon, out):
    """The whole distribution of choose_floor: fills out (n, k), zero off the eligible set."""
    n, k = values.shape
    per_row = mask.shape[0] > 1
    for i in range(n):
        r = i if per_row else 0
        best = -np.inf
        n_elig = 0
        n_ties = 0
        for a in range(k):
            if mask[r, a]:
                n_elig += 1
                v = values[i, a]
                if v > best:
                    best = v
                    n_ties = 1
                elif v == best:
                    n_ties += 1
        for a in range(k):
            if n_ties == 0:
                out[i, a] = np.nan
            elif not mask[r, a]:
                out[i, a] = 0.0
            else:
                p = epsilon / n_elig
                if values[i, a] == best:
                    p += (1.0 - epsilon) / n_ties
                out[i, a] = p


@njit(cache=True)
def _std_normal_cdf(z):
    return 0.5 * math.erfc(-z * 0.7071067811865476)


@njit(cache=True)
def gaussian_max_probabilities(mean, sd, mask, nodes, weights, radius, steps, out):
    """P(arm a has the largest draw) for independent N(mean, sd^2) per arm; fills out (n, k).

    One-dimensional quadrature of P(a) = int f_a(t) prod_{b != a} F_b(t) dt. The integral runs
    over [L, U] with L = max_a(mean_a - radius sd_a): below L some arm's CDF is < Phi(-radius), so
    no winner lives there, and on [L, U] every eligible F_b >= Phi(-radius) > 0, which makes the
    product over b != a a safe division. Arms with mean + radius sd < L cannot win (p = 0).
    Breakpoints every radius / steps standard deviations of every competing arm resolve each
    density and each CDF step at its own scale; each piece uses the Gauss-Legendre rule
    (nodes, weights) on [-1, 1]. Rows where every sd is 0 are ties between the largest means.
    """
    n, k = mean.shape
    per_row = mask.shape[0] > 1
    n_gl = nodes.shape[0]
    idx = np.empty(k, dtype=np.int64)
    mu = np.empty(k)
    sg = np.empty(k)
    cdf = np.empty(k)
    pdf = np.empty(k)
    acc = np.empty(k)
    breaks = np.empty(k * (2 * steps + 1) + 2)
    for i in range(n):
        r = i if per_row else 0
        m = 0
        sd_max = 0.0
        for a in range(k):
            out[i, a] = 0.0
            if mask[r, a]:
                idx[m] = a
                mu[m] = mean[i, a]
                sg[m] = sd[i, a]
                if sg[m] > sd_max:
                    sd_max = sg[m]
                m += 1
        if sd_max == 0.0:
            best = -np.inf
            ties = 0
            for j in range(m):
                if mu[j] > best:
                    best = mu[j]
                    ties = 1
                elif mu[j] == best:
                    ties += 1
            for j in range(m):
                if mu[j] == best:
                    out[i, idx[j]] = 1.0 / ties
            continue
        # A zero width next to positive ones is a point mass; a very narrow normal stands in.
        for j in range(m):
            if sg[j] < sd_max * 1e-9:
                sg[j] = sd_max * 1e-9
        lo = -np.inf
        hi = -np.inf
        for j in range(m):
            lo = max(lo, mu[j] - radius * sg[j])
            hi = max(hi, mu[j] + radius * sg[j])
        # Keep the arms that can win; the others have F_b = 1 on [lo, hi] to machine precision.
        c = 0
        for j in range(m):
            if mu[j] + radius * sg[j] >= lo:
                idx[c] = idx[j]
                mu[c] = mu[j]
                sg[c] = sg[j]
                c += 1
        nb = 0
        breaks[nb] = lo
        nb += 1
        breaks[nb] = hi
        nb += 1
        for j in range(c):
            for s in range(-steps, steps + 1):
                t = mu[j] + s * (radius / steps) * sg[j]
                if t > lo and t < hi:
                    breaks[nb] = t
                    nb += 1
        grid = np.sort(breaks[:nb])
        for j in range(c):
            acc[j] = 0.0
        for g in range(nb - 1):
            half = 0.5 * (grid[g + 1] - grid[g])
            if half <= 0.0:
                continue
            mid = 0.5 * (grid[g + 1] + grid[g])
            for q in range(n_gl):
                t = mid + half * nodes[q]
                prod = 1.0
                for j in range(c):
                    z = (t - mu[j]) / sg[j]
                    cdf[j] = _std_normal_cdf(z)
                    pdf[j] = math.exp(-0.5 * z * z) * 0.3989422804014327 / sg[j]
                    prod *= cdf[j]
                w = half * weights[q] * prod
                for j in range(c):
                    acc[j] += w * pdf[j] / cdf[j]
        total = 0.0
        for j in range(c):
            total += acc[j]
        # The pieces sum to 1 up to quadrature error; renormalising makes the pmf exact-sum.
        for j in range(c):
            out[i, idx[j]] = acc[j] / total
