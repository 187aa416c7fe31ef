"""The web console's files (``ASSETS``: plain HTML, CSS and JavaScript, served by the app
from the package, no CDN and no build step) and the numbers of its bias-audit heatmap,
which the static reports of ``cmab demo`` and ``cmab simulate`` draw too.

The heatmap is the audit as a grid: a row per segment value, a column per arm of the slot,
each cell the share of the value's learned decisions that went to the arm (a row sums to 1),
above them the slot's overall allocation; a row the audit flagged (allocation far from the
overall, or a reward rate unlike the segment's other values: ``bandit.engine.report``) is
marked with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

ASSETS = Path(__file__).parent / "assets"


class HeatmapRow(TypedDict):
    segment: str
    value: str
    impressions: int
    shares: list[float]  # per arm, in the heatmap's arm order
    flagged: bool
    reason: str | None


class Heatmap(TypedDict):
    slot: str
    arms: list[str]  # the slot's arms, retired ones too, in the slot's order
    active: list[bool]
    overall: list[float]  # the slot's share of each arm over every decision
    rows: list[HeatmapRow]


def allocation_heatmap(slot: Mapping[str, Any]) -> Heatmap:
    """The bias audit of one slot report (``SlotReport`` as JSON) as a segment value x arm
    grid of allocation shares, rows in the report's order (by segment, then value).

    >>> slot = {"slot": "artwork", "arms": [{"arm": "calm", "active": True, "share": 0.75},
    ...                                     {"arm": "action", "active": False, "share": 0.25}],
    ...         "segments": [{"segment": "region", "value": "eu", "impressions": 60,
    ...                       "allocation": {"calm": 1.0}, "flagged": True, "reason": "far"}]}
    >>> heatmap = allocation_heatmap(slot)
    >>> heatmap["arms"], heatmap["active"], heatmap["overall"]
    (['calm', 'action'], [True, False], [0.75, 0.25])
    >>> heatmap["rows"][0]["shares"], heatmap["rows"][0]["reason"]
    ([1.0, 0.0], 'far')
    """
    arms = [a["arm"] for a in slot["arms"]]
    return Heatmap(
        slot=slot["slot"], arms=arms, active=[bool(a["active"]) for a in slot["arms"]],
        overall=[float(a["share"]) for a in slot["arms"]],
        rows=[HeatmapRow(segment=s["segment"], value=s["value"],
                         impressions=int(s["impressions"]),
                         shares=[float(s["allocation"].get(arm, 0.0)) for arm in arms],
                         flagged=bool(s["flagged"]), reason=s.get("reason"))
              for s in slot["segments"]])


__all__ = ["ASSETS", "Heatmap", "HeatmapRow", "allocation_heatmap"]
