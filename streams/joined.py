"""The ``.joined`` training log's record format: blocks of closed decisions, under the names
its readers and writers use.

The worker writes ``cmab.joined/2`` (``bandit.wire.joinedcolumns``: the join's columns, each
string and probability-vector text once per block; ``pack_closed``). The text format
``cmab.joined/1`` (``streams.blocks``: one JSON line per example) is still read, so a topic
written by an older worker stays readable; ``examples`` gives any reader the JSON lines of
either, the same bytes for the same decisions.
"""

from __future__ import annotations

from collections.abc import Sequence

from bandit.engine import closedblocks
from bandit.engine.windows import Closed
from bandit.errors import InvalidInputError
from bandit.wire import joinedcolumns
from streams.blocks import JOINED, MAX_BLOCK_BYTES, MAX_BLOCK_EXAMPLES

__all__ = ["MAX_BLOCK_BYTES", "MAX_BLOCK_EXAMPLES", "examples", "pack", "pack_closed"]


def pack_closed(closed: Closed, *, max_bytes: int = MAX_BLOCK_BYTES,
                max_examples: int = MAX_BLOCK_EXAMPLES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of the decisions one batch closed: ``cmab.joined/2`` blocks
    (``bandit.engine.closedblocks.blocks``), keyed by their first decision id."""
    return closedblocks.blocks(closed, max_bytes=max_bytes, max_examples=max_examples)


def pack(items: Sequence[tuple[str, bytes]], *, max_bytes: int = MAX_BLOCK_BYTES,
         max_examples: int = MAX_BLOCK_EXAMPLES) -> list[tuple[bytes, bytes]]:
    """``JOINED.pack``: ``cmab.joined/1`` records of (decision id, JSON bytes) items (what
    older workers wrote; tools and tests that have lines rather than columns write it too).

    >>> pack([("d1", b'{"a":1}'), ("d2", b'{"a":2}')])
    [(b'd1', b'cmab.joined/1 2\\n{"a":1}\\n{"a":2}\\n')]
    """
    return JOINED.pack(items, max_bytes=max_bytes, max_examples=max_examples)


def examples(value: bytes | None) -> list[bytes]:
    """The examples of a ``.joined`` record value of either format, as JSON lines, or
    InvalidInputError, its message the reason.

    >>> examples(b'{"a":1}')
    Traceback (most recent call last):
    ...
    bandit.errors.InvalidInputError: not a joined block: no 'cmab.joined/2' header (nor '/1')
    """
    if joinedcolumns.is_block(value):
        return closedblocks.lines(value)
    if value is not None and value.startswith(JOINED.name):
        return JOINED.lines(value)
    raise InvalidInputError(f"not a joined block: no {joinedcolumns.NAME.decode()!r} header "
                            "(nor '/1')")
