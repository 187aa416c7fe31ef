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
a per-arm mean and quadratic form and uses the linear kernels). An event learned on its own
moves every derived factor by rank-one updates instead (``learn_one``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from bandit.kernels.linear import _FAST


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


@njit(cache=True, fastmath=_FAST)  # reductions reassociate; each sum gets one fma, as in accumulate
def learn_one(Sxx, bx, counts, F, A_inv, A0_inv, N, c, b0, beta, Mbeta, theta, Q, l2, arm, x,
              reward):
    """Add one event (arm, x (d,), reward) to the sums and bring every derived factor along
    in O(p^2 + k d^2), where refactorizing costs O(k d^2 m^2 + p^3 + k d^3).

    The factors are the policy's refresh's: A_inv (k, d, d) = A_a^-1, A0_inv (p, p), N (k, d, d)
    = M_a^T A0^-1 M_a, c (k, d) = l2 A_a^-1 b_a, b0 (p,) = sum_a M_a c_a, beta (p,) = A0^-1 b0,
    Mbeta (k, d) = M_a^T beta, theta (k, d) = A_a^-1 (b_a + l2 Mbeta_a) and Q (k, d, d) =
    A_a^-1 + l2^2 A_a^-1 N_a A_a^-1. With u = A_a^-1 x and h = 1 + x.u, Sherman-Morrison takes
    A_a^-1 to A_a^-1 - u u^T / h, so A0 = l2 I + sum_a M_a l2 (I - l2 A_a^-1) M_a^T gains
    (l2^2 / h) w w^T with w = M_a u: a rank-one update of A0^-1 too, A0^-1 - g s s^T with
    s = A0^-1 w, and of every N_b and Q_b along M_b^T s (arm a's Q takes its A_a^-1's step as
    well). Returns False, touching
    nothing, when x or reward is not finite.
    """
    k, d = theta.shape
    m = F.shape[1]
    p = d * m
    if not math.isfinite(reward):
        return False
    for j in range(d):
        if not math.isfinite(x[j]):
            return False
    a = arm
    u = np.empty(d)
    h = 1.0
    for j in range(d):
        acc = 0.0
        for l in range(d):  # noqa: E741 - the index names of the docstring
            acc += A_inv[a, j, l] * x[l]
        u[j] = acc
        h += x[j] * acc
    # For arm a's own Q, with the old N_a and A_a^-1: q = A_a^-1 N_a u and sigma = u.N_a u.
    Nu = np.empty(d)
    sigma = 0.0
    for j in range(d):
        acc = 0.0
        for l in range(d):  # noqa: E741
            acc += N[a, j, l] * u[l]
        Nu[j] = acc
        sigma += u[j] * acc
    q = np.empty(d)
    for j in range(d):
        acc = 0.0
        for l in range(d):  # noqa: E741
            acc += A_inv[a, j, l] * Nu[l]
        q[j] = acc
    counts[a] += 1.0
    for j in range(d):
        bx[a, j] += reward * x[j]
        for l in range(d):  # noqa: E741
            Sxx[a, j, l] += x[j] * x[l]
            A_inv[a, j, l] -= u[j] * u[l] / h
    # b0 moves with c_a = l2 A_a^-1 b_a, by delta = M_a (c_a' - c_a).
    nz = np.empty(m, dtype=np.int64)  # the arm's nonzero features: w and delta live on them
    n_nz = 0
    for g in range(m):
        if F[a, g] != 0.0:
            nz[n_nz] = g
            n_nz += 1
    dc = np.empty(d)
    for j in range(d):
        acc = 0.0
        for l in range(d):  # noqa: E741
            acc += A_inv[a, j, l] * bx[a, l]
        dc[j] = l2 * acc - c[a, j]
        c[a, j] = l2 * acc
        for g in range(m):
            b0[j * m + g] += dc[j] * F[a, g]
    # A0^-1 along w = M_a u: s = A0^-1 w and A0^-1 delta from the rows of A0^-1 (symmetric)
    # where w and delta are nonzero, d n_nz of its p rows.
    s = np.zeros(p)
    Ad = np.zeros(p)
    ws = 0.0
    for j in range(d):
        for r in range(n_nz):
            g = nz[r]
            row = j * m + g
            wr = u[j] * F[a, g]
            dr = dc[j] * F[a, g]
            for t in range(p):
                s[t] += wr * A0_inv[row, t]
                Ad[t] += dr * A0_inv[row, t]
    for j in range(d):
        for r in range(n_nz):
            row = j * m + nz[r]
            ws += u[j] * F[a, nz[r]] * s[row]
    gain = (l2 * l2 / h) / (1.0 + (l2 * l2 / h) * ws)
    # beta = A0^-1 b0 follows: (A0^-1 - g s s^T)(b0 + delta) = beta + A0^-1 delta - g (s.b0') s.
    sb = 0.0
    for i in range(p):
        sb += s[i] * b0[i]
    for i in range(p):
        beta[i] += Ad[i] - gain * sb * s[i]
    for i in range(p):
        gs = gain * s[i]
        for t in range(p):
            A0_inv[i, t] -= gs * s[t]
    tb = np.empty(d)
    vb = np.empty(d)
    for b in range(k):
        for j in range(d):
            acc = 0.0
            mb = 0.0
            for g in range(m):
                acc += F[b, g] * s[j * m + g]
                mb += F[b, g] * beta[j * m + g]
            tb[j] = acc
            Mbeta[b, j] = mb
        for j in range(d):
            for l in range(d):  # noqa: E741
                N[b, j, l] -= gain * tb[j] * tb[l]
        # Q_b = A_b^-1 + l2^2 A_b^-1 N_b A_b^-1 moves by -gain l2^2 v v^T, v = A_b^-1 t_b (A_b^-1
        # the new one for arm a), and arm a's also by its A_a^-1's own step: -u u^T / h and
        # l2^2 (sigma u u^T / h^2 - (q u^T + u q^T) / h).
        for j in range(d):
            acc = 0.0
            for l in range(d):  # noqa: E741
                acc += A_inv[b, j, l] * tb[l]
            vb[j] = acc
        for j in range(d):
            for l in range(d):  # noqa: E741
                Q[b, j, l] -= gain * l2 * l2 * vb[j] * vb[l]
        if b == a:
            for j in range(d):
                for l in range(d):  # noqa: E741
                    Q[a, j, l] += (l2 * l2 * (sigma * u[j] * u[l] / h
                                              - (q[j] * u[l] + u[j] * q[l])) - u[j] * u[l]) / h
        for j in range(d):
            acc = 0.0
            for l in range(d):  # noqa: E741
                acc += A_inv[b, j, l] * (bx[b, l] + l2 * Mbeta[b, l])
            theta[b, j] = acc
    return True


@njit(cache=True, fastmath=_FAST)
def learn_rows(Sxx, bx, counts, F, A_inv, A0_inv, N, c, b0, beta, Mbeta, theta, Q, l2, arms, X,
               rewards):
    """``learn_one`` for every row of arms (n,), X (n, d), rewards (n,), in order (finite rows:
    the policy checked them)."""
    for i in range(X.shape[0]):
        learn_one(Sxx, bx, counts, F, A_inv, A0_inv, N, c, b0, beta, Mbeta, theta, Q, l2,
                  arms[i], X[i], rewards[i])
