"""Blocks: the record format of ``<prefix>.joined`` and ``<prefix>.decisions``.

kafka-python spends more Python on every record it produces than the worker spends joining
and learning a decision, so neither the worker (closed decisions, ``.joined``) nor the service
(its decision log, ``.decisions``) writes a record per decision. A record is a *block*: many
items of one partition, each the exact JSON bytes of one item (a ``JoinedEvent``, a
``LoggedDecision``), one per line, after a header line that names the format and the number of
items::

    cmab.joined/1 3
    {"decision_id":"...","campaign":"weekly",...}
    {"decision_id":"...","campaign":"weekly",...}
    {"decision_id":"...","campaign":"weekly",...}

Every line ends with a newline, so the body is NDJSON and ``export-joined`` can copy lines as
they are. The header tells a block from anything else on the topic (a stray JSON event, a
truncated value) and its count catches a block that lost lines. A block holds at most
``MAX_BLOCK_EXAMPLES`` items and ``MAX_BLOCK_BYTES`` bytes, header included, unless a single
item is bigger than that: it then travels alone.

A block's items share a partition: the worker's for ``.joined`` (a partition's decisions stay
together and in order), for ``.decisions`` the one Kafka's default partitioner gives their
decision ids (``bandit.engine.decisionlog.partition_of``), so that the events keyed by a
decision id land in the partition number of its decision. The record's key is the block's
first decision id: it names the record for whoever traces a decision, and unlike a key per
partition it never invites a compacted topic to keep one block per partition.

This module knows the text format: ``BlockFormat.pack`` for writers, ``BlockFormat.lines``
for every reader; ``JOINED`` and ``DECISIONS`` are the two formats.

Both logs are written in binary formats with the same header, caps and keys instead: the
decision service writes ``cmab.decisions/3`` (``bandit.wire.columns``: the same decisions as
columns, which the worker reads without decoding text; written by ``DecisionLog.blocks``), the
worker ``cmab.joined/2`` (``bandit.wire.joinedcolumns``; ``streams.joined``). The text formats
are still read, so a topic holding blocks of an older service or worker stays readable;
``decision_lines`` and ``streams.joined.examples`` give any reader the JSON lines of either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bandit.engine.decisionlog import DecisionLog
from bandit.errors import InvalidInputError
from bandit.wire import columns

MAX_BLOCK_BYTES = 256 << 10
MAX_BLOCK_EXAMPLES = 1000


@dataclass(frozen=True)
class BlockFormat:
    """A block format: its header's name (``cmab.joined/1``) and what its items are called
    in errors ("joined": "not a joined block", "joined example 'd2'")."""

    name: bytes
    what: str
    item: str

    @property
    def _prefix(self) -> bytes:
        return self.name + b" "

    def _header(self, count: int) -> bytes:
        return b"%s%d\n" % (self._prefix, count)

    def pack(self, items: Sequence[tuple[str, bytes]], *, max_bytes: int = MAX_BLOCK_BYTES,
             max_examples: int = MAX_BLOCK_EXAMPLES) -> list[tuple[bytes, bytes]]:
        """The (key, value) records of ``items`` ((decision id, JSON bytes), in order) as
        blocks, each filled as far as the caps allow. No items, no records.

        >>> JOINED.pack([("d1", b'{"a":1}'), ("d2", b'{"a":2}')])
        [(b'd1', b'cmab.joined/1 2\\n{"a":1}\\n{"a":2}\\n')]
        >>> [key for key, _ in DECISIONS.pack([("d1", b"1"), ("d2", b"2"), ("d3", b"3")],
        ...                                   max_examples=2)]
        [b'd1', b'd3']
        """
        if max_bytes < 1 or max_examples < 1:
            raise InvalidInputError(f"block caps: expected >= 1, got max_bytes={max_bytes}, "
                                    f"max_examples={max_examples}")
        out: list[tuple[bytes, bytes]] = []
        start, size = 0, 0  # the open block: items[start:i], size bytes of lines
        header = len(self._prefix) + 1  # a header's bytes but its count's digits
        for i, (decision_id, value) in enumerate(items):
            if not value or b"\n" in value:
                raise InvalidInputError(f"{self.item} {decision_id!r}: expected one line of "
                                        f"JSON, got {value[:64]!r}")
            count = i - start
            if count and (count == max_examples
                          or header + len(str(count + 1)) + size + len(value) + 1 > max_bytes):
                out.append(self._block(items, start, i))
                start, size = i, 0
            size += len(value) + 1
        if items:
            out.append(self._block(items, start, len(items)))
        return out

    def _block(self, items: Sequence[tuple[str, bytes]], start: int,
               stop: int) -> tuple[bytes, bytes]:
        lines = [value for _, value in items[start:stop]]
        lines.append(b"")
        return items[start][0].encode(), self._header(stop - start) + b"\n".join(lines)

    def lines(self, value: bytes | None) -> list[bytes]:
        """The items of a record value, in order (each the JSON bytes of one item, not
        checked here). InvalidInputError, its message the reason, if the value is not a
        whole block.

        >>> DECISIONS.lines(b'cmab.decisions/1 2\\n{"a":1}\\n{"a":2}\\n')
        [b'{"a":1}', b'{"a":2}']
        >>> DECISIONS.lines(b'cmab.joined/1 1\\n{"a":1}\\n')
        Traceback (most recent call last):
        ...
        bandit.errors.InvalidInputError: not a decision block: no 'cmab.decisions/1' header
        """
        count, end = columns.header(value, self.name, self.what)
        assert value is not None
        if not value.endswith(b"\n") or end == len(value) - 1:
            raise InvalidInputError(f"damaged {self.what} block: header says {count} "
                                    "examples, the body is empty or its last line is cut")
        lines = value[end + 1:-1].split(b"\n")
        if len(lines) != count:
            raise InvalidInputError(f"damaged {self.what} block: header says {count} "
                                    f"examples, found {len(lines)}")
        return lines


JOINED = BlockFormat(b"cmab.joined/1", "joined", "joined example")
DECISIONS = BlockFormat(b"cmab.decisions/1", "decision", "logged decision")


def decision_lines(value: bytes | None) -> list[bytes]:
    """The JSON lines of the decisions of a ``.decisions`` record value, of any format (a
    binary block's, ``cmab.decisions/3`` or ``/2``, written as ``DecisionLog.lines`` writes
    them; the lines of ``cmab.decisions/1``). InvalidInputError, its message the reason, if it
    is no block.

    >>> decision_lines(b'cmab.decisions/1 1\\n{"a":1}\\n')
    [b'{"a":1}']
    """
    if columns.is_block(value):
        return DecisionLog.of_block(columns.read(value)).lines()
    return DECISIONS.lines(value)
