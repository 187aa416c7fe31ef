"""Play policies against an environment side by side, on common random numbers.

Contexts (subscribers) and the uniforms that decide clicks are drawn once, so all policies (and
the uniform and oracle baselines) face the same subscribers and the same luck: differences
between them are the policies', not the noise's. Regret is measured on the true click
probabilities, not on the noisy clicks.

Two kinds of environment play: a single-slot ``Environment`` drives the policy objects directly
(one uniform per step and arm: the potential click of every arm), and the four-slot
``EmailCampaign`` drives the real ``Engine`` through the email contract: the campaign learns
the email reward (``EmailCampaign.email_reward``) with ``activation: "send"``; each batch is
decided with ``decide_batch``, whose decisions the engine logs into its own attribution join
(``Engine.decision_sink``, the service's in-process ``JoinLog``); its sends are recorded at
once and the simulated subscribers' outcomes (``simulators.outcomes``: opens, machine ones
among them, clicks, a link scanner's among them, conversions with a value, unsubscribes,
complaints, bounces) are recorded when they are due, with the watermark that closes the
batch's windows, so the engine learns what the join makes of them. Outcomes are drawn from one
random stream per batch, so two runs that send a subscriber the same combination see the
same events. There, the reward and regret are the campaign's reward (observed: what the join
learns, ``OutcomeColumns.realized``; expected: ``EmailOutcomes.expected_reward`` against
``EmailOutcomes.oracle``). Feedback can arrive ``delay`` batches late.

Event time of the campaign play: batch b is decided and sent at ``T0_MS + b * step`` with
step = the attribution window // (delay + 1); its outcomes are recorded after batch b + delay
is decided, with the watermark ``send + window + 1``: every window of batch b closes then, and
none of a later batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from bandit.engine import Engine
from bandit.errors import InvalidInputError
from bandit.models import Arm, Outcome, Send
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from bandit.service.link import JoinLog
from simulators.email_campaign import ARTWORK as ARTWORK_SLOT
from simulators.email_campaign import SLOTS, EmailCampaign
from simulators.environments.base import Environment
from simulators.outcomes import EmailOutcomes, OutcomeColumns
from simulators.policy_args import PolicyArg, as_policy_args

UNIFORM, ORACLE = "uniform", "oracle"
# On the campaign: every slot on its DEFAULT_POLICIES entry, the mix the demo runs.
CAMPAIGN_DEFAULT = "default"
_CAMPAIGN = "simulation"
T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the campaign play's first batch

# Each policy with its default hyperparameters (and any settings given), sized for the
# environment, on its own stream.
POLICY_FACTORIES: dict[str, Callable[..., Policy]] = {
    "lin_ucb": lambda env, rng, **kw: LinUCB(env.n_arms, env.dim, rng=rng, **kw),
    "lin_ts": lambda env, rng, **kw: LinTS(env.n_arms, env.dim, rng=rng, **kw),
    "beta_ts": lambda env, rng, **kw: BetaTS(env.n_arms, dim=env.dim, rng=rng, **kw),
    "epsilon_greedy": lambda env, rng, **kw: EpsilonGreedy(env.n_arms, env.dim, rng=rng, **kw),
    "hybrid_lin_ucb": lambda env, rng, **kw: HybridLinUCB(env.dim, env.arm_features, rng=rng,
                                                          **kw),
    "bart": lambda env, rng, **kw: Bart(env.dim, env.arm_features, rng=rng, **kw),
    "vw": lambda env, rng, **kw: _vw(env.dim, env.arm_features, rng, **kw),
}
VW = "vw"
# The policies a simulation runs when none are named: every kind but VW (the slowest to learn).
POLICY_NAMES = tuple(name for name in POLICY_FACTORIES if name != VW)
KNOWN_POLICY_NAMES = (*POLICY_NAMES, VW)
CAMPAIGN_POLICY_NAMES = (*POLICY_NAMES, CAMPAIGN_DEFAULT, VW)


def _vw(dim: int, arm_features: np.ndarray, rng: np.random.Generator, **kw: Any) -> Policy:
    from bandit.policies import VWPolicy  # imported here: only a VW run loads vowpalwabbit

    return VWPolicy(dim, arm_features, rng=rng, **kw)


def make_policies(
    names: Sequence[str | PolicyArg], env: Environment | EmailCampaign, seed: int = 0
) -> dict[str, Policy] | dict[str, Engine]:
    """Build policies by name (``lin_ucb``), each with its default hyperparameters or the
    settings given with it (``lin_ucb:alpha=0.3``, ``simulators.policy_args``), keyed by the
    name as given: Policy objects (names from KNOWN_POLICY_NAMES) for an Environment; for an
    EmailCampaign one Engine per name running the campaign with that policy kind (and
    settings) in every slot (or ``default``: DEFAULT_POLICIES), no holdout.

    Each policy draws from its own stream, keyed by its kind's place in the name list, so a
    policy makes the same choices whichever other policies run beside it.
    """
    known = CAMPAIGN_POLICY_NAMES if isinstance(env, EmailCampaign) else KNOWN_POLICY_NAMES
    chosen = as_policy_args(names, known)
    if not isinstance(env, EmailCampaign):
        return {
            p.label: POLICY_FACTORIES[p.name](env, _stream(seed, 1, known.index(p.name)),
                                              **p.settings)
            for p in chosen
        }
    engines = {}
    for p in chosen:
        engine_seed = int(_stream(seed, 1, known.index(p.name)).integers(2**63))
        engine = Engine(seed=engine_seed, id_seed=engine_seed)  # a reproducible run
        kinds = (None if p.name == CAMPAIGN_DEFAULT
                 else dict.fromkeys(SLOTS, {"kind": p.name, **p.settings}))
        engine.create_campaign(env.campaign_spec(
            _CAMPAIGN, kinds, holdout=0.0, reward=EmailCampaign.email_reward(),
            activation="send"))
        engines[p.label] = engine
    return engines


def _stream(seed: int, *key: int) -> np.random.Generator:
    # Child streams of the seed: independent of each other and of the environment's stream.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True)
class PolicyRun:
    """One policy's trajectory, recorded at the end of every batch window (B windows).

    cumulative_reward (B,): reward received (clicks; the campaign: its reward as the join
    learns it); cumulative_expected (B,): summed expected reward of the chosen arms (click
    probabilities; the campaign: ``EmailOutcomes.expected_reward``); cumulative_regret (B,):
    the oracle's cumulative_expected minus this one's; allocation: per slot, (B, n_arms) int64,
    how often each arm was chosen within each window; oracle_agreement: per slot, the share of
    decisions on the oracle's arm; slot_loss: per slot, the mean click probability lost by that
    slot's choice with the other slots' choices held (a single slot: the mean regret);
    wall_time_s: seconds spent choosing and learning.
    """

    name: str
    cumulative_reward: np.ndarray
    cumulative_expected: np.ndarray
    cumulative_regret: np.ndarray
    allocation: dict[str, np.ndarray]
    oracle_agreement: dict[str, float]
    slot_loss: dict[str, float]
    wall_time_s: float

    @property
    def steps(self) -> int:
        return int(next(iter(self.allocation.values())).sum())

    @property
    def mean_reward(self) -> float:
        """Reward per decision actually observed (a single slot: the click-through rate)."""
        return float(self.cumulative_reward[-1]) / self.steps

    @property
    def mean_expected(self) -> float:
        """Mean expected reward of the chosen arms: the observed one without the noise."""
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
class SlotRow:
    """One line of the per-slot table: a run's choices in one slot."""

    slot: str
    policy: str
    oracle_agreement: float
    loss: float
    top_arm: str
    top_share: float


@dataclass(frozen=True)
class SimulationResult:
    """Every run of one simulation: the learning policies in the order given, then the uniform
    and oracle baselines. slots: each slot's arm names, in decision order; batch_ends (B,)
    int64: steps done at the end of each window; new_arm: "slot/arm" arriving at new_arm_at;
    delay: batches between a decision and the policy learning its reward; reports: per
    engine run of an email campaign, its ``CampaignReport`` as JSON (outcome rates and lift)."""

    env_name: str
    slots: dict[str, tuple[str, ...]]
    steps: int
    batch_size: int
    seed: int
    drift_steps: int | None
    new_arm_at: int | None
    new_arm: str | None
    delay: int
    batch_ends: np.ndarray
    runs: dict[str, PolicyRun]
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

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

    def slot_summary(self) -> list[SlotRow]:
        """Per slot, one row per run (oracle last); top arm: the most chosen in the last
        window."""
        rows = []
        for slot, arms in self.slots.items():
            for run in self.runs.values():
                last = run.allocation[slot][-1]
                top = int(last.argmax())
                rows.append(SlotRow(
                    slot=slot, policy=run.name, oracle_agreement=run.oracle_agreement[slot],
                    loss=run.slot_loss[slot], top_arm=arms[top],
                    top_share=float(last[top] / max(last.sum(), 1)),
                ))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: parameters, the summary tables and every curve."""
        return {
            "env": self.env_name,
            "slots": {slot: list(arms) for slot, arms in self.slots.items()},
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "drift_steps": self.drift_steps,
            "new_arm_at": self.new_arm_at,
            "new_arm": self.new_arm,
            "delay": self.delay,
            "batch_ends": self.batch_ends.tolist(),
            "summary": [asdict(row) for row in self.summary()],
            "slot_summary": [asdict(row) for row in self.slot_summary()],
            "runs": {
                name: {
                    "cumulative_reward": run.cumulative_reward.tolist(),
                    "cumulative_expected": run.cumulative_expected.tolist(),
                    "cumulative_regret": run.cumulative_regret.tolist(),
                    "allocation": {slot: a.tolist() for slot, a in run.allocation.items()},
                    "oracle_agreement": run.oracle_agreement,
                    "slot_loss": run.slot_loss,
                    "wall_time_s": run.wall_time_s,
                }
                for name, run in self.runs.items()
            },
        }


def simulate(
    env: Environment | EmailCampaign,
    policies: dict[str, Policy] | dict[str, Engine],
    steps: int,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = True,
    delay: int = 0,
) -> SimulationResult:
    """Run every policy over the same `steps` subscribers, `batch_size` at a time.

    Per batch each policy chooses for the whole batch (only among eligible arms), and the
    clicks of its choices reach it ``delay`` batches later (0: before the next batch, the
    delayed feedback of a real send); rewards still pending at the end are never learned. The
    uniform-random and oracle baselines run on the same draws. The seed fixes subscribers and
    clicks; the environment's truth and the policies' own streams are set when they are built.
    policies: from ``make_policies`` for this environment. progress: one Rich bar over
    steps x policies, on stderr.
    """
    if steps <= 0 or batch_size <= 0:
        raise InvalidInputError(
            f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}"
        )
    if delay < 0:
        raise InvalidInputError(f"delay must be a number of batches >= 0, got {delay}")
    for name in (UNIFORM, ORACLE):
        if name in policies:
            raise InvalidInputError(f"policy name {name!r} is reserved for the baseline")
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
        # make_policies pairs an EmailCampaign with engines and an Environment with policy
        # objects: narrowing env cannot narrow the policies' type, so the pairing is a cast.
        reports: dict[str, dict[str, Any]] = {}
        if isinstance(env, EmailCampaign):
            engines = cast(dict[str, Engine], policies)
            slots, runs, new_arm = _play_campaign(env, engines, steps, batch_size, seed, delay,
                                                  bar, task)
            reports = {name: engine.report(_CAMPAIGN).model_dump(mode="json")
                       for name, engine in engines.items()}
        else:
            slots, runs, new_arm = _play_environment(env, cast(dict[str, Policy], policies),
                                                     steps, batch_size, seed, delay, bar, task)
    return SimulationResult(
        env_name=env.name,
        slots=slots,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        drift_steps=env.drift_steps,
        new_arm_at=env.new_arm_at,
        new_arm=new_arm if env.new_arm_at is not None else None,
        delay=delay,
        batch_ends=np.minimum(np.arange(0, steps, batch_size) + batch_size, steps),
        runs=runs,
        reports=reports,
    )


# What a play returns: each slot's arm names, every run by name, the late arm as "slot/arm".
_Played = tuple[dict[str, tuple[str, ...]], dict[str, PolicyRun], str]


def _play_environment(env: Environment, policies: dict[str, Policy], steps: int,
                      batch_size: int, seed: int, delay: int, bar: Progress,
                      task: TaskID) -> _Played:
    """Single slot: the policy objects choose and learn directly."""
    rng = np.random.default_rng(seed)
    X = env.contexts(steps, rng)
    U = rng.random((steps, env.n_arms))
    step = np.arange(steps)
    P = env.expected_rewards(X, step)  # (steps, n_arms) true click probabilities
    eligible = env.eligible(step)  # (steps, n_arms)
    # Potential outcomes: the click every arm would have got, shared by all policies.
    clicks = (U < P).astype(np.float64)
    eligible_P = np.where(eligible, P, -np.inf)
    oracle_arms = eligible_P.argmax(axis=1)
    slot = env.slot
    starts = np.arange(0, steps, batch_size)
    score = _Scorer({slot: env.n_arms}, P[step, oracle_arms], {slot: oracle_arms}, starts)

    def scored(name: str, arms: np.ndarray, elapsed: float) -> PolicyRun:
        if arms.min() < 0 or arms.max() >= env.n_arms:
            raise InvalidInputError(
                f"policy {name!r} must choose one arm in 0..{env.n_arms - 1} per step")
        if not eligible[step, arms].all():
            first = int(np.argmin(eligible[step, arms]))
            raise InvalidInputError(f"policy {name!r} chose an ineligible arm at step {first}")
        expected = P[step, arms]
        loss = {slot: float(np.mean(score.oracle_expected - expected))}
        return score(name, {slot: arms}, expected, clicks[step, arms], loss, elapsed)

    # Uniform among the eligible arms: the arg max of independent uniforms over them.
    uniform_draws = np.where(eligible, _stream(seed, 0).random((steps, env.n_arms)), -1.0)
    baselines = {
        UNIFORM: scored(UNIFORM, uniform_draws.argmax(axis=1), 0.0),
        ORACLE: scored(ORACLE, oracle_arms, 0.0),
    }
    # Only pass a mask when some arm is ever ineligible: the common case stays mask-free.
    masks = eligible if not eligible.all() else None
    learned: dict[str, PolicyRun] = {}
    for name, policy in policies.items():
        bar.update(task, description=f"{env.name}: {name}")
        arms = np.empty(steps, dtype=np.int64)
        pending: deque[slice] = deque()
        elapsed = 0.0
        for start in starts.tolist():  # Python ints: they slice lists as well as arrays
            rows = slice(start, min(start + batch_size, steps))
            t0 = time.perf_counter()
            mask = None if masks is None else masks[rows]
            arms[rows] = policy.choose_many(X[rows], eligible=mask)
            pending.append(rows)
            if len(pending) > delay:
                done = pending.popleft()
                policy.learn_many(arms[done], X[done], clicks[step[done], arms[done]])
            elapsed += time.perf_counter() - t0
            bar.advance(task, rows.stop - rows.start)
        learned[name] = scored(name, arms, elapsed)
    return {slot: env.arm_names}, learned | baselines, f"{slot}/{env.arm_names[-1]}"


def _play_campaign(env: EmailCampaign, engines: dict[str, Engine], steps: int, batch_size: int,
                   seed: int, delay: int, bar: Progress, task: TaskID) -> _Played:
    """Four slots through the email contract (the module docstring): each engine decides a
    batch and logs it into its join, the batch's sends are recorded, its outcomes are drawn
    from the truth and recorded ``delay`` batches later with the watermark that closes its
    windows. A late arm is added to every engine at the first batch that starts at or after
    ``new_arm_at``."""
    model = EmailOutcomes(env)
    reward = EmailCampaign.email_reward()
    window = int(env.campaign_spec().attribution_window_ms)
    rng = np.random.default_rng(seed)
    subs = env.subscribers(steps, rng)
    inboxes = model.inboxes(steps, rng)
    step = np.arange(steps)
    starts = np.arange(0, steps, batch_size)
    eligible = env.eligible(step)
    oracle_choice, oracle_value = model.oracle(subs, reward, window, inboxes, step)
    sizes = {slot: len(arms) for slot, arms in env.arm_ids.items()}
    score = _Scorer(sizes, oracle_value, oracle_choice, starts)
    pace = max(window // (delay + 1), 1)  # ms between batches (the module docstring)

    def outcomes(b: int, rows: slice, ids: Sequence[str], choices: dict[str, np.ndarray]
                 ) -> OutcomeColumns:
        """Batch b's events: the same draws for every run (a stream per batch)."""
        return model.sample(ids, {slot: c[rows] for slot, c in choices.items()},
                            T0_MS + b * pace, subs[rows], inboxes[rows], _stream(seed, 2, b),
                            campaign=_CAMPAIGN, step=step[rows])

    def realized(choices: dict[str, np.ndarray]) -> np.ndarray:
        """The reward the join would learn of every step's events (the baselines')."""
        rewards = np.empty(steps)
        for b, start in enumerate(starts.tolist()):
            rows = slice(start, min(start + batch_size, steps))
            ids = [f"{i:032x}" for i in range(rows.start, rows.stop)]
            rewards[rows] = outcomes(b, rows, ids, choices).realized(reward, window)[1]
        return rewards

    def scored(name: str, choices: dict[str, np.ndarray], rewards: np.ndarray,
               elapsed: float) -> PolicyRun:
        for slot in SLOTS:
            if not eligible[slot][step, choices[slot]].all():
                first = int(np.argmin(eligible[slot][step, choices[slot]]))
                raise InvalidInputError(
                    f"policy {name!r} chose an ineligible {slot} arm at step {first}")
        # The oracle's own values, so its regret is exactly 0, not a rounding residue.
        expected = (oracle_value if choices is oracle_choice
                    else model.expected_reward(subs, choices, reward, window, inboxes, step))
        loss = {slot: float(v.mean()) for slot, v in env.slot_losses(subs, choices, step).items()}
        return score(name, choices, expected, rewards, loss, elapsed)

    uniform_stream = _stream(seed, 0)
    uniform = {
        slot: np.where(eligible[slot], uniform_stream.random((steps, k)), -1.0).argmax(axis=1)
        for slot, k in sizes.items()
    }
    baselines = {UNIFORM: scored(UNIFORM, uniform, realized(uniform), 0.0),
                 ORACLE: scored(ORACLE, oracle_choice, realized(oracle_choice), 0.0)}

    # The same requests for every engine: validated once, never changed (frozen models).
    requests = subs.requests(_CAMPAIGN)
    late = [(slot, Arm.model_validate(arm)) for slot, arm in env.late_arms()]
    learned: dict[str, PolicyRun] = {}
    now = [T0_MS]  # event time: the decision log's clock

    def clock() -> int:
        return now[0]

    for name, engine in engines.items():
        bar.update(task, description=f"{env.name}: {name}")
        choices = {slot: np.empty(steps, dtype=np.int64) for slot in SLOTS}
        rewards = np.zeros(steps)
        # Per batch not yet learned: its outcomes and the watermark that closes its windows.
        pending: deque[tuple[list[Send | Outcome], int]] = deque()
        arrived = not late
        elapsed = 0.0
        sink, own_clock, hook = engine.decision_sink, engine.clock, engine.before_join
        engine.decision_sink, engine.clock = JoinLog(engine), clock  # sets before_join
        try:
            for b, start in enumerate(starts.tolist()):  # Python ints: they slice lists too
                rows = slice(start, min(start + batch_size, steps))
                t0 = time.perf_counter()
                now[0] = T0_MS + b * pace
                if not arrived and env.new_arm_at is not None and start >= env.new_arm_at:
                    for slot, arm in late:
                        engine.add_arm(_CAMPAIGN, slot, arm)
                    arrived = True
                batch = engine.decide_batch(_CAMPAIGN, requests[rows])  # logged into the join
                for columns in batch.slots:
                    choices[columns.slot][rows] = columns.arms
                drawn = outcomes(b, rows, batch.decision_ids, choices)
                rewards[rows] = drawn.realized(reward, window)[1]
                events = drawn.events()
                engine.record([e for e in events if e.type == "send"])
                pending.append(([e for e in events if e.type != "send"], now[0] + window + 1))
                if len(pending) > delay:
                    due, watermark = pending.popleft()
                    engine.ingest(due, watermark=watermark)
                elapsed += time.perf_counter() - t0
                bar.advance(task, rows.stop - rows.start)
        finally:
            engine.decision_sink, engine.clock, engine.before_join = sink, own_clock, hook
        learned[name] = scored(name, choices, rewards, elapsed)
    new_arm = f"{ARTWORK_SLOT}/{env.arm_ids[ARTWORK_SLOT][-1]}"
    return dict(env.arm_ids), learned | baselines, new_arm


class _Scorer:
    """Turns a run's choices (steps,) per slot into its per-window curves."""

    def __init__(
        self,
        sizes: dict[str, int],
        oracle_expected: np.ndarray,
        oracle_choice: dict[str, np.ndarray],
        starts: np.ndarray,
    ) -> None:
        self._sizes, self._starts = sizes, starts
        self.oracle_expected = oracle_expected
        self._oracle_choice = oracle_choice
        self._oracle = np.cumsum(np.add.reduceat(oracle_expected, starts))
        # Window of every step: the batch it was decided in.
        self._window = np.repeat(np.arange(len(starts)), np.diff(np.append(starts,
                                                                           len(oracle_expected))))

    def __call__(self, name: str, choices: dict[str, np.ndarray], expected: np.ndarray,
                 rewards: np.ndarray, slot_loss: dict[str, float], wall_time_s: float) -> PolicyRun:
        B = len(self._starts)
        cumulative_expected = np.cumsum(np.add.reduceat(expected, self._starts))
        allocation = {
            slot: np.bincount(self._window * k + choices[slot], minlength=B * k)
            .reshape(B, k).astype(np.int64)
            for slot, k in self._sizes.items()
        }
        return PolicyRun(
            name=name,
            cumulative_reward=np.cumsum(np.add.reduceat(rewards, self._starts)),
            cumulative_expected=cumulative_expected,
            cumulative_regret=self._oracle - cumulative_expected,
            allocation=allocation,
            oracle_agreement={slot: float(np.mean(choices[slot] == self._oracle_choice[slot]))
                              for slot in self._sizes},
            slot_loss=slot_loss,
            wall_time_s=wall_time_s,
        )
