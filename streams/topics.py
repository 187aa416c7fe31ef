"""Topic names of one deployment and their creation.

``<prefix>.impressions`` and ``<prefix>.clicks`` are keyed by decision id and have the same
partition count, so a decision's impression and clicks meet in the same partition number.
``<prefix>.state`` has that count too: partition p holds the checkpoints of the join of
partition p, one record each, so its newest checkpoint is the partition's last record.
``<prefix>.campaigns`` (one partition) carries campaign records; ``.joined`` the closed
decisions (the training log); ``.deadletter`` the records the worker could not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from bandit.errors import InvalidInputError, UnavailableError

_ADMIN_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Topics:
    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or not all(ch.isalnum() or ch in "-_" for ch in self.prefix):
            raise InvalidInputError(
                f"topic prefix: letters, digits, '-' and '_' only, got {self.prefix!r}")

    @property
    def impressions(self) -> str:
        return f"{self.prefix}.impressions"

    @property
    def clicks(self) -> str:
        return f"{self.prefix}.clicks"

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

    def partition_counts(self, partitions: int) -> dict[str, int]:
        """Every topic and its partition count."""
        return {self.impressions: partitions, self.clicks: partitions, self.state: partitions,
                self.joined: partitions, self.campaigns: 1, self.deadletter: 1}


def create_topics(bootstrap_servers: str, topics: Topics, partitions: int) -> None:
    """Create the deployment's topics; existing ones are kept if their partition count fits
    (the join needs impressions, clicks and state co-partitioned), otherwise a clear error."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if partitions < 1:
        raise InvalidInputError(f"partitions: expected at least 1, got {partitions}")
    wanted = topics.partition_counts(partitions)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                 request_timeout_ms=_ADMIN_TIMEOUT_MS)
    except KafkaError as exc:
        raise UnavailableError(f"no Kafka at {bootstrap_servers}: {exc}") from None
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=_ADMIN_TIMEOUT_MS)
            except TopicAlreadyExistsError:  # created meanwhile by another process
                pass
        described = admin.describe_topics([name for name in wanted if name in existing])
        for topic in described:
            have = len(topic["partitions"])
            if have != wanted[topic["name"]]:
                raise InvalidInputError(
                    f"topic {topic['name']} has {have} partitions, expected "
                    f"{wanted[topic['name']]}: use another --topic-prefix or the same "
                    "--partitions")
    finally:
        admin.close()
