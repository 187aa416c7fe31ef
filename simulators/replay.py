"""Offline evaluation of several target policies on one log (``cmab replay``).

``compare`` runs the chosen estimators for every target (a project policy or a table of
action probabilities) with a Rich progress bar; ``simulators.reports.replay`` writes its
report. The weighted estimators read a project policy as it would have been trained on the
log (``simulators.offline.targets``: progressive by default, cross-fitted, or fixed); replay
lets it learn from the events it keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# The campaign report's bias-audit rule on allocation: one rule for every heatmap, live or
# offline.
from bandit.engine.report import allocation_gap
from bandit.errors import InvalidInputError
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from bandit.service.console import Heatmap, allocation_heatmap
from simulators.offline import ope
from simulators.offline import targets as _targets
from simulators.offline.logs import LoggedBandit
from simulators.offline.obd import logged_policy_table
from simulators.policy_args import PolicyArg, as_policy_args

HEADER = ("policy", "estimator", "estimate", "95% interval", "events", "clipping")


@dataclass(frozen=True)
class Comparison:
    """Every target's estimates on one log. estimates: policy -> estimator -> Estimate;
    replays: policy -> its replay trajectory (when replay ran); allocation: policy -> (k,)
    share of each action in the target's choices (replay) or probabilities (otherwise);
    on_policy: the logging policy's own mean reward; seconds: per policy; segments: policy ->
    its allocation by segment value (``segment_heatmap``), when the log has a categorical
    context feature."""

    log_name: str
    n_events: int
    n_actions: int
    action_names: tuple[str, ...]
    parameters: dict[str, Any]
    on_policy: ope.Estimate
    estimates: dict[str, dict[str, ope.Estimate]]
    replays: dict[str, ope.ReplayRun]
    allocation: dict[str, np.ndarray]
    seconds: dict[str, float]
    segments: dict[str, Heatmap]

    def rows(self) -> list[tuple[str, ...]]:
        """The estimates table as strings in HEADER order, the logged policy first."""
        out = [_row("logged (on-policy)", self.on_policy)]
        for policy, by_estimator in self.estimates.items():
            out += [_row(policy, e) for e in by_estimator.values()]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log_name, "events": self.n_events, "actions": list(self.action_names),
            "parameters": self.parameters, "on_policy": self.on_policy.to_dict(),
            "estimates": {p: {k: e.to_dict() for k, e in d.items()}
                          for p, d in self.estimates.items()},
            "replay": {p: {"window_ends": r.window_ends.tolist(),
                           "cumulative_reward": r.cumulative_reward.tolist(),
                           "kept": r.kept.tolist(), "allocation": r.allocation.tolist()}
                       for p, r in self.replays.items()},
            "allocation": {p: a.tolist() for p, a in self.allocation.items()},
            "seconds": self.seconds,
            "segments": self.segments,
        }


def categorical_features(log: LoggedBandit) -> dict[str, tuple[list[str], np.ndarray]]:
    """The log's categorical context features, read from its one-hot columns: feature ->
    (values, codes (n,) int64 indices into values), in column order. A feature is a run of two
    or more columns named ``feature=value`` (as the engine and the OBD reader name them) that
    hold 0 or 1 and exactly one 1 per event; values no event has are left out.

    >>> log = LoggedBandit(np.array([[1, 1, 0, 0], [1, 0, 0, 1]]), np.array([0, 1]),
    ...                    np.array([1.0, 0.0]), np.array([0.5, 0.5]), n_actions=2,
    ...                    context_names=("(intercept)", "plan=free", "plan=pro", "plan=team"))
    >>> values, codes = categorical_features(log)["plan"]
    >>> values, codes.tolist()
    (['free', 'team'], [0, 1])
    """
    groups: dict[str, list[int]] = {}
    for j, column in enumerate(log.context_names):
        feature, sep, _ = column.partition("=")
        if sep:
            groups.setdefault(feature, []).append(j)
    out = {}
    for feature, columns in groups.items():
        block = log.X[:, columns]
        if len(columns) < 2 or not (np.isin(block, (0.0, 1.0)).all()
                                    and (block.sum(axis=1) == 1).all()):
            continue
        codes = block.argmax(axis=1)
        seen = np.flatnonzero(np.bincount(codes, minlength=len(columns)))
        values = [log.context_names[columns[c]].partition("=")[2] for c in seen]
        out[feature] = (values, np.searchsorted(seen, codes).astype(np.int64))
    return out


def segment_heatmap(policy: str, pi: np.ndarray, log: LoggedBandit,
                    features: dict[str, tuple[list[str], np.ndarray]]) -> Heatmap:
    """A target's allocation by segment value, as the campaign report's bias-audit heatmap: a
    row per value of each categorical feature (``categorical_features``), a column per action,
    each cell the target's mean probability of the action over the value's events (pi (n, k),
    so a row sums to 1), above them its mean over every event. A value is flagged by the bias
    audit's allocation rule (``bandit.engine.report.allocation_gap``) against the overall
    allocation."""
    overall = pi.mean(axis=0)
    segments = []
    for feature, (values, codes) in features.items():
        counts = np.bincount(codes, minlength=len(values))
        sums = np.zeros((len(values), pi.shape[1]))
        np.add.at(sums, codes, pi)
        for v, value in enumerate(values):
            shares = sums[v] / counts[v]
            far = allocation_gap(int(counts[v]), shares.tolist(), overall.tolist())
            segments.append({
                "segment": feature, "value": value, "impressions": int(counts[v]),
                "allocation": dict(zip(log.action_names, shares.tolist(), strict=True)),
                "flagged": far is not None,
                "reason": far and f"allocation differs from the policy's overall by {far}"})
    return allocation_heatmap({
        "slot": policy, "segments": segments,
        "arms": [{"arm": arm, "active": True, "share": float(share)}
                 for arm, share in zip(log.action_names, overall, strict=True)]})


def _row(policy: str, e: ope.Estimate) -> tuple[str, ...]:
    clipping = "" if e.clip is None else (f"at {e.clip:g}: {e.clipped_share:.1%} clipped, "
                                          f"bias {e.clipping_bias:+.5f}")
    return (policy, e.estimator, f"{e.value:.5f}", f"[{e.low:.5f}, {e.high:.5f}]",
            f"{e.n_events:,}", clipping)


POLICIES: dict[str, Callable[..., Policy]] = {
    "lin_ucb": lambda log, seed, **kw: LinUCB(log.n_actions, log.dim, rng=seed, **kw),
    "lin_ts": lambda log, seed, **kw: LinTS(log.n_actions, log.dim, rng=seed, **kw),
    "beta_ts": lambda log, seed, **kw: BetaTS(log.n_actions, rng=seed, **kw),
    "epsilon_greedy": lambda log, seed, **kw: EpsilonGreedy(log.n_actions, log.dim, rng=seed,
                                                            **kw),
    "hybrid_lin_ucb": lambda log, seed, **kw: HybridLinUCB(log.dim, _features(log), rng=seed,
                                                           **kw),
    "bart": lambda log, seed, **kw: Bart(log.dim, _features(log), rng=seed, **kw),
    "vw": lambda log, seed, **kw: _vw(log, seed, **kw),
}
TABLES = ("uniform", "random_logged", "bts_logged")
TARGET_NAMES = (*POLICIES, *TABLES)


def _features(log: LoggedBandit) -> np.ndarray:
    if log.action_features is None:
        raise InvalidInputError(f"{log.name}: has no action features, which hybrid_lin_ucb and "
                                "bart need")
    return log.action_features


def _vw(log: LoggedBandit, seed: int, **kw: Any) -> Policy:
    from bandit.policies import VWPolicy  # imported here: only a VW target loads vowpalwabbit

    # Without action features each arm is its id in VW's action namespace.
    return VWPolicy(log.dim, log.action_features, n_arms=log.n_actions, rng=seed, **kw)


def make_targets(names: Sequence[str | PolicyArg], log: LoggedBandit, *,
                 behaviors: dict[str, LoggedBandit] | None = None,
                 seed: int = 0) -> dict[str, Policy | np.ndarray]:
    """Targets by name, keyed by the name as given: a project policy sized for the log (seeded)
    with its default hyperparameters or the settings given with it (``lin_ucb:alpha=0.3``,
    ``simulators.policy_args``), ``uniform`` (1/k for every action), or, for the Open Bandit
    Dataset (``behaviors`` = its logs by behaviour), ``random_logged`` / ``bts_logged``: that
    logging policy's per-position item shares (``obd.logged_policy_table``)."""
    out: dict[str, Policy | np.ndarray] = {}
    for i, target in enumerate(as_policy_args(names, TARGET_NAMES)):
        name = target.name
        if name in POLICIES:
            out[target.label] = POLICIES[name](log, seed + i, **target.settings)
        elif name == "uniform":
            out[target.label] = np.full((log.n, log.n_actions), 1.0 / log.n_actions)
        else:
            if behaviors is None:
                raise InvalidInputError(f"--policy {name}: only with --dataset obd")
            out[target.label] = logged_policy_table(behaviors[name.removesuffix("_logged")], log)
    return out


def compare(
    log: LoggedBandit,
    targets: dict[str, Policy | np.ndarray],
    estimators: Sequence[str],
    *,
    n_boot: int = 1000,
    clip: float | None = None,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    parameters: dict[str, Any] | None = None,
    target_mode: str = "progressive",
    folds: int = 5,
) -> Comparison:
    """Evaluate every target with every estimator (names from ``ope.ESTIMATORS``).

    The weighted estimators (all but replay) read a project policy as ``target_mode`` scores
    it (``simulators.offline.targets.MODES``; progressive in batches of ``batch_size``,
    cross-fit over ``folds`` folds), on a copy: replay then starts from the policy as given and
    learns online from the events it keeps. The estimators with a reward model (dm, dr) take
    a learning target's own model; a table or a fixed policy gets ``ope.fit_reward_model``,
    fitted once.
    """
    unknown = [e for e in estimators if e not in ope.ESTIMATORS]
    if unknown or not estimators:
        raise InvalidInputError(f"estimators: expected some of {', '.join(ope.ESTIMATORS)}, "
                                f"got {list(estimators)}")
    if "replay" in estimators and not log.is_uniform():
        raise InvalidInputError(f"replay: {log.name} was not logged uniformly at random; "
                                "leave replay out or evaluate a uniform log")
    weighted = tuple(e for e in estimators if e != "replay")
    if target_mode not in _targets.MODES:
        raise InvalidInputError(f"target mode: expected one of {', '.join(_targets.MODES)}, "
                                f"got {target_mode!r}")
    fitted: list[np.ndarray] = []  # ope.fit_reward_model(log), once, when a target needs it

    def reward_model() -> np.ndarray | None:
        if not set(weighted) - {"ips", "snips"}:  # only IPS and SNIPS read no reward model
            return None
        if not fitted:
            fitted.append(ope.fit_reward_model(log, seed=seed))
        return fitted[0]

    on_policy = ope.on_policy(log, n_boot=n_boot, seed=seed)
    estimates: dict[str, dict[str, ope.Estimate]] = {}
    replays: dict[str, ope.ReplayRun] = {}
    allocation: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    segments: dict[str, Heatmap] = {}
    features = categorical_features(log)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task(log.name, total=len(targets) * len(estimators))
        for name, target in targets.items():
            t0 = time.perf_counter()
            found: dict[str, ope.Estimate] = {}
            pi: np.ndarray | None = None
            if weighted:
                bar.update(task, description=f"{log.name}: {name} {', '.join(weighted)}")
                if isinstance(target, Policy):
                    scored = _targets.score(target, log, target_mode, batch_size=batch_size,
                                            folds=folds, seed=seed)
                    pi, qhat = scored.pi, scored.qhat
                else:
                    pi, qhat = ope.target_probabilities(target, log), None
                if qhat is None:
                    qhat = reward_model()
                found |= ope.evaluate(log, pi, weighted, qhat=qhat, clip=clip,
                                      n_boot=n_boot, seed=seed)
                bar.advance(task, len(weighted))
                allocation[name] = pi.mean(axis=0)
            if features:
                if pi is None:  # replay alone, which learns the target: read it before
                    pi = (_targets.score(target, log, target_mode, batch_size=batch_size,
                                         folds=folds, seed=seed).pi
                          if isinstance(target, Policy) else ope.target_probabilities(target, log))
                segments[name] = segment_heatmap(name, pi, log, features)
            if "replay" in estimators:
                bar.update(task, description=f"{log.name}: {name} replay")
                run = ope.replay(log, target, batch_size=batch_size, n_boot=n_boot, seed=seed)
                replays[name] = run
                found["replay"] = run.estimate
                allocation[name] = run.allocation.sum(axis=0) / log.n
                bar.advance(task)
            estimates[name] = {e: found[e] for e in estimators}
            seconds[name] = round(time.perf_counter() - t0, 3)
    return Comparison(log.name, log.n, log.n_actions, log.action_names, parameters or {},
                      on_policy, estimates, replays, allocation, seconds, segments)
