"""The ``.joined`` topic copied into a file of JSON lines, one joined event per decision, for
``cmab replay --dataset joined`` and ``cmab export-dsjson`` (``cmab export-joined`` and
``cmab demo --out`` write it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from bandit.errors import InvalidInputError
from streams import joined
from streams.kafka import read_until_idle

__all__ = ["JoinedFile", "write_joined_file"]


@dataclass(frozen=True)
class JoinedFile:
    """What a copy wrote: ``events`` lines; left out: ``bad_blocks`` records that are not
    joined blocks, ``bad_examples`` examples without a decision id."""

    events: int
    bad_blocks: int
    bad_examples: int

    def left_out(self) -> str:
        """What was left out, for a summary line ("" when nothing was)."""
        return ", ".join(f"{n:,} {what}" for n, what in (
            (self.bad_blocks, "records not joined blocks"),
            (self.bad_examples, "unreadable examples")) if n)


def write_joined_file(bootstrap_servers: str, topic: str, out: str | Path, *,
                      idle_ms: int = 1000) -> JoinedFile:
    """Copy ``topic`` (a ``.joined`` topic, in blocks) into ``out``: each decision once (a worker
    restarted from a checkpoint may write a decision again: the first copy is kept), until a
    read of ``idle_ms`` brings nothing new. OSError if ``out`` cannot be written,
    InvalidInputError if the topic does not exist."""
    seen: set[str] = set()
    written = bad_blocks = bad_examples = 0
    with open(out, "wb") as sink:
        for value in read_until_idle(bootstrap_servers, topic, idle_ms=idle_ms):
            try:
                lines = joined.examples(value)
            except InvalidInputError:
                bad_blocks += 1
                continue
            for line in lines:
                try:
                    decision = orjson.loads(line)["decision_id"]
                except (orjson.JSONDecodeError, TypeError, KeyError):
                    decision = None
                if not isinstance(decision, str):
                    bad_examples += 1
                    continue
                if decision in seen:
                    continue
                seen.add(decision)
                sink.write(line + b"\n")
                written += 1
    return JoinedFile(written, bad_blocks, bad_examples)
