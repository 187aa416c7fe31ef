"""Logged bandit feedback in columns, and the readers and writers that fill it.

A ``LoggedBandit`` is what every off-policy estimator reads: per event the context, the action
the logging policy took, the reward it got and the probability it was taken with. Readers:

- ``read_joined``: the project's own joined-event log (JSON lines of ``bandit.models.JoinedEvent``)
  for one slot of a campaign, contexts encoded exactly as the engine encodes them;
- ``read_dsjson`` / ``write_dsjson``: Vowpal Wabbit's decision-service JSON (``--dsjson``), so a
  joined log can be trained on offline with ``vw --cb_explore_adf --dsjson``;
- the Open Bandit Dataset, in ``simulators.offline.obd``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
from pydantic import ValidationError

from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, JoinedEvent

__all__ = ["LoggedBandit", "read_dsjson", "read_joined", "write_dsjson"]


@dataclass(frozen=True, eq=False)
class LoggedBandit:
    """Bandit feedback logged by some policy, one row per event.

    X (n, dim) float64 contexts; actions (n,) int64 in 0..n_actions-1; rewards (n,) float64;
    propensities (n,) float64 in (0, 1], the probability the logging policy gave the logged
    action; action_features (n_actions, m) or None; position (n,) int64 or None (the slot of a
    ranking the event filled, as in the Open Bandit Dataset). Names are for reports only.
    Every array is checked once, here: a bad row is named in the error.

    >>> log = LoggedBandit(np.ones((2, 1)), np.array([0, 1]), np.array([1.0, 0.0]),
    ...                    np.array([0.5, 0.5]), n_actions=2)
    >>> log.n, log.dim, log.is_uniform()
    (2, 1, True)
    """

    X: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    n_actions: int
    action_features: np.ndarray | None = None
    position: np.ndarray | None = None
    action_names: tuple[str, ...] = ()
    context_names: tuple[str, ...] = ()
    name: str = "log"
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the arrays once, at construction
        if isinstance(self.n_actions, bool) or not isinstance(self.n_actions, int | np.integer) \
                or self.n_actions < 1:
            raise InvalidInputError(f"n_actions: expected an integer >= 1, got {self.n_actions!r}")
        X = np.ascontiguousarray(self.X, dtype=np.float64)
        if X.ndim != 2:
            raise InvalidInputError(f"X: expected shape (n, dim), got {X.shape}")
        n = X.shape[0]
        if n == 0:
            raise InvalidInputError(f"{self.name}: the log has no events")
        _first_bad("X", ~np.isfinite(X).all(axis=1), "contains NaN or inf")
        actions = np.asarray(self.actions)
        if actions.shape != (n,) or not np.issubdtype(actions.dtype, np.integer):
            raise InvalidInputError(f"actions: expected ({n},) integers, got {actions.dtype} "
                                    f"{actions.shape}")
        actions = np.ascontiguousarray(actions, dtype=np.int64)
        _first_bad("actions", (actions < 0) | (actions >= self.n_actions),
                   f"expected an action in 0..{self.n_actions - 1}", actions)
        rewards = _column("rewards", self.rewards, n)
        _first_bad("rewards", ~np.isfinite(rewards), "expected a finite number", rewards)
        p = _column("propensities", self.propensities, n)
        _first_bad("propensities", ~((p > 0.0) & (p <= 1.0)), "expected a number in (0, 1]", p)
        set_(self, "n_actions", int(self.n_actions))
        set_(self, "X", X)
        set_(self, "actions", actions)
        set_(self, "rewards", rewards)
        set_(self, "propensities", p)
        if self.action_features is not None:
            F = np.ascontiguousarray(self.action_features, dtype=np.float64)
            if F.ndim != 2 or F.shape[0] != self.n_actions or not np.isfinite(F).all():
                raise InvalidInputError(f"action_features: expected a finite ({self.n_actions}, m) "
                                        f"array, got shape {F.shape}")
            set_(self, "action_features", F)
        if self.position is not None:
            pos = np.asarray(self.position)
            if pos.shape != (n,) or not np.issubdtype(pos.dtype, np.integer):
                raise InvalidInputError(f"position: expected ({n},) integers, got {pos.shape}")
            set_(self, "position", np.ascontiguousarray(pos, dtype=np.int64))
        names = tuple(self.action_names) or tuple(str(a) for a in range(self.n_actions))
        if len(names) != self.n_actions:
            raise InvalidInputError(f"action_names: expected {self.n_actions}, got {len(names)}")
        set_(self, "action_names", names)
        columns = tuple(self.context_names) or tuple(f"x{j}" for j in range(X.shape[1]))
        if len(columns) != X.shape[1]:
            raise InvalidInputError(f"context_names: expected {X.shape[1]}, got {len(columns)}")
        set_(self, "context_names", columns)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    def is_uniform(self, rtol: float = 1e-6) -> bool:
        """True when every logged propensity is 1 / n_actions: replay's condition."""
        return bool(np.allclose(self.propensities, 1.0 / self.n_actions, rtol=rtol, atol=0.0))

    def take(self, rows: np.ndarray) -> LoggedBandit:
        """The events at ``rows`` (an index array or bool mask), everything else shared."""
        return LoggedBandit(
            self.X[rows], self.actions[rows], self.rewards[rows], self.propensities[rows],
            self.n_actions, self.action_features,
            None if self.position is None else self.position[rows],
            self.action_names, self.context_names, self.name, dict(self.skipped),
        )


def _column(name: str, values: Any, n: int) -> np.ndarray:
    try:
        out = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected numbers") from None
    if out.shape != (n,):
        raise InvalidInputError(f"{name}: expected shape ({n},), got {out.shape}")
    return out


def _first_bad(name: str, bad: np.ndarray | np.bool_, reason: str,
               values: np.ndarray | None = None) -> None:
    # bad: a mask (n,); numpy's stubs type a reduction along an axis as mask or scalar.
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        got = "" if values is None else f", got {values[i].item()!r}"
        raise InvalidInputError(f"{name}: row {i}: {reason}{got}")


# -- the project's joined log ---------------------------------------------------------------


def _lines(source: str | Path | Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of the non-blank lines of a file or an iterable of lines."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            handle = path.open(encoding="utf-8")
        except OSError as error:
            raise InvalidInputError(f"{path}: cannot read: {error.strerror}") from None
        with handle:
            yield from ((i, line) for i, line in enumerate(handle, 1) if line.strip())
    else:
        yield from ((i, line) for i, line in enumerate(source, 1) if line.strip())


def read_joined(source: str | Path | Iterable[str], spec: CampaignSpec, slot: str) -> LoggedBandit:
    """One slot of a campaign from its joined log (JSON lines of ``JoinedEvent``).

    Contexts are encoded as the engine encodes them for that slot (the campaign schema, then a
    one-hot of each earlier slot it conditions on), so a policy learned offline fits the live
    one; so are the arm features (``action_features``, (k, m): the spec's arm features of the
    slot in its arm order, or one constant column when the slot declares none, as the engine
    hands them to BaRT and hybrid LinUCB). The spec must list every arm the log chose (the
    campaign's spec as it stands at the end of the log, arms added later included): a logged
    arm the spec's slot lacks is an error naming the line. Left out, and counted in
    ``skipped``: events of other campaigns, events without this slot, holdout events (their arm
    was not chosen by the policy, propensity 1 for the default arm, so no estimator can use
    them) and events without context (no consent).
    A line that is not a valid JoinedEvent is an error naming the line.
    """
    from bandit.engine import encode_slot_contexts

    names = [s.name for s in spec.slots]
    if slot not in names:
        raise InvalidInputError(f"slot: campaign {spec.name!r} has no slot {slot!r}; "
                                f"expected one of {names}")
    slot_spec = spec.slots[names.index(slot)]
    features = _arm_features(spec, slot)
    arm_index = {a.id: j for j, a in enumerate(slot_spec.arms)}
    skipped = {"other campaign": 0, "without slot": 0, "holdout": 0, "without context": 0}
    kept: list[JoinedEvent] = []
    where = source if isinstance(source, str | Path) else "joined log"
    for number, line in _lines(source):
        try:
            event = JoinedEvent.model_validate_json(line)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"]) or "line"
            raise InvalidInputError(f"{where}: line {number}: {loc}: {first['msg']}") from None
        if event.campaign != spec.name:
            skipped["other campaign"] += 1
        elif slot not in event.slots:
            skipped["without slot"] += 1
        elif event.holdout:
            skipped["holdout"] += 1
        elif event.context is None:
            skipped["without context"] += 1
        elif event.slots[slot].arm not in arm_index:
            raise InvalidInputError(
                f"{where}: line {number}: slot {slot!r} logged arm {event.slots[slot].arm!r}, "
                f"which the spec's slot does not list (its arms: {list(arm_index)}): give the "
                "campaign's spec with every arm the log chose")
        else:
            kept.append(event)
    if not kept:
        raise InvalidInputError(f"{where}: no usable event for campaign {spec.name!r}, slot "
                                f"{slot!r} (skipped: {({k: v for k, v in skipped.items() if v})})")
    X, columns = encode_slot_contexts(spec, slot, kept)
    return LoggedBandit(
        X,
        np.array([arm_index[e.slots[slot].arm] for e in kept], dtype=np.int64),
        np.array([e.rewards.get(slot, spec.default_reward) for e in kept]),
        np.array([e.slots[slot].propensity for e in kept]),
        n_actions=len(slot_spec.arms),
        action_features=features,
        action_names=tuple(arm_index),
        context_names=tuple(columns),
        name=f"{spec.name}/{slot}",
        skipped={k: v for k, v in skipped.items() if v},
    )


def _arm_features(spec: CampaignSpec, slot: str) -> np.ndarray:
    """The slot's arm features (k, m) as the engine encodes them for its policy."""
    from bandit.engine.campaign import build_campaign

    s = build_campaign(spec, np.random.default_rng(0)).slot(slot)
    if not s.spec.arm_features:
        return np.ones((len(s.arm_ids), 1))
    return s.encoder.encode([a.features for a in s.spec.arms])


# -- Vowpal Wabbit DSJSON -------------------------------------------------------------------
#
# One JSON object per line: "_label_cost" (VW minimises cost: the negated reward),
# "_label_probability" and "_label_Action" (1-based) / "_labelIndex" (0-based) for the logged
# action, "a" (the action ids, 1-based, chosen first) and "p" (their probabilities, same
# order), "c" the context: shared features as namespaces of name: value pairs and "_multi" a
# list of one feature object per action. "EventId" and "Timestamp" identify the event.

SHARED_NAMESPACE = "User"
ACTION_NAMESPACE = "Action"


def write_dsjson(log: LoggedBandit, out: str | Path | TextIO,
                 event_ids: Sequence[str] | None = None) -> int:
    """Write ``log`` as DSJSON lines (cost = -reward); returns the number of lines.

    Only the logged action's probability is known, so ``p`` lists it first and spreads the
    rest evenly over the other actions: VW reads ``_label_probability`` for learning and
    ``p`` only for its own exploration statistics. Each action's features are its name and,
    when the log has them, its ``action_features``.
    """
    ids = event_ids if event_ids is not None else [f"{log.name}-{i}" for i in range(log.n)]
    if len(ids) != log.n:
        raise InvalidInputError(f"event_ids: expected {log.n}, got {len(ids)}")
    multi = []
    for a, name in enumerate(log.action_names):
        features: dict[str, Any] = {"id": name}
        if log.action_features is not None:
            features |= {f"f{j}": float(v) for j, v in enumerate(log.action_features[a])}
        multi.append({ACTION_NAMESPACE: features})
    k = log.n_actions
    lines = []
    for i in range(log.n):
        a = int(log.actions[i])
        p = float(log.propensities[i])
        order = [a] + [b for b in range(k) if b != a]
        rest = (1.0 - p) / (k - 1) if k > 1 else 0.0
        # Zeros too: a column that is zero everywhere still comes back from read_dsjson.
        shared = {name: float(v) for name, v in zip(log.context_names, log.X[i], strict=True)}
        record: dict[str, Any] = {
            "_label_cost": -float(log.rewards[i]),
            "_label_probability": p,
            "_label_Action": a + 1,
            "_labelIndex": a,
            "EventId": str(ids[i]),
            "Version": "1",
            "a": [b + 1 for b in order],
            "c": {SHARED_NAMESPACE: shared, "_multi": multi},
            "p": [p] + [rest] * (k - 1),
        }
        if log.position is not None:
            record["c"]["Position"] = {"position": int(log.position[i])}
        lines.append(orjson.dumps(record))
    text = b"\n".join(lines).decode() + "\n"
    if isinstance(out, str | Path):
        Path(out).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    return log.n


def read_dsjson(source: str | Path | Iterable[str], *, name: str = "dsjson") -> LoggedBandit:
    """A DSJSON log (as VW's ``--dsjson`` reads it) into columns.

    Shared features become the context columns (the union of feature names over the log in
    order of appearance, a string value ``s`` of feature ``f`` as a one-hot column ``f=s``,
    missing ones 0);
    actions are identified by position in ``_multi`` (every line must list the same number).
    Reward is ``-_label_cost``. Lines without a label (VW's predict-only events) are skipped.
    """
    where = source if isinstance(source, str | Path) else name
    rows: list[dict[str, float]] = []
    actions, costs, probs, positions = [], [], [], []
    n_actions: int | None = None
    action_names: list[str] = []
    skipped = 0
    for number, line in _lines(source):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise InvalidInputError(f"{where}: line {number}: not JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("c"), dict):
            raise InvalidInputError(
                f"{where}: line {number}: expected an object with a 'c' context")
        if "_label_cost" not in record:
            skipped += 1
            continue
        multi = record["c"].get("_multi")
        if not isinstance(multi, list) or not multi:
            raise InvalidInputError(f"{where}: line {number}: c._multi: expected a list of actions")
        if n_actions is None:
            n_actions = len(multi)
            action_names = [_action_name(m, j) for j, m in enumerate(multi)]
        elif len(multi) != n_actions:
            raise InvalidInputError(f"{where}: line {number}: c._multi: expected {n_actions} "
                                    f"actions like the first line, got {len(multi)}")
        action = _label_action(record, where, number)
        if not 0 <= action < n_actions:
            raise InvalidInputError(f"{where}: line {number}: _label_Action: expected "
                                    f"1..{n_actions}, got {action + 1}")
        cost = _finite_number(record, "_label_cost", where, number)
        prob = _finite_number(record, "_label_probability", where, number)
        if not 0.0 < prob <= 1.0:
            raise InvalidInputError(f"{where}: line {number}: _label_probability: expected a "
                                    f"number in (0, 1], got {prob!r}")
        rows.append(_shared_features(record["c"], where, number))
        pos = record["c"].get("Position")
        positions.append(pos.get("position") if isinstance(pos, dict) else None)
        actions.append(action)
        costs.append(float(cost))
        probs.append(float(prob))
    if n_actions is None:
        raise InvalidInputError(f"{where}: no labelled event")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    index = {c: j for j, c in enumerate(columns)}
    X = np.zeros((len(rows), len(columns)))
    for i, row in enumerate(rows):
        for key, value in row.items():
            X[i, index[key]] = value
    position = None
    if all(isinstance(p, int) for p in positions):
        position = np.array(positions, dtype=np.int64)
    return LoggedBandit(
        X, np.array(actions, dtype=np.int64), -np.array(costs), np.array(probs), n_actions,
        position=position, action_names=tuple(action_names), context_names=tuple(columns),
        name=name, skipped={"unlabelled": skipped} if skipped else {},
    )


def _action_name(action: Any, j: int) -> str:
    if isinstance(action, dict):
        for namespace in action.values():
            if isinstance(namespace, dict) and isinstance(namespace.get("id"), str):
                return namespace["id"]
    return str(j)


def _finite_number(record: dict[str, Any], key: str, where: Any, number: int) -> float:
    """record[key] as given (an int stays an int), once checked to be a finite number."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{where}: line {number}: {key}: expected a finite "
                                f"number, got {value!r}")
    return value


def _label_action(record: dict[str, Any], where: Any, number: int) -> int:
    if "_label_Action" in record:
        value, offset = record["_label_Action"], 1
    elif "_labelIndex" in record:
        value, offset = record["_labelIndex"], 0
    else:
        raise InvalidInputError(f"{where}: line {number}: no _label_Action or _labelIndex")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{where}: line {number}: label action: expected an integer, "
                                f"got {value!r}")
    return value - offset


def _shared_features(context: dict[str, Any], where: Any, number: int) -> dict[str, float]:
    """Flatten the shared namespaces of one context into name -> value (strings one-hot)."""
    out: dict[str, float] = {}
    for namespace, features in context.items():
        if namespace in ("_multi", "Position") or not isinstance(features, dict):
            continue
        for key, value in features.items():
            if isinstance(value, str):
                out[f"{key}={value}"] = 1.0
            elif isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out[key] = float(value)
            else:
                raise InvalidInputError(f"{where}: line {number}: c.{namespace}.{key}: expected a "
                                        f"finite number or a string, got {value!r}")
    return out
