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


def _mills_ratio(a: float) -> float:
    """R(a) = Phi(-a) / phi(a) for a >= 0, to rounding: from erfc below 2, beyond it from
    Laplace's continued fraction (which erfc times exp(a^2 / 2) loses digits to there)."""
    if a < 2.0:
        return math.sqrt(math.pi / 2) * math.erfc(a / math.sqrt(2)) * math.exp(0.5 * a * a)
    r = 0.0
    for k in range(3000, 0, -1):
        r = k / (a + r)
    return 1.0 / (a + r)


# The normal CDF of the quadrature, as the Mills ratio on [0, MILLS_END) (beyond, Phi(-z) <
# 1e-19): R(a) = w h(s) with w = MILLS_C / (MILLS_C + a) in (0, 1] and s = MILLS_S1 w - MILLS_S0
# in [-1, 1], h the polynomial (power form, degree 16) through its values at the 17 Chebyshev
# points, within 1e-13 of the exact CDF (checked in tests/bandit/kernels/test_kernels.py). One
# polynomial for every a, so the node loop reads its coefficients as constants, not a table
# row per node (a gather per coefficient).
MILLS_END, MILLS_C = 9.0, 4.0
_W_LO = MILLS_C / (MILLS_C + MILLS_END)
MILLS_S1, MILLS_S0 = 2.0 / (1.0 - _W_LO), 1.0 + 2.0 * _W_LO / (1.0 - _W_LO)


def _mills_fit() -> np.ndarray:
    s = np.cos(np.pi * (np.arange(17) + 0.5) / 17)
    w = _W_LO + (1.0 - _W_LO) * 0.5 * (s + 1.0)
    h = [_mills_ratio(MILLS_C * (1.0 / v - 1.0)) / v for v in w]
    cheb = np.polynomial.chebyshev
    return np.asarray(cheb.cheb2poly(cheb.chebfit(s, h, 16)))


MILLS = _mills_fit()
# Above this z the normal CDF rounds to 1.0 and the mass beyond is below 1e-16.
_CDF_ONE = 8.3


@njit(cache=True)
def _mills_poly(a):
    """R(a) from ``MILLS`` for 0 <= a <= MILLS_END."""
    w = MILLS_C / (MILLS_C + a)
    s = MILLS_S1 * w - MILLS_S0
    q = MILLS[16]
    for p in range(15, -1, -1):
        q = q * s + MILLS[p]
    return w * q


@njit(cache=True)
def normal_cdf_pdf(z):
    """(Phi(z), phi(z)) of the standard normal with a single exp: Phi(-|z|) = phi(z) R(|z|),
    where the Mills ratio R comes from ``MILLS`` on [0, MILLS_END) and beyond from its
    asymptotic series (there Phi(-|z|) is below 1e-19). NaN gives NaN."""
    pdf = math.exp(-0.5 * z * z) * 0.3989422804014327
    a = abs(z)
    if a < MILLS_END:
        r = _mills_poly(a)
    else:
        q = 1.0 / (a * a)
        r = (1.0 - q * (1.0 - 3.0 * q)) / a
    tail = pdf * r
    return (tail if z < 0.0 else 1.0 - tail), pdf


# exp(x) = 2^n e^r with n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r is exact
# to rounding), e^r from its Taylor polynomial of degree 12 (|r| <= ln 2 / 2: remainder below
# 2e-16 relative) and 2^n, n in -63..0, from a table.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_POW2 = 2.0 ** -np.arange(64.0)


# Element by element, so vectorizing does not change a result; fused multiply-adds only (no
# reassociation), and no division check (error_model), which would branch.
@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _node_terms(t, n, mu, inv, prod, ratio):
    """One arm's factors at nodes t[:n]: multiplies prod[:n] by its CDF F(t) and fills ratio[:n]
    with f(t) / F(t) (its density over its CDF), for z = (t - mu) inv >= -MILLS_END. Where
    z > _CDF_ONE, F = 1 and f = 0 in double precision. ``normal_cdf_pdf`` without a branch or a
    call: the exp inline (``_POW2``), the Mills ratio from the same polynomial (read at |z| >
    MILLS_END only where z > _CDF_ONE, whose terms the selects drop)."""
    for i in range(n):
        z = (t[i] - mu) * inv
        x = -0.5 * z * z
        e = math.floor(x * 1.4426950408889634 + 0.5)
        r = (x - e * _LN2_HI) - e * _LN2_LO
        p = 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        ne = -e
        k = int(ne) if ne < 63.0 else 63  # NaN and far tails: any entry, the select drops it
        pdf = p * _POW2[k] * 0.3989422804014327
        w = MILLS_C / (MILLS_C + abs(z))
        s = MILLS_S1 * w - MILLS_S0
        q = MILLS[16]
        q = q * s + MILLS[15]
        q = q * s + MILLS[14]
        q = q * s + MILLS[13]
        q = q * s + MILLS[12]
        q = q * s + MILLS[11]
        q = q * s + MILLS[10]
        q = q * s + MILLS[9]
        q = q * s + MILLS[8]
        q = q * s + MILLS[7]
        q = q * s + MILLS[6]
        q = q * s + MILLS[5]
        q = q * s + MILLS[4]
        q = q * s + MILLS[3]
        q = q * s + MILLS[2]
        q = q * s + MILLS[1]
        q = q * s + MILLS[0]
        q *= w
        tail = pdf * q
        cdf = tail if z < 0.0 else 1.0 - tail
        one = z > _CDF_ONE
        prod[i] *= 1.0 if one else cdf
        ratio[i] = 0.0 if one else pdf * inv / cdf


@njit(cache=True)
def _weighted_sum(w, prod, ratio, n):
    """sum_i w[i] prod[i] ratio[i] over i < n in one fixed order, whatever kernel the compiler
    inlines it into (no fast-math): four running sums over i mod 4, the tail into the first,
    then (s0 + s1) + (s2 + s3)."""
    n4 = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for i in range(0, n4, 4):
        s0 += w[i] * prod[i] * ratio[i]
        s1 += w[i + 1] * prod[i + 1] * ratio[i + 1]
        s2 += w[i + 2] * prod[i + 2] * ratio[i + 2]
        s3 += w[i + 3] * prod[i + 3] * ratio[i + 3]
    for i in range(n4, n):
        s0 += w[i] * prod[i] * ratio[i]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def _count_at_most(t, n, top):
    """How many of t[:n] are at most top (a sum the compiler vectorizes, no branch)."""
    count = 0
    for i in range(n):
        count += t[i] <= top
    return count


@njit(cache=True)
def _gaussian_grid(mu, sg, c, lo, radius, steps, order, grid):
    """Breakpoints for arms 0..c-1 over [lo, max_j end_j], end_j = mu_j + radius sg_j: fills
    grid[start:] ascending and returns start; sorts order[:c] by end, ascending.

    Every arm's window [mu_j - radius sg_j, end_j] starts at or below lo, so the arms whose
    window covers a point t are those with end_j > t. Between consecutive ends the pieces are
    equal and at most radius / steps sds of the narrowest covering arm wide: the bound that
    breakpoints every radius / steps sds of every arm give, with far fewer pieces when the arms
    overlap. A segment lies inside the window (2 radius sds) of its narrowest covering arm, so
    it takes at most 2 steps + 1 pieces and grid needs c (2 steps + 1) + 1 entries. Where
    equal pieces of the narrowest arm's bound over the whole range are fewer, the grid is those.
    """
    for j in range(c):
        order[j] = j
    for j in range(1, c):  # insertion sort by end: c is small
        o = order[j]
        e = mu[o] + radius * sg[o]
        p = j - 1
        while p >= 0 and mu[order[p]] + radius * sg[order[p]] > e:
            order[p + 1] = order[p]
            p -= 1
        order[p + 1] = o
    # Walk the segments from the top end down, so the narrowest covering sd is a running min.
    start = grid.shape[0] - 1
    grid[start] = mu[order[c - 1]] + radius * sg[order[c - 1]]
    narrowest = np.inf
    for s in range(c - 1, -1, -1):
        narrowest = min(narrowest, sg[order[s]])
        top = grid[start]
        bottom = lo if s == 0 else max(lo, mu[order[s - 1]] + radius * sg[order[s - 1]])
        if top <= bottom:
            continue
        n_pieces = int(math.ceil((top - bottom) / (narrowest * (radius / steps))))
        for p in range(n_pieces - 1, 0, -1):
            start -= 1
            grid[start] = bottom + (top - bottom) * (p / n_pieces)
        start -= 1
        grid[start] = bottom
    # Arms of alike widths put their ends close together, and the segments between them each
    # round up to whole pieces: equal pieces of the narrowest arm's bound over all of [lo, U]
    # satisfy the same bound, in fewer pieces then.
    end = grid.shape[0] - 1
    span = grid[end] - lo
    if span > 0.0:
        n_even = int(math.ceil(span / (narrowest * (radius / steps))))
        if n_even < end - start:
            for p in range(n_even - 1, 0, -1):
                grid[end - n_even + p] = lo + span * (p / n_even)
            start = end - n_even
            grid[start] = lo
    return start


@njit(cache=True)
def gaussian_row(mean, sd, mask, nodes, weights, radius, steps, out, work, iwork, breaks, nwork):
    """P(arm a has the largest draw) for independent N(mean_a, sd_a^2), one row: mean, sd,
    mask (k,); fills out (k,). ``work`` (4, k) float, ``iwork`` (3, k) int64, ``breaks``
    (k (2 steps + 1) + 1,) and ``nwork`` (3 + k, k (2 steps + 1) n_gl) are scratch space
    (``gaussian_scratch``; ``gaussian_max_probabilities`` documents the method)."""
    if not radius < MILLS_END:
        raise ValueError("radius must be below the Mills polynomial's range (MILLS_END)")
    k = mean.shape[0]
    n_gl = nodes.shape[0]
    mu, sg, inv, acc = work[0], work[1], work[2], work[3]
    idx, order, cut = iwork[0], iwork[1], iwork[2]
    m = 0
    sd_max = 0.0
    for a in range(k):
        out[a] = 0.0
        if mask[a]:
            idx[m] = a
            mu[m] = mean[a]
            sg[m] = sd[a]
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
                out[idx[j]] = 1.0 / ties
        return
    # A zero width next to positive ones is a point mass; a very narrow normal stands in.
    for j in range(m):
        if sg[j] < sd_max * 1e-9:
            sg[j] = sd_max * 1e-9
    lo = -np.inf
    for j in range(m):
        lo = max(lo, mu[j] - radius * sg[j])
    # Keep the arms that can win; the others have F_b = 1 to machine precision above lo.
    c = 0
    for j in range(m):
        if mu[j] + radius * sg[j] >= lo:
            idx[c] = idx[j]
            mu[c] = mu[j]
            sg[c] = sg[j]
            inv[c] = 1.0 / sg[j]
            acc[c] = 0.0
            c += 1
    first = _gaussian_grid(mu, sg, c, lo, radius, steps, order, breaks)
    # Below t the pieces hold prod_b F_b(t) of probability in all (the integrand is its
    # derivative): pieces under a point where that is below Phi(-radius) are skipped, the same
    # bound as lo's. Several arms near the top make it far tighter than lo. Every arm's factor
    # at a point comes from one call of the node loop over the arms' z (mean 0, scale 1).
    floor = normal_cdf_pdf(-radius)[0]
    last = breaks.shape[0] - 1
    z, factor, scratch = nwork[0], nwork[1], nwork[2]  # before the nodes fill them
    while first < last - 1:
        for j in range(c):
            z[j] = (breaks[first + 1] - mu[j]) * inv[j]
            factor[j] = 1.0
        _node_terms(z, c, 0.0, 1.0, factor, scratch)
        prod = 1.0
        for j in range(c):
            prod *= factor[j]
        if prod >= floor:
            break
        first += 1
    # Every node of the kept pieces, then each arm's CDF and density over all of them in one
    # branch-free loop (``_node_terms``), which the compiler vectorizes.
    t, wq, fprod = nwork[0], nwork[1], nwork[2]
    n_t = 0
    for g in range(first, last):
        half = 0.5 * (breaks[g + 1] - breaks[g])
        if half <= 0.0:
            continue
        mid = 0.5 * (breaks[g + 1] + breaks[g])
        for q in range(n_gl):
            t[n_t] = mid + half * nodes[q]
            wq[n_t] = half * weights[q]
            fprod[n_t] = 1.0
            n_t += 1
    # Each arm counts up to the end of its window, radius sds above its mean, as the grid's
    # top does for the highest one: above, its factor is 1 and its density 0 (to within
    # Phi(-radius)). The nodes ascend: arm j takes those up to there, counted without a branch.
    for j in range(c):
        n_j = _count_at_most(t, n_t, mu[j] + radius * sg[j])
        cut[j] = n_j
        _node_terms(t, n_j, mu[j], inv[j], fprod, nwork[3 + j])
    for j in range(c):
        acc[j] = _weighted_sum(wq, fprod, nwork[3 + j], cut[j])
    total = 0.0
    for j in range(c):
        total += acc[j]
    # The pieces sum to 1 up to quadrature error; renormalising makes the pmf exact-sum.
    for j in range(c):
        out[idx[j]] = acc[j] / total


@njit(cache=True)
def gaussian_scratch(k, steps, n_gl):
    """The scratch arrays of ``gaussian_row`` for k arms and an n_gl-point rule: (work, iwork,
    breaks, nwork)."""
    n_pieces = k * (2 * steps + 1)
    return (np.empty((4, k)), np.empty((3, k), dtype=np.int64), np.empty(n_pieces + 1),
            np.empty((3 + k, n_pieces * n_gl)))


@njit(cache=True)
def gaussian_max_probabilities(mean, sd, mask, nodes, weights, radius, steps, out):
    """P(arm a has the largest draw) for independent N(mean, sd^2) per arm; fills out (n, k).

    One-dimensional quadrature of P(a) = int f_a(t) prod_{b != a} F_b(t) dt. The integral runs
    over [L, U] with L = max_a(mean_a - radius sd_a): below L some arm's CDF is < Phi(-radius), so
    no winner lives there, and on [L, U] every eligible F_b >= Phi(-radius) > 0, which makes the
    product over b != a a safe division. Arms with mean + radius sd < L cannot win (p = 0).
    Each arm counts on its window, radius sds either side of its mean: above it, its factor is
    1 and its density 0 (within Phi(-radius) of them), as above U for the highest arm.
    Pieces at most radius / steps standard deviations of every competing arm they overlap
    (``_gaussian_grid``) resolve each density and each CDF step at its own scale; each piece
    uses the Gauss-Legendre rule (nodes, weights) on [-1, 1]; the normal CDF and density come
    from the Mills-ratio polynomial ``MILLS`` (``normal_cdf_pdf``, ``_node_terms``). Rows where
    every sd is 0 are ties between the largest means.
    """
    n, k = mean.shape
    per_row = mask.shape[0] > 1
    work, iwork, breaks, nwork = gaussian_scratch(k, steps, nodes.shape[0])
    for i in range(n):
        gaussian_row(mean[i], sd[i], mask[i if per_row else 0], nodes, weights, radius, steps,
                     out[i], work, iwork, breaks, nwork)
