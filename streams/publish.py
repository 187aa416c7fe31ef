"""Writing to the stream: events from senders and trackers, campaign records from the
decision service. Events are keyed by decision id, so with the default partitioner a
decision's impression and clicks land in the same partition number of their topics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from bandit.models import Click, Impression
from streams.codec import encode
from streams.kafka import producer
from streams.topics import Topics


class Publisher:
    """A producer for one deployment's topics. Close it (or use it as a context manager)."""

    def __init__(self, bootstrap_servers: str, topics: Topics, **config: Any) -> None:
        self.topics = topics
        self._producer = producer(bootstrap_servers, **{"linger_ms": 20, **config})

    def events(self, events: Iterable[Impression | Click | dict[str, Any]], *,
               flush: bool = True) -> int:
        """Send impressions and clicks (models or their JSON-ready dicts); returns the count."""
        n = 0
        for event in events:
            kind = event["type"] if isinstance(event, dict) else event.type
            decision_id = event["decision_id"] if isinstance(event, dict) else event.decision_id
            topic = self.topics.impressions if kind == "impression" else self.topics.clicks
            self._producer.send(topic, encode(event), key=str(decision_id).encode())
            n += 1
        if flush:
            self._producer.flush()
        return n

    def watermark(self, ts: int) -> None:
        """Promise that no later impression or click is older than ``ts`` (event time, ms):
        one watermark record to every partition of both topics, so open windows whose end
        is before ``ts`` close now."""
        value = encode({"type": "watermark", "ts": int(ts)})
        for topic in (self.topics.impressions, self.topics.clicks):
            for p in sorted(self._producer.partitions_for(topic)):
                self._producer.send(topic, value, partition=p)
        self._producer.flush()

    def raw(self, topic: str, values: Iterable[bytes | None], key: bytes | None = None) -> None:
        """Send values as they are (for tests that need bad records on a topic)."""
        for value in values:
            self._producer.send(topic, value, key=key)
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
