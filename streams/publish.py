"""Writing to the stream: events from senders and trackers, campaign records from the
decision service. Events go to ``<prefix>.events`` keyed by decision id, so with the default
partitioner a decision's events land in the partition number of its decision block on
``<prefix>.decisions`` (``streams.blocks``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from bandit.models import Event, Watermark
from streams.codec import encode
from streams.kafka import producer
from streams.topics import Topics


class Publisher:
    """A producer for one deployment's topics. Close it (or use it as a context manager)."""

    def __init__(self, bootstrap_servers: str, topics: Topics, **config: Any) -> None:
        self.topics = topics
        self._producer = producer(bootstrap_servers, **{"linger_ms": 20, **config})

    def events(self, events: Iterable[Event | dict[str, Any]], *, flush: bool = True) -> int:
        """Send events (sends, outcomes, legacy impressions and clicks: models or their
        JSON-ready dicts) to ``<prefix>.events``, keyed by decision id; returns the count."""
        n, topic = 0, self.topics.events
        for event in events:
            decision_id = event["decision_id"] if isinstance(event, dict) else event.decision_id
            self._producer.send(topic, encode(event), key=str(decision_id).encode())
            n += 1
        if flush:
            self._producer.flush()
        return n

    def watermark(self, ts: int) -> None:
        """Promise that no later event is older than ``ts`` (event time, ms): one watermark
        record to every partition of ``<prefix>.events``, so open windows whose end is before
        ``ts`` close now (a worker whose decisions input is caught up goes by its events')."""
        value = encode(Watermark(ts=int(ts)))
        topic = self.topics.events
        for p in sorted(self._producer.partitions_for(topic)):
            self._producer.send(topic, value, partition=p)
        self._producer.flush()

    def raw(self, topic: str, values: Iterable[bytes | None], key: bytes | None = None, *,
            partition: int | None = None) -> None:
        """Send values as they are (for tests that need bad records or hand-made decision
        blocks on a topic)."""
        for value in values:
            self._producer.send(topic, value, key=key, partition=partition)
        self._producer.flush()

    def campaign(self, record: dict[str, Any]) -> None:
        """Publish a campaign record (``Engine.campaign_record``), flushed on its own."""
        self._producer.send(self.topics.campaigns, orjson.dumps(record),
                            key=record["spec"]["name"].encode())
        self._producer.flush()

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
