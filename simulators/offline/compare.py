"""How good is each off-policy estimator here? Many logs from a simulator with known truth.

The idea of Open Bandit Pipeline's ``evaluate_estimators``: fix an environment whose click
probabilities are known, a logging policy and a target policy; the target's true value
V = E_x[sum_a pi(a|x) q(x, a)] is then computable. Draw ``replications`` independent logs of
``events`` events from the logging policy, run every estimator of ``ope.evaluate`` on each
(with its bootstrap interval, exactly as a researcher would on one real log) and report per
estimator:

- relative error |V_hat - V| / V (OBP's "relative-ee"): its mean and standard deviation over
  the replications;
- bias (mean V_hat - V) and root mean squared error;
- coverage: the share of replications whose interval contains V (a 95% interval should cover
  in about 95% of them), and the interval's mean width.

V is the mean over ``truth_contexts`` contexts drawn from the environment (its own seed) of
the exact expected reward sum_a pi(a|x) q(x, a): its Monte Carlo error is a few parts in
100,000 of the CTR, far below the intervals' widths.

``softmax_problem`` builds the usual setting: a logging policy that is half uniform, half a
softmax of random linear scores of the context, and a good target, a softmax of the true click
probabilities mixed with 10% uniform, so importance weights stay bounded by about
0.9 k / (1 - logging_greed). ``cmab ope-compare`` runs it and prints the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bandit.errors import InvalidInputError
from simulators.environments import Environment, make_environment
from simulators.offline import ope
from simulators.offline.logs import LoggedBandit

__all__ = ["EstimatorComparison", "EstimatorScore", "Problem", "compare_estimators",
           "softmax_problem"]

HEADER = ("estimator", "rel. error mean", "rel. error sd", "bias", "RMSE", "coverage",
          "mean width")
# Contexts drawn at a time: bounds the memory of the log and truth draws.
_ROWS_PER_DRAW = 2**18


def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Problem:
    """An environment with a logging and a target policy, each a function from contexts
    X (n, dim) to action probabilities (n, n_arms) (for a project policy: its
    ``propensities``). The logging policy must give every action the target may take a
    probability > 0."""

    name: str
    env: Environment
    logging: Callable[[np.ndarray], np.ndarray]
    target: Callable[[np.ndarray], np.ndarray]

    def true_value(self, contexts: int = 1_000_000, seed: int = 12345) -> float:
        """V: the mean of sum_a pi(a|x) q(x, a) over ``contexts`` contexts drawn with ``seed``."""
        rng = np.random.default_rng(seed)
        total = 0.0
        for start in range(0, contexts, _ROWS_PER_DRAW):
            X = self.env.contexts(min(_ROWS_PER_DRAW, contexts - start), rng)
            total += float((self.target(X) * self.env.expected_rewards(X)).sum())
        return total / contexts

    def logs(self, events: int, replications: int,
             rng: np.random.Generator) -> list[tuple[LoggedBandit, np.ndarray]]:
        """``replications`` independent logs of ``events`` events and the target's table pi
        (events, n_arms) on each; drawn for many replications at once."""
        out = []
        per_draw = max(1, _ROWS_PER_DRAW // events)
        k = self.env.n_arms
        for first in range(0, replications, per_draw):
            count = min(per_draw, replications - first)
            X = self.env.contexts(count * events, rng)
            P = np.ascontiguousarray(self.logging(X))
            actions = np.empty(X.shape[0], dtype=np.int64)
            ope.sample_actions(P, rng.random(X.shape[0]), actions)
            rewards = self.env.sample_rewards(X, actions, rng)
            propensities = P[np.arange(X.shape[0]), actions]
            pi = self.target(X)
            for r in range(count):
                rows = slice(r * events, (r + 1) * events)
                log = LoggedBandit(X[rows], actions[rows], rewards[rows], propensities[rows],
                                   k, name=f"{self.name} #{first + r}")
                out.append((log, np.ascontiguousarray(pi[rows])))
        return out


def softmax_problem(env: str | Environment = "linear", *, seed: int = 0,
                    logging_greed: float = 0.5, target_temperature: float = 0.02,
                    target_uniform: float = 0.1) -> Problem:
    """The usual setting on an environment (by ``make_environment`` name, or given): logging
    (1 - logging_greed) uniform + logging_greed softmax(X B), B (dim, n_arms) standard normal
    drawn from ``seed``; target (1 - target_uniform) softmax(q(x) / target_temperature) +
    target_uniform uniform, q the true click probabilities."""
    environment = make_environment(env, seed=seed) if isinstance(env, str) else env
    if not isinstance(environment, Environment):
        raise InvalidInputError(f"env: expected a single-slot environment, got {env!r}")
    if not 0.0 <= logging_greed < 1.0:
        raise InvalidInputError(f"logging_greed: expected a number in [0, 1), got "
                                f"{logging_greed!r}")
    if not target_temperature > 0:
        raise InvalidInputError(f"target_temperature: expected a number > 0, got "
                                f"{target_temperature!r}")
    if not 0.0 <= target_uniform <= 1.0:
        raise InvalidInputError(f"target_uniform: expected a number in [0, 1], got "
                                f"{target_uniform!r}")
    k = environment.n_arms
    B = np.random.default_rng(seed).normal(size=(environment.dim, k))

    def logging(X: np.ndarray) -> np.ndarray:
        return logging_greed * _softmax(X @ B) + (1.0 - logging_greed) / k

    def target(X: np.ndarray) -> np.ndarray:
        q = environment.expected_rewards(X)
        return (1.0 - target_uniform) * _softmax(q / target_temperature) + target_uniform / k

    return Problem(environment.name, environment, logging, target)


@dataclass(frozen=True)
class EstimatorScore:
    """One estimator over the replications: relative error |V_hat - V| / V (mean, sd), bias,
    RMSE, coverage (share of intervals containing V) and mean interval width."""

    estimator: str
    relative_error_mean: float
    relative_error_sd: float
    bias: float
    rmse: float
    coverage: float
    mean_width: float


@dataclass(frozen=True)
class EstimatorComparison:
    """Every estimator's score on one problem; values, lows, highs: estimator -> (R,) per
    replication."""

    problem: str
    truth: float
    events: int
    replications: int
    level: float
    parameters: dict[str, Any]
    scores: dict[str, EstimatorScore]
    values: dict[str, np.ndarray]
    lows: dict[str, np.ndarray]
    highs: dict[str, np.ndarray]

    def rows(self) -> list[tuple[str, ...]]:
        """The scores as strings in HEADER order."""
        return [(s.estimator, f"{s.relative_error_mean:.4f}", f"{s.relative_error_sd:.4f}",
                 f"{s.bias:+.5f}", f"{s.rmse:.5f}", f"{s.coverage:.1%}", f"{s.mean_width:.5f}")
                for s in self.scores.values()]

    def to_dict(self) -> dict[str, Any]:
        """The scores and parameters as JSON-ready values (an infinite parameter is None)."""
        return {"problem": self.problem, "truth": self.truth, "events": self.events,
                "replications": self.replications, "level": self.level,
                "parameters": {k: None if isinstance(v, float) and math.isinf(v) else v
                               for k, v in self.parameters.items()},
                "scores": {name: asdict(s) for name, s in self.scores.items()}}


def compare_estimators(
    problem: Problem,
    *,
    events: int = 2000,
    replications: int = 300,
    estimators: Sequence[str] = ope.OFF_POLICY,
    switch_tau: float = np.inf,
    os_lambda: float = np.inf,
    clip: float | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    truth_contexts: int = 1_000_000,
    seed: int = 0,
    refit: bool = True,
) -> EstimatorComparison:
    """Run ``ope.evaluate`` (the estimators by name, with their parameters) on
    ``replications`` logs of ``events`` events drawn from ``problem`` with
    ``np.random.default_rng(seed)`` and score each estimator against the true value. Replication
    r fits the reward model and bootstraps with seed ``seed + r``; ``refit`` is passed on
    (False: DM's, Switch-DR's and DR-OS's resamples hold the model fixed)."""
    if isinstance(events, bool) or not isinstance(events, int) or events < 2:
        raise InvalidInputError(f"events: expected an integer >= 2, got {events!r}")
    if isinstance(replications, bool) or not isinstance(replications, int) or replications < 1:
        raise InvalidInputError(f"replications: expected an integer >= 1, got {replications!r}")
    unknown = [e for e in estimators if e not in ope.OFF_POLICY]
    if unknown or not estimators or len(set(estimators)) != len(estimators):
        raise InvalidInputError(f"estimators: expected distinct names among "
                                f"{', '.join(ope.OFF_POLICY)}, got {list(estimators)}")
    truth = problem.true_value(truth_contexts)
    if truth == 0.0:
        raise InvalidInputError(f"{problem.name}: the target's true value is 0, so relative "
                                "errors are undefined")
    names = tuple(estimators)
    found = {name: np.empty((3, replications)) for name in names}
    rng = np.random.default_rng(seed)
    for r, (log, pi) in enumerate(problem.logs(events, replications, rng)):
        result = ope.evaluate(log, pi, names, clip=clip, switch_tau=switch_tau,
                              os_lambda=os_lambda, n_boot=n_boot, level=level, seed=seed + r,
                              refit=refit)
        for name, e in result.items():
            found[name][:, r] = (e.value, e.low, e.high)
    scores = {}
    for name, (value, low, high) in found.items():
        relative = np.abs(value - truth) / abs(truth)
        scores[name] = EstimatorScore(
            estimator=name, relative_error_mean=float(relative.mean()),
            relative_error_sd=float(relative.std(ddof=1)) if replications > 1 else 0.0,
            bias=float(value.mean() - truth), rmse=float(np.sqrt(((value - truth) ** 2).mean())),
            coverage=float(((low <= truth) & (truth <= high)).mean()),
            mean_width=float((high - low).mean()))
    return EstimatorComparison(
        problem=problem.name, truth=truth, events=events, replications=replications,
        level=level,
        parameters={"switch_tau": switch_tau, "os_lambda": os_lambda, "clip": clip,
                    "n_boot": n_boot, "seed": seed, "refit": refit},
        scores=scores, values={n: f[0] for n, f in found.items()},
        lows={n: f[1] for n, f in found.items()}, highs={n: f[2] for n, f in found.items()})
