"""The binary decision block ``cmab.decisions/2``: decisions of one campaign and partition as
columns, read with ``np.frombuffer`` and no Python object per decision but a consenting
subscriber's context and segments.

A record value is a text header, ``cmab.decisions/2 <n>\\n`` (as ``cmab.decisions/1``'s: it
tells a block from anything else on the topic and counts its decisions), then one msgpack array
(``Block``): the campaign, then fixed-width columns as bytes: time and model version (``<i8``),
decision ids and subject keys (16 bytes each: their 32 hex digits), holdout (bits), and per
slot its name, its arm ids (the block's dictionary), each decision's arm (``<i4``, an index
into them) and propensity (``<f8``), and its probability vector: the JSON object of every
eligible arm's probability, as ``cmab.decisions/1`` has it, in a string column (the texts back
to back, and where each ends, ``<u4``). The worker copies those texts into ``.joined`` and its
checkpoints as they are, so it never writes a float as text. Context and segments travel only
for decisions made with consent (the lowest bit of the id,
``bandit.engine.decided_with_consent``): ``private`` is one JSON array with an object per such
decision, in order, and is absent when no decision of the block has consent; a consent-less
decision has no place in it, so a block cannot carry its context.

``read`` checks what the models check of a logged decision (names, ranges, finite numbers; a
probability vector is checked to be a JSON object, as ``cmab.decisions/1``'s are) and refuses
the whole block with the reason (InvalidInputError), naming the field and, where it is one
decision's, its number in the block (from 1). The writer is
``bandit.engine.decisionlog.DecisionLog.blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from bandit.errors import InvalidInputError
from bandit.models.names import MAX_MS
from bandit.wire.names import Label, Name, names_fit

NAME = b"cmab.decisions/2"
PREFIX = NAME + b" "
_ID_BYTES = 16


class Slot(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    name: str
    arm_ids: list[str]  # the block's dictionary of this slot's arms
    arms: bytes  # (n,) <i4: indices into arm_ids
    propensity: bytes  # (n,) <f8
    vectors: bytes  # each row's probability vector, the JSON object {"arm":p,...}, back to back
    ends: bytes  # (n,) <u4: where each row's vector ends in ``vectors``


class Block(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    campaign: str
    ts: bytes  # (n,) <i8: ms since the epoch
    model_version: bytes  # (n,) <i8
    ids: bytes  # (n, 16): each decision id's 32 hex digits as bytes
    subjects: bytes  # (n, 16): each subject key's
    holdout: bytes  # np.packbits of (n,) flags
    slots: list[Slot]
    private: bytes | None = None  # JSON: [{"context": ..., "segments": ...}] with consent


class Private(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    context: dict[Name, float | Label] | None = None
    segments: dict[Name, Label] = {}


_ENCODER = msgspec.msgpack.Encoder()
_BLOCK = msgspec.msgpack.Decoder(Block)
_PRIVATE = msgspec.json.Decoder(list[Private])
_VECTORS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class SlotArrays:
    """One slot of a read block: arms (n,) int64, propensity (n,), and the JSON texts of
    the probability vectors: row i's is ``vectors[starts[i]:ends[i]]``."""

    slot: str
    arm_ids: list[str]
    arms: np.ndarray
    propensity: np.ndarray
    vectors: bytes
    starts: np.ndarray
    ends: np.ndarray


@dataclass(frozen=True)
class Columns:
    """A read ``cmab.decisions/2`` block: n decisions of one campaign; ``ts`` and
    ``model_version`` (n,) int64; ``consent`` (n,) bool from the ids; ``contexts`` and
    ``segments`` (n): the decision's own with consent, None and {} without."""

    campaign: str
    ts: np.ndarray
    model_version: np.ndarray
    decision_ids: list[str]
    subjects: list[str]
    holdout: np.ndarray
    consent: np.ndarray
    contexts: list[dict[str, Any] | None]
    segments: list[dict[str, str]]
    slots: list[SlotArrays]

    def __len__(self) -> int:
        return len(self.decision_ids)


def write(block: Block, n: int) -> bytes:
    """The record value of ``block`` (n decisions)."""
    return PREFIX + b"%d\n" % n + _ENCODER.encode(block)


def count(value: bytes) -> int:
    """The decisions a block ``write`` wrote holds, from its header."""
    return int(value[len(PREFIX):value.index(b"\n")])


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


def read(value: bytes | None) -> Columns:
    """The columns of a ``cmab.decisions/2`` record value; InvalidInputError, its message the
    reason, if it is not a whole, valid block."""
    if not value or not value.startswith(PREFIX):
        raise InvalidInputError(f"not a decision block: no {NAME.decode()!r} header")
    end = value.find(b"\n")
    digits = value[len(PREFIX):end if end >= 0 else len(value)]
    if end < 0 or not digits.isdigit() or len(digits) > 9:
        raise InvalidInputError(f"not a decision block: header {value[:64]!r}... does not end "
                                "in a count and a newline")
    n = int(digits)
    try:
        block = _BLOCK.decode(memoryview(value)[end + 1:])
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


def _columns(block: Block, n: int) -> Columns:
    if n < 1:
        raise _fail("expected at least one decision")
    ts = _numbers(block.ts, "<i8", n, "ts")
    version = _numbers(block.model_version, "<i8", n, "model_version")
    for name, values in (("ts", ts), ("model_version", version)):
        bad = (values < 0) | (values > MAX_MS)
        if bad.any():
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
    if not all(0 < len(x) <= 64 for x in names + arm_names) or not names_fit(names + arm_names):
        raise _fail("campaign, slot or arm name: expected the name pattern, got "
                    f"{[x[:64] for x in names + arm_names if not names_fit([x])][:1]}")
    if len(set(names[1:])) != len(block.slots):
        raise _fail("slots: a slot name is repeated")
    slots = []
    for s in block.slots:
        k = len(s.arm_ids)
        if not k or len(set(s.arm_ids)) != k:
            raise _fail(f"slot {s.name!r}: expected distinct arm ids, got {k} with repeats")
        arms = _numbers(s.arms, "<i4", n, f"slot {s.name!r} arms").astype(np.int64)
        if ((arms < 0) | (arms >= k)).any():
            raise _fail(f"slot {s.name!r}, decision {_first_bad((arms < 0) | (arms >= k))}: "
                        f"arm index out of 0..{k - 1}")
        propensity = _numbers(s.propensity, "<f8", n, f"slot {s.name!r} propensity")
        bad = ~((propensity > 0) & (propensity <= 1))  # NaN too
        if bad.any():
            raise _fail(f"slot {s.name!r}, decision {_first_bad(bad)}: propensity: expected "
                        "a number in (0, 1]")
        ends = _numbers(s.ends, "<u4", n, f"slot {s.name!r} ends").astype(np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        size = len(s.vectors)
        data = np.frombuffer(s.vectors, dtype=np.uint8)
        bad = (ends <= starts) | (ends > size)
        if not bad.any():
            bad = (data[starts] != ord("{")) | (data[ends - 1] != ord("}"))
        if bad.any() or ends[-1] != size:
            raise _fail(f"slot {s.name!r}, decision {_first_bad(bad) if bad.any() else n}: "
                        "probabilities: expected a JSON object each, back to back")
        # One JSON array of the n objects (a comma at each boundary) must parse into n
        # values; no control byte (the checkpoints separate vectors by some).
        try:
            parsed = -1 if (data < 0x20).any() else len(_VECTORS.decode(
                b"[" + np.insert(data, ends[:-1], ord(",")).tobytes() + b"]"))
        except msgspec.DecodeError:
            parsed = -1
        if parsed != n:
            raise _fail(f"slot {s.name!r}: probabilities: expected a JSON object each")
        slots.append(SlotArrays(s.name, list(s.arm_ids), arms, propensity.copy(), s.vectors,
                                starts, ends))
    raw_ids = block.ids
    consent = consent_of(raw_ids)
    contexts: list[dict[str, Any] | None] = [None] * n
    segments: list[dict[str, str]] = [{} for _ in range(n)]
    if block.private is not None:
        try:
            private = _PRIVATE.decode(block.private)
        except msgspec.DecodeError as exc:
            raise _fail(f"context and segments: {exc}") from None
        rows = np.flatnonzero(consent).tolist()
        if len(private) != len(rows):
            raise _fail(f"context and segments: expected {len(rows)}, one per decision made "
                        f"with consent, got {len(private)}")
        keys = {key for p in private for key in (*(p.context or ()), *p.segments)}
        if keys and not names_fit(sorted(keys)):
            raise _fail("context or segment key: expected the name pattern")
        for r, p in zip(rows, private, strict=True):
            contexts[r], segments[r] = p.context, p.segments
    hex_ids, hex_subjects = raw_ids.hex(), block.subjects.hex()
    return Columns(
        campaign=block.campaign, ts=ts.astype(np.int64), model_version=version.astype(np.int64),
        decision_ids=[hex_ids[i:i + 32] for i in range(0, 32 * n, 32)],
        subjects=[hex_subjects[i:i + 32] for i in range(0, 32 * n, 32)],
        holdout=np.unpackbits(np.frombuffer(block.holdout, dtype=np.uint8), count=n).astype(bool),
        consent=consent, contexts=contexts, segments=segments, slots=slots)
