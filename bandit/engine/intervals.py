"""Lift intervals that hold when one subscriber is in every send and when the report is read
after every send: a cluster-robust variance, a fixed-horizon interval and an always-valid one.

Clusters. A subscriber's decisions are correlated (the same person opens, or ignores, every
email), so the variance of a rate treats the subscriber, not the decision, as the unit: the
sandwich ("cluster-robust") variance of a ratio estimator over clusters of subscribers. The
tallies cannot keep a row per subscriber (they are summed across partitions and kept in
snapshots), so subscribers are hashed into ``CLUSTERS`` buckets by their subject key and the
bucket is the cluster: buckets nest subscribers and are independent of each other, so the
variance stays consistent, and with many buckets its own noise is small (Cameron & Miller
2015, "A practitioner's guide to cluster-robust inference", J. Human Resources 50(2)). Every
bucket's sums add across partitions exactly as the tallies do.

Fixed-horizon: estimate +- z sqrt(V), for a report read once at a planned end.

Always-valid: the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and
Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences", Annals of
Statistics 52(6), 2024, Theorem 2.2 with the normal mixture): with t observations and variance
V of the estimate (sigma^2 = t V per observation), the half width
``sqrt(V) * sqrt(2 (t rho^2 + 1) / (t rho^2) * log(sqrt(t rho^2 + 1) / alpha))`` covers the
running estimand at every t at once with probability about 1 - alpha, however often it is
read; rho sets the t where it is tightest (``rho_for``). Its dual is the sequential test the
guardrails use (a guardrail breaches when the interval leaves the allowed region); the same
construction is used for continuous monitoring in online experimentation platforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np

from bandit.errors import InvalidInputError
from bandit.models import Interval

# Subscriber buckets: the clusters of the lift variance (a power of two).
CLUSTERS = 1024
_Z95 = 1.959963984540054


# Hex digit -> value, for every byte (lower and upper case; anything else: -1).
HEX_VALUE = np.full(256, -1, dtype=np.int64)
HEX_VALUE[np.frombuffer(b"0123456789abcdefABCDEF", dtype=np.uint8)] = [*range(16),
                                                                       *range(10, 16)]


def clusters_of(subjects: Sequence[str | bytes]) -> np.ndarray:
    """(n,) int64 bucket in [0, CLUSTERS) of each subject key: 32 hex digits (``.joined``)
    or the 16 bytes they spell (the join's state), the same bucket either way: the low bits
    of the key's first four bytes. Vectorized (one array over all keys); a key of another
    length, or a non-hex digit among those read, gets InvalidInputError."""
    n = len(subjects)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(subjects[0], bytes):
        raw = np.frombuffer(b"".join(cast("Sequence[bytes]", subjects)), dtype=np.uint8)
        if raw.size != 16 * n or (np.fromiter(map(len, subjects), np.int64, n) != 16).any():
            raise InvalidInputError("subject keys: expected 16 bytes each")
        return key_clusters(raw.reshape(n, 16))
    text = np.frombuffer("".join(cast("Sequence[str]", subjects)).encode("ascii", "replace"),
                         dtype=np.uint8)
    if text.size != 32 * n or (np.fromiter(map(len, subjects), np.int64, n) != 32).any():
        raise InvalidInputError("subject keys: expected 32 hex digits each")
    low = HEX_VALUE[text.reshape(n, 32)[:, 4:8]]  # bytes 2 and 3: the digits the bucket reads
    if (low < 0).any():
        raise InvalidInputError("subject keys: expected 32 hex digits each")
    return (low[:, 0] << 12 | low[:, 1] << 8 | low[:, 2] << 4 | low[:, 3]) & (CLUSTERS - 1)


def key_clusters(keys: np.ndarray) -> np.ndarray:
    """``clusters_of`` of subject keys given as their bytes, (n, 16) uint8."""
    low = keys[:, 2:4].astype(np.int64)
    return (low[:, 0] << 8 | low[:, 1]) & (CLUSTERS - 1)


def clustered_difference(n_a: np.ndarray, y_a: np.ndarray, n_b: np.ndarray,
                         y_b: np.ndarray) -> tuple[float, float] | None:
    """``sum(y_a) / sum(n_a) - sum(y_b) / sum(n_b)`` and its cluster-robust variance, from
    per-cluster decisions ``n_*`` and outcome totals ``y_*`` (each (G,), entry g = cluster g):
    ``G / (G - 1) * sum_g u_g^2`` with ``u_g = (y_ag - p_a n_ag) / N_a - (y_bg - p_b n_bg) /
    N_b``, G the clusters with a decision. The two groups may share clusters (their covariance
    is then counted). None unless both groups have decisions and two clusters do."""
    big_a, big_b = float(n_a.sum()), float(n_b.sum())
    g = int(np.count_nonzero((n_a + n_b) > 0))
    if big_a == 0 or big_b == 0 or g < 2:
        return None
    p_a, p_b = float(y_a.sum()) / big_a, float(y_b.sum()) / big_b
    u = (y_a - p_a * n_a) / big_a - (y_b - p_b * n_b) / big_b
    return p_a - p_b, g / (g - 1) * float(u @ u)


def fixed_interval(estimate: float, variance: float) -> Interval:
    """The 95% fixed-horizon (Wald) interval: valid when read once, at a planned end."""
    half = _Z95 * math.sqrt(variance)
    return Interval(estimate=estimate, low=estimate - half, high=estimate + half)


def rho_for(horizon: float, alpha: float = 0.05) -> float:
    """The mixture scale that makes the confidence sequence tightest at ``horizon``
    observations (Waudby-Smith et al. 2024, after Howard et al. 2021): rho^2 = (-2 log alpha +
    log(-2 log alpha + 1)) / horizon."""
    la = -2 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1)) / horizon)


def always_valid_factor(t: float, rho: float, alpha: float = 0.05) -> float:
    """The always-valid half width in units of sqrt(V) at t observations (> 0); it exceeds
    the fixed-horizon z at every t, grows like sqrt(log t) and is least near the horizon."""
    r = t * rho * rho
    return math.sqrt(2 * (r + 1) / r * math.log(math.sqrt(r + 1) / alpha))


def always_valid_interval(estimate: float, variance: float, t: float, rho: float,
                          alpha: float = 0.05) -> Interval:
    """The 1 - alpha asymptotic confidence sequence at t observations: an interval that
    covers at every look at once (``always_valid_factor``)."""
    half = always_valid_factor(t, rho, alpha) * math.sqrt(variance)
    return Interval(estimate=estimate, low=estimate - half, high=estimate + half)
