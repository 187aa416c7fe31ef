"""The subscribers' secrets shared by the decision service's replicas: ``<prefix>.subjects``.

Every replica names a subscriber in the decision log by the same pseudonym, the keyed hash of
the user id under the subscriber's secret (``bandit.engine.pseudonyms``), so the secrets go
through a compacted topic of one partition, which every replica follows (``SharedSubjects``).
A record's key is the secret's index (``subject_key`` of the user id, 16 bytes) followed by
the secret's ``fingerprint`` (8 bytes); its value is the secret (16 bytes). A record without a
value (a tombstone) drops that secret: erasure writes one per secret of the subscriber, and
compaction then removes the secrets for good. Keys of another length are catch-up markers and
carry nothing.

A replica creates a new subscriber's secret itself, decides with it at once and publishes it
(from the deciding thread: ``KafkaProducer.send`` only queues it). Two replicas that decide
for a new subscriber at the same moment each publish their own; both stay on the topic (their
keys differ), and every replica uses the first one the topic holds for new decisions and keeps
the other, so erasure finds the decisions of both (``SubjectKeys.heard``). Keying by the index
alone would let compaction keep the later secret only, and a replica started after it would
no longer know the earlier one's decisions.

At start the replica forgets the secrets it holds (a snapshot's may have been erased since)
and reads the topic to its end before the service takes requests: it publishes a marker (a
tombstone with a key of its own) and reads until it sees it, because the broker's end offset
is not exact for batched records (shared/NOTES-KAFKA.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from kafka import TopicPartition
from kafka.errors import KafkaError

from bandit.engine.pseudonyms import SubjectKeys, fingerprint
from bandit.engine.randomness import subject_key
from bandit.errors import UnavailableError
from streams.kafka import FETCH_MAX_WAIT_MS, producer, reader
from streams.topics import Topics

log = logging.getLogger(__name__)

_KEY_BYTES = 24  # index (16) and fingerprint (8)
_CATCH_UP_S = 30.0


class SharedSubjects:
    """Keeps ``subjects`` at the secrets of ``topics.subjects`` and publishes those it
    creates. ``errors`` counts records that are not a secret and broker errors. Close it."""

    def __init__(self, subjects: SubjectKeys, bootstrap_servers: str, topics: Topics, *,
                 poll_timeout_ms: int = 200, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
                 catch_up_s: float = _CATCH_UP_S) -> None:
        self.subjects = subjects
        self.topic = topics.subjects
        self.poll_timeout_ms = poll_timeout_ms
        self.errors = 0
        self._consumer = reader(bootstrap_servers, fetch_max_wait_ms=fetch_max_wait_ms)
        if not self._consumer.partitions_for_topic(self.topic):
            self._consumer.close()
            raise UnavailableError(f"no topic {self.topic}: create the topics first")
        self._tp = TopicPartition(self.topic, 0)
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)
        self._producer = producer(bootstrap_servers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subjects", daemon=True)
        subjects.clear()
        self._catch_up(catch_up_s)
        subjects.created = self._publish
        self._thread.start()

    def _catch_up(self, timeout_s: float) -> None:
        """Read the topic up to a marker published now (UnavailableError after
        ``timeout_s``)."""
        marker = b"catch-up/" + os.urandom(8)
        self._producer.send(self.topic, None, key=marker, partition=0)
        self._producer.flush()
        deadline = time.monotonic() + timeout_s
        while not self._read(self._consumer.poll(timeout_ms=self.poll_timeout_ms), marker):
            if time.monotonic() > deadline:
                self.close()
                raise UnavailableError(f"{self.topic}: not readable to its end in "
                                       f"{timeout_s:.0f} s")

    def _read(self, batches: dict, marker: bytes | None = None) -> bool:
        """Apply polled records in order; whether ``marker`` was among them."""
        seen = False
        for record in batches.get(self._tp, []):
            key, value = record.key, record.value
            if key is None or len(key) != _KEY_BYTES:
                seen = seen or key == marker
                continue
            index, print_ = key[:16], key[16:]
            if value is None:
                self.subjects.forget(index, print_)
            elif len(value) != 16 or fingerprint(value) != print_:
                self.errors += 1
                log.error("%s: record at offset %d is not a secret of its key",
                          self.topic, record.offset)
            else:
                self.subjects.heard(index, value)
        return seen

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read(self._consumer.poll(timeout_ms=self.poll_timeout_ms))
            except KafkaError as exc:  # the broker went away: keep the secrets, retry
                self.errors += 1
                log.warning("subjects follower: %s", exc)
                time.sleep(0.5)

    def _publish(self, index: bytes, secret: bytes) -> None:
        """``SubjectKeys.created``: queue the new secret for the topic."""
        self._producer.send(self.topic, secret, key=index + fingerprint(secret), partition=0)

    def erase(self, user_id: str) -> int:
        """Publish a tombstone for each of the subscriber's secrets held here, flushed: every
        replica drops them as it reads them, and compaction removes them from the topic.
        Returns how many."""
        index = subject_key(user_id)
        secrets = self.subjects.secrets_of(user_id)
        for secret in secrets:
            self._producer.send(self.topic, None, key=index + fingerprint(secret), partition=0)
        self._producer.flush()
        return len(secrets)

    def flush(self) -> None:
        """Wait until the secrets created so far are on the topic."""
        self._producer.flush()

    def close(self) -> None:
        if self.subjects.created == self._publish:
            self.subjects.created = None
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._producer.close()
        self._consumer.close()
