"""The decision log: what one decide call decided, as columns (``DecisionLog``), for the
engine's ``decision_sink``.

Every decide path of the engine (``decide``, ``decide_one``, ``decide_many``,
``decide_batch``, ``decide_columns``) hands its sink one ``DecisionLog`` per call when a sink
is set: the service writes it to ``<prefix>.decisions`` (``streams.decisionlog``) or, without
a stream, feeds the engine's own join with it. Each decision's line is the JSON of a
``models.LoggedDecision``: id, campaign, subject key (the subscriber's pseudonym,
``bandit.engine.pseudonyms``: never the user id), the call's time, model version, holdout,
per slot the arm, its propensity and the probability of every eligible arm, and, only for a
decision made with consent (the lowest bit of its id: ``bandit.engine.randomness``), the
request's context and segments.

The log keeps the call's columns as they are (arrays, the requests' own context mappings) and
writes the lines only when asked (``lines``), so that the deciding thread pays for the
columns alone and a writer's thread for the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any, ClassVar

import msgspec
import numpy as np
import orjson

from bandit import wire
from bandit.engine.output import SlotColumns
from bandit.kernels.text import first_equal, interleave, row_bounds
from bandit.wire import columns

_SEED, _M = np.uint32(0x9747B28C), np.uint32(0x5BD1E995)  # Kafka's murmur2
_LOGGED = msgspec.json.Decoder(list[wire.LoggedDecision])
_dtype, _ndim = attrgetter("dtype"), attrgetter("ndim")
_slots, _slot, _arm_ids = attrgetter("slots"), attrgetter("slot"), attrgetter("arm_ids")
_decision_ids, _campaign = attrgetter("decision_ids"), attrgetter("campaign")


@dataclass(frozen=True)
class DecisionLogStatus:
    """What a decision-log writer reports (the service's ``/metrics`` and ``/readyz``):
    decisions the log took (``logged``: acknowledged by the broker), decisions it lost by
    reason (``unlogged``: "queue_full", "delivery_failed", "shutdown"), decisions waiting in
    its queue (``queued``), and why it is failing (None while the last outcome was a
    delivery)."""

    logged: int
    unlogged: dict[str, int]
    queued: int
    failing: str | None


@dataclass(frozen=True)
class DecisionLog:
    """The decisions of one decide call (n), column by column.

    ``slots``: per slot its ``SlotColumns`` with ``probabilities`` (n, k) float64 (each row
    sums to 1 over its eligible arms) and ``eligible`` (n, k) bool (the arms a decision could
    have got; a holdout, paused or no-eligible-arm decision's only arm is the default, at
    probability 1). ``contexts`` and ``segments`` (n) are the requests' own, read only where
    ``consent`` (n,) bool is set: a decision without consent logs neither. ``ts`` is the
    call's time in ms.

    >>> import numpy as np
    >>> log = DecisionLog(
    ...     campaign="weekly", decision_ids=["0" * 31 + "1"], subjects=["5e" * 16], ts=1000,
    ...     model_version=2, holdout=np.array([False]), consent=np.array([True]),
    ...     contexts=[{"tenure": 3.0}], segments=[{"plan": "pro"}],
    ...     slots=[SlotColumns("subject", ["a", "b"], np.array([1]), np.array([0.75]),
    ...                        np.zeros(1), np.zeros(1), None,
    ...                        probabilities=np.array([[0.25, 0.75]]),
    ...                        eligible=np.array([[True, True]]))])
    >>> print(log.lines()[0].decode())
    {"decision_id":"00000000000000000000000000000001","campaign":"weekly","subject":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","ts":1000,"model_version":2,"holdout":false,"slots":{"subject":{"arm":"b","propensity":0.75,"probabilities":{"a":0.25,"b":0.75}}},"context":{"tenure":3.0},"segments":{"plan":"pro"}}
    """  # noqa: E501

    type: ClassVar[str] = "decisions"  # the join takes a log as a run of decisions
    campaign: str
    decision_ids: list[str]
    subjects: list[str]  # each decision's subject key: its subscriber's pseudonym, 32 hex digits
    ts: int | np.ndarray  # the call's time, or (n,) int64 a decision's (a read block's)
    model_version: int | np.ndarray
    holdout: np.ndarray
    consent: np.ndarray
    contexts: Sequence[Any]
    segments: Sequence[Mapping[str, str]]
    slots: list[SlotColumns]
    # Per slot the probability vectors as JSON texts (blob, starts, ends), when read from a
    # block (``of_block``); None: written from the slots' columns when needed.
    vectors: list[tuple[bytes, np.ndarray, np.ndarray]] | None = None
    # A cmab.decisions/3 block's: per slot the rows' starts in ``vectors`` (the same array:
    # they hold while the log keeps the block's vectors), each distinct text's (starts, ends)
    # in its blob once, and each decision's index into them.
    shared: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None
    # A cmab.decisions/3 block's consenting contexts and segments as columns by shape (then
    # ``contexts`` and ``segments`` are made from them only when read).
    private: columns.PrivateColumns | None = None

    def __len__(self) -> int:
        return len(self.decision_ids)

    def lines(self) -> list[bytes]:
        """Each decision's line (n): the bytes ``orjson.dumps(LoggedDecision.model_dump(
        exclude_none=True))`` writes for it (the Python dump: times and versions stay
        integers; pinned by tests/bandit/engine/test_decisionlog.py), built a column at a time like
        ``DecisionBatch.ndjson``: no Python object per decision but a consenting request's
        context and segments."""
        n = len(self)
        if n == 0:
            return []
        writer = _Columns(n)
        # Decision ids and subject keys are hex digits: the template quotes them.
        writer.column("\n".join(self.decision_ids).encode())
        writer.column("\n".join(self.subjects).encode())
        pieces = ['{"decision_id":"', '","campaign":' + orjson.dumps(self.campaign).decode()
                  + ',"subject":"', '","ts":']
        for name, value in (("ts", self.ts), ("model_version", self.model_version)):
            if isinstance(value, np.ndarray):  # a value per decision (a read block's)
                writer.column(b",".join(map(b"%d".__mod__, value.tolist())), ord(","))
                pieces.append("")
            else:
                pieces[-1] += orjson.dumps(value).decode()
            pieces[-1] += ',"model_version":' if name == "ts" else ',"holdout":'
        writer.table([b"false", b"true"], self.holdout.astype(np.int64))
        pieces.append(',"slots":{')
        for j, (s, vectors) in enumerate(zip(self.slots, self._vectors(), strict=True)):
            pieces[-1] += ("," if j else "") + orjson.dumps(s.slot).decode() + ':{"arm":'
            writer.table([orjson.dumps(a) for a in s.arm_ids], s.arms)
            pieces.append(',"propensity":')
            writer.floats(s.propensity)
            pieces.append(',"probabilities":')
            writer.spans(*vectors)
            pieces.append("}")
        pieces[-1] += "}"
        writer.column(b"\n".join(self._private()))
        pieces.append("}\n")  # no line holds a raw newline: split on it
        return writer.joined([p.encode() for p in pieces])[0].split(b"\n")[:-1]

    def _private(self) -> list[bytes]:
        """Per decision the text after its slots: context and segments with consent, empty
        segments without."""
        dumps, builtins, segments = orjson.dumps, msgspec.to_builtins, self.segments
        out = []
        for i, (given, context) in enumerate(zip(self.consent.tolist(), self.contexts,
                                                 strict=True)):
            if not given:
                out.append(b',"segments":{}')
                continue
            if type(context) is not dict:  # a msgspec Struct of the batch decoder
                context = builtins(context)
            seg = segments[i]
            out.append(b',"context":' + dumps(context) + b',"segments":'
                       + dumps(seg if type(seg) is dict else dict(seg)))
        return out

    def decisions(self) -> list[wire.LoggedDecision]:
        """The decisions as ``wire.LoggedDecision`` (the join's decision records), read from
        ``lines()`` in one decoder call."""
        return _LOGGED.decode(b"[" + b",".join(self.lines()) + b"]")

    @classmethod
    def of_block(cls, block: columns.Columns) -> DecisionLog:
        """The log of a read decision block (``bandit.wire.columns.read``): its
        probability vectors as the block's texts (``vectors``)."""
        zeros = np.zeros(len(block))
        return cls(campaign=block.campaign, decision_ids=block.decision_ids,
                   subjects=block.subjects, ts=block.ts, model_version=block.model_version,
                   holdout=block.holdout, consent=block.consent, contexts=block.contexts,
                   segments=block.segments,
                   slots=[SlotColumns(s.slot, s.arm_ids, s.arms, s.propensity, zeros, zeros,
                                      None) for s in block.slots],
                   vectors=[(s.vectors, s.starts, s.ends) for s in block.slots],
                   shared=[(s.starts, *s.texts, s.vector) for s in block.slots
                           if s.texts is not None and s.vector is not None] or None,
                   private=block.private)

    def logged(self, rows: Sequence[int] | None = None) -> list[wire.LoggedDecision]:
        """The decisions (those at ``rows``, default all) as ``wire.LoggedDecision``: equal
        to ``decisions()`` (what decoding ``lines()`` gives), built from the columns and the
        vectors' texts."""
        slots, raw = [], msgspec.Raw
        for s, (blob, starts, ends) in zip(self.slots, self._vectors(), strict=True):
            slots.append((s.slot, [s.arm_ids[a] for a in s.arms.tolist()], s.propensity.tolist(),
                          [raw(blob[a:b]) for a, b in zip(starts.tolist(), ends.tolist(),
                                                          strict=True)]))
        choice, decision = wire.LoggedChoice, wire.LoggedDecision
        campaign, contexts, segments = self.campaign, self.contexts, self.segments
        times, versions = self._per_decision()
        holdouts, consents = self.holdout.tolist(), self.consent.tolist()
        out = []
        for i in range(len(self)) if rows is None else rows:
            decision_id, subject = self.decision_ids[i], self.subjects[i]
            holdout, given = holdouts[i], consents[i]
            context: Any = None
            segment: dict[str, str] = {}
            if given:  # the request's own, as lines() writes them
                context, mine = contexts[i], segments[i]
                if context is not None and type(context) is not dict:  # a batch decoder's
                    context = msgspec.to_builtins(context)
                segment = mine if type(mine) is dict else dict(mine)
            out.append(decision(
                decision_id=decision_id, campaign=campaign, subject=subject, ts=times[i],
                model_version=versions[i], holdout=holdout,
                slots={name: choice(arm=arms[i], propensity=p[i], probabilities=v[i])
                       for name, arms, p, v in slots},
                context=context, segments=segment))
        return out

    def blocks(self, partitions: int, max_bytes: int, max_examples: int
               ) -> dict[int, list[tuple[bytes, bytes]]]:
        """The (key, value) records of the decisions as ``cmab.decisions/3`` blocks
        (``bandit.wire.columns``), per partition of their decision ids (``partitions``), in
        call order: at most ``max_examples`` decisions and about ``max_bytes`` bytes a block
        (a decision bigger than that travels alone; a vector text is counted at its first
        decision of the call). A record's key is its first decision id."""
        n = len(self)
        if n == 0:
            return {}
        private = self._private_parts()
        vectors = self._distinct_vectors()
        fixed = 96 + len(self.campaign.encode())  # header, counts, lengths
        sizes = np.full(n, 3 * 16 + 1, dtype=np.int64)
        for s, (_, starts, ends, first) in zip(self.slots, vectors, strict=True):
            fixed += len(s.slot.encode()) + sum(len(a.encode()) + 2 for a in s.arm_ids) + 16
            sizes += 16 + np.where(first == np.arange(n), ends - starts, 0)
        sizes += np.fromiter((0 if p is None else 4 + 8 * len(p[1]) + 4 * len(p[2])
                              for p in private), np.int64, n)
        where = self.partitions(partitions)
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for p in np.unique(where).tolist():
            rows = np.flatnonzero(where == p)
            ends = np.cumsum(sizes[rows])
            start, made = 0, []
            while start < len(rows):
                before = int(ends[start - 1]) if start else 0
                stop = int(np.searchsorted(ends, before + max_bytes - fixed, side="right"))
                stop = min(max(stop, start + 1), start + max_examples, len(rows))
                run = rows[start:stop]
                made.append((self.decision_ids[int(run[0])].encode(),
                             self._block(run, private, vectors)))
                start = stop
            out[p] = made
        return out

    def block(self) -> bytes:
        """All the decisions as one ``cmab.decisions/3`` record value (``blocks`` cuts them
        by partition and size)."""
        return self._block(np.arange(len(self)), self._private_parts(),
                           self._distinct_vectors())

    def _vectors(self) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
        """Per slot the JSON texts of the rows' probability vectors: a blob and each row's
        (starts, ends) in it; a read block's as they came, else written from the columns."""
        if self.vectors is not None:
            return self.vectors
        out = []
        for s in self.slots:
            if s.probabilities is None or s.eligible is None:
                raise ValueError(f"slot {s.slot!r}: a decision log needs every arm's "
                                 "probability (decided with a sink set)")
            out.append(_probability_texts(s.arm_ids, s.probabilities, s.eligible))
        return out

    def _distinct_vectors(self) -> list[tuple[bytes, np.ndarray, np.ndarray, np.ndarray]]:
        """``_vectors`` with, per slot, each row's first row of the same text
        (``kernels.text.first_equal``): what a block keeps once."""
        out = []
        for blob, starts, ends in self._vectors():
            first = np.empty(len(starts), dtype=np.int64)
            first_equal(np.frombuffer(blob, dtype=np.uint8), starts.astype(np.int64, copy=False),
                        ends.astype(np.int64, copy=False), first)
            out.append((blob, starts, ends, first))
        return out

    def _block(self, rows: np.ndarray, private: list[_Part | None],
               vectors: list[tuple[bytes, np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
        """The ``cmab.decisions/3`` value of the decisions ``rows``; ``private``: per decision
        its context and segments (``_private_parts``; None without consent); ``vectors``: per
        slot the probability vectors' texts and each row's first equal one
        (``_distinct_vectors``)."""
        slots = []
        for s, (blob, starts, ends, first) in zip(self.slots, vectors, strict=True):
            distinct, vector = np.unique(first[rows], return_inverse=True)
            text, lengths = _gather(blob, starts[distinct], ends[distinct])
            slots.append(columns.Slot3(
                s.slot, list(s.arm_ids), s.arms[rows].astype("<i4").tobytes(),
                s.propensity[rows].astype("<f8").tobytes(), text,
                np.cumsum(lengths).astype("<u4").tobytes(),
                vector.reshape(-1).astype("<u4").tobytes()))
        listed = rows.tolist()
        return columns.write(columns.Block3(
            campaign=self.campaign, ts=self._column(self.ts, rows),
            model_version=self._column(self.model_version, rows),
            ids=columns.hex_bytes([self.decision_ids[r] for r in listed]),
            subjects=columns.hex_bytes([self.subjects[r] for r in listed]),
            holdout=np.packbits(self.holdout[rows].astype(bool)).tobytes(), slots=slots,
            private=_private_block([private[r] for r in listed])), len(rows))

    def _per_decision(self) -> tuple[list[int], list[int]]:
        """Each decision's time and model version (n), as ints."""
        n = len(self)
        return tuple(value.tolist() if isinstance(value, np.ndarray) else [int(value)] * n
                     for value in (self.ts, self.model_version))  # type: ignore[return-value]

    @staticmethod
    def _column(value: int | np.ndarray, rows: np.ndarray) -> bytes:
        """The ``<i8`` column of a call's value (one for all) or per-decision values, at
        ``rows``."""
        if isinstance(value, np.ndarray):
            return value[rows].astype("<i8").tobytes()
        return np.full(len(rows), int(value), dtype="<i8").tobytes()

    @staticmethod
    def joinable(a: DecisionLog, b: DecisionLog) -> bool:
        """Whether ``concat`` joins the two: one campaign, the same slots and arms."""
        return a.campaign == b.campaign and list(map(_arm_ids, a.slots)) == list(map(
            _arm_ids, b.slots)) and list(map(_slot, a.slots)) == list(map(_slot, b.slots))

    @staticmethod
    def alike(logs: Sequence[DecisionLog]) -> bool:
        """Whether every log is ``joinable`` with the first (compared all at once)."""
        first, k = logs[0], len(logs)
        every = list(chain.from_iterable(map(_slots, logs)))
        return (list(map(_campaign, logs)) == [first.campaign] * k
                and list(map(_arm_ids, every)) == list(map(_arm_ids, first.slots)) * k
                and list(map(_slot, every)) == list(map(_slot, first.slots)) * k)

    @classmethod
    def concat(cls, logs: Sequence[DecisionLog], *, probabilities: bool = True) -> DecisionLog:
        """One log of the decisions of several calls of one campaign with the same slots and
        arms (``joinable``), in order (times and model versions per decision; the probability
        vectors as texts). Each column is joined by one numpy call over the logs, not one per
        log: many logs of one decision each cost about what one log of them all would.
        ``probabilities=False``: the vectors are not read and each is ``{}`` (for logs decided
        for a sink that reads none: the service's in-process join)."""
        first = logs[0]
        names, arms = [s.slot for s in first.slots], [s.arm_ids for s in first.slots]
        slots = list(map(_slots, logs))
        if not cls.alike(logs):
            raise ValueError("decision logs: expected one campaign with the same slots and arms")
        lengths = np.fromiter(map(len, map(_decision_ids, logs)), np.int64, len(logs))
        n = int(lengths.sum())

        def joined(name: str) -> np.ndarray:
            values = list(map(attrgetter(name), logs))
            if np.ndarray not in set(map(type, values)):  # one value per call
                return np.repeat(np.array(values, dtype=np.int64), lengths)
            return np.concatenate([np.broadcast_to(np.asarray(v), k) for v, k in zip(
                values, lengths.tolist(), strict=True)]).astype(np.int64, copy=False)

        def flat(name: str) -> list[Any]:
            return list(chain.from_iterable(map(attrgetter(name), logs)))

        def column(j: int, name: str) -> np.ndarray:
            return _concatenated(list(map(attrgetter(name), map(itemgetter(j), slots))))

        if probabilities:
            texts = [log._vectors() for log in logs]
            vectors = []
            for j in range(len(names)):
                blobs = [t[j][0] for t in texts]
                shift = np.repeat(np.cumsum([0] + list(map(len, blobs[:-1]))), lengths)
                vectors.append((b"".join(blobs), np.concatenate([t[j][1] for t in texts]) + shift,
                                np.concatenate([t[j][2] for t in texts]) + shift))
        else:
            vectors = [_no_vectors(n)] * len(names)
        return cls(campaign=first.campaign, decision_ids=flat("decision_ids"),
                   subjects=flat("subjects"), ts=joined("ts"),
                   model_version=joined("model_version"),
                   holdout=_concatenated(list(map(attrgetter("holdout"), logs))),
                   consent=_concatenated(list(map(attrgetter("consent"), logs))),
                   contexts=flat("contexts"), segments=flat("segments"),
                   slots=[SlotColumns(name, ids, column(j, "arms"), column(j, "propensity"),
                                      np.zeros(n), np.zeros(n), None)
                          for j, (name, ids) in enumerate(zip(names, arms, strict=True))],
                   vectors=vectors)

    def _private_parts(self) -> list[_Part | None]:
        """Per decision its context and segments as a block stores them (None without
        consent): its shape (a context or none, the context's keys in order with which hold
        labels, the segment keys in order), its numbers and its labels (the context's, then
        the segments')."""
        builtins, segments = msgspec.to_builtins, self.segments
        out: list[_Part | None] = []
        for i, (given, context) in enumerate(zip(self.consent.tolist(), self.contexts,
                                                 strict=True)):
            if not given:
                out.append(None)
                continue
            if context is not None and type(context) is not dict:  # a batch decoder's Struct
                context = builtins(context)
            seg = segments[i]
            values = () if context is None else context.values()
            strings = tuple(type(v) is str for v in values)
            out.append(((context is not None, () if context is None else tuple(context), strings,
                         tuple(seg)),
                        [float(v) for v, t in zip(values, strings, strict=True) if not t],
                        [*(v for v, t in zip(values, strings, strict=True) if t),
                         *seg.values()]))
        return out

    def partitions(self, partitions: int) -> np.ndarray:
        """(n,) int64: the partition Kafka's default partitioner gives each decision id (as
        ``streams.publish`` keys events: ``decision_id.encode()``) among ``partitions``."""
        return partition_of(self.decision_ids, partitions)

    def by_partition(self, partitions: int) -> dict[int, list[tuple[str, bytes]]]:
        """The (decision id, line) pairs of each partition (``partitions``), in call order."""
        where = self.partitions(partitions)
        ids, lines = self.decision_ids, self.lines()
        out: dict[int, list[tuple[str, bytes]]] = {}
        for p in np.unique(where).tolist():
            rows = np.flatnonzero(where == p).tolist()
            out[p] = [(ids[i], lines[i]) for i in rows]
        return out


def _concatenated(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` of many small 1-d arrays: when they share a dtype and are
    contiguous, their bytes joined in one call (numpy's own costs more per array than a row's
    bytes)."""
    kind = arrays[0].dtype
    if len(arrays) < 16 or set(map(_dtype, arrays)) != {kind} or set(map(_ndim, arrays)) != {1}:
        return np.concatenate(arrays)
    try:
        return np.frombuffer(b"".join(arrays), dtype=kind)  # type: ignore[arg-type]
    except BufferError:  # a strided view
        return np.concatenate(arrays)


def _no_vectors(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A slot's probability texts when none were computed: ``{}`` for each of n rows."""
    return b"{}", np.zeros(n, dtype=np.int64), np.full(n, 2, dtype=np.int64)


# A consenting decision's context and segments in a block: (shape, numbers, labels).
_Part = tuple[tuple[bool, tuple[str, ...], tuple[bool, ...], tuple[str, ...]], list[float],
              list[str]]


def _private_block(parts: list[_Part | None]) -> columns.Private3 | None:
    """The ``private`` of a block whose decisions have ``parts`` (``_private_parts``): its
    consenting decisions' shapes (numbered as they first come), numbers and labels (each
    distinct label once); None when none has consent."""
    shapes: dict[tuple[Any, ...], int] = {}
    names: dict[str, int] = {}
    which: list[int] = []
    numbers: list[list[float]] = []
    labels: list[list[int]] = []
    for part in parts:
        if part is None:
            continue
        shape, values, words = part
        k = shapes.setdefault(shape, len(shapes))
        if k == len(numbers):
            numbers.append([])
            labels.append([])
        which.append(k)
        numbers[k] += values
        labels[k] += [names.setdefault(w, len(names)) for w in words]
    if not which:
        return None
    return columns.Private3(
        names=list(names), shape=np.array(which, dtype="<u4").tobytes(),
        shapes=[columns.Shape(context=has, keys=list(keys),
                              strings=bytes(bytearray(strings)), segments=list(segs),
                              numbers=np.array(numbers[k], dtype="<f8").tobytes(),
                              labels=np.array(labels[k], dtype="<u4").tobytes())
                for (has, keys, strings, segs), k in shapes.items()])


def _gather(blob: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The texts ``blob[starts[i]:ends[i]]`` back to back, and their lengths (one numpy
    gather, no slice per text)."""
    lengths = ends - starts
    data = np.frombuffer(blob, dtype=np.uint8)
    at = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(
        int(lengths.sum()))
    return data[at].tobytes(), lengths


def _probability_texts(arm_ids: list[str], P: np.ndarray,
                       eligible: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Each row's ``{"arm":p,...}`` over its eligible arms: one text per row, in a blob, with
    the rows' (starts, ends). Rows with the same eligible arms share a template (most rows of a
    slot have the same ones), so each group is one ``interleave`` call."""
    n, k = P.shape
    if k < 63:  # a row's eligible arms as one integer: a 1-d sort, or none if all agree
        codes = eligible @ (np.int64(1) << np.arange(k, dtype=np.int64))
        patterns, inverse = ((codes[:1], np.zeros(n, dtype=np.int64))
                             if (codes == codes[0]).all() else np.unique(codes,
                                                                         return_inverse=True))
        masks = (patterns[:, None] >> np.arange(k)) & 1 == 1
    else:
        patterns, inverse = np.unique(np.packbits(eligible, axis=1), axis=0,
                                      return_inverse=True)
        masks = np.unpackbits(patterns, axis=1)[:, :k] == 1
    inverse = inverse.reshape(-1)
    names = [orjson.dumps(a).decode() for a in arm_ids]
    starts, ends = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    blobs: list[bytes] = []
    size = 0
    for g, mask in enumerate(masks):
        arms = np.flatnonzero(mask)
        rows = np.flatnonzero(inverse == g) if len(masks) > 1 else np.arange(n)
        group = _Columns(len(rows))
        for a in arms.tolist():
            group.floats(np.ascontiguousarray(P[rows, a]))
        pieces = [("{" if j == 0 else ",") + names[a] + ":" for j, a in enumerate(arms.tolist())]
        pieces.append("}")
        text, lengths = group.joined([p.encode() for p in pieces])
        ends[rows] = size + np.cumsum(lengths)
        starts[rows] = ends[rows] - lengths
        blobs.append(text)
        size += len(text)
    return b"".join(blobs), starts, ends


class _Columns:
    """Column texts for ``interleave``: each column's texts in one buffer, located per row."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.blobs: list[bytes] = []
        self.bounds: list[tuple[np.ndarray, np.ndarray]] = []
        self.size = 0

    def spans(self, blob: bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        """A column whose row i is ``blob[starts[i]:ends[i]]``."""
        self.bounds.append((starts + self.size, ends + self.size))
        self.blobs.append(blob)
        self.size += len(blob)

    def column(self, blob: bytes, separator: int = ord("\n")) -> None:
        """A column of n texts separated by ``separator``."""
        self.spans(blob, *row_bounds(np.frombuffer(blob, dtype=np.uint8), separator, self.n))

    def table(self, texts: list[bytes], rows: np.ndarray) -> None:
        """A column whose row i is ``texts[rows[i]]`` (arm ids, booleans)."""
        blob = b"\n".join(texts)
        starts, ends = row_bounds(np.frombuffer(blob, dtype=np.uint8), ord("\n"), len(texts))
        self.spans(blob, starts[rows], ends[rows])

    def floats(self, values: np.ndarray) -> None:
        """A float64 column, as orjson writes each float (one call for the column)."""
        self.column(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1], ord(","))

    def _texts(self, pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """The rows' texts (template pieces around the columns), back to back, and each
        row's length."""
        piece_at = np.cumsum([0] + [len(p) for p in pieces], dtype=np.int64)
        if self.bounds:
            starts = np.stack([b[0] for b in self.bounds], axis=1)
            ends = np.stack([b[1] for b in self.bounds], axis=1)
        else:
            starts = ends = np.zeros((self.n, 0), dtype=np.int64)
        lengths = int(piece_at[-1]) + (ends - starts).sum(axis=1)
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        interleave(np.frombuffer(b"".join(pieces), dtype=np.uint8), piece_at,
                   np.frombuffer(b"".join(self.blobs), dtype=np.uint8), starts, ends, out)
        return out, lengths

    def joined(self, pieces: list[bytes]) -> tuple[bytes, np.ndarray]:
        out, lengths = self._texts(pieces)
        return out.tobytes(), lengths



def partition_of(keys: Sequence[str], partitions: int) -> np.ndarray:
    """(n,) int64: the partition Kafka's default partitioner gives each key (``key.encode()``
    as the record key) among ``partitions``: murmur2, positive, modulo. Keys of one length
    (decision ids) are hashed as one array; the same numbers as kafka-python's pure-Python
    murmur2, key by key (tests/streams/test_decisionlog.py).

    >>> partition_of(["0123456789abcdef0123456789abcdef"], 7).tolist()
    [5]
    """
    n = len(keys)
    out = np.empty(n, dtype=np.int64)
    if not n:
        return out
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    for length, rows in by_length.items():
        data = np.frombuffer("".join(keys[i] for i in rows).encode(), dtype=np.uint8)
        if len(data) != length * len(rows):
            raise ValueError("partition keys: expected ASCII decision ids")
        out[rows] = _murmur2(data.reshape(len(rows), length)) & 0x7FFFFFFF
    return out % partitions


def _murmur2(data: np.ndarray) -> np.ndarray:
    """Murmur2 of each row of ``data`` (n, length) uint8, as int64 (n,)."""
    n, length = data.shape
    h = np.full(n, _SEED ^ np.uint32(length), dtype=np.uint32)
    whole = length // 4
    words = np.ascontiguousarray(data[:, :4 * whole]).view("<u4").astype(np.uint32)
    with np.errstate(over="ignore"):
        for i in range(whole):
            k = words[:, i] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
        tail = data[:, 4 * whole:].astype(np.uint32)
        extra = length % 4
        if extra >= 3:
            h ^= tail[:, 2] << np.uint32(16)
        if extra >= 2:
            h ^= tail[:, 1] << np.uint32(8)
        if extra >= 1:
            h ^= tail[:, 0]
            h *= _M
        h ^= h >> np.uint32(13)
        h *= _M
        h ^= h >> np.uint32(15)
    return h.astype(np.int64)
