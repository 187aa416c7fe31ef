"""Closed decisions to and from ``cmab.joined/2`` blocks (``bandit.wire.joinedcolumns``).

``blocks`` writes a ``Closed`` (the join's columns of the decisions one batch closed) as
blocks of its rows in its order, each holding the strings and probability-vector texts its
rows use once, within the caps the caller gives (``streams.blocks``' for ``.joined``).
``read`` makes a block a ``Closed`` again, and ``lines`` gives its examples as the JSON
lines ``Closed.json`` writes: the lines of a ``cmab.joined/1`` block of the same rows, byte
for byte (tests/bandit/engine/test_closedblocks.py), so every reader of ``.joined`` reads
either format through ``streams.joined.examples``.
"""

from __future__ import annotations

import msgspec
import numpy as np

from bandit.engine.windows import Closed
from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES
from bandit.wire import joinedcolumns
from bandit.wire.columns import hex_bytes
from bandit.wire.joinedcolumns import ID_BYTES, NO_VECTOR, JoinedBlock, Shape

_OUTCOME_TYPES = list(OUTCOME_TYPES)
_VECTORS = msgspec.json.Decoder(list[msgspec.Raw])


def blocks(closed: Closed, *, max_bytes: int, max_examples: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of ``closed``'s rows, in order: blocks of at most
    ``max_examples`` rows and ``max_bytes`` bytes (a single row bigger than that travels
    alone), each keyed by its first decision id. ValueError if a decision id or subject key
    is not 32 lowercase hex digits, or a row's probability vectors do not match its slots or
    span lines."""
    if max_bytes < 1 or max_examples < 1:
        raise InvalidInputError(f"block caps: expected >= 1, got max_bytes={max_bytes}, "
                                f"max_examples={max_examples}")
    out: list[tuple[bytes, bytes]] = []
    for start in range(0, len(closed), max_examples):
        _fit(closed, start, min(len(closed), start + max_examples), max_bytes, out)
    return out


def _fit(closed: Closed, start: int, stop: int, max_bytes: int,
         out: list[tuple[bytes, bytes]]) -> None:
    """Rows start:stop as one block, or halves of them while a block is over ``max_bytes``."""
    value = _block(closed, start, stop)
    if len(value) > max_bytes and stop - start > 1:
        middle = (start + stop) // 2
        _fit(closed, start, middle, max_bytes, out)
        _fit(closed, middle, stop, max_bytes, out)
    else:
        out.append((closed.ids[start].encode(), value))


def _hex(keys: list[str], what: str) -> bytes:
    """``columns.hex_bytes`` of keys that read back as they are (lowercase)."""
    try:
        raw = hex_bytes(keys)
    except ValueError:
        raw = b""
    if raw.hex() != "".join(keys):  # also when hex_bytes refused them (raw is empty)
        raise ValueError(f"closed decisions: a {what} is not 32 lowercase hex digits")
    return raw


def _layout(shapes: list[tuple], keys_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """Per shape (``Closed.shapes``' tuples) its number of slots, context keys and segment
    keys, and which of its context keys (up to ``keys_width``) hold strings."""
    slots = np.array([len(s[1]) for s in shapes])
    keys = np.array([len(s[2] or ()) for s in shapes])
    segments = np.array([len(s[3]) for s in shapes])
    strings = np.zeros((len(shapes), keys_width), dtype=bool)
    for i, s in enumerate(shapes):
        strings[i, :keys[i]] = [is_str for _, is_str in s[2] or ()]
    return slots, keys, segments, strings


def _block(closed: Closed, start: int, stop: int) -> bytes:
    n = stop - start
    used, shape = np.unique(closed.shape[start:stop], return_inverse=True)
    shapes = [closed.shapes[s] for s in used.tolist()]
    keys_width = max(len(s[2] or ()) for s in shapes)
    slots, keys, segments, strings = _layout(shapes, keys_width)
    width = int(slots.max()), keys_width, int(segments.max())
    arm = closed.arm[start:stop, :width[0]].astype(np.int32)
    segment = closed.segment[start:stop, :width[2]].astype(np.int32)
    context = closed.context[start:stop, :width[1]].astype(np.float64)
    # Only the cells a row's shape names hold values: the others are set to 0.
    in_slots = np.arange(width[0]) < slots[shape][:, None]
    in_segments = np.arange(width[2]) < segments[shape][:, None]
    in_keys = np.arange(width[1]) < keys[shape][:, None]
    is_str = strings[shape]
    arm[~in_slots] = 0
    segment[~in_segments] = 0
    context[~in_keys] = 0.0
    # The block's own dictionary: the strings its rows use, in the join's order.
    string_values = context[is_str].astype(np.int64)
    named = np.unique(np.concatenate([arm[in_slots], segment[in_segments], string_values]))
    arm[in_slots] = np.searchsorted(named, arm[in_slots])
    segment[in_segments] = np.searchsorted(named, segment[in_segments])
    context[is_str] = np.searchsorted(named, string_values)
    # Each text the rows use once, in the order the rows first use it (equal texts at two
    # indices once too).
    cells = closed.vector[start:stop, :width[0]][in_slots]
    if len(cells) and not (int(cells.min()) >= 0 and int(cells.max()) < len(closed.texts)):
        raise ValueError("closed decisions: a row's probability vectors do not match its slots")
    cell_values, first = np.unique(cells, return_index=True)
    taken = cell_values[np.argsort(first, kind="stable")].tolist()
    texts = list(map(closed.texts.__getitem__, taken))
    distinct = list(dict.fromkeys(texts))
    if any(b"\n" in text for text in distinct):
        raise ValueError("closed decisions: a probability vector spans lines")
    index = {text: i for i, text in enumerate(distinct)}
    lookup = np.zeros(max(taken, default=0) + 1, dtype=np.uint32)
    lookup[taken] = list(map(index.__getitem__, texts))
    vector_of = np.full((n, width[0]), NO_VECTOR, dtype="<u4")
    vector_of[in_slots] = lookup[cells]
    propensity = closed.propensity[start:stop, :width[0]].astype("<f8")
    reward = closed.reward[start:stop, :width[0]].astype("<f8")
    propensity[~in_slots] = 0.0
    reward[~in_slots] = 0.0
    names = closed.names
    block = JoinedBlock(
        shapes=[Shape(campaign, list(slot_names), None if described is None
                      else [(key, is_str) for key, is_str in described], list(segment_keys))
                for campaign, slot_names, described, segment_keys in shapes],
        names=[names[i] for i in named.tolist()],
        outcome_types=_OUTCOME_TYPES,
        vectors=distinct,
        shape=shape.astype("<i4").tobytes(),
        ids=_hex(closed.ids[start:stop], "decision id"),
        subjects=_hex(closed.subjects[start:stop], "subject key"),
        ts=closed.ts[start:stop].astype("<f8").tobytes(),
        model_version=closed.model_version[start:stop].astype("<f8").tobytes(),
        holdout=np.packbits(closed.holdout[start:stop]).tobytes(),
        arm=arm.astype("<i4").tobytes(), propensity=propensity.tobytes(),
        reward=reward.tobytes(), vector_of=vector_of.tobytes(),
        context=context.astype("<f8").tobytes(), segment=segment.astype("<i4").tobytes(),
        outcomes=closed.outcomes[start:stop].astype("<i4").tobytes())
    return joinedcolumns.write(block, n)


def _damaged(why: str) -> InvalidInputError:
    return InvalidInputError(f"damaged joined block: {why}")


def read(value: bytes | None) -> Closed:
    """The ``Closed`` of a ``cmab.joined/2`` record value (its rows all decoded from the
    wire); InvalidInputError, its message the reason, if it is not a whole block."""
    block, n = joinedcolumns.frame(value)
    width = joinedcolumns.widths(block)
    shape = np.frombuffer(block.shape, dtype="<i4").astype(np.int32)
    if shape.min() < 0 or shape.max() >= len(block.shapes):
        raise _damaged(f"shape: expected indices below {len(block.shapes)}")
    shapes = [(s.campaign, tuple(s.slots), None if s.context is None
               else tuple((key, bool(is_str)) for key, is_str in s.context), tuple(s.segments))
              for s in block.shapes]
    slots, _, segments, strings = _layout(shapes, width[1])
    in_slots = np.arange(width[0]) < slots[shape][:, None]
    in_segments = np.arange(width[2]) < segments[shape][:, None]
    arm = np.frombuffer(block.arm, dtype="<i4").reshape(n, width[0]).astype(np.int32)
    segment = np.frombuffer(block.segment, dtype="<i4").reshape(n, width[2]).astype(np.int32)
    context = np.frombuffer(block.context, dtype="<f8").reshape(n, width[1]).astype(np.float64)
    vector_of = np.frombuffer(block.vector_of, dtype="<u4").reshape(n, width[0])
    named = np.concatenate([arm[in_slots], segment[in_segments], context[strings[shape]]])
    if len(named) and not ((named >= 0).all() and (named < len(block.names)).all()
                           and (named == np.floor(named)).all()):
        raise _damaged(f"arm, segment or string context value: expected indices below "
                       f"{len(block.names)}")
    cells = vector_of[in_slots]
    if len(cells) and int(cells.max()) >= len(block.vectors):
        raise _damaged(f"vector_of: expected indices below {len(block.vectors)}")
    _check_vectors(block.vectors)
    known = set(_OUTCOME_TYPES)
    if not known.issuperset(block.outcome_types) or len(set(block.outcome_types)) != len(
            block.outcome_types):
        raise _damaged(f"outcome_types: expected distinct types of {_OUTCOME_TYPES}, got "
                       f"{block.outcome_types}")
    outcomes = np.zeros((n, len(_OUTCOME_TYPES)), dtype=np.int32)
    outcomes[:, [_OUTCOME_TYPES.index(t) for t in block.outcome_types]] = np.frombuffer(
        block.outcomes, dtype="<i4").reshape(n, len(block.outcome_types))
    return Closed(
        ids=block.ids.hex(" ", ID_BYTES).split(),
        subjects=block.subjects.hex(" ", ID_BYTES).split(),
        ts=np.frombuffer(block.ts, dtype="<f8").astype(np.float64), shape=shape,
        holdout=np.unpackbits(np.frombuffer(block.holdout, dtype=np.uint8),
                              count=n).astype(bool),
        wire=np.ones(n, dtype=bool), arm=arm,
        propensity=np.frombuffer(block.propensity, dtype="<f8").reshape(n, width[0]).astype(
            np.float64),
        reward=np.frombuffer(block.reward, dtype="<f8").reshape(n, width[0]).astype(np.float64),
        context=context, segment=segment, names=list(block.names),
        shapes=shapes,
        model_version=np.frombuffer(block.model_version, dtype="<f8").astype(np.float64),
        outcomes=outcomes,
        vector=np.where(in_slots, vector_of.astype(np.int64), -1).astype(np.int32),
        texts=list(block.vectors))


def _check_vectors(vectors: list[bytes]) -> None:
    """Each text one JSON object on one line (a line of the block's examples holds it)."""
    if not vectors:
        return
    try:
        values = _VECTORS.decode(b"[" + b",".join(vectors) + b"]")
    except msgspec.DecodeError:
        values = []
    if (list(map(len, values)) != list(map(len, vectors))
            or not all(v[:1] == b"{" and b"\n" not in v for v in vectors)):
        raise _damaged("vectors: expected a JSON object on one line each")


def lines(value: bytes | None) -> list[bytes]:
    """The examples of a ``cmab.joined/2`` record value as JSON lines (``Closed.json``'s),
    in order; InvalidInputError, its message the reason, if it is not a whole block."""
    return [line for _, line in read(value).json()]
