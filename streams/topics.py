"""Topic names of one deployment and their creation.

The worker's two inputs have the same partition count and are keyed by decision id:
``<prefix>.decisions``, the decision service's log (blocks of decisions, each block of the
partition Kafka's default partitioner gives its decisions' ids: ``streams.blocks``), and
``<prefix>.events``, everything senders and trackers write (sends, outcomes, legacy
impressions and clicks, watermarks), so a decision and its events meet in the same partition
number. ``<prefix>.state`` has that count too: partition p holds the checkpoints of the join of
partition p, one record each, so its newest checkpoint is the partition's last record.
``<prefix>.campaigns`` (one partition) carries campaign records; ``.joined`` the closed
decisions (the training log); ``.deadletter`` the records the worker could not use;
``.vwstate`` (one partition) the VW learner's checkpoints (VW models and ``.joined`` offsets);
``.subjects`` (one partition, compacted) the subscribers' secrets that the decision service's
replicas share (``streams.subjects``); ``.ledger`` (compacted, the state topic's partition
count) the sealed chunks of the partitions' erasure ledgers that their checkpoints reference
(``streams.worker``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from bandit.errors import InvalidInputError, UnavailableError

_ADMIN_TIMEOUT_MS = 10_000
_COMPACTED = {"cleanup.policy": "compact"}  # subjects, ledger: the newest record of each key


@dataclass(frozen=True)
class Topics:
    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or not all(ch.isalnum() or ch in "-_" for ch in self.prefix):
            raise InvalidInputError(
                f"topic prefix: letters, digits, '-' and '_' only, got {self.prefix!r}")

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def state(self) -> str:
        return f"{self.prefix}.state"

    @property
    def campaigns(self) -> str:
        return f"{self.prefix}.campaigns"

    @property
    def joined(self) -> str:
        return f"{self.prefix}.joined"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def vwstate(self) -> str:
        return f"{self.prefix}.vwstate"

    @property
    def subjects(self) -> str:
        return f"{self.prefix}.subjects"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}.ledger"

    def partition_counts(self, partitions: int) -> dict[str, int]:
        """Every topic and its partition count."""
        return {self.decisions: partitions, self.events: partitions, self.state: partitions,
                self.joined: partitions, self.campaigns: 1, self.deadletter: 1,
                self.vwstate: 1, self.subjects: 1, self.ledger: partitions}


def create_topics(bootstrap_servers: str, topics: Topics, partitions: int) -> int:
    """Create the deployment's missing topics and return the partition count of the join.

    ``partitions`` applies to a new deployment; an existing one keeps its count (the
    decisions topic's), and a deployment whose decisions, events, state, joined and ledger
    topics disagree is refused with a clear error: the join needs them co-partitioned.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if partitions < 1:
        raise InvalidInputError(f"partitions: expected at least 1, got {partitions}")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                 request_timeout_ms=_ADMIN_TIMEOUT_MS)
    except KafkaError as exc:
        raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None
    try:
        existing = set(admin.list_topics())

        def counts() -> dict[str, int]:
            kept = [name for name in topics.partition_counts(1) if name in existing]
            # An empty list would describe every topic of the cluster.
            return {t["name"]: len(t["partitions"])
                    for t in (admin.describe_topics(kept) if kept else [])}

        have = counts()
        partitions = have.get(topics.decisions, partitions)
        wanted = topics.partition_counts(partitions)
        compacted = {topics.subjects, topics.ledger}
        missing = [NewTopic(name, n, 1, topic_configs=_COMPACTED if name in compacted else {})
                   for name, n in wanted.items() if name not in have]
        if missing:
            # Created meanwhile by another process.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=_ADMIN_TIMEOUT_MS)
        for name, n in have.items():
            if n != wanted[name]:
                raise InvalidInputError(
                    f"topic {name} has {n} partitions, {topics.decisions} has {partitions}: "
                    "the join needs them co-partitioned (use another topic prefix)")
        return partitions
    finally:
        admin.close()
