"""Learning quality side by side: every project policy and its peers on the same data.

A bandit exists to earn reward, so this benchmark plays each learner on the same contexts in
the same order with the same random clicks (common random numbers per seed), deciding a batch
of 100 and then learning it (progressive validation: every decision is made before its row is
learned). It reports the mean expected reward of the choices (the true click probability of
the arm chosen, so the figure is free of click noise), the share of the oracle-over-uniform
gap it closes, and each learner's rank per environment and mean rank, at the learner's
defaults and tuned (the best of its settings on that environment, picked on the same runs:
an upper bound on what tuning buys).

Learners (``LEARNERS``): the project's policies by their settings strings
(``lin_ucb:alpha=0.3``, ``simulators.policy_args``) — LinUCB, LinTS, EpsilonGreedy,
HybridLinUCB, BaRT, BetaTS (context-free, as a floor) and VWPolicy — and the peers: Vowpal
Wabbit ``--cb_explore_adf`` called directly (squarecb, epsilon, cover; ``-q ca``, the arm as
its id), bayesianbandits 1.5 (``ContextualAgent`` with a Bayesian linear model per arm, UCB
and Thompson sampling) and MABWiser 2.7 (LinUCB, LinTS). VWPolicy sees what direct VW sees
(arm ids, no arm features), so the two differ by settings only.

Environments (rewards are clicks, 0 or 1; the oracle is known on all of them):

- ``email4``: the project's four-slot email campaign (``simulators.email_campaign``), each
  slot its own learner of the same kind, all four learning the one click of the combination;
  the offer slot sees the chosen subject line one-hot (the campaign's ``condition_on``).
  The oracle is the best combination; uniform, every slot uniform. 4,000 subscribers (the
  slowest environment: HybridLinUCB and bayesianbandits' UCB dominate the run's time).
- ``digits``, ``wine``, ``breast_cancer``: scikit-learn's bundled sets (no download), features
  standardized, as ``SupervisedBandit`` (arm = class, reward 1 when it is the label); rows drawn
  with replacement. 5,000, 3,000 and 3,000 rounds.
- ``linear``: ``LinearLogistic`` (10 arms, d = 20), clicks from a known logistic truth.
  6,000 rounds.

Three seeds each (the seed draws the contexts, the clicks and the learners' randomness).
``--quick`` plays a fifth of the rounds with two seeds, for a smoke run. The full run is sized
for about ten minutes on two idle cores (from each learner's time per thousand rounds); each
row of the results carries its seconds.

Run: ``python -m benchmarks.quality [--quick] [--json PATH]``; the results also go to
``benchmarks/results/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from bandit.policies import is_vw
from simulators.email_campaign import ARTWORK, OFFER, SEND_HOUR, SLOTS, SUBJECT_LINE, EmailCampaign
from simulators.environments import LinearLogistic, SupervisedBandit
from simulators.policy_args import parse_policy_args
from simulators.simulate import KNOWN_POLICY_NAMES, POLICY_FACTORIES

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
BATCH = 100
SEEDS = (0, 1, 2)


# -- learners ------------------------------------------------------------------------------


class Learner(Protocol):
    def choose(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """arms (n,) int64 and their probabilities (n,) (NaN where the learner gives none)."""

    def learn(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
              probs: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Slot:
    """What a learner is sized for: arms, context width, the arms' features (n_arms, m)."""

    n_arms: int
    dim: int
    arm_features: np.ndarray


Factory = Callable[[Slot, int], Learner]


class _Project:
    def __init__(self, label: str, slot: Slot, seed: int) -> None:
        (arg,) = parse_policy_args(label, KNOWN_POLICY_NAMES)
        self._vw = arg.name == "vw"
        env = SimpleNamespace(n_arms=slot.n_arms, dim=slot.dim,
                              arm_features=None if self._vw else slot.arm_features)
        kw = dict(arg.settings, n_arms=slot.n_arms) if self._vw else arg.settings
        self._policy = POLICY_FACTORIES[arg.name](env, np.random.default_rng(seed), **kw)

    def choose(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._vw:
            return self._policy.choose_many(X, with_propensities=True)
        return self._policy.choose_many(X), np.full(X.shape[0], np.nan)

    def learn(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
              probs: np.ndarray) -> None:
        if is_vw(self._policy):
            self._policy.learn_many(arms, X, rewards, propensities=probs)
        else:
            self._policy.learn_many(arms, X, rewards)


class _VW:
    """``--cb_explore_adf`` through vowpalwabbit's text interface: the context is ``shared |c``,
    each arm ``|a id<a>``; cost = -reward at the pmf's probability."""

    def __init__(self, args: str, slot: Slot, seed: int) -> None:
        from vowpalwabbit import Workspace

        self._ws = Workspace(f"--cb_explore_adf --quiet -q ca --random_seed {seed} {args}")
        self._actions = [f"|a id{a}" for a in range(slot.n_arms)]
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _shared(x: np.ndarray) -> str:
        return "shared |c " + " ".join(f"x{j}:{v:.6g}" for j, v in enumerate(x.tolist()) if v)

    def choose(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = X.shape[0]
        arms, probs = np.empty(n, dtype=np.int64), np.empty(n)
        for i, u in enumerate(self._rng.random((n,)).tolist()):
            pmf = np.asarray(self._ws.predict([self._shared(X[i]), *self._actions]),
                             dtype=np.float64)
            pmf /= pmf.sum()
            a = min(int(np.searchsorted(np.cumsum(pmf), u, side="right")), len(pmf) - 1)
            arms[i], probs[i] = a, pmf[a]
        return arms, probs

    def learn(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
              probs: np.ndarray) -> None:
        for x, a, r, p in zip(X, arms.tolist(), rewards.tolist(), probs.tolist(), strict=True):
            lines = [self._shared(x), *self._actions]
            lines[1 + a] = f"0:{-r}:{p} {self._actions[a]}"
            self._ws.learn(lines)


class _BayesianBandits:
    """bayesianbandits' ContextualAgent: one Bayesian linear model per arm."""

    def __init__(self, policy: str, learner: Callable[[], Any], slot: Slot, seed: int) -> None:
        import bayesianbandits as bb

        arms = [bb.Arm(a, learner=learner()) for a in range(slot.n_arms)]
        self._agent = bb.ContextualAgent(arms, eval(policy, {"bb": bb}), random_seed=seed)

    def choose(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self._agent.pull(X), dtype=np.int64), np.full(X.shape[0], np.nan)

    def learn(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
              probs: np.ndarray) -> None:
        for a in np.unique(arms).tolist():
            rows = arms == a
            self._agent.select_for_update(a).update(X[rows], rewards[rows])


class _MABWiser:
    def __init__(self, policy: str, alpha: float, slot: Slot, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        make = getattr(LearningPolicy, policy)
        self._mab = MAB(arms=list(range(slot.n_arms)), learning_policy=make(alpha=alpha),
                        seed=seed)
        self._mab.fit(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, slot.dim)))

    def choose(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(self._mab.predict(X), dtype=np.int64).reshape(-1),
                np.full(X.shape[0], np.nan))

    def learn(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray,
              probs: np.ndarray) -> None:
        self._mab.partial_fit(arms, rewards, X)


def _project(label: str) -> Factory:
    return lambda slot, seed: _Project(label, slot, seed)


def _vw(args: str) -> Factory:
    return lambda slot, seed: _VW(args, slot, seed)


def _bb(policy: str, learner: str = "bb.NormalInverseGammaRegressor()") -> Factory:
    def make(slot: Slot, seed: int) -> Learner:
        import bayesianbandits as bb

        return _BayesianBandits(policy, lambda: eval(learner, {"bb": bb}), slot, seed)
    return make


def _mabwiser(policy: str, alpha: float) -> Factory:
    return lambda slot, seed: _MABWiser(policy, alpha, slot, seed)


# Each learner: its settings, the first being its defaults; tuned takes the best of them.
LEARNERS: dict[str, dict[str, Factory]] = {
    "LinUCB": {s: _project(s) for s in (
        "lin_ucb", "lin_ucb:epsilon=0", "lin_ucb:alpha=0.1:epsilon=0",
        "lin_ucb:alpha=0.3:l2=1")},
    "LinTS": {s: _project(s) for s in ("lin_ts", "lin_ts:v=0.05", "lin_ts:v=0.5")},
    "EpsilonGreedy": {s: _project(s) for s in (
        "epsilon_greedy", "epsilon_greedy:epsilon=0.05", "epsilon_greedy:epsilon=0.02")},
    "HybridLinUCB": {s: _project(s) for s in (
        "hybrid_lin_ucb", "hybrid_lin_ucb:alpha=0.3:epsilon=0.01")},
    "BaRT": {s: _project(s) for s in ("bart", "bart:epsilon=0.05", "bart:epsilon=0.02")},
    "BetaTS": {"beta_ts": _project("beta_ts")},
    "VWPolicy": {s: _project(s) for s in (
        "vw", "vw:gamma_scale=100", "vw:gamma_scale=1000", "vw:exploration=epsilon")},
    "VW squarecb": {f"--squarecb{a}": _vw(f"--squarecb{a}") for a in (
        "", " --gamma_scale 100", " --gamma_scale 1000")},
    "VW epsilon": {f"--epsilon {e}": _vw(f"--epsilon {e}") for e in ("0.05", "0.1", "0.02")},
    "VW cover": {f"--cover 5{a}": _vw(f"--cover 5{a}") for a in ("", " --psi 0.1")},
    "bb UCB": {
        "UCB(0.68) NIG": _bb("bb.UpperConfidenceBound()"),
        "UCB(0.68) Normal(1,4)": _bb("bb.UpperConfidenceBound()",
                                     "bb.NormalRegressor(alpha=1.0, beta=4.0)")},
    "bb TS": {
        "TS NIG": _bb("bb.ThompsonSampling()"),
        "TS Normal(1,4)": _bb("bb.ThompsonSampling()", "bb.NormalRegressor(alpha=1.0, beta=4.0)"),
        "TS Normal(1,25)": _bb("bb.ThompsonSampling()",
                               "bb.NormalRegressor(alpha=1.0, beta=25.0)")},
    "MABWiser LinUCB": {f"alpha={a}": _mabwiser("LinUCB", a) for a in (1.0, 0.3, 0.1)},
    "MABWiser LinTS": {f"alpha={a}": _mabwiser("LinTS", a) for a in (1.0, 0.3, 0.1)},
}
PROJECT = ("LinUCB", "LinTS", "EpsilonGreedy", "HybridLinUCB", "BaRT", "BetaTS", "VWPolicy")


# -- environments --------------------------------------------------------------------------


class Environment(Protocol):
    name: str
    rounds: int

    def play(self, factory: Factory, seed: int, rounds: int) -> tuple[float, float, float]:
        """Mean expected reward of the learner, of the oracle and of uniform choice."""


def _standardized(X: np.ndarray) -> np.ndarray:
    sd = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@dataclass
class SingleSlot:
    """An ``Environment`` of ``simulators.environments``: one decision per row."""

    name: str
    rounds: int
    env: Any

    def play(self, factory: Factory, seed: int, rounds: int) -> tuple[float, float, float]:
        env = self.env
        rng = np.random.default_rng([seed, 1])
        X = env.contexts(rounds, rng)
        P = env.expected_rewards(X)
        U = rng.random(rounds)
        learner = factory(Slot(env.n_arms, env.dim, env.arm_features), seed)
        got = np.empty(rounds)
        for s in range(0, rounds, BATCH):
            rows = slice(s, min(s + BATCH, rounds))
            Xb = X[rows]
            arms, probs = learner.choose(Xb)
            p = P[rows][np.arange(Xb.shape[0]), arms]
            got[rows] = p
            learner.learn(Xb, arms, (U[rows] < p).astype(np.float64), probs)
        return float(got.mean()), float(P.max(axis=1).mean()), float(P.mean())


class Email4:
    """The four-slot campaign, a learner of the same kind per slot."""

    name = "email4"
    rounds = 4_000
    _STYLES = len(EmailCampaign.STYLES)

    def __init__(self) -> None:
        self.env = EmailCampaign()
        features = {
            SUBJECT_LINE: np.eye(len(EmailCampaign.FRAMINGS)),
            SEND_HOUR: np.column_stack([np.sin(2 * np.pi * np.arange(24) / 24),
                                        np.cos(2 * np.pi * np.arange(24) / 24)]),
            OFFER: np.array(EmailCampaign.DISCOUNTS, dtype=np.float64)[:, None] / 30.0,
            ARTWORK: np.eye(len(EmailCampaign.SCENES)),
        }
        base = 1 + self._STYLES + 3  # intercept, style one-hot, open-hour sin and cos, price
        self.slots = {slot: Slot(len(F), base + (len(EmailCampaign.FRAMINGS) if slot == OFFER
                                                 else 0), F) for slot, F in features.items()}

    def _contexts(self, subs: Any) -> np.ndarray:
        angle = 2 * np.pi * subs.open_hour / 24
        return np.column_stack([np.ones(len(subs)), np.eye(self._STYLES)[subs.style],
                                np.sin(angle), np.cos(angle), subs.price_sensitivity])

    def play(self, factory: Factory, seed: int, rounds: int) -> tuple[float, float, float]:
        rng = np.random.default_rng([seed, 1])
        subs = self.env.subscribers(rounds, rng)
        X = self._contexts(subs)
        U = rng.random(rounds)
        learners = {slot: factory(s, seed * 10 + i)
                    for i, (slot, s) in enumerate(self.slots.items())}
        got = np.empty(rounds)
        subject = np.eye(len(EmailCampaign.FRAMINGS))
        for start in range(0, rounds, BATCH):
            rows = slice(start, min(start + BATCH, rounds))
            Xb = X[rows]
            inputs: dict[str, np.ndarray] = {}
            chosen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for slot in SLOTS:
                x = (np.column_stack([Xb, subject[chosen[SUBJECT_LINE][0]]]) if slot == OFFER
                     else Xb)
                inputs[slot] = np.ascontiguousarray(x)
                chosen[slot] = learners[slot].choose(inputs[slot])
            p = self.env.click_probability(subs[rows], {s: chosen[s][0] for s in SLOTS})
            got[rows] = p
            clicks = (U[rows] < p).astype(np.float64)
            for slot in SLOTS:
                learners[slot].learn(inputs[slot], chosen[slot][0], clicks, chosen[slot][1])
        return (float(got.mean()), float(self.env.oracle(subs)[1].mean()),
                float(self.env.uniform_value(subs).mean()))


def environments() -> list[Environment]:
    from sklearn import datasets

    out: list[Environment] = [Email4()]
    for name, load, rounds in (("digits", datasets.load_digits, 5_000),
                               ("wine", datasets.load_wine, 3_000),
                               ("breast_cancer", datasets.load_breast_cancer, 3_000)):
        X, y = load(return_X_y=True)
        out.append(SingleSlot(name, rounds, SupervisedBandit(_standardized(X), y, name=name)))
    out.append(SingleSlot("linear", 6_000, LinearLogistic(n_arms=10, dim=20, seed=0)))
    return out


# -- the run -------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, Any]:
    """Play every learner at every setting on every environment and seed: ``rows`` (one per
    learner, setting and environment: mean and sd over seeds of the reward and the gap share)
    and ``summary`` (the defaults and tuned tables: reward, gap share and rank per environment,
    mean rank per learner)."""
    seeds = SEEDS[:2] if quick else SEEDS
    rows = []
    for env in environments():
        rounds = env.rounds // 5 if quick else env.rounds
        for learner, settings in LEARNERS.items():
            for i, (setting, factory) in enumerate(settings.items()):
                rewards, shares = [], []
                t0 = time.perf_counter()
                for seed in seeds:
                    mean, oracle, uniform = env.play(factory, seed, rounds)
                    rewards.append(mean)
                    shares.append((mean - uniform) / (oracle - uniform))
                rows.append({"environment": env.name, "learner": learner, "setting": setting,
                             "default": i == 0, "rounds": rounds, "seeds": len(seeds),
                             "reward": float(np.mean(rewards)), "reward_sd": float(np.std(rewards)),
                             "gap_share": float(np.mean(shares)),
                             "seconds": time.perf_counter() - t0})
    return {"batch": BATCH, "rows": rows, "summary": {
        "defaults": _table([r for r in rows if r["default"]]),
        "tuned": _table(rows)}}


def _table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per learner and environment, its best row (the only one at defaults) and its rank among
    the learners there (1 = most reward); per learner, the mean rank."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["learner"], r["environment"])
        if key not in best or r["reward"] > best[key]["reward"]:
            best[key] = r
    envs = list(dict.fromkeys(r["environment"] for r in rows))
    cells: dict[str, dict[str, Any]] = {}
    for env in envs:
        ranked = sorted((r for (_, e), r in best.items() if e == env), key=lambda r: -r["reward"])
        for rank, r in enumerate(ranked, 1):
            cells.setdefault(r["learner"], {})[env] = {
                "setting": r["setting"], "reward": r["reward"], "reward_sd": r["reward_sd"],
                "gap_share": r["gap_share"], "rank": rank}
    return {"environments": envs, "learners": {
        name: {"mean_rank": float(np.mean([c["rank"] for c in by_env.values()])), **by_env}
        for name, by_env in sorted(cells.items(),
                                   key=lambda kv: np.mean([c["rank"] for c in kv[1].values()]))}}


def print_table(console: Console, title: str, table: dict[str, Any]) -> None:
    envs = table["environments"]
    t = Table(title=title)
    t.add_column("learner")
    for env in envs:
        t.add_column(env, justify="right")
    t.add_column("mean rank", justify="right")
    for name, cells in table["learners"].items():
        t.add_row(name + (" *" if name in PROJECT else ""), *[
            f"{cells[e]['reward']:.3f}±{cells[e]['reward_sd']:.3f} "
            f"({cells[e]['gap_share']:.0%}) #{cells[e]['rank']}" for e in envs],
            f"{cells['mean_rank']:.1f}")
    console.print(t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the rounds, two seeds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = run(args.quick)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for a row per learner
        console = Console(width=200)
    console.print("mean expected reward ± sd over seeds (share of the oracle-over-uniform gap) "
                  "#rank; * the project's policies")
    print_table(console, "Learning quality at defaults", result["summary"]["defaults"])
    print_table(console, "Learning quality tuned (best setting per environment)",
                result["summary"]["tuned"])
    text = json.dumps(result, indent=1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
