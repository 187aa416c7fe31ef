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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
from pydantic import ValidationError

from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, JoinedEvent

__all__ = ["LoggedBandit", "read_dsjson", "read_joined", "spec_arm_features", "write_dsjson"]


@dataclass(frozen=True, eq=False)
class LoggedBandit:
    """Bandit feedback logged by some policy, one row per event.

    X (n, dim) float64 contexts; actions (n,) int64 in 0..n_actions-1; rewards (n,) float64;
    propensities (n,) float64 in (0, 1], the probability the logging policy gave the logged
    action; action_features (n_actions, m) or None; position (n,) int64 or None (the slot of a
    ranking the event filled, as in the Open Bandit Dataset). Names are for reports only.
    What a decision log also records, when the source has it: probabilities (n, n_actions),
    the logging policy's whole distribution per event (a row of NaN where the source did not
    log it), event_ids (n,) and timestamps (n,) int64 epoch ms.
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
    probabilities: np.ndarray | None = None
    event_ids: tuple[str, ...] = ()
    timestamps: np.ndarray | None = None
    action_feature_names: tuple[str, ...] = ()

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
        self._check_decision_columns(n)

    def _check_decision_columns(self, n: int) -> None:
        """Validate what a decision log adds: the distributions, event ids and timestamps."""
        set_ = object.__setattr__
        if self.probabilities is not None:
            P = np.ascontiguousarray(self.probabilities, dtype=np.float64)
            if P.shape != (n, self.n_actions):
                raise InvalidInputError(f"probabilities: expected shape ({n}, {self.n_actions}), "
                                        f"got {P.shape}")
            known = ~np.isnan(P).all(axis=1)
            _first_bad("probabilities", known & ~((P >= 0.0) & (P <= 1.0)).all(axis=1),
                       "expected every probability in [0, 1] (or a row of NaN: not logged)")
            chosen = P[np.arange(n), self.actions]
            _first_bad("probabilities", known & ~np.isclose(chosen, self.propensities, rtol=1e-6,
                                                            atol=0.0),
                       "the logged action's probability differs from its propensity", chosen)
            set_(self, "probabilities", P)
        ids = tuple(self.event_ids)
        if ids and len(ids) != n:
            raise InvalidInputError(f"event_ids: expected {n}, got {len(ids)}")
        set_(self, "event_ids", ids)
        if self.timestamps is not None:
            ts = np.asarray(self.timestamps)
            if ts.shape != (n,) or not np.issubdtype(ts.dtype, np.integer):
                raise InvalidInputError(f"timestamps: expected ({n},) integers, got {ts.shape}")
            set_(self, "timestamps", np.ascontiguousarray(ts, dtype=np.int64))
        m = 0 if self.action_features is None else self.action_features.shape[1]
        names = tuple(self.action_feature_names) or tuple(f"f{j}" for j in range(m))
        if len(names) != m:
            raise InvalidInputError(f"action_feature_names: expected {m}, got {len(names)}")
        set_(self, "action_feature_names", names)

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
            None if self.probabilities is None else self.probabilities[rows],
            tuple(np.asarray(self.event_ids, dtype=object)[rows]) if self.event_ids else (),
            None if self.timestamps is None else self.timestamps[rows],
            self.action_feature_names,
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
    features, feature_names = spec_arm_features(spec, slot)
    if features is None:  # BaRT and hybrid still read a column per arm: the engine's constant
        features, feature_names = np.ones((len(slot_spec.arms), 1)), ("(constant)",)
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
        action_feature_names=feature_names,
        action_names=tuple(arm_index),
        context_names=tuple(columns),
        name=f"{spec.name}/{slot}",
        skipped={k: v for k, v in skipped.items() if v},
        probabilities=_logged_distributions(kept, slot, arm_index),
        event_ids=tuple(e.decision_id for e in kept),
        timestamps=np.array([e.ts for e in kept], dtype=np.int64),
    )


def _logged_distributions(events: Sequence[JoinedEvent], slot: str,
                          arm_index: dict[str, int]) -> np.ndarray:
    """Per event the logging policy's probability of every arm of ``slot`` (n, k): 0 for an arm
    that was not eligible, a row of NaN for an event joined without them (a legacy impression)."""
    P = np.zeros((len(events), len(arm_index)))
    for i, event in enumerate(events):
        logged = event.slots[slot].probabilities
        if not logged:
            P[i] = np.nan
        for arm, p in logged.items():
            if arm in arm_index:
                P[i, arm_index[arm]] = p
            elif p > 0:
                raise InvalidInputError(f"decision {event.decision_id}: slot {slot!r} has no arm "
                                        f"{arm!r}, logged with probability {p}")
    return P


# -- Vowpal Wabbit DSJSON -------------------------------------------------------------------
#
# One JSON object per line, as Microsoft's Decision Service and Personalizer log and VW's
# ``--dsjson`` reads it (VW's json_parser: parse_example_json.cc). Top level: "_label_cost"
# (VW minimises cost: the negated reward), "_label_probability", "_labelIndex" (the chosen
# action's index in "_multi": VW puts the label on that action) and "_label_Action" (the same,
# 1-based); label property names are case-insensitive in VW. "a": the action ids, 1-based, the
# chosen one first (VW skips a line without them; it ignores a top-level "_a"); "p" or "_p":
# their probabilities in the order of "a"; "EventId"; "Timestamp" (ISO 8601, UTC);
# "_skipLearn": true when VW skips the event; "pdrop": VW weighs the event by 1 / (1 - pdrop).
# Other keys (o, VWState, Version, _original_label_cost) VW does not learn from.
#
# "c" is the context in VW's JSON: a key with a number is a feature of that value, with a string
# s a feature "key=s" of value 1, with true a feature of value 1 (false and null: none); an
# object is a namespace (nested ones nest), a list of objects that namespace again, a list of
# numbers the features key[0], key[1], ...; keys starting with "_" are no features, except
# "_text" (its words are) and "_multi" (the actions: one such object each).

SHARED_NAMESPACE = "User"
ACTION_NAMESPACE = "Action"
# The feature a context without any shared feature gets: VW's own constant feature.
CONSTANT = "(constant)"

_LABELS = {"cost", "probability", "action"}


def write_dsjson(log: LoggedBandit, out: str | Path | TextIO) -> int:
    """Write ``log`` as DSJSON lines VW trains on (``vw --cb_explore_adf --dsjson``); returns
    the number of lines.

    Per event: ``_label_cost`` = -reward, ``_label_probability`` = the logged action's
    propensity, ``_labelIndex`` / ``_label_Action``, ``a`` (the logged action first, then the
    others in their order) and ``p`` (the logging policy's distribution in that order),
    ``EventId`` and ``Timestamp`` when the log has them. An event without a logged distribution
    (a row of NaN in ``probabilities``, or a log without them) gets no ``p``: VW learns from
    ``_label_probability`` alone, and reading the line back gives NaN again. The context is the
    namespace ``User`` (every column, zeros too, so that reading gives the columns back); each
    action is ``{"_tag": name, "Action": {"id": name, <its action features>}}``.
    """
    multi = []
    for a, name in enumerate(log.action_names):
        features: dict[str, Any] = {"id": name}
        if log.action_features is not None:
            features |= {f: float(v) for f, v in zip(log.action_feature_names,
                                                      log.action_features[a], strict=True)}
        multi.append({"_tag": name, ACTION_NAMESPACE: features})
    k = log.n_actions
    lines = []
    for i in range(log.n):
        a = int(log.actions[i])
        order = [a] + [b for b in range(k) if b != a]
        shared = {name: float(v) for name, v in zip(log.context_names, log.X[i], strict=True)}
        record: dict[str, Any] = {
            "_label_cost": -float(log.rewards[i]),
            "_label_probability": float(log.propensities[i]),
            "_label_Action": a + 1,
            "_labelIndex": a,
        }
        if log.event_ids:
            record["EventId"] = log.event_ids[i]
        if log.timestamps is not None:
            record["Timestamp"] = _iso_timestamp(int(log.timestamps[i]))
        record["Version"] = "1"
        record["a"] = [b + 1 for b in order]
        record["c"] = {SHARED_NAMESPACE: shared, "_multi": multi}
        if log.probabilities is not None and not np.isnan(log.probabilities[i]).all():
            record["p"] = [float(log.probabilities[i, b]) for b in order]
        if log.position is not None:
            record["_position"] = int(log.position[i])
        lines.append(orjson.dumps(record))
    text = b"\n".join(lines).decode() + "\n"
    if isinstance(out, str | Path):
        Path(out).write_text(text, encoding="utf-8")
    else:
        out.write(text)
    return log.n


def read_dsjson(source: str | Path | Iterable[str], *, name: str = "dsjson") -> LoggedBandit:
    """A DSJSON log (as VW's ``--dsjson`` reads it) into columns.

    Context columns: the shared features of ``c`` (VW's JSON, see the notes above), named by
    their namespace path (``FromUrl.weather=Sunny``, ``Geo.dma``; the default namespace's
    without one), the union over the log in order of appearance, missing ones 0; a log without
    any shared feature gets VW's constant feature as its one column. Actions: the objects of
    ``_multi``, named by their ``_tag`` (else an ``id`` string, else their index), their features
    the ``action_features``; every line must list the same actions with the same features (a
    log whose action set changes per event is refused). Reward is ``-_label_cost``;
    ``probabilities`` the ``p`` vector mapped from the order of ``a`` onto ``_multi`` (a row of
    NaN for a line without one); ``event_ids`` and ``timestamps`` when every line has them.
    Left out and counted in ``skipped``, as VW leaves them out: lines without a label
    (predict-only events) and ``_skipLearn`` events. Whatever cannot be mapped is refused with
    its line number and the reason.
    """
    where = source if isinstance(source, str | Path) else name
    events: list[_DSEvent] = []
    first: _DSEvent | None = None
    skipped = {"unlabelled": 0, "skip learn": 0}
    for number, line in _lines(source):
        try:
            event = _read_event(line, number)
        except _Refused as refused:
            raise InvalidInputError(f"{where}: line {number}: {refused}") from None
        if isinstance(event, str):
            skipped[event] += 1
            continue
        if first is None:
            first = event
        elif reason := _differs(first, event):
            raise InvalidInputError(f"{where}: line {number}: c._multi: {reason} (line "
                                    f"{first.number}): a log whose actions change between "
                                    "events cannot be read as one action set")
        events.append(event)
    if first is None:
        raise InvalidInputError(f"{where}: no labelled event")
    columns = list(dict.fromkeys(key for e in events for key in e.shared)) or [CONSTANT]
    index = {c: j for j, c in enumerate(columns)}
    X = np.zeros((len(events), len(columns)))
    if columns == [CONSTANT]:
        X[:] = 1.0
    for i, e in enumerate(events):
        for key, value in e.shared.items():
            X[i, index[key]] = value
    feature_names = list(dict.fromkeys(key for action in first.actions for key in action))
    F = np.zeros((len(first.actions), len(feature_names)))
    for a, action in enumerate(first.actions):
        for j, key in enumerate(feature_names):
            F[a, j] = action.get(key, 0.0)
    position = None
    if all(e.position is not None for e in events):
        position = np.array([e.position for e in events], dtype=np.int64)
    timestamps = None
    if all(e.timestamp is not None for e in events):
        timestamps = np.array([e.timestamp for e in events], dtype=np.int64)
    ids = tuple(e.event_id for e in events if e.event_id is not None)
    return LoggedBandit(
        X, np.array([e.action for e in events], dtype=np.int64),
        0.0 - np.array([e.cost for e in events]), np.array([e.probability for e in events]),
        len(first.actions), action_features=F if feature_names else None, position=position,
        action_names=first.names, context_names=tuple(columns), name=name,
        skipped={k: v for k, v in skipped.items() if v},
        probabilities=np.array([e.pmf for e in events]),
        event_ids=ids if len(ids) == len(events) else (), timestamps=timestamps,
        action_feature_names=tuple(feature_names),
    )


def spec_arm_features(spec: CampaignSpec, slot: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The arm features of a campaign's slot as its policies see them (the engine's encoding
    of the spec's ``arm_features``): (n_arms, m) and the column names, or None and () for a
    slot without arm features."""
    from bandit.engine.campaign import build_campaign

    s = build_campaign(spec, np.random.default_rng(0)).slot(slot)
    if not s.spec.arm_features:
        return None, ()
    return s.encoder.encode([a.features for a in s.spec.arms]), tuple(s.encoder.columns)


class _Refused(Exception):
    """A DSJSON line that cannot be mapped; the message names the field and the reason."""


@dataclass
class _DSEvent:
    number: int
    shared: dict[str, float]
    actions: list[dict[str, float]]
    names: tuple[str, ...]
    action: int
    cost: float
    probability: float
    pmf: list[float]
    event_id: str | None
    timestamp: int | None
    position: int | None


def _read_event(line: str, number: int) -> _DSEvent | str:
    """One DSJSON line: its event, or why VW leaves it out ("unlabelled", "skip learn")."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise _Refused(f"not JSON: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("c"), dict):
        raise _Refused("expected an object with a 'c' context")
    for key, reason in (("_outcomes", "a conditional contextual bandit (slates) event"),
                        ("pdf", "a continuous-action event"), ("_label", "a text label")):
        if key in record:
            raise _Refused(f"{key}: {reason}: only contextual bandit events (_multi actions "
                           "and _label_* labels) are read")
    if record.get("_skipLearn") is True:
        return "skip learn"
    labels = {k[len("_label_"):].lower(): k for k in record if k.lower().startswith("_label_")}
    if not labels and "_labelIndex" not in record:
        return "unlabelled"
    if unknown := sorted(set(labels) - _LABELS):
        raise _Refused(f"{labels[unknown[0]]}: not a contextual bandit label property; "
                       "expected _label_cost, _label_probability, _label_Action")
    for needed in ("cost", "probability"):
        if needed not in labels:
            raise _Refused(f"_label_{needed}: missing (the line has other label fields)")
    pdrop = record.get("pdrop", 0)
    if pdrop != 0:
        raise _Refused(f"pdrop: {pdrop!r}: VW weighs such an event by 1 / (1 - pdrop); "
                       "weighted events are not supported")
    context = record["c"]
    multi = context.get("_multi")
    if not isinstance(multi, list) or not multi:
        raise _Refused("c._multi: no actions: expected a list of one object per action")
    actions, names = [], []
    for j, action in enumerate(multi):
        if not isinstance(action, dict):
            raise _Refused(f"c._multi[{j}]: expected an object, got {action!r}")
        features: dict[str, float] = {}
        _namespace(action, "", features, f"c._multi[{j}]")
        actions.append(features)
        names.append(_action_name(action, j))
    shared: dict[str, float] = {}
    _namespace(context, "", shared, "c")
    k = len(multi)
    cost = _finite_number(record[labels["cost"]], labels["cost"])
    probability = _finite_number(record[labels["probability"]], labels["probability"])
    if not 0.0 < probability <= 1.0:
        raise _Refused(f"{labels['probability']}: expected a number in (0, 1], "
                       f"got {probability!r}")
    action = _chosen(record, labels, k)
    pmf = _distribution(record, action, probability, k)
    position = record.get("_position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
        raise _Refused(f"_position: expected an integer, got {position!r}")
    event_id = record.get("EventId")
    if event_id is not None and not isinstance(event_id, str):
        raise _Refused(f"EventId: expected a string, got {event_id!r}")
    return _DSEvent(number, shared, actions, tuple(names), action, float(cost),
                    float(probability), pmf, event_id, _epoch_ms(record.get("Timestamp")),
                    position)


def _namespace(content: dict[str, Any], prefix: str, out: dict[str, float], field: str) -> None:
    """Add the features of one VW JSON object (a namespace's content) to ``out``, named by
    ``prefix`` + key; a key given twice adds up, as VW's weights of a repeated feature do."""
    for key, value in content.items():
        where = f"{field}.{key}"
        if key.startswith("_"):
            if key == "_text":
                if not isinstance(value, str):
                    raise _Refused(f"{where}: expected a string of words, got {value!r}")
                for word in value.split():
                    _add(out, f"{prefix}_text={word}", 1.0)
            elif (key in ("_slots", "_multi", "__aid") or key.lower().startswith("_label")) \
                    and where != "c._multi":
                raise _Refused(f"{where}: not read here (a conditional bandit's slots, "
                               "actions within an action, a label inside the context or a "
                               "deduplicated action)")
            continue
        name = f"{prefix}{key}"
        if value is None or value is False:
            continue
        if value is True:
            _add(out, name, 1.0)
        elif isinstance(value, str):
            _add(out, f"{name}={value}", 1.0)
        elif isinstance(value, int | float):
            _add(out, name, _finite_number(value, where))
        elif isinstance(value, dict):
            _namespace(value, f"{name}.", out, where)
        elif isinstance(value, list):
            index = 0
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _namespace(item, f"{name}.", out, f"{where}[{i}]")
                elif isinstance(item, int | float) and not isinstance(item, bool):
                    _add(out, f"{name}[{index}]", _finite_number(item, f"{where}[{i}]"))
                    index += 1
                elif item is not None:
                    raise _Refused(f"{where}[{i}]: {item!r}: VW reads a list of numbers or of "
                                   "objects only (no strings, booleans or nested lists)")


def _add(out: dict[str, float], name: str, value: float) -> None:
    out[name] = out.get(name, 0.0) + value


def _action_name(action: dict[str, Any], j: int) -> str:
    """An action's ``_tag``, else the ``id`` string of one of its namespaces, else its index."""
    if isinstance(action.get("_tag"), str):
        return action["_tag"]
    for namespace in action.values():
        if isinstance(namespace, dict) and isinstance(namespace.get("id"), str):
            return namespace["id"]
    return str(j)


def _finite_number(value: Any, field: str) -> float:
    """``value`` as given (an int stays an int), once checked to be a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Refused(f"{field}: expected a finite number, got {value!r}")
    return value


def _index(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refused(f"{field}: expected an integer, got {value!r}")
    return value


def _chosen(record: dict[str, Any], labels: dict[str, str], k: int) -> int:
    """The logged action's index in _multi, from _labelIndex and / or _label_Action."""
    index = action = None
    if "_labelIndex" in record:
        index = _index(record["_labelIndex"], "_labelIndex")
        if not 0 <= index < k:
            raise _Refused(f"_labelIndex: expected 0..{k - 1} (the {k} actions of c._multi), "
                           f"got {index}")
    if "action" in labels:
        action = _index(record[labels["action"]], labels["action"])
        if not 1 <= action <= k:
            raise _Refused(f"{labels['action']}: expected 1..{k} (the {k} actions of "
                           f"c._multi), got {action}")
    if index is None:
        if action is None:
            raise _Refused("_labelIndex: missing: which action was taken is unknown")
        return action - 1
    if action is not None and action != index + 1:
        raise _Refused(f"{labels['action']}: {action} is not _labelIndex {index} + 1")
    return index


def _distribution(record: dict[str, Any], action: int, probability: float,
                  k: int) -> list[float]:
    """The logging policy's probability of each action of _multi (NaN each when not logged)."""
    if "a" not in record:
        reason = " (VW ignores a top-level '_a')" if "_a" in record else ""
        raise _Refused(f"a: missing: VW skips an event without its action order{reason}")
    order = record["a"]
    if not isinstance(order, list) or not order or \
            any(isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= k for x in order) \
            or len(set(order)) != len(order):
        raise _Refused(f"a: expected distinct action ids in 1..{k}, got {order!r}")
    if action + 1 not in order:
        raise _Refused(f"a: the logged action {action + 1} is not in {order!r}")
    key = "p" if "p" in record else "_p" if "_p" in record else None
    if key is None:
        return [math.nan] * k
    p = record[key]
    if not isinstance(p, list) or len(p) != len(order):
        raise _Refused(f"{key}: expected {len(order)} probabilities (one per action of 'a'), "
                       f"got {p!r}")
    pmf = [0.0] * k
    for j, (x, value) in enumerate(zip(order, p, strict=True)):
        value = _finite_number(value, f"{key}[{j}]")
        if not 0.0 <= value <= 1.0:
            raise _Refused(f"{key}[{j}]: expected a probability in [0, 1], got {value!r}")
        pmf[x - 1] = float(value)
    if abs(math.fsum(pmf) - 1.0) > 1e-4:
        raise _Refused(f"{key}: the probabilities sum to {math.fsum(pmf)!r}, not 1")
    if not math.isclose(pmf[action], probability, rel_tol=1e-6):
        raise _Refused(f"{key}: the logged action's probability {pmf[action]!r} differs from "
                       f"_label_probability {probability!r}")
    return pmf


def _epoch_ms(value: Any) -> int | None:
    """A DSJSON Timestamp (ISO 8601, UTC unless an offset is given) in epoch milliseconds."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(f"Timestamp: expected an ISO 8601 string, got {value!r}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _Refused(f"Timestamp: expected an ISO 8601 time, got {value!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_timestamp(ms: int) -> str:
    """Epoch milliseconds as DSJSON writes a Timestamp: 2021-02-04T16:31:29.2460000Z."""
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _differs(first: _DSEvent, event: _DSEvent) -> str:
    """Why ``event``'s actions are not ``first``'s ('' when they are the same)."""
    if len(event.actions) != len(first.actions):
        return f"{len(event.actions)} actions, not {len(first.actions)}"
    for j, (a, b) in enumerate(zip(first.actions, event.actions, strict=True)):
        if first.names[j] != event.names[j] or a != b:
            return (f"action {j} ({event.names[j]!r}) has other features than "
                    f"{first.names[j]!r}")
    return ""
