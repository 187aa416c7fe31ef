"""Write a simulation's results: results.json, report.md, report.html and PNG plots.

Plots are drawn on bare matplotlib Figures with the Agg canvas: no pyplot, no GUI backend, no
global figure state, so reports can be written from any thread or process.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulators.simulate import ORACLE, UNIFORM, SimulationResult, SummaryRow

SUMMARY_HEADER = ("policy", "mean reward", "regret", "vs uniform", "vs oracle")
_DEFINITIONS = (
    "mean reward: observed click-through rate. regret: cumulative expected regret against the "
    "oracle (true click probabilities, no click noise). vs uniform: lift of the expected CTR "
    "over uniform random choice. vs oracle: expected CTR as a share of the oracle's."
)


def format_row(row: SummaryRow) -> tuple[str, ...]:
    """One summary row as the strings of SUMMARY_HEADER, shared by the reports and the CLI."""
    return (
        row.policy,
        f"{row.mean_reward:.4f}",
        f"{row.regret:.1f}",
        f"{row.lift_vs_uniform:+.1%}",
        f"{row.share_of_oracle:.1%}",
    )


def write_report(result: SimulationResult, out_dir: str | Path) -> Path:
    """Write every report file into out_dir (created if needed); returns the HTML report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN in a curve is a bug to see now, not a null to puzzle over later.
    (out / "results.json").write_text(json.dumps(result.to_dict(), allow_nan=False) + "\n")

    for file_name, (title, draw) in PLOTS.items():
        FigureCanvasAgg(draw(result, title)).print_png(out / file_name)

    rows = [format_row(row) for row in result.summary()]
    (out / "report.md").write_text(_markdown(result, rows))
    report = out / "report.html"
    report.write_text(_html(result, rows, out))
    return report


def _title(result: SimulationResult) -> str:
    return f"Simulation: {result.env_name} environment"


def _parameters(result: SimulationResult) -> str:
    drift = "none" if result.drift_steps is None else f"over {result.drift_steps} steps"
    new_arm = (
        "none" if result.new_arm_at is None
        else f"{result.arm_names[-1]} at step {result.new_arm_at}"
    )
    return (
        f"steps {result.steps}, batch size {result.batch_size}, seed {result.seed}, "
        f"arms {len(result.arm_names)}, drift {drift}, new arm {new_arm}"
    )


def _markdown(result: SimulationResult, rows: list[tuple[str, ...]]) -> str:
    lines = [
        f"# {_title(result)}",
        "",
        _parameters(result),
        "",
        "| " + " | ".join(SUMMARY_HEADER) + " |",
        "|" + "---|" * len(SUMMARY_HEADER),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        _DEFINITIONS,
        "",
        *(f"![{title}]({file_name})" for file_name, (title, _) in PLOTS.items()),
    ]
    return "\n".join(lines) + "\n"


def _html(result: SimulationResult, rows: list[tuple[str, ...]], out: Path) -> str:
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in SUMMARY_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    # Images are embedded so the one HTML file can be mailed or attached on its own.
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}">'
        for name, (title, _) in PLOTS.items()
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(_title(result))}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em}"
        "td:not(:first-child){text-align:right}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(_title(result))}</h1><p>{html.escape(_parameters(result))}</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>{html.escape(_DEFINITIONS)}</p>{images}</body></html>\n"
    )


def _style(name: str) -> dict[str, str]:
    # Baselines are drawn in grey so the learning policies stand out.
    if name == ORACLE:
        return {"color": "black", "linestyle": ":"}
    if name == UNIFORM:
        return {"color": "grey", "linestyle": "--"}
    return {}


def _cumulative_reward(result: SimulationResult, title: str) -> Figure:
    figure = Figure(figsize=(8, 5), layout="constrained")
    ax = figure.add_subplot()
    for name, run in result.runs.items():
        ax.plot(result.batch_ends, run.cumulative_reward, label=name, **_style(name))
    ax.set(xlabel="step", ylabel="cumulative clicks", title=title)
    ax.legend()
    return figure


def _cumulative_regret(result: SimulationResult, title: str) -> Figure:
    figure = Figure(figsize=(8, 5), layout="constrained")
    ax = figure.add_subplot()
    for name, run in result.runs.items():
        if name != ORACLE:  # identically zero
            ax.plot(result.batch_ends, run.cumulative_regret, label=name, **_style(name))
    ax.set(xlabel="step", ylabel="cumulative expected regret", title=title)
    ax.legend()
    return figure


def _allocation(result: SimulationResult, title: str) -> Figure:
    """One stacked-share panel per run (uniform left out: it is flat by construction)."""
    names = [name for name in result.runs if name != UNIFORM]
    figure = Figure(figsize=(8, 1.8 * len(names) + 1), layout="constrained")
    axes = figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    n_arms = len(result.arm_names)
    palette = colormaps["tab10" if n_arms <= 10 else "tab20"]
    colors = [palette(a % palette.N) for a in range(n_arms)]
    for ax, name in zip(axes, names):
        counts = result.runs[name].allocation
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.stackplot(result.batch_ends, share.T, labels=result.arm_names, colors=colors)
        ax.set(ylabel="share", ylim=(0, 1), title=name)
    axes[-1].set_xlabel("step")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", title="arm")
    figure.suptitle(title)
    return figure


# File name -> (title, how to draw it), in report order.
PLOTS: dict[str, tuple[str, Callable[[SimulationResult, str], Figure]]] = {
    "cumulative_reward.png": ("Cumulative reward", _cumulative_reward),
    "cumulative_regret.png": ("Cumulative expected regret", _cumulative_regret),
    "allocation.png": ("Arm allocation over time", _allocation),
}
