"""The binary decision blocks ``cmab.decisions/3`` (written) and ``cmab.decisions/2`` (still
read): decisions of one campaign and partition as columns, read with ``np.frombuffer`` and no
Python object per decision but a consenting subscriber's context and segments.

A record value is a text header, ``cmab.decisions/3 <n>\\n`` (as ``cmab.decisions/1``'s: it
tells a block from anything else on the topic and counts its decisions), then one msgpack array
(``Block3``): the campaign, then fixed-width columns as bytes: time and model version (``<i8``),
decision ids and subject keys (16 bytes each: their 32 hex digits), holdout (bits), and per
slot its name, its arm ids (the block's dictionary), each decision's arm (``<i4``, an index
into them) and propensity (``<f8``), and its probability vector: the JSON object of every
eligible arm's probability, as ``cmab.decisions/1`` has it. The block keeps each distinct
vector text once (``texts``, back to back, and where each ends, ``<u4``) and each decision's
index into them (``vector``, ``<u4``): the decisions of one call share a few vectors, so a
decision costs 4 bytes a slot instead of its vector's text. ``cmab.decisions/2`` (``Block``)
stored every decision's text (``vectors``, and where each ends); it is read as it was. The
worker copies the texts into ``.joined`` and its checkpoints as they are, so it never writes a
float as text. Context and segments travel only for decisions made with consent (the lowest
bit of the id, ``bandit.engine.decided_with_consent``): ``private`` (``Private3``) gives each
such decision, in order, a shape (whether it has a context, the context's keys in order and
which hold labels, the segment keys in order), and each shape holds its decisions' numbers
(``<f8``) and labels (``<u4`` indices into the block's dictionary of labels) as columns, a row
per decision; it is absent when no decision of the block has consent. A consent-less decision
has no row in it, so a block cannot carry its context. ``cmab.decisions/2``'s ``private`` was
one JSON array with an object per such decision. The worker reads a ``/3`` block's contexts
as columns (``PrivateColumns``) and makes them dicts only where it needs them.

``read`` checks what the models check of a logged decision (names, ranges, finite numbers; a
probability vector is checked to be a JSON object, as ``cmab.decisions/1``'s are) and refuses
the whole block with the reason (InvalidInputError), naming the field and, where it is one
decision's, its number in the block (from 1). The writer is
``bandit.engine.decisionlog.DecisionLog.blocks``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args, overload

import msgspec
import numpy as np

from bandit.errors import InvalidInputError
from bandit.kernels.blocks import slot_fits
from bandit.models.names import MAX_MS
from bandit.wire.names import Label, Name, names_fit

NAME = b"cmab.decisions/3"  # what ``write`` writes
NAME_2 = b"cmab.decisions/2"  # still read
PREFIXES = (NAME + b" ", NAME_2 + b" ")
_ID_BYTES = 16


class _Choices(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """A slot's fields both versions share, first in their arrays."""

    name: str
    arm_ids: list[str]  # the block's dictionary of this slot's arms
    arms: bytes  # (n,) <i4: indices into arm_ids
    propensity: bytes  # (n,) <f8


class Slot(_Choices):
    """A ``cmab.decisions/2`` slot: a text per decision."""

    vectors: bytes  # each row's probability vector, the JSON object {"arm":p,...}, back to back
    ends: bytes  # (n,) <u4: where each row's vector ends in ``vectors``


class Slot3(_Choices):
    texts: bytes  # the distinct probability vectors, each a JSON object, back to back
    text_ends: bytes  # (t,) <u4: where each text ends in ``texts``
    vector: bytes  # (n,) <u4: each row's vector, an index into the texts


class Shape(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """The consenting decisions of one shape: context keys (in order) with which of them hold
    labels, segment keys (in order), and their values as columns, a row per decision."""

    context: bool  # whether the context is an object (False: none)
    keys: list[Name]  # the context's keys, in order (none without a context)
    strings: bytes  # (len(keys),) u1: 1 where the key's values are labels, 0 numbers
    segments: list[Name]  # the segment keys, in order
    numbers: bytes  # (rows, number keys) <f8, row after row
    labels: bytes  # (rows, label keys then segment keys) <u4: indices into Private3.names


class Private3(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """Context and segments of a block's decisions made with consent, by shape."""

    names: list[Label]  # the block's dictionary of labels (string values)
    shape: bytes  # (c,) <u4: each consenting decision's shape, in order
    shapes: list[Shape]


class _Decisions(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """A block's fields both versions share, first in their arrays."""

    campaign: str
    ts: bytes  # (n,) <i8: ms since the epoch
    model_version: bytes  # (n,) <i8
    ids: bytes  # (n, 16): each decision id's 32 hex digits as bytes
    subjects: bytes  # (n, 16): each subject key's
    holdout: bytes  # np.packbits of (n,) flags


class Block3(_Decisions):
    slots: list[Slot3]
    private: Private3 | None = None  # absent when no decision of the block has consent


class Block(_Decisions):
    """``cmab.decisions/2``: a text per decision (``Slot``), the private column JSON."""

    slots: list[Slot]
    private: bytes | None = None  # JSON: [{"context": ..., "segments": ...}] with consent


class Private(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    context: dict[Name, float | Label] | None = None
    segments: dict[Name, Label] = {}


class _Private(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``Private`` but the keys' length, which ``_private`` checks once per distinct key."""

    context: dict[str, float | Label] | None = None
    segments: dict[str, Label] = {}


_NAME_LENGTH = get_args(Name)[1].max_length
_ENCODER = msgspec.msgpack.Encoder()
_BLOCK = msgspec.msgpack.Decoder(Block)
_BLOCK3 = msgspec.msgpack.Decoder(Block3)
_PRIVATE = msgspec.json.Decoder(list[Private])
_LOOSE_PRIVATE = msgspec.json.Decoder(list[_Private])
_VECTORS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class SlotArrays:
    """One slot of a read block: arms (n,) int64, propensity (n,), and the JSON texts of
    the probability vectors: row i's is ``vectors[starts[i]:ends[i]]`` (rows with the same
    vector share its span in a ``cmab.decisions/3`` block's, whose ``texts`` are each text's
    (starts, ends) once and ``vector`` (n,) each row's index into them)."""

    slot: str
    arm_ids: list[str]
    arms: np.ndarray
    propensity: np.ndarray
    vectors: bytes
    starts: np.ndarray
    ends: np.ndarray
    texts: tuple[np.ndarray, np.ndarray] | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class ShapeColumns:
    """The consenting decisions of one shape in a read block: their positions in it
    (``rows``, (r,) int64), the context's keys (None: no context) with which hold labels
    (``strings``), the segment keys, the numbers (r, number keys) float64, and the labels
    (r, label keys + segment keys) int64: indices into ``PrivateColumns.names``."""

    rows: np.ndarray
    keys: tuple[str, ...] | None
    strings: tuple[bool, ...]
    segments: tuple[str, ...]
    numbers: np.ndarray
    labels: np.ndarray


@dataclass
class PrivateColumns:
    """The context and segments of a ``cmab.decisions/3`` block's consenting decisions, as
    columns by shape; ``dicts`` gives them as each decision's dicts (made once, when asked)."""

    n: int
    names: list[str]
    shapes: list[ShapeColumns]
    _dicts: tuple[list[dict[str, Any] | None], list[dict[str, str]]] | None = field(
        default=None, repr=False, compare=False)

    def dicts(self) -> tuple[list[dict[str, Any] | None], list[dict[str, str]]]:
        """(contexts, segments) of all n decisions: the decision's own with consent, None and
        {} without."""
        if self._dicts is None:
            contexts: list[dict[str, Any] | None] = [None] * self.n
            segments: list[dict[str, str]] = [{} for _ in range(self.n)]
            names = np.array(self.names, dtype=object)
            for s in self.shapes:
                labels = names[s.labels].tolist() if s.labels.size else [[]] * len(s.rows)
                numbers = s.numbers.tolist()
                g = len(s.segments)
                for i, r in enumerate(s.rows.tolist()):
                    mine = labels[i]
                    if s.keys is not None:
                        values, words = iter(numbers[i]), iter(mine)
                        contexts[r] = {k: next(words) if t else next(values)
                                       for k, t in zip(s.keys, s.strings, strict=True)}
                    if g:
                        segments[r] = dict(zip(s.segments, mine[len(mine) - g:], strict=True))
            self._dicts = (contexts, segments)
        return self._dicts


class LazyRows(Sequence[Any]):
    """A per-decision list made only when first read: a read block's contexts or segments
    (``PrivateColumns.dicts``), which the worker's fast paths never need."""

    def __init__(self, n: int, make: Callable[[], list[Any]]) -> None:
        self._n, self._make = n, make
        self._rows: list[Any] | None = None

    def __len__(self) -> int:
        return self._n

    def _list(self) -> list[Any]:
        rows = self._rows
        if rows is None:
            rows = self._rows = self._make()
        return rows

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        return self._list()[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list())


@dataclass(frozen=True)
class Columns:
    """A read decision block: n decisions of one campaign; ``ts`` and
    ``model_version`` (n,) int64; ``consent`` (n,) bool from the ids; ``contexts`` and
    ``segments`` (n): the decision's own with consent, None and {} without."""

    campaign: str
    ts: np.ndarray
    model_version: np.ndarray
    decision_ids: list[str]
    subjects: list[str]
    holdout: np.ndarray
    consent: np.ndarray
    contexts: Sequence[dict[str, Any] | None]
    segments: Sequence[dict[str, str]]
    slots: list[SlotArrays]
    private: PrivateColumns | None = None  # a cmab.decisions/3 block's, by shape

    def __len__(self) -> int:
        return len(self.decision_ids)


def write(block: Block3, n: int) -> bytes:
    """The record value of ``block`` (n decisions)."""
    return NAME + b" %d\n" % n + _ENCODER.encode(block)


def count(value: bytes) -> int:
    """The decisions a block ``write`` wrote holds, from its header."""
    return int(value[len(NAME) + 1:value.index(b"\n")])


def is_block(value: bytes | None) -> bool:
    """Whether a ``.decisions`` record value claims to be a binary block (of either version):
    ``read`` says whether it is one."""
    return value is not None and value.startswith(PREFIXES)


def hex_bytes(keys: list[str]) -> bytes:
    """32-hex-digit keys as 16 bytes each (ValueError if one is not)."""
    raw = bytes.fromhex("".join(keys))
    if len(raw) != _ID_BYTES * len(keys):
        raise ValueError("expected keys of 32 hex digits")
    return raw


def consent_of(ids: bytes) -> np.ndarray:
    """(n,) bool: the lowest bit of each 16-byte id (odd last hex digit: decided with
    consent)."""
    return np.frombuffer(ids, dtype=np.uint8)[_ID_BYTES - 1::_ID_BYTES] & 1 == 1


def header(value: bytes | None, name: bytes, what: str) -> tuple[int, int]:
    """The count in the header line ``<name> <count>\\n`` of a block of ``what`` ("decision",
    "joined") and where that line's newline is; InvalidInputError, its message the reason, if
    ``value`` does not start with one.

    >>> header(b"cmab.joined/2 12\\n...", b"cmab.joined/2", "joined")
    (12, 16)
    """
    prefix = name + b" "
    if not value or not value.startswith(prefix):
        raise InvalidInputError(f"not a {what} block: no {name.decode()!r} header")
    end = value.find(b"\n")
    digits = value[len(prefix):end if end >= 0 else len(value)]
    if end < 0 or not digits.isdigit() or len(digits) > 9:
        raise InvalidInputError(f"not a {what} block: header {value[:64]!r}... does not end "
                                "in a count and a newline")
    return int(digits), end


def read(value: bytes | None) -> Columns:
    """The columns of a ``cmab.decisions/3`` (or ``/2``) record value; InvalidInputError, its
    message the reason, if it is not a whole, valid block."""
    old = value is not None and value.startswith(PREFIXES[1])
    n, end = header(value, NAME_2 if old else NAME, "decision")
    assert value is not None
    try:
        block = (_BLOCK if old else _BLOCK3).decode(memoryview(value)[end + 1:])
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"damaged decision block: {exc}") from None
    return _columns(block, n)


def _fail(why: str) -> InvalidInputError:
    return InvalidInputError(f"decision block: {why}")


def _numbers(raw: bytes, dtype: str, count: int, field: str) -> np.ndarray:
    if len(raw) != np.dtype(dtype).itemsize * count:
        raise _fail(f"{field}: expected {count} values, got {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype)


def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0]) + 1


def _objects(vectors: bytes, starts: np.ndarray, ends: np.ndarray, parse: np.ndarray) -> bool:
    """Whether each row ``vectors[starts[i]:ends[i]]`` whose ``parse`` flag is set is one
    JSON object (``slot_fits`` checked the framing and left unset the rows equal to a row
    that is parsed)."""
    rows = np.flatnonzero(parse)
    texts = [vectors[a:b] for a, b in zip(starts[rows].tolist(), ends[rows].tolist(),
                                          strict=True)]
    # One JSON array of the texts must parse into one value per text, each exactly its text:
    # a string spanning a comma cannot join two rows into one value and split another.
    try:
        values = _VECTORS.decode(b"[" + b",".join(texts) + b"]")
    except msgspec.DecodeError:
        return False
    return list(map(len, values)) == list(map(len, texts))


def _choices(s: _Choices, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A slot's arms (n,) and propensities (n,); InvalidInputError naming the first decision
    whose arm is no index into the slot's arms or whose propensity is not in (0, 1]."""
    k = len(s.arm_ids)
    arms = _numbers(s.arms, "<i4", n, f"slot {s.name!r} arms")
    bad = (arms < 0) | (arms >= k)
    if bad.any():
        raise _fail(f"slot {s.name!r}, decision {_first_bad(bad)}: arm index out of "
                    f"0..{k - 1}")
    propensity = _numbers(s.propensity, "<f8", n, f"slot {s.name!r} propensity")
    bad = ~((propensity > 0) & (propensity <= 1))  # NaN too
    if bad.any():
        raise _fail(f"slot {s.name!r}, decision {_first_bad(bad)}: propensity: expected a "
                    "number in (0, 1]")
    return arms, propensity


def _unframed(texts: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per text of ``texts`` (at starts:ends) whether it is empty, runs past the end, or is
    not framed as a JSON object ("{" first, "}" last)."""
    data = np.frombuffer(texts, dtype=np.uint8)
    bad = (ends <= starts) | (ends > len(data))
    if not bad.any():
        bad = (data[starts] != ord("{")) | (data[ends - 1] != ord("}"))
    return bad


def _refuse_slot(s: Slot, n: int) -> InvalidInputError:
    """Why ``slot_fits`` refused slot ``s`` of a block of n decisions: the first of its
    checks that fails, naming the decision."""
    try:
        _choices(s, n)
    except InvalidInputError as exc:
        return exc
    ends = _numbers(s.ends, "<u4", n, f"slot {s.name!r} ends").astype(np.int64)
    starts = np.concatenate(([0], ends[:-1]))
    size = len(s.vectors)
    bad = _unframed(s.vectors, starts, ends)
    if bad.any() or ends[-1] != size:
        return _fail(f"slot {s.name!r}, decision {_first_bad(bad) if bad.any() else n}: "
                     "probabilities: expected a JSON object each, back to back")
    # A control byte (the checkpoints separate vectors by some).
    return _fail(f"slot {s.name!r}: probabilities: expected a JSON object each")


def _private(raw: bytes) -> tuple[list[dict[str, Any] | None], list[dict[str, str]], set[str]]:
    """The contexts and segments of a block's ``private`` column, and the keys they use;
    refused with msgspec's reason for the contract's types (``Private``). A name's length is
    checked once per distinct key (msgspec would check it at every key of every entry)."""
    private: list[Private] | list[_Private] | None
    try:
        private = _LOOSE_PRIVATE.decode(raw)
    except msgspec.DecodeError:
        private = None
    if private is not None:
        given, mine = [p.context for p in private], [p.segments for p in private]
        keys: set[str] = set().union(*(c for c in given if c is not None), *mine)
        if not keys or ("" not in keys and max(map(len, keys)) <= _NAME_LENGTH):
            return given, mine, keys
    try:  # refused: the contract's types give the reason
        private = _PRIVATE.decode(raw)
    except msgspec.DecodeError as exc:
        raise _fail(f"context and segments: {exc}") from None
    given, mine = [p.context for p in private], [p.segments for p in private]
    return given, mine, set().union(*(c for c in given if c is not None), *mine)


def _slot(s: Slot, n: int) -> SlotArrays:
    """A ``cmab.decisions/2`` slot's arrays (a text per decision), checked."""
    out = np.empty((4, n), dtype=np.int64)  # arms, starts, ends, parse (slot_fits)
    if not (len(s.arms) == 4 * n and len(s.propensity) == 8 * n and len(s.ends) == 4 * n
            and slot_fits(np.frombuffer(s.arms, dtype="<i4"), len(s.arm_ids),
                          np.frombuffer(s.propensity, dtype="<f8"),
                          np.frombuffer(s.ends, dtype="<u4"),
                          np.frombuffer(s.vectors, dtype=np.uint8), out)):
        raise _refuse_slot(s, n)
    if not _objects(s.vectors, out[1], out[2], out[3]):
        raise _fail(f"slot {s.name!r}: probabilities: expected a JSON object each")
    return SlotArrays(s.name, list(s.arm_ids), out[0],
                      np.frombuffer(s.propensity, dtype="<f8").copy(), s.vectors, out[1], out[2])


def _slot3(s: Slot3, n: int) -> SlotArrays:
    """A ``cmab.decisions/3`` slot's arrays (each distinct text once, an index per decision),
    checked; each row's (starts, ends) are its text's."""
    arms, propensity = _choices(s, n)
    if len(s.text_ends) % 4 or not s.text_ends:
        raise _fail(f"slot {s.name!r}: text_ends: expected at least one <u4, got "
                    f"{len(s.text_ends)} bytes")
    ends = np.frombuffer(s.text_ends, dtype="<u4").astype(np.int64)
    starts = np.concatenate(([0], ends[:-1]))
    if (bool(_unframed(s.texts, starts, ends).any()) or int(ends[-1]) != len(s.texts)
            or int(np.frombuffer(s.texts, dtype=np.uint8).min()) < 0x20
            or not _objects(s.texts, starts, ends, np.ones(len(ends), dtype=bool))):
        raise _fail(f"slot {s.name!r}: probabilities: expected a JSON object each, back to "
                    "back")
    vector = _numbers(s.vector, "<u4", n, f"slot {s.name!r} vector")
    bad = vector >= len(ends)
    if bad.any():
        raise _fail(f"slot {s.name!r}, decision {_first_bad(bad)}: vector: expected an index "
                    f"below {len(ends)}")
    which = vector.astype(np.intp)
    return SlotArrays(s.name, list(s.arm_ids), arms.astype(np.int64), propensity.copy(),
                      s.texts, starts[which], ends[which], (starts, ends), which)


def _private3(private: Private3, consent: np.ndarray, n: int) -> PrivateColumns:
    """The columns of a ``cmab.decisions/3`` block's ``private``, checked: a shape per
    consenting decision, each shape's keys distinct names with their values' kinds, every
    number finite, every label an index into the names."""
    rows = np.flatnonzero(consent)
    shape = _numbers(private.shape, "<u4", len(rows), "context and segments: shape")
    if shape.size and int(shape.max()) >= len(private.shapes):
        first = int(rows[_first_bad(shape >= len(private.shapes)) - 1]) + 1  # in the block
        raise _fail(f"decision {first}: context and segments: shape: expected an index below "
                    f"{len(private.shapes)}")
    keys = [k for s in private.shapes for k in (*s.keys, *s.segments)]
    if keys and not names_fit(sorted(set(keys))):
        raise _fail("context or segment key: expected the name pattern")
    shapes = []
    for j, s in enumerate(private.shapes):
        mine = rows[shape == j]
        strings = np.frombuffer(s.strings, dtype=np.uint8)
        where = f"context and segments: shape {j + 1}"
        if (len(strings) != len(s.keys) or bool((strings > 1).any())
                or len(set(s.keys)) != len(s.keys) or len(set(s.segments)) != len(s.segments)
                or (s.keys and not s.context)):
            raise _fail(f"{where}: expected distinct keys, each with a kind (0 number, 1 "
                        "label), and keys only with a context")
        words = int(strings.sum()) + len(s.segments)
        numbers = _numbers(s.numbers, "<f8", len(mine) * (len(s.keys) - int(strings.sum())),
                           f"{where}: numbers").reshape(len(mine), -1)
        labels = _numbers(s.labels, "<u4", len(mine) * words, f"{where}: labels").reshape(
            len(mine), words)
        if not bool(np.isfinite(numbers).all()):
            raise _fail(f"{where}: numbers: expected finite numbers")
        if labels.size and int(labels.max()) >= len(private.names):
            raise _fail(f"{where}: labels: expected indices below {len(private.names)}")
        shapes.append(ShapeColumns(mine, tuple(s.keys) if s.context else None,
                                   tuple(bool(t) for t in strings.tolist()),
                                   tuple(s.segments), numbers, labels.astype(np.int64)))
    return PrivateColumns(n, list(private.names), shapes)


def _columns(block: Block | Block3, n: int) -> Columns:
    if n < 1:
        raise _fail("expected at least one decision")
    ts = _numbers(block.ts, "<i8", n, "ts")
    version = _numbers(block.model_version, "<i8", n, "model_version")
    for name, values in (("ts", ts), ("model_version", version)):
        if values.min() < 0 or values.max() > MAX_MS:
            bad = (values < 0) | (values > MAX_MS)
            raise _fail(f"decision {_first_bad(bad)}: {name}: expected 0..{MAX_MS}")
    if len(block.ids) != _ID_BYTES * n or len(block.subjects) != _ID_BYTES * n:
        raise _fail(f"ids and subjects: expected {n} of {_ID_BYTES} bytes, got "
                    f"{len(block.ids)} and {len(block.subjects)} bytes")
    if len(block.holdout) != -(-n // 8):
        raise _fail(f"holdout: expected {n} flags, got {len(block.holdout)} bytes")
    if not block.slots:
        raise _fail("slots: expected at least one")
    names = [block.campaign, *(s.name for s in block.slots)]
    arm_names = [a for s in block.slots for a in s.arm_ids]
    lengths = list(map(len, names + arm_names))
    if not (min(lengths) > 0 and max(lengths) <= 64) or not names_fit(names + arm_names):
        raise _fail("campaign, slot or arm name: expected the name pattern, got "
                    f"{[x[:64] for x in names + arm_names if not names_fit([x])][:1]}")
    if len(set(names[1:])) != len(block.slots):
        raise _fail("slots: a slot name is repeated")
    slots = []
    for s in block.slots:
        k = len(s.arm_ids)
        if not k or len(set(s.arm_ids)) != k:
            raise _fail(f"slot {s.name!r}: expected distinct arm ids, got {k} with repeats")
        slots.append(_slot(s, n) if type(s) is Slot else _slot3(cast(Slot3, s), n))
    raw_ids = block.ids
    consent = consent_of(raw_ids)
    contexts: Sequence[dict[str, Any] | None]
    segments: Sequence[dict[str, str]]
    private = None
    if block.private is None:
        contexts, segments = [None] * n, [{} for _ in range(n)]
    elif isinstance(block.private, Private3):
        private = made = _private3(block.private, consent, n)
        contexts, segments = (LazyRows(n, lambda: made.dicts()[0]),
                              LazyRows(n, lambda: made.dicts()[1]))
    else:
        given, mine, keys = _private(block.private)
        rows = np.flatnonzero(consent).tolist()
        if len(given) != len(rows):
            raise _fail(f"context and segments: expected {len(rows)}, one per decision made "
                        f"with consent, got {len(given)}")
        if keys and not names_fit(sorted(keys)):
            raise _fail("context or segment key: expected the name pattern")
        if len(rows) == n:
            contexts, segments = given, mine
        else:
            contexts, segments = [None] * n, [{} for _ in range(n)]
            for r, context, segment in zip(rows, given, mine, strict=True):
                contexts[r], segments[r] = context, segment
    return Columns(
        campaign=block.campaign, ts=ts.astype(np.int64), model_version=version.astype(np.int64),
        decision_ids=raw_ids.hex(" ", _ID_BYTES).split(),
        subjects=block.subjects.hex(" ", _ID_BYTES).split(),
        holdout=np.unpackbits(np.frombuffer(block.holdout, dtype=np.uint8), count=n).astype(bool),
        consent=consent, contexts=contexts, segments=segments, slots=slots, private=private)
