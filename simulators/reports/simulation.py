"""Write a simulation's results: results.json, report.md, report.html and PNG plots
(through ``simulators.reports.page``); with the engines' campaign reports, their outcome rates
per group and the lift on each."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from simulators.reports import page
from simulators.simulate import ORACLE, UNIFORM, SimulationResult, SlotRow, SummaryRow

SUMMARY_HEADER = ("policy", "mean reward", "regret", "vs uniform", "vs oracle")
SLOT_HEADER = ("slot", "policy", "matches oracle", "loss per decision", "top arm (last window)")
_DEFINITIONS = (
    "mean reward: observed reward per decision (a click; the four-slot campaign: its email "
    "reward, as the engine's join learns it from the simulated sends and outcomes). regret: "
    "cumulative expected regret against the oracle (expected rewards, no outcome noise). vs "
    "uniform: lift of the expected reward over uniform random choice. vs oracle: expected "
    "reward as a share of the oracle's."
)
_SLOT_DEFINITIONS = (
    "Per slot: matches oracle is the share of decisions on the oracle's arm; loss per decision "
    "is the click probability lost by this slot's choice with the other slots' choices held."
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


def format_slot_row(row: SlotRow) -> tuple[str, ...]:
    """One per-slot row as the strings of SLOT_HEADER."""
    return (
        row.slot,
        row.policy,
        f"{row.oracle_agreement:.1%}",
        f"{row.loss:.4f}",
        f"{row.top_arm} ({row.top_share:.0%})",
    )


def write_report(result: SimulationResult, out_dir: str | Path,
                 reports: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write every report file into out_dir (created if needed); returns the HTML report's path.
    ``reports``: per run of an email campaign, its engine's ``CampaignReport`` as JSON, shown
    as outcome tables (``page.outcome_rows``) and bias-audit heatmaps (``page.bias_audit``,
    where its decisions carry segments); by default the result's own."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN in a curve is a bug to see now, not a null to puzzle over later.
    (out / "results.json").write_text(json.dumps(result.to_dict(), allow_nan=False) + "\n")

    for file_name, (title, draw) in PLOTS.items():
        page.write_png(draw(result, title), out / file_name)

    rows = [format_row(row) for row in result.summary()]
    slot_rows = [format_slot_row(row) for row in result.slot_summary()]
    chosen = result.reports if reports is None else reports
    outcomes = {name: page.outcome_rows(r) for name, r in chosen.items()}
    audits = {name: page.bias_audit(r, title=f"Bias audit: {name}") for name, r in chosen.items()}
    (out / "report.md").write_text(_markdown(result, rows, slot_rows, outcomes, audits))
    report = out / "report.html"
    report.write_text(_html(result, rows, slot_rows, outcomes, audits, out))
    return report


def _title(result: SimulationResult) -> str:
    return f"Simulation: {result.env_name} environment"


def _parameters(result: SimulationResult) -> str:
    drift = "none" if result.drift_steps is None else f"over {result.drift_steps} steps"
    new_arm = "none" if result.new_arm is None else f"{result.new_arm} at step {result.new_arm_at}"
    slots = ", ".join(f"{slot} ({len(arms)} arms)" for slot, arms in result.slots.items())
    return (
        f"steps {result.steps}, batch size {result.batch_size}, seed {result.seed}, "
        f"slots {slots}, drift {drift}, new arm {new_arm}, "
        f"reward delay {result.delay} batches"
    )


def _markdown(result: SimulationResult, rows: list[tuple[str, ...]],
              slot_rows: list[tuple[str, ...]],
              outcomes: dict[str, list[tuple[str, ...]]],
              audits: dict[str, tuple[list[str], str]]) -> str:
    lines = [
        f"# {_title(result)}",
        "",
        _parameters(result),
        "",
        page.markdown_table(SUMMARY_HEADER, rows),
        "",
        _DEFINITIONS,
        "",
        "## Per slot",
        "",
        page.markdown_table(SLOT_HEADER, slot_rows),
        "",
        _SLOT_DEFINITIONS,
        "",
    ]
    for name, table in outcomes.items():
        lines += [f"## Outcomes: {name}", "", page.markdown_table(page.OUTCOME_HEADER, table), ""]
    if outcomes:
        lines += [page.OUTCOME_NOTE, ""]
    for audit, _ in audits.values():
        lines += audit
    lines += page.markdown_images(PLOTS)
    return "\n".join(lines) + "\n"


def _html(result: SimulationResult, rows: list[tuple[str, ...]],
          slot_rows: list[tuple[str, ...]], outcomes: dict[str, list[tuple[str, ...]]],
          audits: dict[str, tuple[list[str], str]], out: Path) -> str:
    tables = "".join(f"<h2>Outcomes: {html.escape(name)}</h2>"
                     f"{page.html_table(page.OUTCOME_HEADER, table)}"
                     for name, table in outcomes.items())
    note = f"<p>{html.escape(page.OUTCOME_NOTE)}</p>" if outcomes else ""
    body = (
        f"<p>{html.escape(_parameters(result))}</p>"
        f"{page.html_table(SUMMARY_HEADER, rows)}<p>{html.escape(_DEFINITIONS)}</p>"
        f"<h2>Per slot</h2>{page.html_table(SLOT_HEADER, slot_rows)}"
        f"<p>{html.escape(_SLOT_DEFINITIONS)}</p>{tables}{note}"
        f"{''.join(audit for _, audit in audits.values())}{page.titled_images(out, PLOTS)}"
    )
    return page.html_page(_title(result), body, page.STYLE + page.NUMBERS_RIGHT + page.IMAGES
                          + page.HEATMAP_STYLE)


class _LineStyle(TypedDict, total=False):
    """The keyword arguments of ``Axes.plot`` that set a baseline's look."""

    color: str
    linestyle: str


def _style(name: str) -> _LineStyle:
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
    """A stacked-share panel per run (rows) and slot (columns); uniform is left out: it is
    flat by construction."""
    names = [name for name in result.runs if name != UNIFORM]
    slots = list(result.slots)
    figure = Figure(figsize=(4 + 4 * len(slots), 1.8 * len(names) + 1), layout="constrained")
    axes = figure.subplots(len(names), len(slots), sharex=True, squeeze=False)
    for column, slot in enumerate(slots):
        arms = result.slots[slot]
        # Many arms (24 send hours) get a cyclic map: neighbouring hours, neighbouring colours.
        palette = colormaps["tab10" if len(arms) <= 10 else "twilight"]
        colors = [palette(a % palette.N if len(arms) <= 10 else a / len(arms))
                  for a in range(len(arms))]
        for row, name in enumerate(names):
            ax = axes[row, column]
            counts = result.runs[name].allocation[slot]
            share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            ax.stackplot(result.batch_ends, share.T, labels=arms, colors=colors)
            ax.set(ylim=(0, 1), title=f"{name}: {slot}" if len(slots) > 1 else name)
            if column == 0:
                ax.set_ylabel("share")
        axes[-1, column].set_xlabel("step")
        axes[-1, column].legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), title=slot,
                                ncols=min(len(arms), 6), fontsize="x-small")
    figure.suptitle(title)
    return figure


# File name -> (title, how to draw it), in report order.
PLOTS: dict[str, tuple[str, Callable[[SimulationResult, str], Figure]]] = {
    "cumulative_reward.png": ("Cumulative reward", _cumulative_reward),
    "cumulative_regret.png": ("Cumulative expected regret", _cumulative_regret),
    "allocation.png": ("Arm allocation over time", _allocation),
}
