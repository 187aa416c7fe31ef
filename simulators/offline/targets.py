"""Target policies as they would have been trained on the log, for the off-policy estimators.

IPS, SNIPS, DM and DR (``simulators.offline.ope``) read a target as a table pi (n, k), its
probability of every action at every logged event, and DM and DR a reward model's predictions
q_hat (n, k). A project policy read "as it stands" is its prior, and every untrained policy
spreads its probability the same way, so LinUCB, LinTS, Beta TS, epsilon-greedy and uniform got
the same estimates. This module scores a policy the way it would have been trained on the log,
in one of three modes (``MODES``):

- ``progressive``, the default: the policy walks the log in order, a batch of ``batch_size``
  events at a time; each batch is scored by the model that learned every earlier batch (pi: its
  ``propensities``; q_hat: its expected reward of every action, ``Policy.expectation``) and then
  learned. No event is scored by a model that learned it. The estimate is the policy's mean
  reward along the way it would have learned on this log. It is the default because it answers
  "had we run it on last month's log" (learning included: a policy decides before it sees the
  outcome, as it would have live); because an event's pi and q_hat depend only on earlier
  events, so IPS and DR stay unbiased for that mean; because on a log the policy logged itself
  (same prior, same batches) it gives back the logged propensities, so IPS is the realized
  reward, a check no other mode has; and because it costs one pass over the log.
- ``cross-fit``: the events go to ``folds`` folds at random (seeded); for each fold a fresh
  copy of the policy learns the other folds, in log order, and scores the fold. The estimate is
  the value of the policy once trained on (k-1)/k of the log: what it would do after such a
  month, not during it. It costs k passes.
- ``fixed``: the policy as given (a snapshot of a live slot, ``snapshot_policy``, or a prior):
  pi from its propensities; q_hat is left to the estimators' own reward model
  (``ope.fit_reward_model``), since a fixed model may have learned these very events.

Learning reads every logged event (arm, context, reward), as the engine learns a slot from its
joined log; a VW policy learns at the logged propensities. The policy passed in is never
changed: each mode learns on copies (``from_state``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.policies import Policy, from_state, is_vw
from simulators.offline.logs import LoggedBandit
from simulators.offline.ope import policy_inputs

__all__ = ["MODES", "Scored", "cross_fit", "fixed", "progressive", "score", "snapshot_policy"]

MODES = ("progressive", "cross-fit", "fixed")
# Rows of (event, action) pairs whose expected reward one ``expectation`` call computes.
_EXPECTATION_ROWS = 2**16


@dataclass(frozen=True)
class Scored:
    """A target scored on a log: pi (n, k) its action probabilities per event; qhat (n, k) its
    model's expected reward per event and action, or None (fixed: the estimators fit their
    own); fold (n,) int64 the fold that scored each event (cross-fit), or None."""

    pi: np.ndarray
    qhat: np.ndarray | None
    fold: np.ndarray | None = None


def score(policy: Policy, log: LoggedBandit, mode: str = "progressive", *,
          batch_size: int = 100, folds: int = 5, seed: int = 0) -> Scored:
    """``progressive``, ``cross_fit`` or ``fixed`` by name (``MODES``)."""
    if mode == "progressive":
        return progressive(policy, log, batch_size=batch_size, seed=seed)
    if mode == "cross-fit":
        return cross_fit(policy, log, folds=folds, seed=seed)
    if mode == "fixed":
        return fixed(policy, log)
    raise InvalidInputError(f"target mode: expected one of {', '.join(MODES)}, got {mode!r}")


def progressive(policy: Policy, log: LoggedBandit, *, batch_size: int = 100,
                seed: int = 0) -> Scored:
    """Score each batch of ``batch_size`` events (in log order) with the model that learned
    the batches before it, then learn it; ``batch_size`` 1 scores every event with the model
    that learned exactly the events before it."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    X = policy_inputs(policy, log)
    learner = _copy(policy, seed)
    pi, qhat = np.empty((log.n, log.n_actions)), np.empty((log.n, log.n_actions))
    for start in range(0, log.n, batch_size):
        rows = np.arange(start, min(start + batch_size, log.n))
        pi[rows] = learner.propensities(X[rows])
        qhat[rows] = _expected(learner, X[rows])
        _learn(learner, log, X, rows)
    return Scored(pi, qhat)


def cross_fit(policy: Policy, log: LoggedBandit, *, folds: int = 5, seed: int = 0) -> Scored:
    """Score each of ``folds`` random folds (``np.random.default_rng(seed)``, sizes within 1)
    with a copy of the policy that learned the other folds in log order."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= log.n:
        raise InvalidInputError(f"folds: expected an integer in 2..{log.n} (the events), "
                                f"got {folds!r}")
    X = policy_inputs(policy, log)
    fold = np.random.default_rng(seed).permutation(log.n) % folds
    pi, qhat = np.empty((log.n, log.n_actions)), np.empty((log.n, log.n_actions))
    for f in range(folds):
        learner = _copy(policy, seed + f)
        _learn(learner, log, X, np.flatnonzero(fold != f))
        rows = np.flatnonzero(fold == f)
        pi[rows] = learner.propensities(X[rows])
        qhat[rows] = _expected(learner, X[rows])
    return Scored(pi, qhat, fold)


def fixed(policy: Policy, log: LoggedBandit) -> Scored:
    """The policy as it stands: its propensities, no reward model of its own."""
    return Scored(np.ascontiguousarray(policy.propensities(policy_inputs(policy, log))), None)


def snapshot_policy(path: str | Path, log: LoggedBandit, slot: str,
                    campaign: str | None = None) -> Policy:
    """The policy of ``slot`` in an engine snapshot (``Engine.save``; the worker's
    checkpoints), to evaluate fixed. ``campaign`` may be left out when the snapshot holds one
    campaign. Its arms and input columns must be the log's, by name and order."""
    from bandit.engine import Engine

    try:
        engine = Engine.load(path)
    except IncompatibleStateError as error:
        raise InvalidInputError(f"--target-snapshot: {error}") from None
    names = [c.name for c in engine.campaigns()]
    if campaign is None:
        if len(names) != 1:
            raise InvalidInputError(f"--target-snapshot {path}: holds campaigns {names}; name "
                                    "one with --spec")
        campaign = names[0]
    if campaign not in names:
        raise InvalidInputError(f"--target-snapshot {path}: no campaign {campaign!r}; it holds "
                                f"{names}")
    slots = [s.name for s in engine.campaign(campaign).slots]
    if slot not in slots:
        raise InvalidInputError(f"--target-snapshot {path}: campaign {campaign!r} has no slot "
                                f"{slot!r}; expected one of {slots}")
    policy, columns, arms = engine.slot_policy(campaign, slot)
    if tuple(arms) != log.action_names:
        raise InvalidInputError(f"--target-snapshot {path}: slot {slot!r} has arms {arms}, the "
                                f"log {list(log.action_names)}")
    if policy.dim and tuple(columns) != log.context_names:
        raise InvalidInputError(f"--target-snapshot {path}: slot {slot!r} reads columns "
                                f"{columns}, the log has {list(log.context_names)}")
    return policy


def _copy(policy: Policy, seed: int) -> Policy:
    """A policy that learned what ``policy`` learned, drawing from its own seeded generator."""
    return from_state(policy.state(), rng=seed)


def _learn(policy: Policy, log: LoggedBandit, X: np.ndarray, rows: np.ndarray) -> None:
    """Learn the logged events at ``rows`` (in that order)."""
    if not rows.size:
        return
    if is_vw(policy):
        policy.learn_many(log.actions[rows], X[rows], log.rewards[rows],
                          propensities=log.propensities[rows])
    else:
        policy.learn_many(log.actions[rows], X[rows], log.rewards[rows])


def _expected(policy: Policy, X: np.ndarray) -> np.ndarray:
    """The policy's expected reward of every action for every row of X (n, dim): (n, k)."""
    n, k = X.shape[0], policy.n_arms
    out = np.empty((n, k))
    step = max(1, _EXPECTATION_ROWS // k)
    arms = np.tile(np.arange(k), min(n, step))
    for start in range(0, n, step):
        stop = min(start + step, n)
        mean, _ = policy.expectation(np.repeat(X[start:stop], k, axis=0),
                                     arms[: (stop - start) * k])
        out[start:stop] = mean.reshape(stop - start, k)
    return out
