"""Subscribers' pseudonyms: the subject keys that the decision log (``<prefix>.decisions``) and
the join's output (``<prefix>.joined``) carry instead of user ids, and that erasure can make
meaningless (crypto-shredding).

Every subscriber has a random 16-byte secret (``os.urandom``; from a seeded generator in
reproducible runs, ``Engine(id_seed=...)``), and their pseudonym is the keyed BLAKE2b of
their user id under it (16 bytes, written as 32 hex digits). Secrets are found by
``subject_key(user_id)``, the unkeyed hash of the user id: an index held here (and in the
stream's ``<prefix>.subjects`` topic, ``streams.subjects``), never written to the logs.
Erasure destroys the subscriber's secrets (``destroy``): from then on nobody can compute the
pseudonym from the user id, so the logged rows no longer name the subscriber; a new decision
for the same user id gets a new secret, hence a new pseudonym.

Service replicas share the secrets through ``<prefix>.subjects`` (``streams.subjects``): a
replica creates a new subscriber's secret, uses it at once and hands it to ``created`` (which
publishes it). When two replicas raced for one subscriber, the topic holds two secrets for
the index; every replica uses the first the topic gave (``heard``) for new decisions and keeps
the others, so ``all_of`` returns every pseudonym the subscriber had and erasure finds all of
them.

Costs per decision: a dict lookup, in a cache of the pseudonyms in use by user id; a user id
not in it costs the unkeyed hash of its index and one keyed hash. The cache lives in memory
only (neither snapshots nor the topic hold a user id); it forgets a user id on its erasure,
and everything when a secret in use changes otherwise (a tombstone or a race read from the
topic), so that no decision takes a pseudonym whose secret is gone.

>>> keys = SubjectKeys(np.random.default_rng(7))
>>> first = keys.pseudonym("u1")
>>> keys.pseudonyms(["u1", "u2"])[0] == first, first == subject_key("u1").hex()
(True, False)
>>> [k.hex() for k in keys.all_of("u1")] == [first], keys.destroy("u1"), keys.all_of("u1")
(True, 1, [])
>>> keys.pseudonym("u1") != first
True
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from bandit.engine.randomness import subject_key

SECRET_BYTES = 16


def keyed(user_id: str, secret: bytes) -> bytes:
    """The 16-byte pseudonym of ``user_id`` under ``secret``: keyed BLAKE2b."""
    return hashlib.blake2b(user_id.encode(), digest_size=16, key=secret).digest()


def fingerprint(secret: bytes) -> bytes:
    """8 bytes that tell a subscriber's secrets apart without revealing them (the subjects
    topic keys each secret by index and fingerprint)."""
    return hashlib.blake2b(secret, digest_size=8, person=b"cmab secret").digest()


class SubjectKeys:
    """Every subscriber's secrets, by index (``subject_key``); thread-safe (a lock of its own).

    ``created(index, secret)`` (set by the stream link) is called, with the lock held, for
    each secret this process creates; it must not block."""

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._secrets: dict[bytes, list[bytes]] = {}  # index -> secrets, the one in use first
        self._cache: dict[str, str] = {}  # user id -> pseudonym in use (memory only)
        self._heard: set[bytes] = set()  # indexes whose first secret came from the topic
        self.created: Callable[[bytes, bytes], object] | None = None

    def __len__(self) -> int:
        """Subscribers with a secret."""
        return len(self._secrets)

    def pseudonym(self, user_id: str) -> str:
        """The subscriber's pseudonym in use (32 hex digits); a new subscriber gets a secret."""
        with self._lock:
            return self._cache.get(user_id) or self._pseudonym(user_id)

    def pseudonyms(self, user_ids: Sequence[str]) -> list[str]:
        """``pseudonym`` of each user id, under one lock."""
        get, miss = self._cache.get, self._pseudonym
        with self._lock:
            return [get(u) or miss(u) for u in user_ids]

    def _pseudonym(self, user_id: str) -> str:
        """``pseudonym`` of a user id not in the cache."""
        index = subject_key(user_id)
        held = self._secrets.get(index)
        if held:
            secret = held[0]
        else:
            secret = (os.urandom(SECRET_BYTES) if self._rng is None
                      else self._rng.bytes(SECRET_BYTES))
            self._secrets[index] = [secret]
            if self.created is not None:
                self.created(index, secret)
        out = self._cache[user_id] = keyed(user_id, secret).hex()
        return out

    def all_of(self, user_id: str) -> list[bytes]:
        """Every pseudonym (16 bytes) the subscriber has under the secrets held, the one in use
        first; empty for a subscriber without a secret (never decided, or erased)."""
        with self._lock:
            return [keyed(user_id, s) for s in self._secrets.get(subject_key(user_id), [])]

    def erase_keys(self, user_id: str) -> list[bytes]:
        """The subject keys by which erasure finds the subscriber's decisions: every pseudonym
        (``all_of``) and the unkeyed ``subject_key`` of legacy impressions, which carry the
        user id itself."""
        return [*self.all_of(user_id), subject_key(user_id)]

    def secrets_of(self, user_id: str) -> list[bytes]:
        """The subscriber's secrets (the stream link names them in its tombstones)."""
        with self._lock:
            return list(self._secrets.get(subject_key(user_id), []))

    def destroy(self, user_id: str) -> int:
        """Forget the subscriber's secrets (erasure): how many there were."""
        with self._lock:
            self._cache.pop(user_id, None)
            return self._drop(subject_key(user_id))

    def _drop(self, index: bytes) -> int:
        self._heard.discard(index)
        return len(self._secrets.pop(index, []))

    # -- the shared topic (streams.subjects) ---------------------------------------------

    def heard(self, index: bytes, secret: bytes) -> None:
        """A secret read from the shared topic, in the topic's order: the first one heard for
        an index is the one in use (a secret created here and not heard yet gives way to it);
        later ones are kept for ``all_of``."""
        _check(index, "index")
        _check(secret, "secret")
        with self._lock:
            held = self._secrets.setdefault(index, [])
            if index not in self._heard:
                self._heard.add(index)
                if held and held[0] != secret:
                    self._cache.clear()  # the secret in use changes
                if secret in held:
                    held.remove(secret)
                held.insert(0, secret)
            elif secret not in held:
                held.append(secret)

    def forget(self, index: bytes, print_: bytes) -> None:
        """A tombstone read from the shared topic: drop the index's secret with this
        ``fingerprint`` (the subscriber has none left once every one is dropped)."""
        with self._lock:
            held = self._secrets.get(index)
            if held is None:
                return
            if fingerprint(held[0]) == print_:
                self._cache.clear()  # the secret in use goes
            held[:] = [s for s in held if fingerprint(s) != print_]
            if not held:
                self._drop(index)

    def clear(self) -> None:
        """Forget every secret (the stream link, before it reads the topic from its start)."""
        with self._lock:
            self._secrets.clear()
            self._cache.clear()
            self._heard.clear()

    # -- snapshots ------------------------------------------------------------------------

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Indexes and secrets (m, 16) uint8 each, one row per secret, the one in use of each
        index first (``bandit.engine.snapshot``)."""
        with self._lock:
            rows = [(index, s) for index, held in self._secrets.items() for s in held]
        index = np.frombuffer(b"".join(i for i, _ in rows), dtype=np.uint8)
        secret = np.frombuffer(b"".join(s for _, s in rows), dtype=np.uint8)
        return index.reshape(-1, 16), secret.reshape(-1, SECRET_BYTES)

    def restore(self, index: np.ndarray, secret: np.ndarray) -> None:
        """Take ``state``'s arrays (ValueError if they do not fit)."""
        if (index.dtype != np.uint8 or secret.dtype != np.uint8 or index.ndim != 2
                or index.shape != (len(secret), 16) or secret.shape[1:] != (SECRET_BYTES,)):
            raise ValueError("subject secrets: expected two (m, 16) uint8 arrays")
        with self._lock:
            self._cache.clear()
            raw_i, raw_s = index.tobytes(), secret.tobytes()
            for r in range(len(index)):
                self._secrets.setdefault(raw_i[16 * r:16 * r + 16], []).append(
                    raw_s[SECRET_BYTES * r:SECRET_BYTES * (r + 1)])


def _check(value: bytes, what: str) -> None:
    if type(value) is not bytes or len(value) != 16:
        raise ValueError(f"subjects topic: {what}: expected 16 bytes, got {value!r}")
