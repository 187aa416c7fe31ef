"""The binary joined block ``cmab.joined/2``: closed decisions (``.joined``) as columns.

A record value is a text header, ``cmab.joined/2 <n>\\n`` (as ``cmab.joined/1``'s: it tells a
block from anything else on the topic and counts its examples), then one msgpack array
(``JoinedBlock``): the rows of the join's ``Closed`` (``bandit.engine.windows``) in its order,
as the join holds them. Per row its shape (an index into ``shapes``: campaign, slot names,
context keys with "is a string", segment keys), and fixed-width columns as bytes: decision ids
and subject keys (16 bytes each: their 32 hex digits), time and model version (``<f8``),
holdout (bits), then the wide columns, as wide as the block's widest shape, a row using the
first cells its shape names: per slot the arm (``<i4``, an index into ``names``, the block's
dictionary of strings), propensity and reward (``<f8``) and probability vector (``<u4``, an
index into ``vectors``, the distinct JSON texts of the block's vectors, as the service wrote
them); per context key the value (``<f8``; a string value's index into ``names``); per segment
key the value (``<i4``, into ``names``); per outcome type of ``outcome_types`` the learned
count (``<i4``).

Vectors repeat (a policy with a floor writes a few texts per slot), so a block holds each
text once; the rest is numbers, so writing a block makes no Python object per decision.
``bandit.engine.closedblocks`` writes and reads it (a read block is a ``Closed`` again, and
its JSON lines are the ``cmab.joined/1`` lines of the same rows, byte for byte).

``frame`` reads the header and the msgpack array and checks that every column has the size
its count and widths give; ``bandit.engine.closedblocks`` checks the indices. A value that
fails either is refused whole (InvalidInputError, the reason in its message); what the lines
then say is checked by their readers, as ``cmab.joined/1``'s lines are.
"""

from __future__ import annotations

import msgspec

from bandit.errors import InvalidInputError
from bandit.wire.columns import header

NAME = b"cmab.joined/2"
PREFIX = NAME + b" "
ID_BYTES = 16
NO_VECTOR = 0xFFFFFFFF  # the ``vector_of`` cell of a slot the row's shape does not have


class Shape(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    campaign: str
    slots: list[str]
    context: list[tuple[str, bool]] | None  # (key, the value is a string); None: no context
    segments: list[str]


class JoinedBlock(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    shapes: list[Shape]
    names: list[str]
    outcome_types: list[str]
    vectors: list[bytes]
    shape: bytes  # (n,) <i4
    ids: bytes  # (n, 16)
    subjects: bytes  # (n, 16)
    ts: bytes  # (n,) <f8
    model_version: bytes  # (n,) <f8
    holdout: bytes  # np.packbits of (n,) flags
    arm: bytes  # (n, slots) <i4
    propensity: bytes  # (n, slots) <f8
    reward: bytes  # (n, slots) <f8
    vector_of: bytes  # (n, slots) <u4
    context: bytes  # (n, keys) <f8
    segment: bytes  # (n, segments) <i4
    outcomes: bytes  # (n, len(outcome_types)) <i4


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(JoinedBlock)


def write(block: JoinedBlock, n: int) -> bytes:
    """The record value of ``block`` (n rows)."""
    return PREFIX + b"%d\n" % n + _ENCODER.encode(block)


def is_block(value: bytes | None) -> bool:
    """Whether ``value`` starts as a ``cmab.joined/2`` block does."""
    return value is not None and value.startswith(PREFIX)


def widths(block: JoinedBlock) -> tuple[int, int, int]:
    """The block's widest shape's slots, context keys and segment keys."""
    return (max((len(s.slots) for s in block.shapes), default=0),
            max((len(s.context or ()) for s in block.shapes), default=0),
            max((len(s.segments) for s in block.shapes), default=0))


def _damaged(why: str) -> InvalidInputError:
    return InvalidInputError(f"damaged joined block: {why}")


def frame(value: bytes | None) -> tuple[JoinedBlock, int]:
    """The block of a ``cmab.joined/2`` record value and its row count, every column the size
    the count and the widths give; InvalidInputError, its message the reason, otherwise."""
    n, end = header(value, NAME, "joined")
    assert value is not None
    if n < 1:
        raise _damaged("expected at least one example")
    try:
        block = _DECODER.decode(memoryview(value)[end + 1:])
    except msgspec.DecodeError as exc:
        raise _damaged(str(exc)) from None
    if not block.shapes:
        raise _damaged("shapes: expected at least one")
    slots, keys, segments = widths(block)
    for field, size in (("shape", 4), ("ids", ID_BYTES), ("subjects", ID_BYTES), ("ts", 8),
                        ("model_version", 8), ("arm", 4 * slots), ("propensity", 8 * slots),
                        ("reward", 8 * slots), ("vector_of", 4 * slots), ("context", 8 * keys),
                        ("segment", 4 * segments), ("outcomes", 4 * len(block.outcome_types))):
        got = len(getattr(block, field))
        if got != size * n:
            raise _damaged(f"{field}: expected {size * n} bytes for {n} examples, got {got}")
    if len(block.holdout) != -(-n // 8):
        raise _damaged(f"holdout: expected {n} flags, got {len(block.holdout)} bytes")
    return block, n
