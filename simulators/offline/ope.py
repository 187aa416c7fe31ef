"""Off-policy evaluation: how would a target policy have done on events another policy logged?

Estimators of the target's expected reward per event, V = E_x[sum_a pi(a|x) q(x, a)], from a
``LoggedBandit`` (contexts x_i, logged actions a_i, rewards r_i, logging propensities p_i):

- ``replay`` (Li et al., WSDM 2011): walk the log, keep the events where the target picks the
  logged action, average their rewards. Unbiased only under uniform logging (p_i = 1/K), so
  it refuses other logs. A project policy learns online from the kept events, as it would
  have in production (in batches of ``batch_size``).
- ``ips``: mean of w_i r_i with w_i = pi(a_i|x_i) / p_i (inverse propensity scoring).
- ``snips``: sum w_i r_i / sum w_i (self-normalized: a little bias, much less variance).
- ``dm``: mean of sum_a pi(a|x_i) q_hat(x_i, a), q_hat a reward model fitted on the log
  (``fit_reward_model``: per-action ridge, cross-fitted).
- ``dr``: dm + w_i (r_i - q_hat(x_i, a_i)) (doubly robust: unbiased when the propensities are
  right, whatever the reward model).

Three more, named and defined as in Open Bandit Pipeline (OBP), each DM plus a tamed
correction; write d_i = r_i - q_hat(x_i, a_i) and dm_i = sum_a pi(a|x_i) q_hat(x_i, a):

- ``sndr`` (self-normalized DR; Kallus & Uehara, NeurIPS 2019; OBP
  ``SelfNormalizedDoublyRobust``): mean(dm_i) + sum w_i d_i / sum w_i.
- ``switch-dr`` (Wang et al., ICML 2017's switch, on DR as in Su et al., ICML 2020; OBP
  ``SwitchDoublyRobust``): dm_i + 1[w_i <= tau] w_i d_i: DR where the weight is at most
  ``switch_tau``, DM alone where it is larger (tau = inf is DR, tau = 0 is DM).
- ``dr-os`` (DR with optimistic shrinkage; Su et al., ICML 2020; OBP
  ``DoublyRobustWithShrinkage``): dm_i + w_hat_i d_i with w_hat = lambda w / (w^2 + lambda),
  ``os_lambda`` = lambda (inf is DR, 0 is DM).

Both parameters default to OBP's (inf: the estimator equals DR); a finite value trades bias
for variance, and the bias grows with the reward model's error on the events it hands to DM.

Each estimate is a ratio of per-event sums (a plain mean has denominator terms 1), so one
kernel computes the point estimate and every bootstrap resample: intervals are percentile
bootstrap intervals over events, with the resampled indices drawn from a seeded generator and
shared by all estimators (SNDR's resample is the sum of two ratios: DM's and its normalized
correction's). The kernel draws each resample where it sums it (``resampled_ratios``), and
sums a column that several estimators share (IPS's and SNIPS's numerator) once. DM,
Switch-DR and DR-OS lean on the reward model, so its fitting noise is much of their error:
when ``evaluate`` fits the model itself, each resample refits it on the resampled events
(``REFIT``; a resample is a count per event, so each action's Gram matrix and moment vector
are one count-weighted sum, ``refit_reward_models``, and each refitted estimate is the
models' parameters against count-weighted feature sums, no predictions formed). DR's and SNDR's
corrections cancel the model's error to first order, so their resamples hold it fixed, as do
all estimators given a ``qhat``. Weight clipping (w -> min(w, clip)) trades variance for
a downward bias (with rewards >= 0) that each estimate states: ``clipping_bias`` is the
clipped minus the unclipped estimate on this log. It applies to ips, snips, dr and sndr;
switch-dr and dr-os tame the weights their own way and read them unclipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numba import njit

from bandit.errors import InvalidInputError
from bandit.kernels.linear import accumulate
from bandit.policies import Policy
from simulators.offline.logs import LoggedBandit

__all__ = [
    "DR_VARIANTS",
    "ESTIMATORS",
    "MODEL_BASED",
    "OFF_POLICY",
    "REFIT",
    "WEIGHTED",
    "Estimate",
    "ReplayRun",
    "evaluate",
    "fit_reward_model",
    "on_policy",
    "refit_reward_models",
    "replay",
    "target_probabilities",
]

# Columns of the per-event term matrices filled by ``ope_terms``.
WEIGHTED = ("ips", "snips", "dm", "dr")
DR_VARIANTS = ("sndr", "switch-dr", "dr-os")
# What ``evaluate`` computes.
OFF_POLICY = (*WEIGHTED, *DR_VARIANTS)
ESTIMATORS = ("replay", *OFF_POLICY)
# Estimators that read the reward model q_hat.
MODEL_BASED = frozenset({"dm", "dr", "sndr", "switch-dr", "dr-os"})
# Model-based estimators whose bootstrap refits the reward model in each resample.
REFIT = frozenset({"dm", "switch-dr", "dr-os"})
# Ratio columns: ``ope_terms`` fills the first four, ``ope_more_terms`` the last three
# ("sndr-correction" is sum w d / sum w).
_COLUMNS = ("ips", "snips", "dm", "dr", "sndr-correction", "switch-dr", "dr-os")
# Each estimator is the sum of these ratio columns.
_PARTS = {"ips": (0,), "snips": (1,), "dm": (2,), "dr": (3,), "sndr": (2, 4),
          "switch-dr": (5,), "dr-os": (6,)}
# Estimators whose weights ``clip`` clips.
_CLIPPED = frozenset({"ips", "snips", "dr", "sndr"})
# Resampled index rows the refitting bootstrap draws at a time: bounds its memory at about
# 32 MiB (the others draw one resample at a time, ``resampled_ratios``).
_BOOT_CHUNK_CELLS = 2**22


# -- kernels ---------------------------------------------------------------------------------


@njit(cache=True)
def ope_terms(pi, qhat, actions, rewards, propensities, clip, U, V):
    """Per-event numerator and denominator terms of ips, snips, dm and dr (in that column
    order). pi, qhat (n, k); actions (n,) int64; rewards, propensities (n,); clip > 0 (inf for
    none); fills U, V (n, 4). Returns how many weights were clipped."""
    n_clipped = 0
    for i in range(actions.shape[0]):
        a = actions[i]
        w = pi[i, a] / propensities[i]
        if w > clip:
            w = clip
            n_clipped += 1
        r = rewards[i]
        dm = 0.0
        for b in range(pi.shape[1]):
            dm += pi[i, b] * qhat[i, b]
        U[i, 0] = w * r
        V[i, 0] = 1.0
        U[i, 1] = w * r
        V[i, 1] = w
        U[i, 2] = dm
        V[i, 2] = 1.0
        U[i, 3] = dm + w * (r - qhat[i, a])
        V[i, 3] = 1.0
    return n_clipped


@njit(cache=True)
def ope_more_terms(pi, qhat, actions, rewards, propensities, clip, tau, lam, U, V):
    """Per-event numerator and denominator terms of SNDR's correction (w clipped at clip),
    Switch-DR (threshold tau, raw w) and DR-OS (shrinkage lam, raw w), in that column order.
    Inputs as ``ope_terms``; tau, lam >= 0 (inf for none); fills U, V (n, 3)."""
    for i in range(actions.shape[0]):
        a = actions[i]
        w = pi[i, a] / propensities[i]
        d = rewards[i] - qhat[i, a]
        dm = 0.0
        for b in range(pi.shape[1]):
            dm += pi[i, b] * qhat[i, b]
        U[i, 0] = min(w, clip) * d
        V[i, 0] = min(w, clip)
        U[i, 1] = dm + w * d if w <= tau else dm
        V[i, 1] = 1.0
        if lam == np.inf:
            shrunk = w
        elif w == 0.0:
            shrunk = 0.0
        else:
            shrunk = lam * w / (w * w + lam)
        U[i, 2] = dm + shrunk * d
        V[i, 2] = 1.0


@njit(cache=True)
def _same_column(A, a, B, b):
    """Whether column a of A and column b of B (n rows each) hold equal numbers, so that any
    resample sums them to the same result (-0.0 and 0.0 too: the sums start from 0.0)."""
    return np.all(A[:, a] == B[:, b])


@njit(cache=True)
def _distinct_columns(U, V):
    """What a resample of the ratio terms U, V (n, m) must sum: P (n, 4g), each distinct column
    of U and V once, zero-padded to a multiple of four; num (m,) and den (m,), the column of P
    of each ratio's numerator and denominator, -1 where the denominator is a column of ones
    (it sums to the number of rows summed). IPS's and SNIPS's numerators are one column, and
    IPS's, DM's and DR's denominators are ones: the four estimators sum four columns, not
    eight."""
    n, m = U.shape
    kept = np.empty(2 * m, dtype=np.int64)  # columns of [U V] copied to P, in order
    num, den = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    q = 0
    for c in range(2 * m):
        e = c % m
        W = U if c < m else V
        if c >= m:
            ones = True
            for i in range(n):
                if V[i, e] != 1.0:
                    ones = False
                    break
            if ones:
                den[e] = -1
                continue
        found = -1
        for k in range(q):
            if _same_column(U if kept[k] < m else V, kept[k] % m, W, e):
                found = k
                break
        if found < 0:
            kept[q] = c
            found = q
            q += 1
        if c < m:
            num[e] = found
        else:
            den[e] = found
    P = np.zeros((n, 4 * ((q + 3) // 4)))
    for k in range(q):
        W = U if kept[k] < m else V
        for i in range(n):
            P[i, k] = W[i, kept[k] % m]
    return P, num, den


@njit(cache=True)
def _block_ratios(P, num, den, r0, r1, r2, r3, out):
    """Ratios of up to four resamples at once: out[t, e] = sum_j P[r_t[j], num[e]] /
    sum_j P[r_t[j], den[e]] for the index rows r0..r3 (s,) and t < out.shape[0] (the rows
    past it are ignored). Each sum runs in the order of its row; four resamples by four columns
    are sixteen independent sums, so the adder never waits on the previous addition of one."""
    acc = np.empty(16)
    sums = np.empty((4, P.shape[1]))
    for g in range(0, P.shape[1], 4):
        acc[:] = 0.0
        for j in range(r0.shape[0]):
            i0, i1, i2, i3 = r0[j], r1[j], r2[j], r3[j]
            for c in range(4):
                acc[c] += P[i0, g + c]
                acc[4 + c] += P[i1, g + c]
                acc[8 + c] += P[i2, g + c]
                acc[12 + c] += P[i3, g + c]
        for t in range(4):
            for c in range(4):
                sums[t, g + c] = acc[4 * t + c]
    for t in range(out.shape[0]):
        for e in range(num.shape[0]):
            d = float(r0.shape[0]) if den[e] < 0 else sums[t, den[e]]
            out[t, e] = sums[t, num[e]] / d if d != 0.0 else np.nan


@njit(cache=True)
def bootstrap_ratios(U, V, idx, out):
    """out[b, e] = sum_j U[idx[b, j], e] / sum_j V[idx[b, j], e]; U, V (n, m); idx (B, s)
    int64 rows into U; fills out (B, m), NaN where a denominator sums to 0. Each sum runs in
    the order of idx[b]."""
    P, num, den = _distinct_columns(U, V)
    B = idx.shape[0]
    for b in range(0, B, 4):
        _block_ratios(P, num, den, idx[b], idx[min(b + 1, B - 1)], idx[min(b + 2, B - 1)],
                      idx[min(b + 3, B - 1)], out[b:b + 4])


@njit(cache=True)
def resampled_ratios(U, V, rng, out):
    """``bootstrap_ratios`` over B = out.shape[0] resamples of the n events of U, V (n, m),
    drawn here from rng (a ``np.random.Generator``): the indices are the rows of
    ``rng.integers(0, n, size=(B, n))``, the same stream, drawn four resamples at a time, so
    the (B, n) index matrix never exists. Fills out (B, m), NaN where a denominator sums to 0.

    Unlike the other kernels this one takes the generator rather than its draws: drawing the
    resamples where they are summed is what makes the bootstrap of ``evaluate`` fast
    (benchmark rows "bootstrap ... resamples x 4 estimators, kernel" and "project IPS, SNIPS,
    DM, DR ...")."""
    n = U.shape[0]
    P, num, den = _distinct_columns(U, V)
    B = out.shape[0]
    for b in range(0, B, 4):
        r0 = rng.integers(0, n, n)
        r1 = rng.integers(0, n, n) if b + 1 < B else r0
        r2 = rng.integers(0, n, n) if b + 2 < B else r0
        r3 = rng.integers(0, n, n) if b + 3 < B else r0
        _block_ratios(P, num, den, r0, r1, r2, r3, out[b:b + 4])


@njit(cache=True)
def first_bad_row(pi, tol):
    """The first row of pi (n, k) that is not a probability distribution (an entry not finite
    or < 0, or a sum more than tol from 1), -1 if none: one pass where NumPy's checks take
    four."""
    for i in range(pi.shape[0]):
        total = 0.0
        for a in range(pi.shape[1]):
            p = pi[i, a]
            if not (math.isfinite(p) and p >= 0.0):
                return i
            total += p
        if abs(total - 1.0) > tol:
            return i
    return -1


@njit(cache=True)
def sample_actions(pi, u, out):
    """One action per row from the probability table pi (n, k) by inverse CDF with the
    uniforms u (n,); fills out (n,) int64. Zero-probability actions are never drawn."""
    k = pi.shape[1]
    for i in range(pi.shape[0]):
        total = 0.0
        for a in range(k):
            total += pi[i, a]
        target = u[i] * total
        acc = 0.0
        chosen = -1
        for a in range(k):
            if pi[i, a] > 0.0:
                chosen = a
                acc += pi[i, a]
                if target < acc:
                    break
        out[i] = chosen


@njit(cache=True)
def replay_matches(chosen, actions, rewards, matched, allocation):
    """Li et al.'s rejection step over one batch: chosen, actions (n,) int64, rewards (n,).
    Writes the indices of the rows where the target chose the logged action into matched (n,)
    and counts every choice of the target in allocation (k,); returns the number matched."""
    count = 0
    for i in range(chosen.shape[0]):
        allocation[chosen[i]] += 1
        if chosen[i] == actions[i]:
            matched[count] = i
            count += 1
    return count


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer: value with a percentile bootstrap interval [low, high] at
    ``level``; n_events used (replay: events kept); clipping: the threshold (None for none),
    the share of weights it clipped and the bias it introduced on this log (clipped minus
    unclipped estimate)."""

    estimator: str
    value: float
    low: float
    high: float
    level: float
    n_events: int
    n_boot: int
    clip: float | None = None
    clipped_share: float = 0.0
    clipping_bias: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplayRun:
    """A replay's estimate and its trajectory: window_ends (W,) log rows done at the end of each
    window; cumulative_reward (W,) reward of the kept events so far; kept (W,) events kept so
    far; allocation (W, k) how often the target chose each action within each window."""

    estimate: Estimate
    window_ends: np.ndarray
    cumulative_reward: np.ndarray
    kept: np.ndarray
    allocation: np.ndarray


# -- target policies -------------------------------------------------------------------------


def policy_inputs(policy: Policy, log: LoggedBandit) -> np.ndarray:
    """The log's contexts as the policy reads them: X (n, dim), or (n, 0) for a context-free
    policy (Beta TS with dim 0)."""
    if policy.n_arms != log.n_actions:
        raise InvalidInputError(f"policy {policy.kind}: has {policy.n_arms} arms, the log "
                                f"{log.n_actions} actions")
    if policy.dim == log.dim:
        return log.X
    if policy.dim == 0:
        return np.ascontiguousarray(log.X[:, :0])
    raise InvalidInputError(f"policy {policy.kind}: expects {policy.dim} context features, the "
                            f"log has {log.dim}")


def target_probabilities(target: Policy | np.ndarray, log: LoggedBandit) -> np.ndarray:
    """pi (n, k): the target's probability of every action for every logged event, from a
    project policy (its ``propensities``, as it stands) or a table given as is (checked:
    finite, >= 0, rows summing to 1)."""
    if isinstance(target, Policy):
        return np.ascontiguousarray(target.propensities(policy_inputs(target, log)))
    try:
        pi = np.ascontiguousarray(target, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("target: expected a policy or an (n, k) table of numbers") from None
    if pi.shape != (log.n, log.n_actions):
        raise InvalidInputError(f"target: expected a table of shape ({log.n}, {log.n_actions}), "
                                f"got {pi.shape}")
    i = first_bad_row(pi, 1e-6)
    if i >= 0:
        raise InvalidInputError(f"target: row {i}: expected probabilities >= 0 summing to 1, "
                                f"got sum {pi[i].sum()!r}")
    return pi


def _folds(n: int, folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold (0..folds-1) of each of n events."""
    return np.random.default_rng(seed).permutation(n) % folds


def _check_fit(log: LoggedBandit, l2: float, folds: int) -> None:
    if folds < 1 or folds > log.n:
        raise InvalidInputError(f"folds: expected 1..{log.n}, got {folds}")
    if not l2 > 0:
        raise InvalidInputError(f"l2: expected a number > 0, got {l2!r}")


def fit_reward_model(log: LoggedBandit, *, l2: float = 1.0, folds: int = 2,
                     seed: int = 0) -> np.ndarray:
    """q_hat (n, k): predicted reward of every action for every event, cross-fitted.

    A ridge regression per action of (reward - mean reward) on the context, so an action with
    few events falls back to the mean. With folds >= 2 an event's predictions come from the
    models fitted on the other folds, so DR's correction term is not fitted to its own reward;
    folds = 1 fits and predicts on the whole log. Predictions are not clipped to the reward
    range: with rare clicks most would be cut at 0, which biases DM upwards.
    """
    _check_fit(log, l2, folds)
    n, k, d = log.n, log.n_actions, log.dim
    fold = _folds(n, folds, seed)
    qhat = np.empty((n, k))
    for f in range(folds):
        test = fold == f
        train = ~test if folds > 1 else test
        mean = float(log.rewards[train].mean())
        S, b, counts = np.zeros((k, d, d)), np.zeros((k, d)), np.zeros(k)
        accumulate(S, b, counts, np.ascontiguousarray(log.actions[train]),
                   np.ascontiguousarray(log.X[train]),
                   np.ascontiguousarray(log.rewards[train] - mean), np.ones(int(train.sum())))
        theta = np.linalg.solve(S + l2 * np.eye(d), b[..., None])[..., 0]
        qhat[test] = log.X[test] @ theta.T + mean
    return qhat


def refit_reward_models(log: LoggedBandit, counts: np.ndarray, *, l2: float = 1.0,
                        folds: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``fit_reward_model`` on B reweighted logs at once: counts (B, n), event i weighing
    counts[b, i] in the b-th fit (a bootstrap resample's multiplicities; all ones is the log
    itself). Returns theta (B, folds, k, d) and means (B, folds): an event of fold f is
    predicted X_i theta[b, f].T + means[b, f] (the folds as ``fit_reward_model`` draws them
    with ``seed``)."""
    _check_fit(log, l2, folds)
    return _refit(log.X, log.actions, log.rewards, _folds(log.n, folds, seed), folds,
                  log.n_actions, np.asarray(counts, dtype=np.float64), l2)


def _refit(X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, fold: np.ndarray,
           folds: int, k: int, counts: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """``refit_reward_models`` on arrays. Every fit's sums are linear in the counts: the
    per-event terms x x^T (upper triangle), r x, x, r and 1, summed per fold and action, are
    one product with the counts matrix."""
    n, d = X.shape
    upper = np.triu_indices(d)
    Z = np.hstack([X[:, upper[0]] * X[:, upper[1]], X * rewards[:, None], X, rewards[:, None],
                   np.ones((n, 1))])
    m = len(upper[0])
    B = counts.shape[0]
    G = np.zeros((B, folds, k, Z.shape[1]))
    group = fold * k + actions
    if (np.diff(group) < 0).any():  # each group's events in one slice
        order = np.argsort(group, kind="stable")
        group, Z, counts = group[order], Z[order], counts[:, order]
    bounds = np.searchsorted(group, np.arange(folds * k + 1))
    for g in range(folds * k):
        rows = slice(bounds[g], bounds[g + 1])
        G[:, g // k, g % k] = counts[:, rows] @ Z[rows]
    T = np.subtract(G.sum(axis=1, keepdims=True), G, out=G) if folds > 1 else G
    sum_rx, sum_x = T[..., m: m + d], T[..., m + d: m + 2 * d]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = T[..., -2].sum(axis=2) / T[..., -1].sum(axis=2)
    b = sum_rx - means[..., None, None] * sum_x
    # The (d, d) systems a few resamples at a time, in one buffer: the whole (B, folds, k, d, d)
    # stack and its ridge copy are memory the machine spends far longer mapping than solving.
    theta = np.empty((B, folds, k, d))
    per = max(1, _BOOT_CHUNK_CELLS // (folds * k * d * d))
    S = np.empty((min(per, B), folds, k, d, d))
    diagonal = np.arange(d)
    for lo in range(0, B, per):
        hi = min(lo + per, B)
        A = S[:hi - lo]
        A[..., upper[0], upper[1]] = T[lo:hi, ..., :m]
        A[..., upper[1], upper[0]] = T[lo:hi, ..., :m]
        A[..., diagonal, diagonal] += l2
        theta[lo:hi] = np.linalg.solve(A, b[lo:hi, ..., None])[..., 0]
    return theta, means


# -- estimators ------------------------------------------------------------------------------


def _resamples(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The bootstrap's resampled event indices, (rows, n) int64 chunks, ``n_boot`` rows in
    all."""
    chunk = max(1, _BOOT_CHUNK_CELLS // n)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(start + chunk, n_boot) - start, n))


def _bounds(boot: np.ndarray, level: float,
            parts: Sequence[tuple[int, ...]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds of the resampled ratio columns boot (B, m), summed by ``parts``."""
    if parts is not None:
        boot = np.stack([boot[:, list(cols)].sum(axis=1) for cols in parts], axis=1)
    tail = 50.0 * (1.0 - level)
    if np.isnan(boot).all(axis=0).any():
        return np.full(boot.shape[1], np.nan), np.full(boot.shape[1], np.nan)
    low, high = np.nanpercentile(boot, [tail, 100.0 - tail], axis=0)
    return low, high


def _interval(U: np.ndarray, V: np.ndarray, n_boot: int, level: float,
              rng: np.random.Generator,
              parts: Sequence[tuple[int, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap bounds of the ratio estimators U, V (n, m): (m,) each, or one per
    entry of ``parts`` when given, an estimator being the sum of the ratio columns it names."""
    boot = np.empty((n_boot, U.shape[1]))
    resampled_ratios(U, V, rng, boot)
    return _bounds(boot, level, parts)


def _refit_boot(log: LoggedBandit, pi: np.ndarray, U: np.ndarray, V: np.ndarray,
                terms: dict[str, float], n_boot: int, rng: np.random.Generator,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The resampled ratio columns of ``_COLUMNS``, (n_boot, 7) each: from the terms U, V
    (n, 7) as they are, and from the terms under the reward model refitted on each resample
    (``fit_reward_model``'s settings, its folds drawn with ``seed``).

    A prediction is linear in its model, x_i theta[f, a] + mean[f], so a resample's sum of
    model-based terms is its models' parameters against count-weighted sums of the events'
    features: DM's sum_i c_i sum_a pi_ia q_ia pairs theta[f, a] with sum_{i in f} c_i pi_ia x_i,
    and a correction sum_i c_i g_i q_i,a_i (g the clipped, switched or shrunk weight) pairs
    theta[f, a] with the sum of c_i g_i x_i over the events of fold f and action a. No resample's
    (n, k) predictions are ever formed. The events are put in fold and action order first (the
    sums do not depend on it), so each fold and each model reads a slice."""
    n, k, d = log.n, log.n_actions, log.dim
    fold = _folds(n, 2, seed)
    order = np.argsort(fold * k + log.actions, kind="stable")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    X, actions, rewards = log.X[order], log.actions[order], log.rewards[order]
    pi, U, V = pi[order], U[order], V[order]
    group = fold[order] * k + actions
    bounds = np.searchsorted(group, np.arange(2 * k + 1))
    # The correction weights of DR and SNDR (clipped), Switch-DR and DR-OS, as the term
    # kernels compute them.
    w = pi[np.arange(n), actions] / log.propensities[order]
    lam = terms["os_lambda"]
    with np.errstate(invalid="ignore", divide="ignore"):
        shrunk = w if lam == np.inf else np.where(w == 0.0, 0.0, lam * w / (w * w + lam))
    G = np.stack([np.minimum(w, terms["clip"]), np.where(w <= terms["switch_tau"], w, 0.0),
                  shrunk], axis=1)
    R = G * rewards[:, None]
    Y = np.hstack([(G[:, :, None] * X[:, None, :]).reshape(n, 3 * d), G])
    pi_sum = pi.sum(axis=1)
    # Events per slab of pi_ia x_i (rows, k d): bounds its memory like a chunk of resamples.
    slab = max(1, _BOOT_CHUNK_CELLS // (k * d))
    fixed, refitted = np.empty((n_boot, U.shape[1])), np.empty((n_boot, U.shape[1]))
    start = 0
    for idx in _resamples(n, n_boot, rng):
        B = idx.shape[0]
        counts = np.bincount((position[idx] + n * np.arange(B)[:, None]).ravel(),
                             minlength=B * n).reshape(B, n).astype(np.float64)
        theta, means = _refit(X, actions, rewards, fold[order], 2, k, counts, 1.0)
        dm = np.zeros(B)
        predicted = np.zeros((B, 3))  # sum_i c_i g_i q_i,a_i for the three weights
        for g in range(2 * k):
            f, a = divmod(g, k)
            rows = slice(bounds[g], bounds[g + 1])
            T = counts[:, rows] @ Y[rows]
            predicted += (T[:, :3 * d].reshape(B, 3, d) @ theta[:, f, a, :, None])[..., 0]
            predicted += T[:, 3 * d:] * means[:, f, None]
        for lo in range(0, n, slab):
            rows = slice(lo, min(lo + slab, n))
            Z = (pi[rows, :, None] * X[rows, None, :]).reshape(-1, k * d)
            for f in np.unique(fold[order][rows]):
                mine = np.flatnonzero(fold[order][rows] == f) + lo
                M = counts[:, mine] @ Z[mine - lo]
                dm += np.einsum("bj,bj->b", M, theta[:, f].reshape(B, k * d))
                dm += means[:, f] * (counts[:, mine] @ pi_sum[mine])
        num, den = counts @ U, counts @ V
        correction = counts @ R - predicted
        with np.errstate(invalid="ignore", divide="ignore"):
            fixed[start:start + B] = num / den
            num[:, 2] = dm
            num[:, 3] = dm + correction[:, 0]
            num[:, 4] = correction[:, 0]
            num[:, 5] = dm + correction[:, 1]
            num[:, 6] = dm + correction[:, 2]
            refitted[start:start + B] = num / den
        start += B
    return fixed, refitted


def _point(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    out = np.empty((1, U.shape[1]))
    bootstrap_ratios(U, V, np.arange(U.shape[0], dtype=np.int64)[None, :], out)
    return out[0]


def _check_common(n_boot: int, level: float, clip: float | None) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise InvalidInputError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise InvalidInputError(f"level: expected a number in (0, 1), got {level!r}")
    if clip is not None and not clip > 0:
        raise InvalidInputError(f"clip: expected a number > 0 or None, got {clip!r}")


def _check_threshold(name: str, value: float) -> float:
    """A number >= 0, inf allowed (Switch-DR's tau, DR-OS's lambda)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number >= 0 or inf, got {value!r}") from None
    if not number >= 0:
        raise InvalidInputError(f"{name}: expected a number >= 0 or inf, got {value!r}")
    return number


def estimator_terms(pi: np.ndarray, qhat: np.ndarray, log: LoggedBandit, clip: float,
                    switch_tau: float, os_lambda: float,
                    more: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """U, V (n, 7): per-event ratio terms of the columns ``_COLUMNS``, and how many weights
    ``clip`` (inf for none) clipped; with ``more`` False, only the first four columns (n, 4),
    those of ips, snips, dm and dr."""
    U4, V4 = np.empty((log.n, 4)), np.empty((log.n, 4))
    n_clipped = ope_terms(pi, qhat, log.actions, log.rewards, log.propensities, clip, U4, V4)
    if not more:
        return U4, V4, n_clipped
    U3, V3 = np.empty((log.n, 3)), np.empty((log.n, 3))
    ope_more_terms(pi, qhat, log.actions, log.rewards, log.propensities, clip, switch_tau,
                   os_lambda, U3, V3)
    return np.hstack([U4, U3]), np.hstack([V4, V3]), n_clipped


def evaluate(
    log: LoggedBandit,
    target: Policy | np.ndarray,
    estimators: Sequence[str] = WEIGHTED,
    *,
    qhat: np.ndarray | None = None,
    clip: float | None = None,
    switch_tau: float = np.inf,
    os_lambda: float = np.inf,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    refit: bool | None = None,
) -> dict[str, Estimate]:
    """IPS, SNIPS, DM, DR, SNDR, Switch-DR and DR-OS estimates (any subset, by name) of the
    target's value on the log.

    target: a project policy (evaluated as it stands, through ``propensities``) or a table
    pi (n, k). qhat (n, k): the reward model's predictions (default ``fit_reward_model(log)``,
    fitted only when a model-based estimator is asked for). switch_tau: Switch-DR's weight
    threshold; os_lambda: DR-OS's shrinkage (both >= 0, default inf as in OBP). The bootstrap
    resamples events with replacement, ``n_boot`` times, from ``np.random.default_rng(seed)``.
    refit: whether DM's, Switch-DR's and DR-OS's resamples refit the reward model (default:
    when ``evaluate`` fits it, that is when no qhat is given; refit=True with a qhat is
    refused, the model that made it being unknown here).
    """
    _check_common(n_boot, level, clip)
    switch_tau = _check_threshold("switch_tau", switch_tau)
    os_lambda = _check_threshold("os_lambda", os_lambda)
    unknown = [e for e in estimators if e not in OFF_POLICY]
    if unknown or not estimators:
        raise InvalidInputError(f"estimators: expected some of {', '.join(OFF_POLICY)}, "
                                f"got {list(estimators)}")
    if refit and qhat is not None:
        raise InvalidInputError("refit: the reward model can only be refitted when evaluate "
                                "fits it; got a qhat")
    refit = bool(REFIT & set(estimators)) and (qhat is None if refit is None else refit)
    pi = target_probabilities(target, log)
    if qhat is None:
        qhat = (fit_reward_model(log, seed=seed) if MODEL_BASED & set(estimators)
                else np.zeros((log.n, log.n_actions)))
    qhat = np.ascontiguousarray(qhat, dtype=np.float64)
    if qhat.shape != pi.shape or not np.isfinite(qhat).all():
        raise InvalidInputError(f"qhat: expected finite predictions of shape {pi.shape}, "
                                f"got {qhat.shape}")
    # The DR variants' terms only when asked for, or when the refitting bootstrap reads them.
    more = refit or bool(set(DR_VARIANTS) & set(estimators))
    U, V, n_clipped = estimator_terms(pi, qhat, log, np.inf if clip is None else float(clip),
                                      switch_tau, os_lambda, more)
    for name in ("snips", "sndr"):
        if name in estimators and not V[:, 1].sum() > 0:
            raise InvalidInputError(f"{name}: the target gives probability 0 to every logged "
                                    "action")
    # Only the columns the asked estimators read are resampled.
    columns = sorted({c for name in estimators for c in _PARTS[name]})
    parts = [tuple(columns.index(c) for c in _PARTS[name]) for name in estimators]
    full_U, full_V = U, V
    U, V = np.ascontiguousarray(U[:, columns]), np.ascontiguousarray(V[:, columns])
    ratio = _point(U, V)
    value = np.array([ratio[list(cols)].sum() for cols in parts])
    bias = np.zeros(len(estimators))
    if clip is not None:
        U0, V0, _ = estimator_terms(pi, qhat, log, np.inf, switch_tau, os_lambda, more)
        ratio0 = _point(np.ascontiguousarray(U0[:, columns]), np.ascontiguousarray(V0[:, columns]))
        bias = value - np.array([ratio0[list(cols)].sum() for cols in parts])
    if refit:
        fixed, refitted = _refit_boot(log, pi, full_U, full_V,
                                      {"clip": np.inf if clip is None else float(clip),
                                       "switch_tau": switch_tau, "os_lambda": os_lambda},
                                      n_boot, np.random.default_rng(seed), seed)
        boot = np.stack([(refitted if name in REFIT else fixed)[:, list(_PARTS[name])].sum(axis=1)
                         for name in estimators], axis=1)
        low, high = _bounds(boot, level, None)
    else:
        low, high = _interval(U, V, n_boot, level, np.random.default_rng(seed), parts)
    out = {}
    clip_value = None if clip is None else float(clip)
    for j, name in enumerate(estimators):
        clipped = clip is not None and name in _CLIPPED
        out[name] = Estimate(
            estimator=name, value=float(value[j]), low=float(low[j]), high=float(high[j]),
            level=level, n_events=log.n, n_boot=n_boot,
            clip=clip_value if clipped else None,
            clipped_share=n_clipped / log.n if clipped else 0.0,
            clipping_bias=float(bias[j]) if clipped else 0.0,
        )
    return out


def on_policy(log: LoggedBandit, *, n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> Estimate:
    """The logging policy's own value: the mean logged reward, with its bootstrap interval."""
    _check_common(n_boot, level, None)
    U = np.ascontiguousarray(log.rewards[:, None])
    V = np.ones_like(U)
    low, high = _interval(U, V, n_boot, level, np.random.default_rng(seed))
    return Estimate("on_policy", float(_point(U, V)[0]), float(low[0]), float(high[0]), level,
                    log.n, n_boot)


def replay(
    log: LoggedBandit,
    target: Policy | np.ndarray,
    *,
    learn: bool = True,
    batch_size: int = 100,
    windows: int = 50,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ReplayRun:
    """Li et al.'s replay of a uniformly logged log, in log order.

    A project policy chooses for each batch of ``batch_size`` events (drawing from its own
    generator) and, with ``learn``, then learns the kept events of the batch: its history is
    what it would have seen online. A table pi (n, k) is sampled once, with uniforms from
    ``np.random.default_rng(seed)``. The estimate is the mean reward of the kept events; its
    interval resamples all events (kept or not), so it carries the luck of how many were kept.
    The trajectory is recorded at ``windows`` evenly spaced points of the log.
    """
    _check_common(n_boot, level, None)
    if batch_size < 1 or windows < 1:
        raise InvalidInputError(f"batch_size and windows: expected >= 1, got {batch_size}, "
                                f"{windows}")
    if not log.is_uniform():
        i = int(np.argmax(~np.isclose(log.propensities, 1.0 / log.n_actions, rtol=1e-6, atol=0)))
        raise InvalidInputError(
            f"replay: needs a uniformly logged log (propensity 1/{log.n_actions}); row {i} has "
            f"{float(log.propensities[i])}: use ips, snips or dr")
    n, k = log.n, log.n_actions
    chosen = np.empty(n, dtype=np.int64)
    kept_mask = np.zeros(n, dtype=np.bool_)
    ends = np.unique(np.linspace(0, n, windows + 1).round().astype(np.int64)[1:])
    allocation = np.zeros((len(ends), k), dtype=np.int64)
    matched = np.empty(n, dtype=np.int64)
    if isinstance(target, Policy):
        X = policy_inputs(target, log)
        bounds = np.unique(np.concatenate([np.arange(0, n, batch_size), ends[:-1], [n]]))
    else:
        pi = target_probabilities(target, log)
        sample_actions(pi, np.random.default_rng(seed).random(n), chosen)
        bounds = np.concatenate([[0], ends])
    window = 0
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        while ends[window] < stop:
            window += 1
        if isinstance(target, Policy):
            chosen[start:stop] = target.choose_many(X[start:stop])
        count = replay_matches(chosen[start:stop], log.actions[start:stop],
                               log.rewards[start:stop], matched, allocation[window])
        rows = start + matched[:count]
        kept_mask[rows] = True
        if learn and isinstance(target, Policy) and count:
            target.learn_many(log.actions[rows], X[rows], log.rewards[rows])
    if not kept_mask.any():
        raise InvalidInputError("replay: the target never chose a logged action; no estimate")
    U = np.ascontiguousarray((kept_mask * log.rewards)[:, None])
    V = np.ascontiguousarray(kept_mask.astype(np.float64)[:, None])
    value = _point(U, V)[0]
    low, high = _interval(U, V, n_boot, level, np.random.default_rng(seed))
    kept_reward = np.cumsum(U[:, 0])[ends - 1]
    kept = np.cumsum(kept_mask)[ends - 1]
    return ReplayRun(
        estimate=Estimate("replay", float(value), float(low[0]), float(high[0]), level,
                          int(kept_mask.sum()), n_boot),
        window_ends=ends, cumulative_reward=kept_reward, kept=kept, allocation=allocation,
    )
