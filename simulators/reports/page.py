"""The page writer every report shares: tables in Markdown and HTML, the HTML page shell, PNG
plots drawn on bare matplotlib Figures with the Agg canvas (no pyplot, no GUI backend, no
global figure state, so reports can be written from any thread or process), and PNGs embedded
in the page, so the one HTML file can be mailed or attached on its own."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bandit.models import OUTCOME_TYPES

Row = Sequence[str]

# The page's style: readable width, ruled tables, images no wider than the page.
STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em}")
NUMBERS_RIGHT = "td:not(:first-child){text-align:right}"  # every column but the first
IMAGES = "img{max-width:100%}"


def markdown_table(header: Row, rows: Sequence[Row]) -> str:
    """A Markdown table, its lines joined by newlines.

    >>> print(markdown_table(("a", "b"), [("1", "2")]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: Row, rows: Sequence[Row]) -> str:
    """An HTML table with its cells escaped, the header row in ``<thead>``.

    >>> html_table(("a",), [("<1>",)])
    '<table><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;1&gt;</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str, style: str) -> str:
    """The HTML page: ``title`` as the page's title and first heading, then ``body``."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def png_data_uri(path: Path) -> str:
    """A PNG file as a data URI, to embed in an ``<img>``."""
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"


def titled_images(out: Path, plots: dict[str, tuple[str, Any]]) -> str:
    """Each plot of ``plots`` (file name -> (title, ...)) in ``out`` as a heading and an
    embedded image, in order."""
    return "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" '
        f'src="{png_data_uri(out / name)}">'
        for name, (title, _) in plots.items()
    )


def write_png(figure: Figure, path: Path) -> None:
    """Draw a bare Figure into a PNG file with the Agg canvas."""
    FigureCanvasAgg(figure).print_png(path)


def markdown_images(plots: dict[str, tuple[str, Any]]) -> list[str]:
    """Each plot of ``plots`` (file name -> (title, ...)) as a Markdown image line."""
    return [f"![{title}]({name})" for name, (title, _) in plots.items()]


OUTCOME_HEADER = ("outcome", "personalized [95%]", "holdout [95%]",
                  "lift [95% fixed-horizon]", "lift [95% always-valid]")
OUTCOME_NOTE = (
    "Per decision: the share of decisions with at least one learned event of each type "
    "(Wilson 95% interval; n/a without decisions) and the reward (normal-approximation "
    "interval); lift is personalized minus holdout (rates: percentage points), always shown "
    "for unsubscribe and complaint, the guardrails; no events: none of either group's "
    "decisions had one. Both lift intervals cluster the variance by subscriber (a "
    "subscriber's decisions in every send are one unit): the fixed-horizon one holds when "
    "read once, at a planned end; the always-valid one (a confidence sequence) holds at "
    "every look at once, however often the report is read.")


def _rate(item: Mapping[str, Any] | None) -> str:
    if not item:
        return "n/a"
    return (f"{100 * item['estimate']:.2f}% [{100 * item['low']:.2f}, "
            f"{100 * item['high']:.2f}]")


def _number(item: Mapping[str, Any] | None, sign: str = "") -> str:
    if not item:
        return "n/a"
    return (f"{item['estimate']:{sign}.4f} [{item['low']:{sign}.4f}, "
            f"{item['high']:{sign}.4f}]")


def _points(item: Mapping[str, Any] | None) -> str:
    if not item:
        return "n/a"
    return (f"{100 * item['estimate']:+.2f} [{100 * item['low']:+.2f}, "
            f"{100 * item['high']:+.2f}]")


def outcome_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The rows of OUTCOME_HEADER for a campaign report (``CampaignReport`` as JSON, or one
    of its slots): the reward per decision, then every outcome type's rate per group and its
    lift.

    >>> rate = {"estimate": 0.5, "low": 0.25, "high": 0.75}
    >>> group = {"mean_reward": rate, "outcomes": {"click": {"interval": rate}}}
    >>> rows = outcome_rows({"groups": {"personalized": group, "holdout": group},
    ...                      "lift": {"estimate": 0.0, "low": -0.5, "high": 0.5},
    ...                      "outcome_lift": {"click": {"lift": None, "always_valid": None}}})
    >>> rows[0][3:]
    ('+0.0000 [-0.5000, +0.5000]', 'n/a')
    >>> rows[2]
    ('click', '50.00% [25.00, 75.00]', '50.00% [25.00, 75.00]', 'n/a', 'n/a')
    """
    groups = report.get("groups", {})
    personalized, holdout = groups.get("personalized", {}), groups.get("holdout", {})
    lifts = report.get("outcome_lift", {})
    rows: list[tuple[str, ...]] = [("reward", _number(personalized.get("mean_reward")),
             _number(holdout.get("mean_reward")), _number(report.get("lift"), "+"),
             _number(report.get("lift_always_valid"), "+"))]
    for kind in OUTCOME_TYPES:
        lift = lifts.get(kind)
        rows.append((kind, _rate(personalized.get("outcomes", {}).get(kind, {}).get("interval")),
                     _rate(holdout.get("outcomes", {}).get(kind, {}).get("interval")),
                     *((_points(lift["lift"]), _points(lift.get("always_valid"))) if lift
                       else ("no events", "no events"))))
    return rows
