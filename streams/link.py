"""The decision service's connection to the stream (``CMAB_BOOTSTRAP_SERVERS`` set).

Campaign changes are published as campaign records (the workers and other replicas apply
them); events posted over HTTP go to the impressions and clicks topics instead of the
in-process join; erasures go to the campaigns topic as erase records; the model follows the
state topic (``StateFollower``), and the guardrail breaches it finds there are published as
campaign records; every decision goes to the decisions topic (``DecisionLogWriter``, the
engine's ``decision_sink``), naming its subscriber by the pseudonym whose secret the replicas
share through the subjects topic (``SharedSubjects``, read to its end before the service
starts).

``publish_erasures`` and ``ErasureWatch`` are ``cmab erase``'s: the erase records the service
would publish, and whether every partition's checkpoint shows them applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLogStatus
from bandit.errors import InvalidInputError, UnavailableError
from bandit.models import Impression, Outcome, Send
from streams.decisionlog import CAPACITY, DecisionLogWriter
from streams.follower import StateFollower
from streams.kafka import producer, read_last, reader
from streams.publish import Publisher
from streams.subjects import SharedSubjects
from streams.topics import Topics, create_topics
from streams.worker import applied_campaigns, erase_record


class StreamLink:
    """The service's link to the stream (``bandit.service.Link``)."""

    def __init__(self, engine: Engine, bootstrap_servers: str, topics: Topics,
                 partitions: int = 4, decision_log_capacity: int = CAPACITY,
                 decision_log_producer: Mapping[str, Any] | None = None) -> None:
        """``decision_log_producer``: producer settings of the decision log's writer over its
        own (``streams.decisionlog``), e.g. a shorter ``delivery_timeout_ms``."""
        self.engine = engine
        self.topics = topics
        self.partitions = create_topics(bootstrap_servers, topics, partitions)
        self.publisher = Publisher(bootstrap_servers, topics)
        self.subjects = SharedSubjects(engine.subjects, bootstrap_servers, topics)
        self.decision_log = DecisionLogWriter(bootstrap_servers, topics, self.partitions,
                                              capacity=decision_log_capacity,
                                              **(decision_log_producer or {}))
        engine.decision_sink = self.decision_log.append
        self.follower = StateFollower(engine, bootstrap_servers, topics,
                                      on_breach=self.campaign_changed).start()

    def campaign_changed(self, name: str) -> None:
        """Publish the campaign's record after a create, add or retire arm, or pause."""
        self.publisher.campaign(self.engine.campaign_record(name))

    def events(self, events: Sequence[Impression | Send | Outcome]) -> int:
        """Check every event, then send them all (nothing is sent if one is bad)."""
        for i, e in enumerate(events):
            try:
                self.engine.check_event(e)
            except InvalidInputError as exc:
                raise InvalidInputError(f"event {i} ({e.event_id}): {exc}") from None
        return self.publisher.events(events)

    def erase(self, user_id: str, at_ms: int) -> None:
        """Erase the subject's decisions up to ``at_ms`` in every worker, durably, then their
        secrets in every replica: an erase record per pseudonym the subscriber had (and one
        for the legacy impressions' ``subject_key``; hashes, not the id) is flushed to the
        campaigns topic, which workers re-apply on every restore (streams.worker), then a
        tombstone per secret to the subjects topic. Called before ``Engine.erase``, which
        destroys the secrets here."""
        self.publisher.raw(self.topics.campaigns,
                           [orjson.dumps(erase_record(k, at_ms))
                            for k in self.engine.subjects.erase_keys(user_id)], key=b"erase")
        self.subjects.erase(user_id)

    def state_age_s(self) -> float | None:
        return self.follower.age_s()

    def stale_checkpoints(self) -> int:
        """State checkpoints the follower ignored: behind the one absorbed for their
        partition."""
        return self.follower.stale

    def decision_log_status(self) -> DecisionLogStatus:
        return self.decision_log.status()

    def close(self) -> None:
        self.follower.close()
        self.engine.decision_sink = None
        self.decision_log.close()
        self.subjects.close()
        self.publisher.close()


def stream_link(bootstrap_servers: str, topic_prefix: str,
                decision_log_capacity: int = CAPACITY) -> Callable[[Engine], StreamLink]:
    """``create_app``'s ``link``: the link to these servers and topics, for the app's engine,
    made when the app starts (``decision_log_capacity``: ``Settings.decision_log_capacity``)."""
    return partial(StreamLink, bootstrap_servers=bootstrap_servers, topics=Topics(topic_prefix),
                   decision_log_capacity=decision_log_capacity)


def publish_erasures(bootstrap_servers: str, topics: Topics,
                     records: Sequence[dict[str, Any]]) -> list[int]:
    """Publish erase records (``erase_record``) to the campaigns topic as the service's link
    does, each flushed on its own; returns their offsets. The topic must exist (a deployment
    that never ran has nothing to erase): InvalidInputError otherwise."""
    from kafka.errors import KafkaError

    # Asked of a consumer: a producer's metadata request may create the topic.
    consumer = reader(bootstrap_servers)
    try:
        exists = topics.campaigns in consumer.topics()
    finally:
        consumer.close()
    if not exists:
        raise InvalidInputError(f"topic {topics.campaigns!r} does not exist at "
                                f"{bootstrap_servers} (topic prefix {topics.prefix!r}?)")
    sender = producer(bootstrap_servers)
    try:
        offsets = []
        for record in records:
            sent = sender.send(topics.campaigns, orjson.dumps(record), key=b"erase")
            offsets.append(sent.get(timeout=30).offset)
        return offsets
    except KafkaError as exc:
        raise UnavailableError(f"{topics.campaigns}: erase records not written ({exc})") from None
    finally:
        sender.close()


class ErasureWatch:
    """Which partitions of ``<prefix>.state`` have a newest checkpoint that applied the
    campaign records through offset ``through`` (``PartitionJoin.campaigns`` above it): the
    workers have then taken those erasures out of that partition's state."""

    def __init__(self, bootstrap_servers: str, topics: Topics, through: int) -> None:
        self.topics, self.through = topics, through
        self._consumer = reader(bootstrap_servers)
        partitions = self._consumer.partitions_for_topic(topics.state)
        if not partitions:
            self._consumer.close()
            raise InvalidInputError(f"topic {topics.state!r} does not exist at "
                                    f"{bootstrap_servers}")
        self.partitions = sorted(partitions)
        self.applied: set[int] = set()

    def check(self) -> set[int]:
        """Read the newest checkpoint of each partition not yet applied; the applied ones."""
        from kafka import TopicPartition

        for p in self.partitions:
            if p in self.applied:
                continue
            data = read_last(self._consumer, TopicPartition(self.topics.state, p))
            if data is not None and applied_campaigns(
                    data, f"checkpoint of partition {p}") > self.through:
                self.applied.add(p)
        return self.applied

    def close(self) -> None:
        self._consumer.close()
