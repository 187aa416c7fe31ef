"""The record and batch types every transport shares with the worker: what a poll brings of
an input (``Batch``), one input record (``Record``), and a refused record with its reason
(``DeadLetter``) and the headers it is written with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DECISIONS, EVENTS = "decisions", "events"
STREAMS = (DECISIONS, EVENTS)


class Record(NamedTuple):
    """One input record: where a dead letter came from (and the VW learner's input)."""

    stream: str
    partition: int
    offset: int
    value: bytes | None


class Batch(NamedTuple):
    """What a transport's poll brought of one input (``stream``: DECISIONS or EVENTS) of one
    partition: the records' offsets, ascending (Kafka's order within a partition), and their
    values. Two lists, not an object per record: kafka-python already costs one each."""

    stream: str
    partition: int
    offsets: list[int]
    values: list[bytes | None]


@dataclass(frozen=True)
class DeadLetter:
    """A refused record: its original bytes, why, and where it came from.

    >>> letter = DeadLetter.of(Record(EVENTS, 3, 7, b"?"), "not JSON")
    >>> letter.source, dead_letter_headers(letter)
    ('events/3/7', [('reason', b'not JSON'), ('source', b'events/3/7')])
    """

    value: bytes | None
    reason: str
    source: str

    @classmethod
    def of(cls, record: Record, reason: str) -> DeadLetter:
        return cls(record.value, reason, f"{record.stream}/{record.partition}/{record.offset}")


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a dead letter (its value is the original bytes): the reason and where the
    record came from."""
    return [("reason", letter.reason.encode()), ("source", letter.source.encode())]
