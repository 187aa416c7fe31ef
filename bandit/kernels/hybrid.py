"""Kernels of hybrid LinUCB (Li et al. 2010, Algorithm 2).

The shared features of an event are z = M_a x = x (x) f_a, the outer product of the context
x (d,) and the chosen arm's features f_a (m,), flattened as z[j * m + h] = x[j] * f_a[h]
(p = d * m; M_a = I_d (x) f_a, (p, d)).

z is fixed by x and the arm, so Algorithm 2's shared statistics are functions of the per-arm
sums Sxx_a = sum x x^T and b_a = sum r x (the linear kernels' ``accumulate``): B_a = sum x z^T
= Sxx_a M_a^T, sum z z^T = sum_a M_a Sxx_a M_a^T, sum r z = sum_a M_a b_a. Learning is then a
disjoint ridge sum, O(d^2) per event, and the policy forms A0 and b0 (the Schur complement) when
it refreshes, from Kronecker sums over the arms: O(k d^2 m^2) through matrix products, where
the sums of z z^T and x z^T per event cost O(p^2) each. These kernels are those Kronecker
contractions; decisions need no kernel of their own (the policy reduces Algorithm 2's score to
a per-arm mean and quadratic form and uses the linear kernels).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _outer_rows(F):
    """(k, m * m): row a is f_a (x) f_a."""
    k, m = F.shape
    out = np.empty((k, m * m))
    for a in range(k):
        for h in range(m):
            for g in range(m):
                out[a, h * m + g] = F[a, h] * F[a, g]
    return out


@njit(cache=True)
def kron_sum(C, F, out):
    """out (p, p) += sum_a M_a C_a M_a^T = sum_a C_a (x) f_a f_a^T. C (k, d, d), F (k, m)."""
    k, d = C.shape[0], C.shape[1]
    m = F.shape[1]
    # T[j * d + l, h * m + g] = sum_a C[a, j, l] F[a, h] F[a, g]: one matrix product.
    T = np.dot(np.ascontiguousarray(C.reshape(k, d * d).T), _outer_rows(F))
    for j in range(d):
        for h in range(m):
            for l in range(d):  # noqa: E741 - the index names of the docstring
                for g in range(m):
                    out[j * m + h, l * m + g] += T[j * d + l, h * m + g]


@njit(cache=True)
def kron_vector_sum(c, F, out):
    """out (p,) += sum_a M_a c_a = sum_a c_a (x) f_a. c (k, d), F (k, m)."""
    out += np.dot(np.ascontiguousarray(c.T), F).ravel()


@njit(cache=True)
def kron_vectors(v, F, out):
    """out (k, d) = M_a^T v for every arm: out[a, j] = sum_h f_a[h] v[j * m + h]. v (p,)."""
    k, m = F.shape
    d = out.shape[1]
    out[:] = np.dot(F, np.ascontiguousarray(v.reshape(d, m).T))


@njit(cache=True)
def kron_forms(P, F, out):
    """out (k, d, d) = M_a^T P M_a for every arm: out[a, j, l] = sum_{h, g} f_a[h]
    P[j * m + h, l * m + g] f_a[g]. P (p, p), F (k, m)."""
    k, m = F.shape
    d = out.shape[1]
    # T[h * m + g, j * d + l] = P[j * m + h, l * m + g]: then one matrix product.
    T = np.empty((m * m, d * d))
    for j in range(d):
        for h in range(m):
            for l in range(d):  # noqa: E741 - the index names of the docstring
                for g in range(m):
                    T[h * m + g, j * d + l] = P[j * m + h, l * m + g]
    out[:] = np.dot(_outer_rows(F), T).reshape(k, d, d)
