"""Play policies against an environment side by side, on common random numbers.

Contexts and the uniforms that decide every arm's click at every step are drawn once, so all
policies (and the uniform and oracle baselines) face the same subscribers and the same luck:
differences between them are the policies', not the noise's. Regret is measured on the true
click probabilities, not on the noisy clicks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bandit.errors import InvalidInputError
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from simulators.environments import Environment

UNIFORM, ORACLE = "uniform", "oracle"

# Each policy with its default hyperparameters, sized for the environment, on its own stream.
POLICY_FACTORIES: dict[str, Callable[[Environment, np.random.Generator], Policy]] = {
    "lin_ucb": lambda env, rng: LinUCB(env.n_arms, env.dim, rng=rng),
    "lin_ts": lambda env, rng: LinTS(env.n_arms, env.dim, rng=rng),
    "beta_ts": lambda env, rng: BetaTS(env.n_arms, dim=env.dim, rng=rng),
    "epsilon_greedy": lambda env, rng: EpsilonGreedy(env.n_arms, env.dim, rng=rng),
    "hybrid_lin_ucb": lambda env, rng: HybridLinUCB(env.dim, env.arm_features, rng=rng),
    "bart": lambda env, rng: Bart(env.dim, env.arm_features, rng=rng),
}
POLICY_NAMES = tuple(POLICY_FACTORIES)


def make_policies(names: Sequence[str], env: Environment, seed: int = 0) -> dict[str, Policy]:
    """Build policies by name (from POLICY_NAMES) with default hyperparameters.

    Each policy draws from its own stream, keyed by its place in POLICY_NAMES, so a policy makes
    the same choices whichever other policies run beside it.
    """
    for name in names:
        if name not in POLICY_FACTORIES:
            raise InvalidInputError(
                f"unknown policy {name!r}; expected some of {', '.join(POLICY_NAMES)}"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"policies must be distinct, got {', '.join(names)}")
    return {
        name: POLICY_FACTORIES[name](env, _stream(seed, 1, POLICY_NAMES.index(name)))
        for name in names
    }


def _stream(seed: int, *key: int) -> np.random.Generator:
    # Child streams of the seed: independent of each other and of the environment's stream.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True)
class PolicyRun:
    """One policy's trajectory, recorded at the end of every batch window (B windows).

    cumulative_reward (B,): clicks received; cumulative_expected (B,): summed true click
    probabilities of the chosen arms; cumulative_regret (B,): the oracle's cumulative_expected
    minus this one's; allocation (B, n_arms) int64: how often each arm was chosen within each
    window; wall_time_s: seconds spent in choose_many and learn_many.
    """

    name: str
    cumulative_reward: np.ndarray
    cumulative_expected: np.ndarray
    cumulative_regret: np.ndarray
    allocation: np.ndarray
    wall_time_s: float

    @property
    def steps(self) -> int:
        return int(self.allocation.sum())

    @property
    def mean_reward(self) -> float:
        """Click-through rate actually observed."""
        return float(self.cumulative_reward[-1]) / self.steps

    @property
    def mean_expected(self) -> float:
        """Mean true click probability of the chosen arms: the CTR without the click noise."""
        return float(self.cumulative_expected[-1]) / self.steps

    @property
    def regret(self) -> float:
        """Cumulative expected regret against the oracle over the whole run."""
        return float(self.cumulative_regret[-1])


@dataclass(frozen=True)
class SummaryRow:
    """One line of the results table; lift and oracle share compare noise-free expected CTRs."""

    policy: str
    mean_reward: float
    regret: float
    lift_vs_uniform: float
    share_of_oracle: float
    wall_time_s: float


@dataclass(frozen=True)
class SimulationResult:
    """Every run of one simulation: the learning policies in the order given, then the uniform
    and oracle baselines. batch_ends (B,) int64: steps done at the end of each window."""

    env_name: str
    arm_names: tuple[str, ...]
    steps: int
    batch_size: int
    seed: int
    drift_steps: int | None
    new_arm_at: int | None
    batch_ends: np.ndarray
    runs: dict[str, PolicyRun]

    def summary(self) -> list[SummaryRow]:
        """One row per run, in run order."""
        uniform = self.runs[UNIFORM].mean_expected
        oracle = self.runs[ORACLE].mean_expected
        return [
            SummaryRow(
                policy=run.name,
                mean_reward=run.mean_reward,
                regret=run.regret,
                lift_vs_uniform=run.mean_expected / uniform - 1.0,
                share_of_oracle=run.mean_expected / oracle,
                wall_time_s=run.wall_time_s,
            )
            for run in self.runs.values()
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: parameters, the summary table and every curve."""
        return {
            "env": self.env_name,
            "arms": list(self.arm_names),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drift_steps": self.drift_steps,
            "new_arm_at": self.new_arm_at,
            "batch_ends": self.batch_ends.tolist(),
            "summary": [asdict(row) for row in self.summary()],
            "runs": {
                name: {
                    "cumulative_reward": run.cumulative_reward.tolist(),
                    "cumulative_expected": run.cumulative_expected.tolist(),
                    "cumulative_regret": run.cumulative_regret.tolist(),
                    "allocation": run.allocation.tolist(),
                    "wall_time_s": run.wall_time_s,
                }
                for name, run in self.runs.items()
            },
        }


def simulate(
    env: Environment,
    policies: dict[str, Policy],
    steps: int,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> SimulationResult:
    """Run every policy over the same `steps` subscribers, `batch_size` at a time.

    Per batch each policy chooses for the whole batch (only among eligible arms), sees the
    clicks of its choices, and learns from them before the next batch: the delayed feedback of
    a real send. The uniform-random and oracle baselines run on the same draws. The seed fixes
    contexts and clicks; the environment's truth and the policies' own streams are set when
    they are built. progress: one Rich bar over steps x policies, on stderr.
    """
    if steps <= 0 or batch_size <= 0:
        raise InvalidInputError(
            f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}"
        )
    for name in (UNIFORM, ORACLE):
        if name in policies:
            raise InvalidInputError(f"policy name {name!r} is reserved for the baseline")

    rng = np.random.default_rng(seed)
    X = env.contexts(steps, rng)
    U = rng.random((steps, env.n_arms))
    step = np.arange(steps)
    P = env.expected_rewards(X, step)  # (steps, n_arms) true click probabilities
    eligible = env.eligible(step)  # (steps, n_arms)
    # Potential outcomes: the click every arm would have got, shared by all policies.
    clicks = (U < P).astype(np.float64)
    eligible_P = np.where(eligible, P, -np.inf)
    oracle_expected = eligible_P.max(axis=1)

    starts = np.arange(0, steps, batch_size)
    score = _Scorer(P, clicks, eligible, oracle_expected, batch_size)
    # Uniform among the eligible arms: the arg max of independent uniforms over them.
    uniform_draws = np.where(eligible, _stream(seed, 0).random((steps, env.n_arms)), -1.0)
    baselines = {
        UNIFORM: score(UNIFORM, uniform_draws.argmax(axis=1), 0.0),
        ORACLE: score(ORACLE, eligible_P.argmax(axis=1), 0.0),
    }
    # Only pass a mask when some arm is ever ineligible: the common case stays mask-free.
    masks = eligible if not eligible.all() else None

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    with bar:
        task = bar.add_task(env.name, total=steps * len(policies))
        learned: dict[str, PolicyRun] = {}
        for name, policy in policies.items():
            bar.update(task, description=f"{env.name}: {name}")
            arms = np.empty(steps, dtype=np.int64)
            elapsed = 0.0
            for start in starts:
                rows = slice(start, min(start + batch_size, steps))
                t0 = time.perf_counter()
                mask = None if masks is None else masks[rows]
                arms[rows] = policy.choose_many(X[rows], eligible=mask)
                policy.learn_many(arms[rows], X[rows], clicks[step[rows], arms[rows]])
                elapsed += time.perf_counter() - t0
                bar.advance(task, rows.stop - rows.start)
            learned[name] = score(name, arms, elapsed)

    return SimulationResult(
        env_name=env.name,
        arm_names=env.arm_names,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        drift_steps=env.drift_steps,
        new_arm_at=env.new_arm_at,
        batch_ends=np.minimum(starts + batch_size, steps),
        runs=learned | baselines,
    )


class _Scorer:
    """Turns a run's chosen arms (steps,) into its per-window curves."""

    def __init__(
        self,
        P: np.ndarray,
        clicks: np.ndarray,
        eligible: np.ndarray,
        oracle_expected: np.ndarray,
        batch_size: int,
    ) -> None:
        self._P, self._clicks, self._eligible = P, clicks, eligible
        self._batch_size = batch_size
        self._starts = np.arange(0, P.shape[0], batch_size)
        self._oracle = np.cumsum(np.add.reduceat(oracle_expected, self._starts))

    def __call__(self, name: str, arms: np.ndarray, wall_time_s: float) -> PolicyRun:
        steps, n_arms = self._P.shape
        rows = np.arange(steps)
        if arms.shape != (steps,) or arms.min() < 0 or arms.max() >= n_arms:
            raise InvalidInputError(
                f"policy {name!r} must choose one arm in 0..{n_arms - 1} per step"
            )
        if not self._eligible[rows, arms].all():
            first = int(np.argmin(self._eligible[rows, arms]))
            raise InvalidInputError(f"policy {name!r} chose an ineligible arm at step {first}")
        expected = np.cumsum(np.add.reduceat(self._P[rows, arms], self._starts))
        window = rows // self._batch_size
        allocation = np.bincount(window * n_arms + arms, minlength=len(self._starts) * n_arms)
        return PolicyRun(
            name=name,
            cumulative_reward=np.cumsum(np.add.reduceat(self._clicks[rows, arms], self._starts)),
            cumulative_expected=expected,
            cumulative_regret=self._oracle - expected,
            allocation=allocation.reshape(len(self._starts), n_arms).astype(np.int64),
            wall_time_s=wall_time_s,
        )
