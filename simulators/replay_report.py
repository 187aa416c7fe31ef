"""Offline evaluation of several target policies on one log, and its report.

``compare`` runs the chosen estimators for every target (a project policy or a table of
action probabilities) with a Rich progress bar; ``write_report`` writes results.json,
report.md, report.html (tables and embedded PNGs) and the PNGs: estimates with intervals per
estimator, cumulative reward of the replayed events, arm allocation. Plots use bare matplotlib
Figures on the Agg canvas, as simulators.report does.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bandit.errors import InvalidInputError
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from simulators import ope
from simulators.logs import LoggedBandit
from simulators.obd import logged_policy_table

HEADER = ("policy", "estimator", "estimate", "95% interval", "events", "clipping")


@dataclass(frozen=True)
class Comparison:
    """Every target's estimates on one log. estimates: policy -> estimator -> Estimate;
    replays: policy -> its replay trajectory (when replay ran); allocation: policy -> (k,)
    share of each action in the target's choices (replay) or probabilities (otherwise);
    on_policy: the logging policy's own mean reward; seconds: per policy."""

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
        }


def _row(policy: str, e: ope.Estimate) -> tuple[str, ...]:
    clipping = "" if e.clip is None else (f"at {e.clip:g}: {e.clipped_share:.1%} clipped, "
                                          f"bias {e.clipping_bias:+.5f}")
    return (policy, e.estimator, f"{e.value:.5f}", f"[{e.low:.5f}, {e.high:.5f}]",
            f"{e.n_events:,}", clipping)


POLICIES: dict[str, Callable[[LoggedBandit, int], Policy]] = {
    "lin_ucb": lambda log, seed: LinUCB(log.n_actions, log.dim, rng=seed),
    "lin_ts": lambda log, seed: LinTS(log.n_actions, log.dim, rng=seed),
    "beta_ts": lambda log, seed: BetaTS(log.n_actions, rng=seed),
    "epsilon_greedy": lambda log, seed: EpsilonGreedy(log.n_actions, log.dim, rng=seed),
    "hybrid_lin_ucb": lambda log, seed: HybridLinUCB(log.dim, _features(log), rng=seed),
    "bart": lambda log, seed: Bart(log.dim, _features(log), rng=seed),
}
TABLES = ("uniform", "random_logged", "bts_logged")
TARGET_NAMES = (*POLICIES, *TABLES)


def _features(log: LoggedBandit) -> np.ndarray:
    if log.action_features is None:
        raise InvalidInputError(f"{log.name}: has no action features, which hybrid_lin_ucb and "
                                "bart need")
    return log.action_features


def make_targets(names: Sequence[str], log: LoggedBandit, *,
                 behaviors: dict[str, LoggedBandit] | None = None,
                 seed: int = 0) -> dict[str, Policy | np.ndarray]:
    """Targets by name: a project policy with default hyperparameters sized for the log
    (seeded), ``uniform`` (1/k for every action), or, for the Open Bandit Dataset
    (``behaviors`` = its logs by behaviour), ``random_logged`` / ``bts_logged``: that logging
    policy's per-position item shares (``obd.logged_policy_table``)."""
    if len(set(names)) != len(names) or not names:
        raise InvalidInputError(f"--policy: expected distinct names, got {list(names)}")
    out: dict[str, Policy | np.ndarray] = {}
    for i, name in enumerate(names):
        if name in POLICIES:
            out[name] = POLICIES[name](log, seed + i)
        elif name == "uniform":
            out[name] = np.full((log.n, log.n_actions), 1.0 / log.n_actions)
        elif name in ("random_logged", "bts_logged"):
            if behaviors is None:
                raise InvalidInputError(f"--policy {name}: only with --dataset obd")
            out[name] = logged_policy_table(behaviors[name.removesuffix("_logged")], log)
        else:
            raise InvalidInputError(f"--policy: unknown {name!r}; expected some of "
                                    f"{', '.join(TARGET_NAMES)}")
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
) -> Comparison:
    """Evaluate every target with every estimator (names from ``ope.ESTIMATORS``).

    A project policy is evaluated by the IPS family as it stands, before replay, which then
    lets it learn online from the events it keeps. The reward model of dm/dr is fitted once.
    """
    unknown = [e for e in estimators if e not in ope.ESTIMATORS]
    if unknown or not estimators:
        raise InvalidInputError(f"estimators: expected some of {', '.join(ope.ESTIMATORS)}, "
                                f"got {list(estimators)}")
    if "replay" in estimators and not log.is_uniform():
        raise InvalidInputError(f"replay: {log.name} was not logged uniformly at random; "
                                "leave replay out or evaluate a uniform log")
    weighted = tuple(e for e in estimators if e != "replay")
    qhat = ope.fit_reward_model(log, seed=seed) if {"dm", "dr"} & set(weighted) else None
    on_policy = ope.on_policy(log, n_boot=n_boot, seed=seed)
    estimates: dict[str, dict[str, ope.Estimate]] = {}
    replays: dict[str, ope.ReplayRun] = {}
    allocation: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task(log.name, total=len(targets) * len(estimators))
        for name, target in targets.items():
            t0 = time.perf_counter()
            found: dict[str, ope.Estimate] = {}
            if weighted:
                bar.update(task, description=f"{log.name}: {name} {', '.join(weighted)}")
                found |= ope.evaluate(log, target, weighted, qhat=qhat, clip=clip,
                                      n_boot=n_boot, seed=seed)
                bar.advance(task, len(weighted))
                allocation[name] = ope.target_probabilities(target, log).mean(axis=0)
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
                      on_policy, estimates, replays, allocation, seconds)


# -- report ----------------------------------------------------------------------------------

_NOTE = (
    "Estimates are the expected reward per event. Intervals: percentile bootstrap over events "
    "(seeded). replay (Li et al. 2011) keeps the events where the policy picks the logged "
    "action and lets project policies learn from them; ips, snips, dm and dr evaluate a project "
    "policy as it stands, through its propensities. Clipping lowers the weights above the "
    "threshold: the bias column is the clipped minus the unclipped estimate on this log."
)


def write_report(result: Comparison, out_dir: str | Path) -> Path:
    """Write results.json, the PNGs, report.md and report.html into out_dir; returns the
    HTML report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), allow_nan=False) + "\n")
    for file_name, (title, draw) in PLOTS.items():
        FigureCanvasAgg(draw(result, title)).print_png(out / file_name)
    rows = result.rows()
    (out / "report.md").write_text(_markdown(result, rows))
    report = out / "report.html"
    report.write_text(_html(result, rows, out))
    return report


def _title(result: Comparison) -> str:
    return f"Offline evaluation on {result.log_name}"


def _parameters(result: Comparison) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in result.parameters.items())
    return f"{result.n_events:,} events, {result.n_actions} actions" + (f", {extra}" if extra else "")


def _markdown(result: Comparison, rows: list[tuple[str, ...]]) -> str:
    lines = [f"# {_title(result)}", "", _parameters(result), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
             *("| " + " | ".join(row) + " |" for row in rows), "", _NOTE, "",
             *(f"![{title}]({name})" for name, (title, _) in PLOTS.items())]
    return "\n".join(lines) + "\n"


def _html(result: Comparison, rows: list[tuple[str, ...]], out: Path) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}">'
        for name, (title, _) in PLOTS.items())
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(_title(result))}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(_title(result))}</h1><p>{html.escape(_parameters(result))}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{html.escape(_NOTE)}</p>{images}</body></html>\n"
    )


def _estimates(result: Comparison, title: str) -> Figure:
    """One row per policy, one marker with its interval per estimator; the logged policy's
    on-policy value as a vertical band."""
    policies = list(result.estimates)
    estimators = list(next(iter(result.estimates.values())))
    figure = Figure(figsize=(8, 1.0 + 0.6 * len(policies) * len(estimators) ** 0.5),
                    layout="constrained")
    ax = figure.add_subplot()
    ax.axvspan(result.on_policy.low, result.on_policy.high, color="grey", alpha=0.2,
               label="logged (on-policy)")
    step = 0.7 / max(len(estimators), 1)
    for j, estimator in enumerate(estimators):
        y = np.arange(len(policies)) + (j - (len(estimators) - 1) / 2) * step
        values = np.array([result.estimates[p][estimator].value for p in policies])
        low = np.array([result.estimates[p][estimator].low for p in policies])
        high = np.array([result.estimates[p][estimator].high for p in policies])
        ax.errorbar(values, y, xerr=[values - low, high - values], fmt="o", capsize=3,
                    label=estimator)
    ax.set_yticks(np.arange(len(policies)), policies)
    ax.set(xlabel="expected reward per event", title=title)
    ax.legend(loc="best", fontsize="small")
    return figure


def _cumulative_reward(result: Comparison, title: str) -> Figure:
    figure = Figure(figsize=(8, 5), layout="constrained")
    ax = figure.add_subplot()
    for name, run in result.replays.items():
        ax.plot(run.kept, run.cumulative_reward, label=name)
    if result.replays:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "replay was not run", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="replayed (kept) events", ylabel="cumulative reward", title=title)
    return figure


def _allocation(result: Comparison, title: str) -> Figure:
    """A stacked bar per policy: the share of each action in its choices."""
    names = list(result.allocation)
    figure = Figure(figsize=(8, 1.2 + 0.5 * len(names)), layout="constrained")
    ax = figure.add_subplot()
    k = result.n_actions
    palette = colormaps["tab10" if k <= 10 else "tab20"]
    left = np.zeros(len(names))
    for a in range(k):
        share = np.array([result.allocation[n][a] for n in names])
        ax.barh(names, share, left=left, color=palette(a % palette.N),
                label=result.action_names[a] if k <= 20 else None)
        left += share
    ax.set(xlabel="share of choices", xlim=(0, 1), title=title)
    if k <= 20:
        figure.legend(loc="outside right upper", title="action")
    return figure


# File name -> (title, how to draw it), in report order.
PLOTS: dict[str, tuple[str, Callable[[Comparison, str], Figure]]] = {
    "estimates.png": ("Estimates with 95% intervals", _estimates),
    "cumulative_reward.png": ("Cumulative reward of the replayed events", _cumulative_reward),
    "allocation.png": ("Arm allocation", _allocation),
}
