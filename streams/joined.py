"""The ``.joined`` training log's record format: blocks of joined examples (``streams.blocks``,
the format shared with ``.decisions``), under the names its readers and writers use."""

from __future__ import annotations

from collections.abc import Sequence

from streams.blocks import JOINED, MAX_BLOCK_BYTES, MAX_BLOCK_EXAMPLES

FORMAT = JOINED.name

__all__ = ["FORMAT", "MAX_BLOCK_BYTES", "MAX_BLOCK_EXAMPLES", "examples", "pack"]


def pack(items: Sequence[tuple[str, bytes]], *, max_bytes: int = MAX_BLOCK_BYTES,
         max_examples: int = MAX_BLOCK_EXAMPLES) -> list[tuple[bytes, bytes]]:
    """``JOINED.pack``: the (key, value) records of (decision id, JSON bytes) items.

    >>> pack([("d1", b'{"a":1}'), ("d2", b'{"a":2}')])
    [(b'd1', b'cmab.joined/1 2\\n{"a":1}\\n{"a":2}\\n')]
    """
    return JOINED.pack(items, max_bytes=max_bytes, max_examples=max_examples)


def examples(value: bytes | None) -> list[bytes]:
    """``JOINED.lines``: the examples of a ``.joined`` record value, or InvalidInputError.

    >>> examples(b'{"a":1}')
    Traceback (most recent call last):
    ...
    bandit.errors.InvalidInputError: not a joined block: no 'cmab.joined/1' header
    """
    return JOINED.lines(value)
