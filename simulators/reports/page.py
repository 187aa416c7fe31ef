"""The page writer every report shares: tables in Markdown and HTML, the allocation-by-segment
heatmap (the web console's numbers, ``bandit.service.console.allocation_heatmap``; a campaign's
bias audit, an offline evaluation's targets), the HTML page
shell, PNG plots drawn on bare matplotlib Figures with the Agg canvas (no pyplot, no GUI backend, no
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
from bandit.service.console import Heatmap, allocation_heatmap

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


AUDIT_NOTE = (
    "Bias audit, per slot: each row is a segment value, each cell the share of the value's "
    "learned decisions that got the arm (a row sums to 100%), under the slot's share over every "
    "decision. ⚑ marks a value the audit flagged, with its reason: an allocation far from the "
    "slot's (total variation), or a reward rate unlike the segment's other values.")
# Cells shaded by share (the console's colours); a flagged value's cells outlined; a grid wider
# than the page (an offline log's many actions) scrolls on its own.
HEATMAP_STYLE = ("table.heatmap{display:block;overflow-x:auto;max-width:100%}"
                 "table.heatmap td.cell{min-width:3.5em}"
                 "table.heatmap th:first-child,table.heatmap td:first-child{text-align:left}"
                 "table.heatmap tr.reason td{font-size:.85em}"
                 "table.heatmap tr.flagged td{color:#b3261e}"
                 "table.heatmap tr.flagged td.cell{outline:2px solid #b3261e;outline-offset:-3px;"
                 "color:inherit}")


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


# A heatmap's wording: its count column and its first row (a campaign's decisions by
# default; an offline evaluation's logged events).
LEARNED = ("learned", "every decision")
EVENTS = ("events", "every event")


def heatmap_header(heatmap: Heatmap, words: tuple[str, str] = LEARNED) -> tuple[str, ...]:
    return ("segment = value", words[0],
            *(arm if active else f"{arm} (retired)"
              for arm, active in zip(heatmap["arms"], heatmap["active"], strict=True)))


def heatmap_rows(heatmap: Heatmap, words: tuple[str, str] = LEARNED) -> list[tuple[str, ...]]:
    """The heatmap as rows of ``heatmap_header``: the slot's allocation over every decision,
    then a row per segment value (flagged ones marked ⚑).

    >>> h = {"slot": "s", "arms": ["a", "b"], "active": [True, True], "overall": [0.5, 0.5],
    ...      "rows": [{"segment": "region", "value": "eu", "impressions": 60,
    ...                "shares": [1.0, 0.0], "flagged": True, "reason": "far"}]}
    >>> heatmap_rows(h)
    [('every decision', '', '50.0%', '50.0%'), ('⚑ region = eu', '60', '100.0%', '0.0%')]
    """
    rows = [(words[1], "", *map(_share, heatmap["overall"]))]
    rows += [(f"{'⚑ ' if r['flagged'] else ''}{r['segment']} = {r['value']}",
              f"{r['impressions']:,}", *map(_share, r["shares"])) for r in heatmap["rows"]]
    return rows


def heatmap_markdown(heatmap: Heatmap, words: tuple[str, str] = LEARNED) -> str:
    """The heatmap as a Markdown table (``|`` in names escaped), each flagged value's reason
    below it."""
    header, *rows = [tuple(cell.replace("|", "\\|") for cell in row)
                     for row in [heatmap_header(heatmap, words), *heatmap_rows(heatmap, words)]]
    reasons = [f"- ⚑ {r['segment']} = {r['value']}: {r['reason']}"
               for r in heatmap["rows"] if r["flagged"]]
    return "\n".join([markdown_table(header, rows), *([""] + reasons if reasons else [])])


def heatmap_html(heatmap: Heatmap, words: tuple[str, str] = LEARNED) -> str:
    """The heatmap as an HTML table, every name escaped: cells shaded by share, a flagged
    value's cells outlined and its reason in a row below it (``HEATMAP_STYLE``)."""
    columns = len(heatmap["arms"]) + 2
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in heatmap_header(heatmap, words))
    body = []
    for k, row in enumerate(heatmap_rows(heatmap, words)):
        flagged = k > 0 and heatmap["rows"][k - 1]["flagged"]
        shares = heatmap["overall"] if k == 0 else heatmap["rows"][k - 1]["shares"]
        cells = "".join(
            f'<td class="cell" style="background:hsl(212,70%,{97 - 55 * share:.0f}%)'
            f'{";color:#fff" if share > 0.55 else ""}">{html.escape(text)}</td>'
            for text, share in zip(row[2:], shares, strict=True))
        marked = ' class="flagged"' if flagged else ""
        body.append(f"<tr{marked}><td>{html.escape(row[0])}</td><td>{html.escape(row[1])}</td>"
                    f"{cells}</tr>")
        if flagged:
            reason = heatmap["rows"][k - 1]["reason"] or ""
            body.append(f'<tr class="flagged reason"><td colspan="{columns}">⚑ '
                        f"{html.escape(reason)}</td></tr>")
    return (f'<table class="heatmap"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def bias_audit(report: Mapping[str, Any], level: int = 2, title: str = "Bias audit"
               ) -> tuple[list[str], str]:
    """A campaign report's (``CampaignReport`` as JSON) bias audit, a heatmap per slot that has
    segment values, as Markdown lines and HTML, headed at ``level`` (slots one below);
    nothing when no slot has any."""
    return heatmap_section([h for h in map(allocation_heatmap, report["slots"]) if h["rows"]],
                           level, title, AUDIT_NOTE, "Slot")


def heatmap_section(heatmaps: Sequence[Heatmap], level: int, title: str, note: str,
                    kind: str, words: tuple[str, str] = LEARNED) -> tuple[list[str], str]:
    """Heatmaps under one heading at ``level`` with ``note``, each headed one below as
    ``kind`` and its name (a slot, a policy), as Markdown lines and HTML; nothing when there
    are none."""
    if not heatmaps:
        return [], ""
    mark = "#" * level
    md = [f"{mark} {title}", "", note, ""]
    page = f"<h{level}>{html.escape(title)}</h{level}><p>{html.escape(note)}</p>"
    for h in heatmaps:
        md += [f"{mark}# {kind} {h['slot']}", "", heatmap_markdown(h, words), ""]
        page += (f"<h{level + 1}>{kind} {html.escape(h['slot'])}</h{level + 1}>"
                 f"{heatmap_html(h, words)}")
    return md, page
