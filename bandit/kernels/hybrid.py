"""Kernels of hybrid LinUCB (Li et al. 2010, Algorithm 2).

The shared features of an event are z = x (x) f_a, the outer product of the context x (d,) and the
chosen arm's features f_a (m,), flattened as z[j * m + h] = x[j] * f_a[h] (p = d * m).

Sums (all additive over events, no prior): ``Szz`` (p, p) of z z^T, ``bz`` (p,) of r z,
``Sxx`` (k, d, d) of x x^T per arm, ``Sxz`` (k, d, p) of x z^T per arm, ``bx`` (k, d) of r x
per arm, ``counts`` (k,). Algorithm 2's incremental A0, b0 are the Schur complement of these sums
(A0 = l2 I + Szz - sum_a B_a^T A_a^-1 B_a with B_a = Sxz_a), which the policy forms when it
refreshes, so learning stays a plain sum. Decisions need no kernel of their own: the policy
reduces Algorithm 2's score to a per-arm mean and quadratic form and uses the linear kernels.
"""

from __future__ import annotations

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
            for h in range(m):
                z[j * m + h] = X[i, j] * F[a, h]
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
