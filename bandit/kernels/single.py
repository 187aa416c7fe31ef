"""Fused single-row decisions of the linear policies: choice, propensity, expected reward and
exploration bonus of one context in one call.

A single decision through the batch kernels costs three or four calls (choose, propensities,
expectation), each with its own dispatch and array allocations, for arithmetic that takes a
microsecond at d = 20. These kernels do it all at once and compute every number with the same
helpers, in the same order, as ``bandit.kernels.linear`` and ``bandit.kernels.choice``, so the
results are bit for bit those of the batch path for a one-row batch.

Shapes: ``theta`` (k, d), ``Ainv`` (k, d, d) as in ``bandit.kernels.linear``; ``x`` (d,);
``mask`` (k,) bool eligible and active arms (at least one); ``u`` (2 + k,) the decision's
uniforms (columns 0-1: exploration and tie-break).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bandit.kernels.choice import floor_probabilities, gaussian_max_probabilities, pick
from bandit.kernels.linear import _FAST, _mean_width, _values


@njit(cache=True, fastmath=_FAST)
def linear_decide(theta, Ainv, x, alpha, mask, epsilon, u, scale):
    """LinUCB (alpha > 0), epsilon-greedy (alpha 0) and hybrid LinUCB (its effective theta and
    Q as ``Ainv``): the arm of ``linear.choose`` and ``choice.pick``'s probability, the arm's
    mean theta_a . x and ``scale`` times its width. Returns (arm, probability, mean, bonus);
    (-1, nan, nan, nan) when no eligible value is a number (a non-finite x)."""
    return _linear_decide(theta, Ainv, x, alpha, mask, epsilon, u, scale, np.empty(0))


@njit(cache=True, fastmath=_FAST)
def linear_decide_vector(theta, Ainv, x, alpha, mask, epsilon, u, scale, vector):
    """``linear_decide``, and every arm's probability of being chosen written to ``vector``
    (k,): ``choice.floor_probabilities`` of the values the arm was picked from, so
    ``vector[arm]`` is the returned probability."""
    return _linear_decide(theta, Ainv, x, alpha, mask, epsilon, u, scale, vector)


@njit(cache=True, fastmath=_FAST)
def _linear_decide(theta, Ainv, x, alpha, mask, epsilon, u, scale, vector):
    """Both of the above: ``vector`` (k,) is filled unless it is empty."""
    k = theta.shape[0]
    row = np.empty(k)
    _values(theta, Ainv, x, alpha, np.empty(0), mask, row)
    arm, p = pick(row, mask, epsilon, u[0], u[1])
    if arm < 0:
        return -1, np.nan, np.nan, np.nan
    if vector.shape[0]:
        floor_probabilities(row.reshape((1, k)), mask.reshape((1, k)), epsilon,
                            vector.reshape((1, k)))
    mean, width = _mean_width(theta, Ainv, arm, x)
    return arm, p, mean, scale * width


@njit(cache=True, fastmath=_FAST)
def lints_decide(theta, Ainv, x, noise, mask, u, v, nodes, weights, radius, steps):
    """Linear Thompson sampling: the arm whose mean + width * noise is largest (noise (k,),
    ``v`` times the standard normal quantiles of the draws), its exact win probability (the
    quadrature of ``choice.gaussian_max_probabilities`` over every eligible arm), its mean and
    ``v`` times its width. Returns (arm, probability, mean, bonus); -1 and NaNs as above."""
    k = theta.shape[0]
    row = np.empty(k)
    _values(theta, Ainv, x, 0.0, noise, mask, row)
    arm, _ = pick(row, mask, 0.0, u[0], u[1])  # no floor: u[1] breaks ties
    if arm < 0:
        return -1, np.nan, np.nan, np.nan
    mean = np.empty((1, k))
    sd = np.empty((1, k))
    for a in range(k):
        m, w = _mean_width(theta, Ainv, a, x)
        mean[0, a] = m
        sd[0, a] = v * w
    probs = np.empty((1, k))
    gaussian_max_probabilities(mean, sd, mask.reshape((1, k)), nodes, weights, radius, steps,
                               probs)
    m, w = _mean_width(theta, Ainv, arm, x)
    return arm, probs[0, arm], m, v * w
