"""The ``.joined`` training log's record format: blocks of joined examples.

kafka-python spends more Python on every record it produces than the worker spends joining
and learning a decision, so the worker does not write a record per closed decision. One
``.joined`` record is a *block*: many joined examples of one partition, each the exact JSON
bytes of a ``JoinedEvent`` the join produced, one per line, after a header line that names the
format and the number of examples::

    cmab.joined/1 3
    {"decision_id":"...","campaign":"weekly",...}
    {"decision_id":"...","campaign":"weekly",...}
    {"decision_id":"...","campaign":"weekly",...}

Every line ends with a newline, so the body is NDJSON and ``export-joined`` can copy lines as
they are. The header tells a block from anything else on the topic (a stray JSON event, a
truncated value) and its count catches a block that lost lines. A block holds at most
``MAX_BLOCK_EXAMPLES`` examples and ``MAX_BLOCK_BYTES`` bytes, header included, unless a single
example is bigger than that: it then travels alone.

The record's partition is the worker's (a partition's decisions stay together and in order);
its key is the block's first decision id: it names the record for whoever traces a decision,
and unlike a key per partition it never invites a compacted topic to keep one block per
partition. Delivery is at-least-once: a worker restarted from a checkpoint processes its
batch again and may write a decision again, in a block cut elsewhere. Readers that need each
decision once drop repeats by decision id (``cmab export-joined`` does).

This module is the only place that knows the format: ``pack`` for writers, ``examples`` for
every reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from bandit.errors import InvalidInputError

FORMAT = b"cmab.joined/1"
MAX_BLOCK_BYTES = 256 << 10
MAX_BLOCK_EXAMPLES = 1000

_PREFIX = FORMAT + b" "


def _header(count: int) -> bytes:
    return b"%s%d\n" % (_PREFIX, count)


def pack(items: Sequence[tuple[str, bytes]], *, max_bytes: int = MAX_BLOCK_BYTES,
         max_examples: int = MAX_BLOCK_EXAMPLES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of ``items`` ((decision id, JSON bytes), in order) as blocks,
    each filled as far as the caps allow. No items, no records.

    >>> pack([("d1", b'{"a":1}'), ("d2", b'{"a":2}')])
    [(b'd1', b'cmab.joined/1 2\\n{"a":1}\\n{"a":2}\\n')]
    >>> [key for key, _ in pack([("d1", b"1"), ("d2", b"2"), ("d3", b"3")], max_examples=2)]
    [b'd1', b'd3']
    """
    if max_bytes < 1 or max_examples < 1:
        raise InvalidInputError(f"block caps: expected >= 1, got max_bytes={max_bytes}, "
                                f"max_examples={max_examples}")
    out: list[tuple[bytes, bytes]] = []
    start, size = 0, 0  # the open block: items[start:i], size bytes of lines
    for i, (decision_id, value) in enumerate(items):
        if not value or b"\n" in value:
            raise InvalidInputError(f"joined example {decision_id!r}: expected one line of "
                                    f"JSON, got {value[:64]!r}")
        count = i - start
        if count and (count == max_examples
                      or len(_header(count + 1)) + size + len(value) + 1 > max_bytes):
            out.append(_block(items, start, i))
            start, size = i, 0
        size += len(value) + 1
    if items:
        out.append(_block(items, start, len(items)))
    return out


def _block(items: Sequence[tuple[str, bytes]], start: int, stop: int) -> tuple[bytes, bytes]:
    lines = [value for _, value in items[start:stop]]
    lines.append(b"")
    return items[start][0].encode(), _header(stop - start) + b"\n".join(lines)


def examples(value: bytes | None) -> list[bytes]:
    """The examples of a ``.joined`` record value, in order (each the JSON bytes of one joined
    event, not checked here). InvalidInputError, its message the reason, if the value is not
    a whole block.

    >>> examples(b'cmab.joined/1 2\\n{"a":1}\\n{"a":2}\\n')
    [b'{"a":1}', b'{"a":2}']
    >>> examples(b'{"a":1}')
    Traceback (most recent call last):
    ...
    bandit.errors.InvalidInputError: not a joined block: no 'cmab.joined/1' header
    """
    if not value or not value.startswith(_PREFIX):
        raise InvalidInputError(f"not a joined block: no {FORMAT.decode()!r} header")
    end = value.find(b"\n")
    digits = value[len(_PREFIX):end if end >= 0 else len(value)]
    if end < 0 or not digits.isdigit() or len(digits) > 9:
        raise InvalidInputError(f"not a joined block: header {value[:64]!r}... does not end "
                                "in a count and a newline")
    count = int(digits)
    if not value.endswith(b"\n") or end == len(value) - 1:
        raise InvalidInputError(f"damaged joined block: header says {count} examples, the "
                                "body is empty or its last line is cut")
    lines = value[end + 1:-1].split(b"\n")
    if len(lines) != count:
        raise InvalidInputError(f"damaged joined block: header says {count} examples, found "
                                f"{len(lines)}")
    return lines
