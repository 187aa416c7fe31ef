"""Decision JSON: the one batch writer (``DecisionBatch.ndjson``) and the one single-decision
writer (``one_json``), which write the same bytes for the same decision."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from bandit.kernels.text import interleave, row_bounds
from bandit.models import Contribution, Decision, DecisionRequest, Impression, SlotChoice

if TYPE_CHECKING:
    from bandit.engine.decisionlog import DecisionLog


@dataclass(frozen=True)
class OneDecision:
    """A single decision: its JSON text (``one_json``: ``DecisionBatch.ndjson``'s line), and per
    slot, in campaign order, the slot's name and the chosen arm's id (for metrics)."""

    json: str
    campaign: str
    slots: list[str]
    arms: list[str]
    log: DecisionLog | None = None  # when the engine has a decision sink


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # what a JSON string must escape


def _json_strings(values: Sequence[str]) -> bytes:
    """The JSON texts of strings, separated by newlines (which no JSON text holds raw), as
    orjson writes them; one call for the whole column when none needs escaping."""
    if _JSON_ESCAPED.search("".join(values)) is None:
        return ('"' + '"\n"'.join(values) + '"').encode()
    return b"\n".join(orjson.dumps(v) for v in values)


@dataclass(frozen=True)
class SlotColumns:
    """One slot's answers for a batch, as arrays (n,); with a decision sink set, also every
    arm's probability (n, k) and the eligible arms (n, k) bool (``DecisionLog``)."""

    slot: str
    arm_ids: list[str]
    arms: np.ndarray
    propensity: np.ndarray
    expected_reward: np.ndarray
    exploration_bonus: np.ndarray
    explanations: list[list[Contribution] | None] | None
    probabilities: np.ndarray | None = None
    eligible: np.ndarray | None = None


@dataclass(frozen=True)
class DecisionBatch:
    """The decisions of one batch, column by column: building a pydantic object per decision
    would cost more than deciding. ``ndjson()`` writes the bytes the service sends (the one
    batch writer of decision JSON); ``lines()`` and ``decisions()`` read them back."""

    campaign: str
    decision_ids: list[str]
    user_ids: list[str]
    holdout: np.ndarray
    model_version: int
    slots: list[SlotColumns]
    log: DecisionLog | None = None  # when the engine has a decision sink

    def __len__(self) -> int:
        return len(self.decision_ids)

    def ndjson(self, end: bytes = b"\n") -> bytes:
        """Every decision's JSON text, each followed by ``end``: NDJSON as it is, or with
        ``end=b","`` a JSON array's items; the same text as ``orjson.dumps`` of the decision's
        fields. Each column's texts are written into one buffer (orjson writes a float column
        in one call) and a kernel copies the rows out of it, so no Python object is made per
        decision (benchmarks/bench_http.py, row "reference writer / ndjson")."""
        n = len(self)
        if n == 0:
            return b""
        blobs: list[bytes] = []  # column texts, each separated by a byte none of them holds
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        size = 0

        def column(blob: bytes, separator: int, rows: np.ndarray | None = None,
                   count: int = n) -> None:
            # ``rows`` picks each decision's text out of a table of ``count`` (arms, holdout).
            nonlocal size
            starts, ends = row_bounds(np.frombuffer(blob, dtype=np.uint8), separator, count)
            if rows is not None:
                starts, ends = starts[rows], ends[rows]
            bounds.append((starts + size, ends + size))
            blobs.append(blob)
            size += len(blob)

        def floats(values: np.ndarray) -> None:
            column(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1], ord(","))

        # Decision ids are 32 hex digits: the template quotes them, nothing to escape.
        column("\n".join(self.decision_ids).encode(), ord("\n"))
        column(_json_strings(self.user_ids), ord("\n"))
        column(b"false\ntrue", ord("\n"), self.holdout.astype(np.int64), 2)
        pieces = ['{"decision_id":"', '","campaign":' + orjson.dumps(self.campaign).decode()
                  + ',"user_id":', ',"holdout":',
                  ',"model_version":' + orjson.dumps(self.model_version).decode() + ',"slots":[']
        for j, s in enumerate(self.slots):
            slot = orjson.dumps(s.slot).decode()
            pieces[-1] += ("," if j else "") + '{"slot":' + slot + ',"arm":'
            column(b"\n".join(orjson.dumps(a) for a in s.arm_ids), ord("\n"), s.arms,
                   len(s.arm_ids))
            pieces.append(',"propensity":')
            floats(s.propensity)
            pieces.append(',"expected_reward":')
            floats(s.expected_reward)
            pieces.append(',"exploration_bonus":')
            floats(s.exploration_bonus)
            pieces.append(',"explanation":')
            if s.explanations is None:
                column(b"null", ord("\n"), np.zeros(n, dtype=np.int64), 1)
            else:
                column(b"\n".join(b"null" if e is None else orjson.dumps(
                    [c.model_dump() for c in e]) for e in s.explanations), ord("\n"))
            pieces.append("}")
        pieces[-1] += "]}" + end.decode()
        template = [p.encode() for p in pieces]
        piece_at = np.cumsum([0] + [len(p) for p in template], dtype=np.int64)
        starts = np.stack([b[0] for b in bounds], axis=1)
        ends = np.stack([b[1] for b in bounds], axis=1)
        out = np.empty(n * int(piece_at[-1]) + int((ends - starts).sum()), dtype=np.uint8)
        interleave(np.frombuffer(b"".join(template), dtype=np.uint8), piece_at,
                   np.frombuffer(b"".join(blobs), dtype=np.uint8), starts, ends, out)
        return out.tobytes()

    def lines(self) -> list[bytes]:
        """Each decision's JSON text (n,): ``ndjson``'s lines (no text holds a raw newline)."""
        return self.ndjson().split(b"\n")[:-1]

    def decisions(self) -> list[Decision]:
        # From the JSON text: pydantic's JSON path beats validating dicts; building a model
        # per decision is the cost: use the columns when you can.
        return [Decision.model_validate_json(line) for line in self.lines()]

    def impressions(self, requests: Sequence[DecisionRequest], ts_ms: int) -> list[Impression]:
        """The impression events of these decisions, sent at ``ts_ms``: what a sender logs
        once the messages went out. A request without consent logs no context and no
        segments (ingestion would drop them: ``strip_consentless``)."""
        slots = [(s.slot, [s.arm_ids[a] for a in s.arms.tolist()], s.propensity.tolist())
                 for s in self.slots]
        holdout = self.holdout.tolist()
        out = []
        for i, (decision_id, r) in enumerate(zip(self.decision_ids, requests, strict=True)):
            out.append(Impression(
                event_id=f"imp-{decision_id}", decision_id=decision_id,
                campaign=self.campaign, user_id=self.user_ids[i], ts=ts_ms,
                slots={slot: SlotChoice(arm=arms[i], propensity=p[i]) for slot, arms, p in slots},
                context=r.context if r.consent else None,
                segments=r.segments if r.consent else {},
                holdout=holdout[i], model_version=self.model_version))
        return out


def one_json(decision_id: str, campaign: str, user_id: str, holdout: bool, model_version: int,
             slots: list[str], arms: list[str], numbers: list[float],
             explanations: list[list[dict[str, Any]] | None]) -> str:
    """One decision's JSON text, byte for byte ``DecisionBatch.ndjson``'s line for it, in one
    ``orjson.dumps`` of its fields: the batch writer's column machinery costs more than a
    single decision, and orjson writes a float as it writes a float64 array's items.
    ``numbers`` holds per slot the propensity, expected reward and exploration bonus;
    ``explanations`` per slot its contributions' dicts (None without one)."""
    return orjson.dumps({
        "decision_id": decision_id, "campaign": campaign, "user_id": user_id,
        "holdout": holdout, "model_version": model_version,
        "slots": [{"slot": slot, "arm": arm, "propensity": float(numbers[3 * j]),
                   "expected_reward": float(numbers[3 * j + 1]),
                   "exploration_bonus": float(numbers[3 * j + 2]),
                   "explanation": explanations[j]}
                  for j, (slot, arm) in enumerate(zip(slots, arms, strict=True))]}).decode()
