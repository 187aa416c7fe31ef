"""Kernels of hybrid LinUCB (Li et al. 2010, Algorithm 2).

The shared features of an event are z = x (x) f_a, the outer product of the context x (d,) and the
chosen arm's features f_a (m,), flattened as z[j * m + l] = x[j] * f_a[l] (p = d * m).

Sums (all additive over events, no prior): ``Szz`` (p, p) of z z^T, ``bz`` (p,) of r z,
``Sxx`` (k, d, d) of x x^T per arm, ``Sxz`` (k, d, p) of x z^T per arm, ``bx`` (k, d) of r x per arm,
``counts`` (k,). Algorithm 2's incremental A0, b0 are the Schur complement of these sums
(A0 = l2 I + Szz - sum_a B_a^T A_a^-1 B_a with B_a = Sxz_a), which the policy forms when it
factorizes, so learning stays a plain sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def accumulate(Szz, bz, Sxx, Sxz, bx, counts, arms, X, F, rewards, weights):
    """Add weighted events. arms (n,), X (n, d), F (k, m) arm features, rewards, weights (n,)."""
    n, d = X.shape
    m = F.shape[1]
    p = d * m
    z = np.empty(p)
    for i in range(n):
        a = arms[i]
        w = weights[i]
        r = rewards[i]
        counts[a] += w
        for j in range(d):
            for l in range(m):
                z[j * m + l] = X[i, j] * F[a, l]
        for u in range(p):
            wz = w * z[u]
            bz[u] += wz * r
            for v in range(p):
                Szz[u, v] += wz * z[v]
        for j in range(d):
            wx = w * X[i, j]
            bx[a, j] += wx * r
            for v in range(d):
                Sxx[a, j, v] += wx * X[i, v]
            for v in range(p):
                Sxz[a, j, v] += wx * z[v]


@njit(cache=True)
def moments(beta, theta, L0, La, G, F, X, mean_out, sd_out):
    """Mean z.beta + x.theta_a and width sqrt(s) of Algorithm 2 for every row and arm; fills (n, k).

    beta (p,), theta (k, d), L0 (p, p) factor of A0, La (k, d, d) factors of A_a, G (k, d, p)
    = A_a^-1 B_a. With u = A_a^-1 x and w = z - B_a^T u, the paper's s equals
    w^T A0^-1 w + x^T A_a^-1 x, two triangular solves instead of four products.
    """
    n, d = X.shape
    k, m = F.shape
    p = d * m
    z = np.empty(p)
    y = np.empty(d)
    y0 = np.empty(p)
    for i in range(n):
        for a in range(k):
            for j in range(d):
                for l in range(m):
                    z[j * m + l] = X[i, j] * F[a, l]
            mu = 0.0
            for u in range(p):
                mu += z[u] * beta[u]
            q = 0.0
            for j in range(d):
                mu += theta[a, j] * X[i, j]
                acc = X[i, j]
                for v in range(j):
                    acc -= La[a, j, v] * y[v]
                y[j] = acc / La[a, j, j]
                q += y[j] * y[j]
            for u in range(p):
                # w_u = z_u - (G_a^T x)_u, then forward-solve L0 y0 = w in the same pass.
                acc = z[u]
                for j in range(d):
                    acc -= G[a, j, u] * X[i, j]
                for v in range(u):
                    acc -= L0[u, v] * y0[v]
                y0[u] = acc / L0[u, u]
                q += y0[u] * y0[u]
            mean_out[i, a] = mu
            sd_out[i, a] = math.sqrt(q)
