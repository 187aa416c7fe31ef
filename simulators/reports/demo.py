"""What a weekly send of the demo produced (``SendResult``) and the demo's report folder:
report.html (tables and embedded PNGs), report.md, results.json, and the PNGs: cumulative
expected clicks against the oracle and uniform random, arm allocation per slot and send, and
the holdout lift per send with its interval; the service's outcome rates per group and their
lift."""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.figure import Figure

from simulators.reports.page import (
    OUTCOME_HEADER,
    OUTCOME_NOTE,
    html_page,
    html_table,
    markdown_table,
    outcome_rows,
    png_data_uri,
)


@dataclass
class SendResult:
    """One weekly send, from the simulator's side (true click probabilities and clicks)."""

    send: int
    decisions: int
    model_version: int
    holdout: int
    clicks_personalized: int
    clicks_holdout: int
    expected: float  # mean true click probability of the choices made (personalized)
    oracle: float  # mean click probability of the best combination
    uniform: float  # mean click probability of uniformly random choices
    lift: tuple[float, float, float] | None  # personalized minus holdout CTR, 95% interval
    seconds: float
    events_per_s: float
    dead_letters: int
    allocation: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ctr_personalized(self) -> float:
        n = self.decisions - self.holdout
        return self.clicks_personalized / n if n else math.nan

    @property
    def ctr_holdout(self) -> float:
        return self.clicks_holdout / self.holdout if self.holdout else math.nan


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _interval(item: dict[str, Any] | None) -> str:
    if not item:
        return "n/a"
    return (f"{100 * item['estimate']:+.2f} pts [{100 * item['low']:+.2f}, "
            f"{100 * item['high']:+.2f}]")


def send_rows(results: list[SendResult]) -> list[tuple[str, ...]]:
    """The per-send table, as the CLI's live table and the report show it."""
    rows: list[tuple[str, ...]] = []
    for r in results:
        lift = "n/a" if r.lift is None else (
            f"{100 * r.lift[0]:+.2f} [{100 * r.lift[1]:+.2f}, {100 * r.lift[2]:+.2f}]")
        rows.append((str(r.send), f"{r.decisions:,}", _pct(r.ctr_personalized),
                     _pct(r.ctr_holdout), lift, str(r.model_version), _pct(r.expected),
                     _pct(r.oracle), _pct(r.uniform), f"{r.events_per_s:,.0f}",
                     str(r.dead_letters)))
    return rows


LIVE_HEADER = ("send", "decisions", "CTR pers.", "CTR hold.", "lift pts [95%]", "model",
               "events/s", "dead")
_LIVE_COLUMNS = (0, 1, 2, 3, 4, 5, 9, 10)


def live_rows(results: list[SendResult]) -> list[tuple[str, ...]]:
    """The columns of ``send_rows`` that fit a terminal, for the CLI's live table."""
    return [tuple(row[i] for i in _LIVE_COLUMNS) for row in send_rows(results)]


SEND_HEADER = ("send", "decisions", "CTR personalized", "CTR holdout", "lift, pts [95%]",
               "model version", "expected CTR", "oracle CTR", "uniform CTR", "events/s",
               "dead letters")
BIAS_HEADER = ("slot", "segment", "value", "impressions", "CTR", "flagged")
_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")


def write_report(results: list[SendResult], service_report: dict[str, Any], out: Path, *,
                 subscribers: int, seed: int) -> Path:
    out = Path(out)
    figures = {"cumulative_reward.png": _cumulative(results),
               "allocation.png": _allocation(results),
               "lift.png": _lift(results)}
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
    (out / "results.json").write_bytes(orjson.dumps(
        {"subscribers": subscribers, "seed": seed, "sends": [asdict(r) for r in results],
         "service_report": service_report}, option=orjson.OPT_INDENT_2))
    rows = send_rows(results)
    outcomes = outcome_rows(service_report)
    bias = _bias_rows(service_report)
    slots = [s["slot"] for s in service_report["slots"]]
    title = f"cmab demo: {subscribers:,} subscribers, {len(results)} weekly sends, seed {seed}"
    summary = (f"Holdout lift over all learned sends: {_interval(service_report.get('lift'))}; "
               f"personalized CTR {_interval_plain(service_report.get('personalized_ctr'))}, "
               f"holdout CTR {_interval_plain(service_report.get('holdout_ctr'))}.")
    md = [f"# {title}", "", summary, "", "## Sends", "", markdown_table(SEND_HEADER, rows), "",
          "## Outcomes", "", markdown_table(OUTCOME_HEADER, outcomes), "", OUTCOME_NOTE, "",
          "## Slots", "", ", ".join(slots), "", "## Bias audit", "",
          markdown_table(BIAS_HEADER, bias), "",
          *[f"![{n}]({n})" for n in figures]]
    (out / "report.md").write_text("\n".join(md) + "\n")
    images = "".join(
        f'<figure><img alt="{n}" src="{png_data_uri(out / n)}"></figure>' for n in figures)
    body = (f"<p>{html.escape(summary)}</p><h2>Sends</h2>"
            f"{html_table(SEND_HEADER, rows)}<h2>Outcomes</h2>"
            f"{html_table(OUTCOME_HEADER, outcomes)}<p>{html.escape(OUTCOME_NOTE)}</p>"
            f"<h2>Slots</h2>"
            f"<p>{html.escape(', '.join(slots))}</p><h2>Bias audit</h2>"
            f"{html_table(BIAS_HEADER, bias)}{images}")
    page = html_page(title, body, _STYLE)
    path = out / "report.html"
    path.write_text(page)
    return path


def _interval_plain(item: dict[str, Any] | None) -> str:
    if not item:
        return "n/a"
    return f"{_pct(item['estimate'])} [{_pct(item['low'])}, {_pct(item['high'])}]"


def _bias_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(s["slot"], seg["segment"], seg["value"], f"{seg['impressions']:,}",
             _interval_plain(seg.get("ctr")), "yes: " + (seg.get("reason") or "")
             if seg["flagged"] else "no")
            for s in report["slots"] for seg in s["segments"]]


def _cumulative(results: list[SendResult]) -> Figure:
    sends = [r.send for r in results]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for label, values in (("oracle", [r.oracle for r in results]),
                          ("engine (personalized)", [r.expected for r in results]),
                          ("uniform random", [r.uniform for r in results])):
        ax.plot(sends, np.cumsum([v * r.decisions for v, r in zip(values, results)]),
                marker="o", label=label)
    ax.set(xlabel="weekly send", ylabel="cumulative expected clicks",
           title="Cumulative reward against the oracle and uniform random")
    ax.legend()
    return fig


def _allocation(results: list[SendResult]) -> Figure:
    slots = list(results[0].allocation)
    fig = Figure(figsize=(4 * len(slots), 3.6))
    axes = fig.subplots(1, len(slots), squeeze=False)
    for ax, slot in zip(axes[0], slots):
        arms = sorted({a for r in results for a in r.allocation[slot]})
        bottom = np.zeros(len(results))
        for arm in arms:
            share = np.array([r.allocation[slot].get(arm, 0) / r.decisions for r in results])
            ax.bar([r.send for r in results], share, bottom=bottom, label=arm)
            bottom += share
        ax.set(title=slot, xlabel="send", ylabel="share of subscribers")
        if len(arms) <= 8:
            ax.legend(fontsize=7)
    fig.suptitle("Arm allocation per slot")
    fig.tight_layout()
    return fig


def _lift(results: list[SendResult]) -> Figure:
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    shown = [(r.send, r.lift) for r in results if r.lift is not None]
    if shown:
        est = np.array([100 * lift[0] for _, lift in shown])
        err = np.array([[100 * (lift[0] - lift[1]) for _, lift in shown],
                        [100 * (lift[2] - lift[0]) for _, lift in shown]])
        ax.errorbar([send for send, _ in shown], est, yerr=err, fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=1)
    ax.set(xlabel="weekly send", ylabel="CTR points", title="Holdout lift (95% interval)")
    return fig
