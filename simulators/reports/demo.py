"""What a weekly send of the demo produced (``SendResult``) and the demo's report folder:
report.html (tables, the bias audit's heatmaps and embedded PNGs), report.md, results.json,
and the PNGs: cumulative expected reward against the oracle and uniform random, arm
allocation per slot and send, and the holdout lift of the click rate per send with its
interval; per send the rate of every outcome type per group and its lift; the service's
outcome rates per group and their lift."""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.figure import Figure

from bandit.engine.report import rate_lift
from bandit.models import OUTCOME_TYPES, Interval
from simulators.reports.page import (
    HEATMAP_STYLE,
    OUTCOME_HEADER,
    OUTCOME_NOTE,
    bias_audit,
    html_page,
    html_table,
    markdown_table,
    outcome_rows,
    png_data_uri,
)


@dataclass
class SendResult:
    """One weekly send, from the simulator's side: the events the campaign learns
    (``OutcomeColumns.realized``) and the truth's expected reward.

    reached: per outcome type, [personalized, holdout] decisions with at least one learned
    event of the type; reward: [personalized, holdout] total reward; expected: the mean
    expected reward of the personalized choices; oracle, uniform: the mean expected reward of
    the best combination and of uniformly random choices over the whole list."""

    send: int
    decisions: int
    model_version: int
    holdout: int
    reached: dict[str, list[int]]
    reward: list[float]
    expected: float
    oracle: float
    uniform: float
    seconds: float
    events_per_s: float
    dead_letters: int
    allocation: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def personalized(self) -> int:
        return self.decisions - self.holdout

    def rate(self, kind: str, group: int) -> float:
        """The share of group 0 (personalized) or 1 (holdout) with a learned ``kind``."""
        n = (self.personalized, self.holdout)[group]
        return self.reached[kind][group] / n if n else math.nan

    def lift(self, kind: str) -> Interval | None:
        """Personalized minus holdout rate of ``kind`` in this send, 95% Newcombe interval
        (not clustered: one send mails each subscriber once, so its decisions are
        independent; the service's report, over every send, clusters by subscriber); None
        unless both groups have decisions."""
        p, h = self.reached[kind]
        return rate_lift((p, self.personalized), (h, self.holdout))

    @property
    def ctr_personalized(self) -> float:
        return self.rate("click", 0)

    @property
    def ctr_holdout(self) -> float:
        return self.rate("click", 1)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _points(lift: Interval | None) -> str:
    return "n/a" if lift is None else (
        f"{100 * lift.estimate:+.2f} [{100 * lift.low:+.2f}, {100 * lift.high:+.2f}]")


def _interval(item: dict[str, Any] | None) -> str:
    if not item:
        return "n/a"
    return f"{item['estimate']:+.4f} [{item['low']:+.4f}, {item['high']:+.4f}]"


def send_rows(results: list[SendResult]) -> list[tuple[str, ...]]:
    """The per-send table of SEND_HEADER (the headline: click rates and their lift)."""
    return [(str(r.send), f"{r.decisions:,}", _pct(r.ctr_personalized), _pct(r.ctr_holdout),
             _points(r.lift("click")), str(r.model_version), f"{r.expected:.4f}",
             f"{r.oracle:.4f}", f"{r.uniform:.4f}", f"{r.events_per_s:,.0f}",
             str(r.dead_letters)) for r in results]


def outcome_send_rows(results: list[SendResult]) -> list[tuple[str, ...]]:
    """Per send and outcome type (OUTCOME_SEND_HEADER): each group's rate and the lift."""
    return [(str(r.send), kind, _pct(r.rate(kind, 0)), _pct(r.rate(kind, 1)),
             _points(r.lift(kind))) for r in results for kind in OUTCOME_TYPES]


# The live table: per send four lines (personalized rate, holdout rate, lift in points, the
# click lift's 95% interval), a column per outcome type, the click rate first (the headline).
_SHORT = {"open": "open", "click": "click", "conversion": "conv.", "unsubscribe": "unsub.",
          "complaint": "compl.", "bounce": "bounce"}
_LIVE_TYPES = ("click", *(kind for kind in OUTCOME_TYPES if kind != "click"))
LIVE_HEADER = ("send", "", *(_SHORT[kind] for kind in _LIVE_TYPES), "model", "events/s",
               "dead")
_LIVE_LABELS = "pers.\nhold.\nlift pts\n95%"


def _live_cell(r: SendResult, kind: str) -> str:
    lift = r.lift(kind)
    lines = [_pct(r.rate(kind, 0)), _pct(r.rate(kind, 1)),
             "n/a" if lift is None else f"{100 * lift.estimate:+.2f}"]
    if kind == "click" and lift is not None:
        lines.append(f"[{100 * lift.low:+.2f}, {100 * lift.high:+.2f}]")
    return "\n".join(lines)


def live_rows(results: list[SendResult]) -> list[tuple[str, ...]]:
    """The CLI's live table (LIVE_HEADER): per send and outcome type a cell of four lines
    (personalized and holdout rate, lift in points, the click lift's interval), then the
    model version, events/s and dead letters."""
    return [(str(r.send), _LIVE_LABELS, *(_live_cell(r, kind) for kind in _LIVE_TYPES),
             str(r.model_version), f"{r.events_per_s:,.0f}", str(r.dead_letters))
            for r in results]


SEND_HEADER = ("send", "decisions", "CTR personalized", "CTR holdout", "lift, pts [95%]",
               "model version", "expected reward", "oracle reward", "uniform reward",
               "events/s", "dead letters")
OUTCOME_SEND_HEADER = ("send", "outcome", "personalized", "holdout", "lift, pts [95%]")
SEND_NOTE = (
    "Per send, from the simulated subscribers: the share of decisions with a learned event of "
    "each type (CTR: a learned click; machine opens and link-scanner clicks are not learned) "
    "and the lift, personalized minus holdout (percentage points, Newcombe 95% interval: "
    "within one send each subscriber appears once, so it needs no clustering). "
    "Expected, oracle and uniform reward: the truth's expected reward per decision of the "
    "personalized choices, the best combination, and uniformly random choices.")
_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
          + HEATMAP_STYLE)


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
    per_send = outcome_send_rows(results)
    outcomes = outcome_rows(service_report)
    audit_md, audit_html = bias_audit(service_report)
    slots = [s["slot"] for s in service_report["slots"]]
    title = f"cmab demo: {subscribers:,} subscribers, {len(results)} weekly sends, seed {seed}"
    click = service_report.get("outcome_lift", {}).get("click", {})
    summary = (f"Over all learned sends: click rate lift {_points_item(click.get('lift'))} "
               f"points (95% fixed-horizon), {_points_item(click.get('always_valid'))} "
               f"(95% always-valid), both clustered by subscriber; reward per decision, "
               f"personalized {_interval(service_report.get('personalized_ctr'))}, holdout "
               f"{_interval(service_report.get('holdout_ctr'))}, lift "
               f"{_interval(service_report.get('lift'))} (fixed-horizon), "
               f"{_interval(service_report.get('lift_always_valid'))} (always-valid).")
    md = [f"# {title}", "", summary, "", "## Sends", "", markdown_table(SEND_HEADER, rows), "",
          "## Outcomes per send", "", markdown_table(OUTCOME_SEND_HEADER, per_send), "",
          SEND_NOTE, "",
          "## Outcomes", "", markdown_table(OUTCOME_HEADER, outcomes), "", OUTCOME_NOTE, "",
          "## Slots", "", ", ".join(slots), "", *audit_md,
          *[f"![{n}]({n})" for n in figures]]
    (out / "report.md").write_text("\n".join(md) + "\n")
    images = "".join(
        f'<figure><img alt="{n}" src="{png_data_uri(out / n)}"></figure>' for n in figures)
    body = (f"<p>{html.escape(summary)}</p><h2>Sends</h2>"
            f"{html_table(SEND_HEADER, rows)}<h2>Outcomes per send</h2>"
            f"{html_table(OUTCOME_SEND_HEADER, per_send)}<p>{html.escape(SEND_NOTE)}</p>"
            f"<h2>Outcomes</h2>"
            f"{html_table(OUTCOME_HEADER, outcomes)}<p>{html.escape(OUTCOME_NOTE)}</p>"
            f"<h2>Slots</h2>"
            f"<p>{html.escape(', '.join(slots))}</p>{audit_html}{images}")
    page = html_page(title, body, _STYLE)
    path = out / "report.html"
    path.write_text(page)
    return path


def _points_item(item: dict[str, Any] | None) -> str:
    return "n/a" if not item else _points(Interval.model_validate(item))


def _cumulative(results: list[SendResult]) -> Figure:
    sends = [r.send for r in results]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for label, values in (("oracle", [r.oracle for r in results]),
                          ("engine (personalized)", [r.expected for r in results]),
                          ("uniform random", [r.uniform for r in results])):
        ax.plot(sends, np.cumsum([v * r.decisions for v, r in zip(values, results, strict=True)]),
                marker="o", label=label)
    ax.set(xlabel="weekly send", ylabel="cumulative expected reward",
           title="Cumulative reward against the oracle and uniform random")
    ax.legend()
    return fig


def _allocation(results: list[SendResult]) -> Figure:
    slots = list(results[0].allocation)
    fig = Figure(figsize=(4 * len(slots), 3.6))
    axes = fig.subplots(1, len(slots), squeeze=False)
    for ax, slot in zip(axes[0], slots, strict=True):
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
    shown = [(r.send, lift) for r in results if (lift := r.lift("click")) is not None]
    if shown:
        est = np.array([100 * lift.estimate for _, lift in shown])
        err = np.array([[100 * (lift.estimate - lift.low) for _, lift in shown],
                        [100 * (lift.high - lift.estimate) for _, lift in shown]])
        ax.errorbar([send for send, _ in shown], est, yerr=err, fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=1)
    ax.set(xlabel="weekly send", ylabel="click rate points",
           title="Holdout lift of the click rate per send (95% Newcombe interval)")
    return fig
