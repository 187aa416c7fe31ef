"""Beta distribution kernels and the exact win probabilities of Beta-Bernoulli Thompson sampling.

Everything here works in the logit variable y = log(x / (1 - x)). There a Beta(a, b) variable has
the density g(y) = x^a (1 - x)^b / B(a, b), which is smooth and log-concave for every a, b > 0:
the singular ends of a Beta density with a or b below 1 become exponential tails, and the
narrow bulk of a Beta with huge counts keeps all its digits (y near 0.5 is not squeezed against
1.0 the way x is). The same g is the front factor of the continued fraction of the regularized
incomplete beta I_x(a, b), so one evaluation serves as density and as CDF.

Beta TS is context-free, so its win probabilities depend only on the posterior and the set of
eligible arms; the policy computes them once per state and mask and reuses them for every row.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_HALF_LOG_2PI = 0.9189385332046728
# Above this a + b the density is evaluated around its mode (see _log_front); below it the plain
# a log x + b log(1 - x) - log B(a, b) loses at most about eps * (a + b) * |log x| < 1e-12.
_CENTER_FROM = 1000.0
_CF_EPS = 1e-16
# The continued fraction needs about sqrt(a + b) terms near the mean: 1e6 + 1e6 takes about 1,000.
_CF_MAX_TERMS = 1_000_000
# Probability mass left outside the integration range by each arm's tail bound.
_TAIL_MASS = 1e-15


@njit(cache=True)
def _softplus(y):
    """log(1 + e^y) without overflow or loss of the small end."""
    if y > 0.0:
        return y + math.log1p(math.exp(-y))
    return math.log1p(math.exp(y))


@njit(cache=True)
def _stirling_rest(z):
    """lgamma(z) - [(z - 0.5) log z - z + log(2 pi) / 2]: small, so it keeps its digits."""
    if z < 10.0:
        return math.lgamma(z) - ((z - 0.5) * math.log(z) - z + _HALF_LOG_2PI)
    r = 1.0 / (z * z)
    # The Stirling series to 1/z^13; the next term is below 3e-17 at z = 10.
    return (1.0 / 12.0 - r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r * (1.0 / 1680.0 - r * (
        1.0 / 1188.0 - r * (691.0 / 360360.0 - r / 156.0)))))) / z


@njit(cache=True)
def log_beta(a, b):
    """log B(a, b) for a, b > 0, to a few ulps of its own size for any a, b (1e12 included).

    The sum of three lgammas loses about eps * lgamma(a + b) (1e-13 at a + b = 100, 1e-9 at
    2e6); Stirling's split keeps only terms of the size of the answer.
    """
    if a > b:
        a, b = b, a
    # (b - 0.5) log b - (a + b - 0.5) log(a + b) = -(b - 0.5) log1p(a / b) - a log(a + b).
    return ((a - 0.5) * math.log(a) - a * math.log(a + b) - (b - 0.5) * math.log1p(a / b)
            + _HALF_LOG_2PI + _stirling_rest(a) + _stirling_rest(b) - _stirling_rest(a + b))


@njit(cache=True)
def _log1pmx(u, log1p_u):
    """log(1 + u) - u for u > -1, given log(1 + u); a series where the difference cancels."""
    if abs(u) > 0.1:
        return log1p_u - u
    # -u^2/2 + u^3/3 - ...: 16 terms reach 1e-17 relative at |u| = 0.1.
    term = u
    total = 0.0
    for n in range(2, 18):
        term *= -u
        total += term / n
        if abs(term) < 1e-17 * abs(total):
            break
    return total


@njit(cache=True)
def _trigamma(z):
    """psi'(z) for z > 0, to about 1e-8: the variance of log of a Gamma(z) variable."""
    acc = 0.0
    while z < 6.0:
        acc += 1.0 / (z * z)
        z += 1.0
    r = 1.0 / (z * z)
    return acc + 1.0 / z + r * (0.5 + (1.0 / 6.0 - r * (1.0 / 30.0 - r / 42.0)) / z)


@njit(cache=True)
def _arm_constants(a, b, out):
    """Per-arm constants of _log_front, written to out (6,): centered flag, constant, mode m,
    log x0 and log(1 - x0) at the mode x0 = a / (a + b), and the logit-scale sd."""
    centered = a + b >= _CENTER_FROM
    out[0] = 1.0 if centered else 0.0
    if centered:
        # log g = a log(x/x0) + b log((1-x)/(1-x0)) + this, from Stirling's formula for B(a, b).
        out[1] = (0.5 * math.log(a / (a + b) * b) - _HALF_LOG_2PI
                  - _stirling_rest(a) - _stirling_rest(b) + _stirling_rest(a + b))
    else:
        out[1] = -log_beta(a, b)
    out[2] = math.log(a) - math.log(b)
    out[3] = -_softplus(-out[2])
    out[4] = -_softplus(out[2])
    # y = log G_a - log G_b for independent Gamma variables, so var y = psi'(a) + psi'(b).
    out[5] = math.sqrt(_trigamma(a) + _trigamma(b))


@njit(cache=True)
def _log_front(a, b, consts, y, lx, l1x, x, x1):
    """log g(y) = log(x^a (1 - x)^b / B(a, b)) at x = expit(y); lx, l1x are log x, log(1 - x).

    Around the mode x0 the two big terms of a log x + b log(1 - x) cancel. With u = x/x0 - 1 and
    v = (1-x)/(1-x0) - 1 one has a u + b v = 0 exactly, so log g = a (log1p(u) - u)
    + b (log1p(v) - v) + const, which is O(1) there and keeps its digits for a, b up to 1e12 and
    beyond. u = expm1(y - m) (1 - x) and v = expm1(m - y) x, with m the mode.
    """
    if consts[0] == 0.0:
        return a * lx + b * l1x + consts[1]
    d = y - consts[2]
    u = math.expm1(d) * x1
    v = math.expm1(-d) * x
    return (a * _log1pmx(u, lx - consts[3]) + b * _log1pmx(v, l1x - consts[4]) + consts[1])


@njit(cache=True)
def _continued_fraction(a, b, x):
    """1 + d1 / (1 + d2 / (1 + ...)) of I_x(a, b) = x^a (1-x)^b / (a B(a, b) (that)), by the
    modified Lentz method. d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and
    d_{2m} = m (b-m) x / ((a+2m-1)(a+2m)). Converges fast for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    f = 1.0
    C = 1.0
    D = 0.0
    for n in range(1, _CF_MAX_TERMS):
        m = n // 2
        if n % 2 == 1:
            d = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        else:
            d = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        D = 1.0 + d * D
        if D == 0.0:
            D = tiny
        C = 1.0 + d / C
        if C == 0.0:
            C = tiny
        D = 1.0 / D
        step = C * D
        f *= step
        if abs(step - 1.0) < _CF_EPS:
            break
    return f


@njit(cache=True)
def _cdf(a, b, x, x1, front):
    """I_x(a, b) given x, 1 - x and front = x^a (1-x)^b / B(a, b). Where the fraction for
    (a, b, x) converges slowly, the one for (b, a, 1 - x) converges fast: I_x(a, b) =
    1 - I_{1-x}(b, a)."""
    if front == 0.0:
        return 0.0 if x < a / (a + b) else 1.0
    if x * (a + b + 2.0) < a + 1.0:
        return front / (a * _continued_fraction(a, b, x))
    return 1.0 - front / (b * _continued_fraction(b, a, x1))


@njit(cache=True)
def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b) = P(Beta(a, b) <= x) for a, b > 0, x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    consts = np.empty(6)
    _arm_constants(a, b, consts)
    lx, l1x = math.log(x), math.log1p(-x)
    front = math.exp(_log_front(a, b, consts, lx - l1x, lx, l1x, x, 1.0 - x))
    return _cdf(a, b, x, 1.0 - x, front)


@njit(cache=True)
def beta_logpdf(a, b, x):
    """log of the Beta(a, b) density at x in (0, 1)."""
    consts = np.empty(6)
    _arm_constants(a, b, consts)
    lx, l1x = math.log(x), math.log1p(-x)
    return _log_front(a, b, consts, lx - l1x, lx, l1x, x, 1.0 - x) - lx - l1x


@njit(cache=True)
def _tail_point(a, b, consts, side, tol):
    """A logit y on `side` (-1 left, +1 right) of the mode with at most tol of the mass beyond.

    g is log-concave, so beyond a point its tail lies under the tangent of log g there:
    mass beyond y <= g(y) / |d log g / dy| with d log g / dy = a (1 - x) - b x.
    """
    z = 2.0
    while True:
        y = consts[2] + side * z * consts[5]
        lx, l1x = -_softplus(-y), -_softplus(y)
        x, x1 = math.exp(lx), math.exp(l1x)
        slope = -side * (a * x1 - b * x)
        if slope > 0.0 and _log_front(a, b, consts, y, lx, l1x, x, x1) - math.log(slope) < \
                math.log(tol):
            return y
        z += 1.0


@njit(cache=True)
def _raise_floor(a, b, consts, c, lo, hi, tol):
    """A higher lower end for the integral: below y, the winners' mass is P(max draw <= y) =
    prod_b F_b(y) exactly, so any y where a bound on that product is <= tol will do. With many
    overlapping arms this cuts the long left stretch where one arm alone could still be low.

    Each F_b left of its mode is bounded by the log-concave tail bound (see _tail_point), to the
    right of it by 1; the product bound grows with y, so bisection finds the point.
    """
    log_tol = math.log(tol)
    top = hi
    for _ in range(30):
        y = 0.5 * (lo + top)
        lx, l1x = -_softplus(-y), -_softplus(y)
        x, x1 = math.exp(lx), math.exp(l1x)
        log_bound = 0.0
        for j in range(c):
            slope = a[j] * x1 - b[j] * x
            if y < consts[j, 2] and slope > 0.0:
                log_bound += min(0.0, _log_front(a[j], b[j], consts[j], y, lx, l1x, x, x1)
                                 - math.log(slope))
        if log_bound <= log_tol:
            lo = y
        else:
            top = y
    return lo


@njit(cache=True)
def beta_max_probabilities(alpha, beta, mask, nodes, weights, width, out):
    """P(arm a has the largest draw) for independent Beta(alpha_a, beta_a); fills out (m, k).

    alpha, beta (k,) > 0; mask (m, k) bool eligible arms (out is 0 off it); (nodes, weights) a
    Gauss-Legendre rule on [-1, 1]; width the largest piece of the grid in logit sds.

    In the logit variable, P(a) = int g_a(y) prod_{b != a} F_b(y) dy. Each arm's support
    [L_b, U_b] leaves at most _TAIL_MASS outside (log-concave tail bound, no quantile function
    needed). The integral runs over [lo, hi] with lo = max L_b (below it some F_b is negligible)
    and hi = max U_b; an arm with U_b < lo cannot win (p = 0). The pieces of the grid are at most
    `width` sds of the narrowest arm whose support covers them, so each density and each CDF
    step is resolved at its own scale and wide arms cost no more pieces than they need.
    """
    m_rows, k = mask.shape
    n_gl = nodes.shape[0]
    idx = np.empty(k, dtype=np.int64)
    a = np.empty(k)
    b = np.empty(k)
    consts = np.empty((k, 6))
    lo_arm = np.empty(k)
    hi_arm = np.empty(k)
    g = np.empty(k)
    F = np.empty(k)
    acc = np.empty(k)
    rest = np.empty(k)
    for r in range(m_rows):
        c = 0
        for j in range(k):
            out[r, j] = 0.0
            if mask[r, j]:
                idx[c] = j
                a[c] = alpha[j]
                b[c] = beta[j]
                c += 1
        if c == 0:
            continue
        lo = -np.inf
        hi = -np.inf
        for j in range(c):
            _arm_constants(a[j], b[j], consts[j])
            lo_arm[j] = _tail_point(a[j], b[j], consts[j], -1.0, _TAIL_MASS)
            hi_arm[j] = _tail_point(a[j], b[j], consts[j], 1.0, _TAIL_MASS)
            lo = max(lo, lo_arm[j])
            hi = max(hi, hi_arm[j])
        lo = _raise_floor(a, b, consts, c, lo, hi, _TAIL_MASS)
        # Keep the arms that can win; the others have F_b = 1 on [lo, hi] up to _TAIL_MASS.
        n = 0
        for j in range(c):
            if hi_arm[j] > lo:
                idx[n] = idx[j]
                a[n] = a[j]
                b[n] = b[j]
                consts[n] = consts[j]
                hi_arm[n] = hi_arm[j]
                n += 1
        if n == 1:
            out[r, idx[0]] = 1.0
            continue
        for j in range(n):
            acc[j] = 0.0
        left = lo
        while left < hi:
            # The piece ends `width` sds of the narrowest arm alive here, and never jumps past the
            # end of a support (where a narrower arm may take over).
            right = hi
            for j in range(n):
                if left < hi_arm[j]:
                    right = min(right, left + width * consts[j, 5], hi_arm[j])
            half = 0.5 * (right - left)
            mid = 0.5 * (right + left)
            for q in range(n_gl):
                y = mid + half * nodes[q]
                lx, l1x = -_softplus(-y), -_softplus(y)
                x, x1 = math.exp(lx), math.exp(l1x)
                for j in range(n):
                    if y < hi_arm[j]:
                        g[j] = math.exp(_log_front(a[j], b[j], consts[j], y, lx, l1x, x, x1))
                        F[j] = _cdf(a[j], b[j], x, x1, g[j])
                    else:
                        g[j] = 0.0
                        F[j] = 1.0
                # Leave-one-out products without dividing (an F_b may underflow near lo).
                after = 1.0
                for j in range(n - 1, -1, -1):
                    rest[j] = after
                    after *= F[j]
                w = half * weights[q]
                before = 1.0
                for j in range(n):
                    acc[j] += w * g[j] * before * rest[j]
                    before *= F[j]
            left = right
        total = 0.0
        for j in range(n):
            total += acc[j]
        # The pieces sum to 1 up to quadrature error; renormalising makes the pmf exact-sum.
        for j in range(n):
            out[r, idx[j]] = acc[j] / total


@njit(cache=True)
def _gamma_draw(shape, buf, pos):
    """A Gamma(shape, 1) draw by Marsaglia and Tsang (2000), an exact rejection method, as
    (g, e): the draw is g * exp(e), e = 0 for shape >= 1; below 1 it is Gamma(shape + 1)
    U^(1 / shape), with e = log(U) / shape kept apart so that no draw underflows. Reads
    standard normals from buf[0, pos[0]:] and uniforms in [0, 1) from buf[1, pos[1]:] and
    moves the cursors past them; g = -1 when a row of buf ran out."""
    boost = shape < 1.0
    d = (shape + 1.0 if boost else shape) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = buf.shape[1]
    while True:
        if pos[0] >= n or pos[1] >= n:
            return -1.0, 0.0
        x = buf[0, pos[0]]
        pos[0] += 1
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = buf[1, pos[1]]
        pos[1] += 1
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2 or math.log(u) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            break
    if not boost:
        return d * v, 0.0
    if pos[1] >= n:
        return -1.0, 0.0
    e = math.log(buf[1, pos[1]]) / shape
    pos[1] += 1
    return d * v, e


@njit(cache=True)
def beta_logit_draw(a, b, buf, pos):
    """log(X / Y), the logit of a Beta(a, b) draw X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b)
    (``_gamma_draw``'s buffer and cursors); (0, False) when the buffer ran out."""
    gx, ex = _gamma_draw(a, buf, pos)
    if gx < 0.0:
        return 0.0, False
    gy, ey = _gamma_draw(b, buf, pos)
    if gy < 0.0:
        return 0.0, False
    return math.log(gx / gy) + (ex - ey), True


@njit(cache=True)
def thompson_pick(successes, failures, alpha, beta, now, mask, buf, pos):
    """Beta TS's arm for one decision: the eligible arm whose draw from Beta(alpha + now
    successes_a, beta + now failures_a) is largest (compared as logits, which keeps the order
    and the digits of draws near 0 or 1; a tie, of probability 0, goes to the lower arm).
    successes, failures (k,), mask (k,) bool; the draws come from buf (2, m), standard normals
    then uniforms, at the cursors pos (2,) int64, which move past them. Returns -1, cursors
    untouched, when the buffer ran out (the caller refills it and asks again)."""
    start_n, start_u = pos[0], pos[1]
    best = -np.inf
    arm = -1
    for i in range(successes.shape[0]):
        if not mask[i]:
            continue
        y, ok = beta_logit_draw(alpha + now * successes[i], beta + now * failures[i], buf, pos)
        if not ok:
            pos[0], pos[1] = start_n, start_u
            return -1
        if arm < 0 or y > best:
            best = y
            arm = i
    return arm
