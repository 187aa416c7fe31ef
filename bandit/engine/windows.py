"""The open attribution windows as columns, ``Joiner``'s storage: rows of column arrays
(decision time, activation, send time, deadline, per slot the arm, propensity and probability
vector, the context's values, segment values, holdout, model version, learned outcomes per
type), with the strings interned, each distinct probability vector's JSON text kept once, and
the shapes of the dicts (campaign, slot names, context keys, segment keys) stored once per
distinct shape; and ``Closed``, the columns of the decisions whose windows closed. An open
decision's Python objects are its id and subject key, and, with weighted outcomes, their
amounts."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter, methodcaller
from typing import Any, cast

import msgspec
import numpy as np
import orjson

from bandit import wire
from bandit.engine.randomness import subject_key
from bandit.kernels.text import first_equal
from bandit.models import OUTCOME_TYPES, JoinedEvent
from bandit.wire import Joined
from bandit.wire.protocols import DecisionLike

_FIRST_ROWS = 1024  # initial capacity of the open-window columns; doubled when full
_WIDE = ("_arm", "_propensity", "_context", "_segment")  # a column per slot, key, segment
# A row's activation: a decision waiting for its send, one learnable since it was made, one
# whose send came (for a campaign activated by decisions the send only times the scanner rule).
UNSENT, ACTIVE, SENT = 0, 1, 2
_arm, _propensity = attrgetter("arm"), attrgetter("propensity")
_probabilities = attrgetter("probabilities")
_slots, _context, _segments = attrgetter("slots"), attrgetter("context"), attrgetter("segments")
_decision_id, _subject = attrgetter("decision_id"), attrgetter("subject")
_holdout, _model_version = attrgetter("holdout"), attrgetter("model_version")
_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)
_values = methodcaller("values")
_RS = b"\x1e"  # between a row's probability vectors in a checkpoint (JSON never holds it raw)


@dataclass
class Closed:
    """The decisions whose windows one batch closed, as the join's columns, in deadline order
    (impression ts + attribution window), decision id breaking ties: the order they are learned
    in, so that a stream's batches, end to end, close its decisions in one canonical order
    (streams/worker.py says when).

    Row i: ``ids[i]``, ``subjects[i]`` (subject keys, hex), ``ts``, ``shape`` (an index into
    ``shapes``: campaign, slot names, context keys with "is a string", segment keys),
    ``holdout``, ``wire`` (decoded by the stream worker), ``model_version``, ``outcomes`` (the
    learned events per type, in ``OUTCOME_TYPES`` order), and per position j of its shape's
    slots, context keys and segment keys: ``arm``, ``propensity``, ``reward`` (aggregated, or
    the campaign's default) and ``vector`` (its probability vector's JSON, an index into
    ``texts``), ``context`` and ``segment``. Arms, string context values and segment values
    are indices into ``names``. ``Engine`` learns from these
    columns; ``events`` and ``json`` are for the other readers.
    """

    ids: list[str]
    subjects: list[str]
    ts: np.ndarray  # (n,) float64
    shape: np.ndarray  # (n,) int32
    holdout: np.ndarray  # (n,) bool
    wire: np.ndarray  # (n,) bool
    arm: np.ndarray  # (n, slots) int32
    propensity: np.ndarray  # (n, slots) float64
    reward: np.ndarray  # (n, slots) float64
    context: np.ndarray  # (n, keys) float64 (string values: their index in names)
    segment: np.ndarray  # (n, segments) int32
    names: list[str]
    shapes: list[tuple]
    model_version: np.ndarray  # (n,) float64
    outcomes: np.ndarray  # (n, len(OUTCOME_TYPES)) int32
    vector: np.ndarray  # (n, slots) int32: per slot the row's probability vector in ``texts``
    texts: list[bytes]  # JSON texts of {arm: probability} (-1 in ``vector`` past a row's slots)

    def __len__(self) -> int:
        return len(self.ids)

    def probabilities(self) -> list[tuple[bytes, ...]]:
        """Per row, per slot of its shape, the JSON text of its probability vector (rows
        alike share one tuple)."""
        distinct, which = _distinct_rows(self.vector)
        texts = self.texts
        tuples = [tuple(texts[i] for i in row if i >= 0) for row in distinct.tolist()]
        return list(map(tuples.__getitem__, which.tolist()))

    def _rows(self) -> Iterator[tuple[Any, ...]]:
        """Per decision: its plain fields, in the order of ``JoinedEvent``'s. The wide columns
        (arm, propensity, reward, context, segment) are as wide as the widest shape: a row
        reads the first cells, as many as its shape has names."""
        names, shapes, probabilities = self.names, self.shapes, self.probabilities()
        for i, ts, shape, holdout, is_wire, arms, propensities, rewards, values, segment in zip(
                range(len(self.ids)), self.ts.tolist(), self.shape.tolist(),
                self.holdout.tolist(), self.wire.tolist(), self.arm.tolist(),
                self.propensity.tolist(), self.reward.tolist(), self.context.tolist(),
                self.segment.tolist(), strict=True):
            campaign, slots, context_keys, segment_keys = shapes[shape]
            context = None if context_keys is None else {
                key: names[int(v)] if is_str else v
                for (key, is_str), v in zip(context_keys, values, strict=False)}
            outcomes = {kind: n for kind, n in zip(OUTCOME_TYPES, self.outcomes[i].tolist(),
                                                    strict=True) if n}
            yield (is_wire, self.ids[i], campaign, self.subjects[i], ts,
                   [(slot, names[a], p, vector) for slot, a, p, vector in zip(
                       slots, arms, propensities, probabilities[i],
                       strict=False)],
                   context, {key: names[v] for key, v in zip(segment_keys, segment, strict=False)},
                   holdout, int(self.model_version[i]), outcomes,
                   dict(zip(slots, rewards, strict=False)))

    def events(self) -> list[JoinedEvent | Joined]:
        """The closed decisions: ``wire.Joined`` for impressions decoded by the stream worker
        (validated then: no second validation), else JoinedEvent."""
        out: list[JoinedEvent | Joined] = []
        for (is_wire, decision_id, campaign, subject, ts, choices, context, segments, holdout,
             version, outcomes, rewards) in self._rows():
            if is_wire:
                out.append(Joined(
                    decision_id=decision_id, campaign=campaign, subject=subject, ts=ts,
                    slots={slot: wire.LoggedChoice(arm=a, propensity=p,
                                                   probabilities=msgspec.Raw(v))
                           for slot, a, p, v in choices},
                    context=context, segments=segments, holdout=holdout, model_version=version,
                    outcomes=outcomes, rewards=rewards))
            else:
                out.append(JoinedEvent.model_validate({
                    "decision_id": decision_id, "campaign": campaign, "subject": subject,
                    "ts": ts, "slots": {slot: {"arm": a, "propensity": p,
                                               "probabilities": orjson.loads(v)}
                                        for slot, a, p, v in choices},
                    "context": context, "segments": segments, "holdout": holdout,
                    "model_version": version, "outcomes": outcomes, "rewards": rewards}))
        return out

    def json(self) -> list[tuple[str, bytes]]:
        """(decision id, the JSON of its JoinedEvent) per closed decision, the bytes of
        ``model_dump(mode="json", exclude_none=True)`` (pinned by
        tests/bandit/engine/test_engine.py and tests/bandit/engine/test_join.py), written from
        the columns without building an event or a dict.

        Per shape, every row has the same keys in the same order, so its JSON is fixed text
        between values; each value column is written at once (numbers by one orjson call over
        the column, so they are orjson's digits; strings each once) and a row is one join.
        """
        n = len(self.ids)
        out: list[tuple[str, bytes]] = [None] * n  # type: ignore[list-item]
        dumps, names, vectors = orjson.dumps, self.names, self.texts
        ids = _split(dumps(self.ids))  # 32 hex digits each: no comma inside
        if len(ids) != n:
            raise ValueError("closed decisions: a decision id is not 32 hex digits")
        subjects = _split(dumps(self.subjects))  # hex digits too
        if len(subjects) != n:
            raise ValueError("closed decisions: a subject key is not hex digits")
        holdout = list(map(_BOOLS.__getitem__, self.holdout.tolist()))
        ts = _split(dumps(self.ts.tolist()))
        versions = _split(dumps(self.model_version.tolist()))  # floats, as pydantic dumps
        # Few distinct rows of outcome counts: each written once (and no list per row).
        distinct, which = _distinct_rows(self.outcomes.reshape(n, len(OUTCOME_TYPES)))
        texts = [b"{" + b",".join(b'"%s":%d' % (_KINDS[k], v) for k, v in enumerate(row) if v)
                 + b"}" for row in distinct.tolist()]
        outcomes = list(map(texts.__getitem__, which.tolist()))
        for shape in np.unique(self.shape).tolist():
            at = np.flatnonzero(self.shape == shape)
            rows = at.tolist()
            campaign, slots, context_keys, segment_keys = self.shapes[shape]
            # A column's cells of these rows: the column itself where they are all the rows.
            pick: Callable[[list[Any]], Iterable[Any]] = (
                _same if len(rows) == n else partial(_cells, rows))
            name = _names_json(names, np.concatenate([
                self.arm[at, :len(slots)].ravel(), self.segment[at, :len(segment_keys)].ravel(),
                *(self.context[at, j].astype(np.int64) for j, (_, is_str) in
                  enumerate(context_keys or ()) if is_str)]))
            # Fixed text (bytes) between the columns of values, the neighbours as one.
            pieces: list = [b'{"decision_id":', pick(ids),
                            b',"campaign":' + dumps(campaign) + b',"subject":',
                            pick(subjects), b',"ts":', pick(ts),
                            b',"slots":{']
            for j, slot in enumerate(slots):
                pieces += [(b"," if j else b"") + dumps(slot) + b':{"arm":',
                           list(map(name.__getitem__, self.arm[at, j].tolist())),
                           b',"propensity":',
                           _split(dumps(self.propensity[at, j].tolist())),
                           b',"probabilities":',
                           list(map(vectors.__getitem__, self.vector[at, j].tolist())),
                           b"}"]
            pieces.append(b"}")
            if context_keys is not None:
                pieces.append(b',"context":{')
                for j, (key, is_str) in enumerate(context_keys):
                    column = self.context[at, j]
                    pieces += [(b"," if j else b"") + dumps(key) + b":",
                               list(map(name.__getitem__, column.astype(np.int64).tolist()))
                               if is_str else _split(dumps(column.tolist()))]
                pieces.append(b"}")
            pieces.append(b',"segments":{')
            for j, key in enumerate(segment_keys):
                pieces += [(b"," if j else b"") + dumps(key) + b":",
                           list(map(name.__getitem__, self.segment[at, j].tolist()))]
            pieces += [b'},"holdout":', pick(holdout),
                       b',"model_version":', pick(versions),
                       b',"outcomes":', pick(outcomes),
                       b',"rewards":{']
            for j, slot in enumerate(slots):
                pieces += [(b"," if j else b"") + dumps(slot) + b":",
                           _split(dumps(self.reward[at, j].tolist()))]
            pieces.append(b"}}")
            _assign(out, rows, zip(pick(self.ids), map(b"".join, zip(*_between(pieces),
                                                                     strict=False)),
                                   strict=True))
        return out


_WIRE_DECISIONS = (wire.Impression, wire.LoggedDecision)


_BOOLS = (b"false", b"true")
_KINDS = [kind.encode() for kind in OUTCOME_TYPES]


def _builtins(context: Any) -> dict[str, Any] | None:
    """A decision's context as a dict (a batch decoder's Struct converted), or None."""
    if context is None or type(context) is dict:
        return context
    return cast("dict[str, Any]", msgspec.to_builtins(context))


def _held(rows: np.ndarray, held: Mapping[int, Any]) -> tuple[list[int], list[int]]:
    """The positions in ``rows`` of the rows that are keys of ``held``, and those rows."""
    if not held:
        return [], []
    at = np.flatnonzero(np.isin(rows, np.fromiter(held, np.int64, len(held))))
    return at.tolist(), rows[at].tolist()


def _between(pieces: list[Any]) -> list[Iterable[bytes]]:
    """Columns of a row's values and the fixed text between them (bytes), each run of fixed
    texts as one text repeated: one piece per value and per gap for a row's join.

    >>> [next(iter(p)) for p in _between([b"{", b'"a":', [b"1"], b"}"])]
    [b'{"a":', b'1', b'}']
    """
    out: list[Iterable[bytes]] = []
    texts: list[bytes] = []
    for piece in pieces:
        if type(piece) is bytes:
            texts.append(piece)
            continue
        if texts:
            out.append(repeat(b"".join(texts)))
            texts = []
        out.append(piece)
    if texts:
        out.append(repeat(b"".join(texts)))
    return out


def _same(column: list[Any]) -> list[Any]:
    return column


def _cells(rows: list[int], column: list[Any]) -> Iterator[Any]:
    """``column[r]`` for each of ``rows``."""
    return map(column.__getitem__, rows)


def _split(array_json: bytes) -> list[bytes]:
    """The elements of a JSON array of numbers or of strings without a comma, as orjson wrote
    them."""
    return array_json[1:-1].split(b",") if len(array_json) > 2 else []


def _assign(column: list[Any], rows: Iterable[int], values: Iterable[Any]) -> None:
    """``column[r] = value`` for each row and value, in a C loop (no bytecode per row)."""
    deque(map(column.__setitem__, rows, values), maxlen=0)


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-d array and, per row, the index of its distinct row
    (``np.unique(axis=0)``'s answer, by a sort of the columns instead of one of the rows'
    bytes).

    >>> distinct, which = _distinct_rows(np.array([[0, 1], [2, 0], [0, 1]]))
    >>> distinct.tolist(), which.tolist()
    ([[0, 1], [2, 0]], [0, 1, 0])
    """
    if not len(rows):
        return rows, np.zeros(0, dtype=np.intp)
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    starts = np.concatenate(([True], (ordered[1:] != ordered[:-1]).any(axis=1)))
    which = np.empty(len(rows), dtype=np.intp)
    which[order] = np.cumsum(starts) - 1
    return ordered[starts], which


def _names_json(names: list[str], used: np.ndarray) -> dict[int, bytes]:
    """The JSON of each interned string a batch uses, by index."""
    return {i: orjson.dumps(names[i]) for i in np.unique(used).tolist()}


class _OpenWindows:
    """The columns of the open decisions and what they index (interned strings, shapes, the
    row of each decision id); ``Joiner`` adds the join itself (events in, windows closed) and
    says what a campaign's default reward is (``_default``) and the weights of its outcome
    types (``_weights``)."""

    def __init__(self) -> None:
        # Interned strings (arm ids, string context values, segment values) and shapes: a
        # shape is (campaign, slot names, ((context key, is a string), ...) or None, segment
        # keys), the order of each dict as the impression had it.
        self._names: list[str] = []
        self._name_index: dict[str, int] = {}
        self._shapes: list[tuple] = []
        self._shape_index: dict[tuple, int] = {}
        self._shape_by_types: dict[tuple, int] = {}  # _shape_of's cache: value types, not flags
        # The open decisions: row r of every column; _row maps a decision id to its row.
        self._row: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._subjects: list[str | None] = []
        # Probability vectors' JSON texts, each once; a row's are indices into them (_vector).
        self._texts: list[bytes] = []
        self._text_index: dict[bytes, int] = {}
        self._texts_kept = 0  # texts after the last compaction (_compact_texts)
        self._free: list[int] = []
        self._size = 0  # rows ever used (live or free)
        # row -> (slot, outcome type) -> the type's amounts aggregated, and the time of the
        # event that gave it (for "first")
        self._rewards: dict[int, dict[tuple[str, str], float]] = {}
        self._first_ts: dict[int, dict[tuple[str, str], float]] = {}
        self._next_deadline = float("inf")  # no open window closes before this (a lower bound)
        self._allocate(_FIRST_ROWS, 1, 1, 1)

    def _default(self, campaign: str) -> float:
        raise NotImplementedError


    def _allocate(self, rows: int, slots: int, context: int, segments: int) -> None:
        """(Re)size the columns, keeping the rows in use (``add`` may have handed out rows
        beyond the old size: nothing is written to them yet)."""
        old = getattr(self, "_ts", None)
        n = self._size if old is None else min(self._size, len(old))

        def column(name: str, dtype: type, width: int | None = None) -> np.ndarray:
            shape = (rows,) if width is None else (rows, width)
            fresh: np.ndarray = np.zeros(shape, dtype=dtype)
            if old is not None:
                before = getattr(self, name)
                if width is None:
                    fresh[:n] = before[:n]
                else:
                    fresh[:n, :before.shape[1]] = before[:n]
            return fresh

        self._ts = column("_ts", np.float64)
        self._deadline = column("_deadline", np.float64)
        self._shape = column("_shape", np.int32)
        self._holdout = column("_holdout", np.bool_)
        self._wire = column("_wire", np.bool_)  # a bandit.wire decision (else pydantic)
        self._live = column("_live", np.bool_)
        self._sent = column("_sent", np.int8)  # UNSENT, ACTIVE or SENT
        self._send_ts = column("_send_ts", np.float64)  # the decision's, until a send comes
        self._model_version = column("_model_version", np.float64)
        self._arm = column("_arm", np.int32, slots)
        self._vector = column("_vector", np.int32, slots)  # per slot its text in _texts
        self._propensity = column("_propensity", np.float64, slots)
        self._context = column("_context", np.float64, context)  # string values: their index
        self._segment = column("_segment", np.int32, segments)
        # Learned outcomes per type (zero again once the row is freed).
        self._counts = column("_counts", np.int32, len(OUTCOME_TYPES))
        grow = rows - len(self._ids)
        self._ids += [None] * grow
        self._subjects += [None] * grow

    def _room(self, shapes: Iterable[int]) -> None:
        """Grow the columns to hold every row handed out (``_size``) and the widths of
        ``shapes``."""
        width = [self._arm.shape[1], self._context.shape[1], self._segment.shape[1]]
        for shape in shapes:
            _, slots, context_keys, segment_keys = self._shapes[shape]
            width[0] = max(width[0], len(slots))
            width[1] = max(width[1], 0 if context_keys is None else len(context_keys))
            width[2] = max(width[2], len(segment_keys))
        rows = len(self._ts)
        while rows < self._size:
            rows *= 2
        if rows > len(self._ts) or width != [self._arm.shape[1], self._context.shape[1],
                                             self._segment.shape[1]]:
            self._allocate(rows, *width)

    def _intern(self, name: str) -> int:
        index = self._name_index.get(name)
        if index is None:
            index = self._name_index[name] = len(self._names)
            self._names.append(name)
        return index

    def _intern_in_order(self, imps: Sequence[DecisionLike]) -> None:
        for imp in imps:
            for choice in imp.slots.values():
                self._intern(choice.arm)
            if imp.context is not None:
                for value in imp.context.values():
                    if type(value) is str:
                        self._intern(value)
            for value in imp.segments.values():
                self._intern(value)

    def _shape_of(self, imp: DecisionLike) -> int:
        """The index of the impression's shape (campaign, slot names, context keys and which
        values are strings, segment keys), added if new."""
        return self._shape_for(imp.campaign, tuple(imp.slots), imp.context, imp.segments)

    def _shape_for(self, campaign: str, slots: tuple[str, ...],
                   context: Mapping[str, Any] | None, segments: Mapping[str, str]) -> int:
        """``_shape_of`` of a decision given by its parts (slot names in order)."""
        # The value types, not "is a string" per value: map(type) costs a fraction of a loop.
        fast = (campaign, slots, None if context is None else tuple(context),
                None if context is None else tuple(map(type, context.values())),
                tuple(segments))
        shape = self._shape_by_types.get(fast)
        if shape is not None:
            return shape
        strings: tuple[bool, ...] | None = None
        described: tuple[tuple[str, bool], ...] | None = None  # (context key, is a string)
        if context is not None:
            strings = tuple(type(v) is str for v in context.values())
            described = tuple(zip(context, strings, strict=True))
        key = (fast[0], fast[1], fast[2], strings, fast[4])
        shape = self._shape_index.get(key)
        if shape is None:
            shape = self._shape_index[key] = len(self._shapes)
            self._shapes.append((campaign, key[1], described, key[4]))
        if len(self._shape_by_types) < 4096:
            self._shape_by_types[fast] = shape
        return shape

    def _insert(self, pending: list[tuple[int, int, DecisionLike]],
                timing: Mapping[int, tuple[float, ...]]) -> None:
        """Write decisions to their rows (handed out by ``add``), per shape one numpy write
        per column. Strings new to the join are interned in the order a row-by-row insert
        would meet them (arms, string context values, segment values, decision by decision),
        so the state does not depend on how the decisions were batched. ``timing`` holds each
        row's [ts, deadline, shape, activation, send ts], as the join set them."""
        groups: dict[int, list[tuple[int, int, DecisionLike]]] = {}
        for item in pending:
            groups.setdefault(item[1], []).append(item)
        self._room(groups)
        known = self._name_index
        columns = []  # per shape: its rows, slot choices, arms, context values, segment values
        names: set[str] = set()
        vectors: list[tuple[int, tuple[bytes, ...]]] = []  # (row, its texts) of other kinds
        for shape, items in groups.items():
            _, slots, context_keys, segment_keys = self._shapes[shape]
            imps = list(map(_third, items))
            choices = list(chain.from_iterable(map(dict.values, map(_slots, imps))))
            arms = list(map(_arm, choices))
            d = 0 if context_keys is None else len(context_keys)
            values: list[Any] = []  # context values; string ones become their indices
            if d:  # a shape with context keys: each of its impressions has a context
                values = list(chain.from_iterable(map(dict.values, map(_context, imps))))
            strings = [j for j, (_, is_str) in enumerate(context_keys or ()) if is_str]
            segments = list(chain.from_iterable(map(dict.values, map(_segments, imps))))
            names.update(arms, segments, *(values[j::d] for j in strings))
            where = list(map(_first, items))
            if set(map(type, imps)) == {wire.LoggedDecision}:
                # The vectors' JSON as the service wrote it. Copies: a Raw is a view of the
                # whole batch's input, which it would keep.
                self._vector[where, :len(slots)] = np.array(self._intern_texts(
                    list(map(bytes, map(_probabilities, choices)))),
                    dtype=np.int32).reshape(-1, len(slots))
            columns.append((np.array(where, dtype=np.intp), len(slots), d, strings,
                            len(segment_keys), choices, arms, values, segments))
        if not known.keys() >= names:
            self._intern_in_order([imp for _, _, imp in pending])
        for at, k, d, strings, g, choices, arms, values, segments in columns:
            self._arm[at, :k] = np.fromiter(map(known.__getitem__, arms), np.int32,
                                            len(arms)).reshape(-1, k)
            self._propensity[at, :k] = np.fromiter(map(_propensity, choices), np.float64,
                                                   len(choices)).reshape(-1, k)
            if d:
                for j in strings:
                    values[j::d] = map(known.__getitem__, values[j::d])
                self._context[at, :d] = np.array(values, dtype=np.float64).reshape(-1, d)
            if g:
                self._segment[at, :g] = np.fromiter(map(known.__getitem__, segments), np.int32,
                                                    len(segments)).reshape(-1, g)
        filled = list(map(_first, pending))
        at = np.array(filled, dtype=np.intp)
        imps = list(map(_third, pending))
        timings = np.array(list(map(timing.__getitem__, filled)), dtype=np.float64)
        deadline = timings[:, 1]
        self._ts[at], self._deadline[at] = timings[:, 0], deadline
        self._send_ts[at], self._sent[at] = timings[:, 4], timings[:, 3]
        self._model_version[at] = list(map(_model_version, imps))
        self._shape[at] = np.fromiter(map(_second, pending), np.int32, len(pending))
        self._holdout[at] = np.fromiter(map(_holdout, imps), np.bool_, len(imps))
        kinds = list(map(type, imps))
        self._wire[at] = np.fromiter(map(_WIRE_DECISIONS.__contains__, kinds), np.bool_,
                                     len(imps))
        self._live[at] = True
        ids, subjects = self._ids, self._subjects
        _assign(ids, filled, map(_decision_id, imps))
        if set(kinds) == {wire.LoggedDecision}:  # their vectors are written by shape above
            _assign(subjects, filled, map(_subject, imps))
        else:
            dumps = orjson.dumps
            for r, imp in zip(filled, imps, strict=True):
                if type(imp) is wire.LoggedDecision:  # the vectors' JSON as the service wrote it
                    subjects[r] = imp.subject
                    vectors.append((r, tuple(map(bytes, map(_probabilities,
                                                            imp.slots.values())))))
                elif imp.type == "decision":  # the pydantic model: its dicts
                    subjects[r] = imp.subject
                    vectors.append((r, tuple(map(dumps, map(_probabilities,
                                                            imp.slots.values())))))
                else:  # a legacy impression: the hash of its user id, no probabilities known
                    subjects[r] = subject_key(imp.user_id).hex()
                    vectors.append((r, (b"{}",) * len(imp.slots)))
            self._write_vectors(vectors)
        self._next_deadline = min(self._next_deadline, float(deadline.min()))

    def _write_run(self, run: Any, at: np.ndarray, rows: list[int], deadline: np.ndarray,
                   state: int) -> None:
        """Write decisions ``at`` (positions) of ``run`` (a ``DecisionLog``) to their ``rows``
        (handed out by ``add``) as ``_insert`` writes decisions, a column at a time: per
        decision Python only for its strings (id, subject; each distinct probability text once)
        and, unless the
        consenting decisions share one shape and bring no new string (``_write_alike``), for a
        consenting decision's shape, context and segments. ``deadline`` (len(at),) and
        ``state`` (the activation) as the join set them."""
        where = np.array(rows, dtype=np.intp)
        shape = None if run.private is None else self._write_columns(run, at, where)
        if shape is None:
            shape = self._write_alike(run, at, where)
        if shape is None:
            shape = self._write_private(run, at, where)
        known = self._name_index
        for j, s in enumerate(run.slots):
            lookup = np.array([known.get(a, 0) for a in s.arm_ids], dtype=np.int32)
            self._arm[where, j] = lookup[s.arms[at]]
            self._propensity[where, j] = s.propensity[at]
        ts = np.broadcast_to(np.asarray(run.ts, dtype=np.float64), len(run))[at]
        self._ts[where], self._deadline[where], self._send_ts[where] = ts, deadline, ts
        self._sent[where] = state
        self._model_version[where] = np.broadcast_to(
            np.asarray(run.model_version, dtype=np.float64), len(run))[at]
        self._shape[where] = shape
        self._holdout[where] = run.holdout[at]
        self._wire[where] = True
        self._live[where] = True
        picked = at.tolist()
        if len(picked) == len(run):  # the whole run, in order
            _assign(self._ids, rows, run.decision_ids)
            _assign(self._subjects, rows, run.subjects)
        else:
            _assign(self._ids, rows, map(run.decision_ids.__getitem__, picked))
            _assign(self._subjects, rows, map(run.subjects.__getitem__, picked))
        shared = run.shared or []
        for j, (blob, starts, ends) in enumerate(run._vectors()):
            # A cmab.decisions/3 block's texts are each once, with an index per decision:
            # those its decisions use are interned once each (while the log has the block's
            # vectors: the very starts the index expands to).
            if j >= len(shared) or shared[j][0] is not starts:
                self._vector[where, j] = self._text_indices(blob, starts, ends)[at]
                continue
            _, text_starts, text_ends, index = shared[j]
            mine = index[at]
            used = np.flatnonzero(np.bincount(mine, minlength=len(text_starts)))
            lookup = np.zeros(len(text_starts), dtype=np.int32)
            lookup[used] = self._intern_texts([blob[a:b] for a, b in zip(
                text_starts[used].tolist(), text_ends[used].tolist(), strict=True)])
            self._vector[where, j] = lookup[mine]
        self._next_deadline = min(self._next_deadline, float(deadline.min()))

    def _arms_known(self, run: Any, at: np.ndarray) -> bool:
        """Whether the arms decisions ``at`` of ``run`` use are interned (all the slot's, or
        those used)."""
        known = self._name_index.keys()
        return all(known >= set(s.arm_ids) or known >= {
            s.arm_ids[a] for a in np.unique(s.arms[at]).tolist()} for s in run.slots)

    def _write_columns(self, run: Any, at: np.ndarray, where: np.ndarray) -> np.ndarray | None:
        """``_write_private`` from a ``cmab.decisions/3`` block's context columns
        (``run.private``) when every arm and label of decisions ``at`` is interned already:
        a numpy write per shape and column, no Python step per decision; else None (nothing
        written)."""
        private = run.private
        known = self._name_index
        if not self._arms_known(run, at):
            return None
        lookup = np.array([known.get(name, -1) for name in private.names] or [0],
                          dtype=np.int64)
        position = np.full(len(run), -1, dtype=np.int64)
        position[at] = np.arange(len(at))
        mine = []  # per shape: its rows among ``at``, and their numbers and labels
        for s in private.shapes:
            kept = position[s.rows]
            keep = kept >= 0
            labels = s.labels[keep]
            if labels.size and int(lookup[labels].min()) < 0:
                return None
            mine.append((s, kept[keep], s.numbers[keep], labels))
        # The shapes, numbered in the order the decisions bring them.
        shape = np.empty(len(at), dtype=np.int32)
        plain = np.flatnonzero(~run.consent[at])
        firsts = [(int(rows[0]), j) for j, (_, rows, _, _) in enumerate(mine) if len(rows)]
        if len(plain):
            firsts.append((int(plain[0]), -1))
        slot_names = tuple(s.slot for s in run.slots)
        used = set()
        for _, j in sorted(firsts):
            if j < 0:
                k = self._shape_for(run.campaign, slot_names, None, {})
                shape[plain] = k
            else:
                s, rows = mine[j][0], mine[j][1]
                template = None if s.keys is None else {
                    key: "" if is_str else 0.0 for key, is_str in zip(s.keys, s.strings,
                                                                      strict=True)}
                k = self._shape_for(run.campaign, slot_names, template,
                                    dict.fromkeys(s.segments, ""))
                shape[rows] = k
            used.add(k)
        self._room(used)
        for s, rows, numbers, labels in mine:
            if not len(rows):
                continue
            at_rows = where[rows]
            number = label = 0
            for j, is_str in enumerate(s.strings):
                if is_str:
                    self._context[at_rows, j] = lookup[labels[:, label]]
                    label += 1
                else:
                    self._context[at_rows, j] = numbers[:, number]
                    number += 1
            if s.segments:
                self._segment[at_rows, :len(s.segments)] = lookup[labels[:, label:]]
        return shape

    def _write_alike(self, run: Any, at: np.ndarray, where: np.ndarray) -> np.ndarray | None:
        """``_write_private`` when the consenting decisions among ``at`` have one shape (the
        same context keys, each key's values all strings or none, the same segment keys) and
        every arm and string of theirs is interned already: the shapes, context and segment
        columns written without a Python step per decision; else None (nothing written)."""
        given = run.consent[at]
        if len(at) == len(run) and bool(given.all()):  # the whole run, in order
            contexts, segments = run.contexts, run.segments
        else:
            mine = at[given].tolist()
            contexts = list(map(run.contexts.__getitem__, mine))
            segments = list(map(run.segments.__getitem__, mine))
        slot_names = tuple(s.slot for s in run.slots)
        known = self._name_index
        if not self._arms_known(run, at):
            return None
        d = g = 0
        strings: list[int] = []
        values: list[Any] = []
        named: list[Any] = []
        if contexts:
            if set(map(type, contexts)) != {dict}:
                if None in contexts:
                    return None
                contexts = list(map(_builtins, contexts))
            # One shape: the keys back to back are the first's, repeated (no tuple per
            # decision; a dict never repeats a key, so each holds exactly the first's keys).
            keys, segment_keys = list(contexts[0]), list(segments[0])
            if (list(chain.from_iterable(contexts)) != keys * len(contexts)
                    or list(chain.from_iterable(segments)) != segment_keys * len(segments)):
                return None
            d, g = len(keys), len(segment_keys)
            values = list(chain.from_iterable(map(_values, contexts)))
            for j in range(d):
                kinds = set(map(type, values[j::d]))
                if str in kinds:
                    if len(kinds) > 1:
                        return None
                    strings.append(j)
            named = list(chain.from_iterable(map(_values, segments)))
            if not known.keys() >= set(named).union(*(values[j::d] for j in strings)):
                return None
        # The shapes, numbered in the order the decisions bring them.
        shape = np.empty(len(at), dtype=np.int32)
        n = len(at)
        firsts = [(int(np.argmax(given)) if given.any() else n, True),
                  (int(np.argmin(given)) if not given.all() else n, False)]
        used = set()
        for first, consenting in sorted(firsts):
            if first == n:  # none of them
                continue
            if consenting:
                k = self._shape_for(run.campaign, slot_names, contexts[0], segments[0])
                shape[given] = k
            else:
                k = self._shape_for(run.campaign, slot_names, None, {})
                shape[~given] = k
            used.add(k)
        self._room(used)
        if d:
            for j in strings:
                values[j::d] = map(known.__getitem__, values[j::d])
            self._context[where[given], :d] = np.array(values, dtype=np.float64).reshape(-1, d)
        if g:
            self._segment[where[given], :g] = np.fromiter(
                map(known.__getitem__, named), np.int32, len(named)).reshape(-1, g)
        return shape

    def _write_private(self, run: Any, at: np.ndarray, where: np.ndarray) -> np.ndarray:
        """The shapes of decisions ``at`` of ``run`` (returned; added if new), with the
        strings new to the join interned in a row-by-row insert's order, and their context
        and segment columns written at ``where``: per decision its shape looked up."""
        picked = at.tolist()
        contexts, segments, slot_names = run.contexts, run.segments, tuple(
            s.slot for s in run.slots)
        given = run.consent[at].tolist()
        plain = -1  # the shape of a decision without consent, once met (shapes are numbered
        shapes = []  # in the order decisions bring them)
        for i, c in zip(picked, given, strict=True):
            if c:
                shapes.append(self._shape_for(run.campaign, slot_names, _builtins(contexts[i]),
                                              segments[i]))
                continue
            if plain < 0:
                plain = self._shape_for(run.campaign, slot_names, None, {})
            shapes.append(plain)
        self._room(set(shapes))
        known = self._name_index
        used = {run.slots[j].arm_ids[a] for j in range(len(run.slots))
                for a in np.unique(run.slots[j].arms[at]).tolist()}
        strings = {v for i, c in zip(picked, given, strict=True) if c
                   for v in (*(x for x in (_builtins(contexts[i]) or {}).values()
                               if type(x) is str), *segments[i].values())}
        if not known.keys() >= used | strings:  # new strings: in a row-by-row insert's order
            for i, c in zip(picked, given, strict=True):
                for s in run.slots:
                    self._intern(s.arm_ids[int(s.arms[i])])
                if c:
                    for value in (_builtins(contexts[i]) or {}).values():
                        if type(value) is str:
                            self._intern(value)
                    for value in segments[i].values():
                        self._intern(value)
        shape = np.array(shapes, dtype=np.int32)
        for k in np.unique(shape).tolist():
            _, _, context_keys, segment_keys = self._shapes[k]
            mine = np.flatnonzero(shape == k)
            if context_keys:
                d = len(context_keys)
                values = [v for m in mine.tolist()
                          for v in cast("dict[str, Any]", _builtins(contexts[picked[m]])).values()]
                for j, (_, is_str) in enumerate(context_keys):
                    if is_str:
                        values[j::d] = map(known.__getitem__, values[j::d])
                self._context[where[mine], :d] = np.array(values, dtype=np.float64).reshape(
                    -1, d)
            if segment_keys:
                g = len(segment_keys)
                self._segment[where[mine], :g] = np.fromiter(
                    (known[v] for m in mine.tolist() for v in segments[picked[m]].values()),
                    np.int32, len(mine) * g).reshape(-1, g)
        return shape

    def _intern_texts(self, texts: list[bytes]) -> list[int]:
        """The indices of probability-vector texts in ``_texts``, the new ones added."""
        index = self._text_index
        for text in dict.fromkeys(texts):
            if text not in index:
                index[text] = len(self._texts)
                self._texts.append(text)
        return list(map(index.__getitem__, texts))

    def _text_indices(self, blob: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Per text of ``blob`` (at starts:ends) its index in ``_texts``, (n,) int32: each
        distinct text sliced and interned once. Rows that share a span (a
        ``cmab.decisions/3`` block's share their vector's) are compared once."""
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        spans, span_of = np.unique(starts * (len(blob) + 1) + ends, return_inverse=True)
        span_of = span_of.reshape(-1)
        if len(spans) < len(starts):
            at = np.empty(len(spans), dtype=np.int64)
            at[span_of] = np.arange(len(starts))
            return self._text_indices(blob, starts[at], ends[at])[span_of]
        first = np.empty(len(starts), dtype=np.int64)
        first_equal(np.frombuffer(blob, dtype=np.uint8), starts, ends, first)
        distinct = np.flatnonzero(first == np.arange(len(first)))
        lookup = np.empty(len(first), dtype=np.int32)
        lookup[distinct] = self._intern_texts([blob[a:b] for a, b in zip(
            starts[distinct].tolist(), ends[distinct].tolist(), strict=True)])
        return lookup[first]

    def _write_vectors(self, vectors: list[tuple[int, tuple[bytes, ...]]]) -> None:
        """Write rows' probability texts (row, per slot its text), rows of a width at once."""
        widths: dict[int, list[tuple[int, tuple[bytes, ...]]]] = {}
        for item in vectors:
            widths.setdefault(len(item[1]), []).append(item)
        for k, items in widths.items():
            if k:
                self._vector[list(map(_first, items)), :k] = np.array(self._intern_texts(
                    list(chain.from_iterable(map(_second, items)))),
                    dtype=np.int32).reshape(-1, k)

    def _vector_cells(self, rows: np.ndarray) -> np.ndarray:
        """``_vector`` of ``rows``, -1 past each row's slots."""
        widths = np.array([len(shape[1]) for shape in self._shapes] or [0])[self._shape[rows]]
        cells = self._vector[rows]
        cells[np.arange(cells.shape[1]) >= widths[:, None]] = -1
        return cells

    def _compact_texts(self) -> None:
        """Keep only the probability texts open decisions use, renumbered in their order."""
        n = min(self._size, len(self._live))
        cells = self._vector_cells(np.flatnonzero(self._live[:n]))
        used = np.zeros(len(self._texts), dtype=np.bool_)
        used[cells[cells >= 0]] = True
        new = (np.cumsum(used) - 1).astype(np.int32)
        new[~used] = 0  # cells of free rows and past a row's slots: any valid index
        self._texts = list(compress(self._texts, used.tolist()))
        self._text_index = {text: i for i, text in enumerate(self._texts)}
        self._vector[:n] = new[self._vector[:n]]
        self._texts_kept = len(self._texts)

    def _compact(self) -> None:
        """Keep only the interned strings that open decisions use (what erased or closed
        decisions alone used leaves the state), renumbered in their order."""
        if not self._names:
            return
        n = self._size
        live = np.flatnonzero(self._live[:n])
        shapes = self._shape[live]
        used = np.zeros(len(self._names), dtype=np.bool_)
        strings = []  # per shape with string context values: its rows and those columns
        for shape in np.unique(shapes).tolist():
            rows = live[shapes == shape]
            _, slots, context_keys, segment_keys = self._shapes[shape]
            used[self._arm[rows, :len(slots)]] = True
            used[self._segment[rows, :len(segment_keys)]] = True
            columns = [j for j, (_, is_str) in enumerate(context_keys or ()) if is_str]
            if columns:
                cells = np.ix_(rows, columns)
                used[self._context[cells].astype(np.intp)] = True
                strings.append(cells)
        new = np.cumsum(used, dtype=np.int32) - 1
        new[~used] = 0  # cells past a row's own slots and segments: any valid index
        self._names = [name for name, keep in zip(self._names, used.tolist(), strict=True)
                       if keep]
        self._name_index = {name: i for i, name in enumerate(self._names)}
        self._arm[:n] = new[self._arm[:n]]
        self._segment[:n] = new[self._segment[:n]]
        for cells in strings:
            self._context[cells] = new[self._context[cells].astype(np.intp)]

    def _weights(self, campaign: str) -> Mapping[str, float]:
        raise NotImplementedError

    def _closed_rows(self, rows: np.ndarray, ids: list[str] | None = None) -> Closed:
        """The columns of ``rows`` (their windows closed), rewards weighted and summed over
        the outcome types, or defaulted; ``ids``, if given, their decision ids."""
        shape = self._shape[rows]
        defaults = np.array([self._default(campaign) for campaign, *_ in self._shapes])
        reward = np.repeat(defaults[shape][:, None], self._arm.shape[1], axis=1)
        ordered = rows.tolist()
        rewards_of = self._rewards
        for i, r in zip(*_held(rows, rewards_of), strict=True):
            got = rewards_of[r]
            if got:  # only rows with weighted outcomes have rewards
                campaign, slots = self._shapes[shape[i]][:2]
                weights = self._weights(campaign)
                for j, slot in enumerate(slots):
                    # The types in the campaign's order, so the float sum is the same always.
                    parts = [weight * got[slot, kind] for kind, weight in weights.items()
                             if (slot, kind) in got]
                    if parts:
                        reward[i, j] = math.fsum(parts) if len(parts) > 1 else parts[0]
        return Closed(
            ids=cast("list[str]", list(map(self._ids.__getitem__, ordered)))
            if ids is None else ids,
            subjects=cast("list[str]", list(map(self._subjects.__getitem__, ordered))),
            ts=self._ts[rows], shape=shape,
            holdout=self._holdout[rows], wire=self._wire[rows], arm=self._arm[rows],
            propensity=self._propensity[rows], reward=reward, context=self._context[rows],
            segment=self._segment[rows], names=self._names, shapes=self._shapes,
            model_version=self._model_version[rows], outcomes=self._counts[rows],
            vector=self._vector_cells(rows), texts=self._texts)
