"""The report of an offline evaluation (``simulators.replay.compare``): results.json,
report.md, report.html (tables, embedded PNGs, allocation-by-segment heatmaps) and the PNGs:
estimates with intervals per estimator, cumulative reward of the replayed events, arm
allocation."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from bandit.engine.report import _AUDIT_MIN, _AUDIT_TV
from simulators.replay import HEADER, Comparison
from simulators.reports import page

_NOTE = (
    "Estimates are the expected reward per event. Intervals: percentile bootstrap over events "
    "(seeded). replay (Li et al. 2011) keeps the events where the policy picks the logged "
    "action and lets project policies learn from them; the other estimators evaluate a project "
    "policy as trained on the log (the target mode: progressive, each event scored before it "
    "is learned; cross-fit; or fixed, as it stands), through its propensities and, for the "
    "model-based ones, its own reward model. Clipping lowers the weights above the "
    "threshold: the bias column is the clipped minus the unclipped estimate on this log."
)
_SEGMENT_NOTE = (
    "Per policy, its allocation by the log's categorical context features: each row is a "
    "feature value, each cell the policy's mean probability of the action over the value's "
    "events, as the estimators read it (a row sums to 100%), under its mean over every event. "
    "⚑ marks a value the campaign report's bias audit would flag on allocation: at least "
    f"{_AUDIT_MIN} events and a total variation of at least {_AUDIT_TV} from the policy's "
    "overall allocation.")


def write_report(result: Comparison, out_dir: str | Path) -> Path:
    """Write results.json, the PNGs, report.md and report.html into out_dir; returns the
    HTML report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), allow_nan=False) + "\n")
    for file_name, (title, draw) in PLOTS.items():
        page.write_png(draw(result, title), out / file_name)
    rows = result.rows()
    (out / "report.md").write_text(_markdown(result, rows))
    report = out / "report.html"
    report.write_text(_html(result, rows, out))
    return report


def _title(result: Comparison) -> str:
    return f"Offline evaluation on {result.log_name}"


def _parameters(result: Comparison) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in result.parameters.items())
    sizes = f"{result.n_events:,} events, {result.n_actions} actions"
    return sizes + (f", {extra}" if extra else "")


def _segments(result: Comparison) -> tuple[list[str], str]:
    return page.heatmap_section(list(result.segments.values()), 2, "Allocation by segment",
                                _SEGMENT_NOTE, "Policy", page.EVENTS)


def _markdown(result: Comparison, rows: list[tuple[str, ...]]) -> str:
    lines = [f"# {_title(result)}", "", _parameters(result), "",
             page.markdown_table(HEADER, rows), "", _NOTE, "", *page.markdown_images(PLOTS), "",
             *_segments(result)[0]]
    return "\n".join(lines).rstrip("\n") + "\n"


def _html(result: Comparison, rows: list[tuple[str, ...]], out: Path) -> str:
    body = (f"<p>{html.escape(_parameters(result))}</p>{page.html_table(HEADER, rows)}"
            f"<p>{html.escape(_NOTE)}</p>{page.titled_images(out, PLOTS)}{_segments(result)[1]}")
    return page.html_page(_title(result), body, page.STYLE + page.IMAGES + page.HEATMAP_STYLE)


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
