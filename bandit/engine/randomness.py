"""Decision ids, the consent bit, seeds, draws and the holdout hash: all of a decision's
randomness, replayable from its id.

Decision ids: 32 lowercase hex digits, 127 random bits from the operating system
(``os.urandom``, read for every id: no generator state that a fork or a cloned process could
copy) and, lowest, the consent bit. No two engines issue the same id, whatever their seed: not
after a restart (with or without a snapshot), not in two replicas, not in a forked child. Ids
are not derived from seed + process id + time, because process ids and clocks repeat across
containers and cloned VMs. Reproducible runs (simulators, ``cmab demo``, tests) opt in
with ``Engine(id_seed=...)``: ids from a generator with that seed, the same ids on every run;
never in a service that others write to.

Consent bit: the lowest bit of an id is set (the last hex digit is odd) when the decision was
made with consent. Neither the service nor the stream worker remembers decisions, so ingestion
reads consent from the id: an impression whose id has the bit clear loses its context and
segments before the join sees it (``strip_consentless``; counted), and is learned like any
impression without context, by the context-free fallback. An id the engine did not issue
counts as consent-less unless its last digit is odd.

Reproducibility: every random draw of a decision is a hash of its id, slot and column, so a
decision can be replayed from its id alone, whatever batch it came in.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from bandit import wire
from bandit.kernels import draws as draw_kernels
from bandit.models import Impression, LoggedDecision


def _unit_hash(*parts: str) -> float:
    """A stable uniform in [0, 1) from strings (not Python's salted hash())."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 11) * 2.0**-53


def _in_holdout(campaign: str, user_id: str, fraction: float) -> bool:
    return _unit_hash("holdout", campaign, user_id) < fraction


def _splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer over uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def decision_seeds(decision_ids: Sequence[str]) -> np.ndarray:
    """(n,) uint64: the seed of each decision, from its 32-hex-digit id."""
    return np.array([int(d[16:], 16) ^ int(d[:16], 16) for d in decision_ids], dtype=np.uint64)


def decision_draws(seeds: np.ndarray, slot_index: int, width: int) -> np.ndarray:
    """(n, width) uniforms in [0, 1) that depend only on each decision's seed, the slot and the
    column: the randomness of a decision, replayable from its id (``decision_seeds``)."""
    salt = np.uint64(((slot_index + 1) * 0xD1B54A32D192ED03) % 2**64)
    cols = np.arange(width, dtype=np.uint64) * np.uint64(0x8CB92BA72F3D8DD7)
    z = _splitmix(_splitmix(seeds[:, None] ^ salt) + cols[None, :])
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def slot_draws(seed: int, n_slots: int, width: int) -> np.ndarray:
    """(n_slots, width): row i is ``decision_draws`` of the one decision with this seed for
    slot i (its first 2 + k columns are what a slot of k arms takes), in one kernel call."""
    out = np.empty((n_slots, width))
    draw_kernels.slot_draws(np.uint64(seed), out)
    return out


_ID_WORDS = struct.Struct(">QQ")  # a decision id's two words from 16 bytes, high word first


def _decision_ids(words: np.ndarray) -> list[str]:
    """Decision ids (n,) from words (n, 2) uint64: 32 hex digits each, high word first."""
    text = words.astype(">u8").tobytes().hex()
    return [text[i:i + 32] for i in range(0, len(text), 32)]


_WITH_CONSENT = frozenset("13579bdf")  # the last hex digit of an id decided with consent


def decided_with_consent(decision_id: str) -> bool:
    """Whether the decision was made with consent: the lowest bit of its id (odd last digit).

    >>> decided_with_consent("0" * 31 + "b"), decided_with_consent("0" * 32)
    (True, False)
    """
    return decision_id[-1:] in _WITH_CONSENT


_LOGGED = frozenset({Impression, LoggedDecision, wire.Impression, wire.LoggedDecision})


def strip_consentless(events: Sequence[Any]) -> tuple[Sequence[Any], int]:
    """``events`` with context and segments dropped from every impression and logged decision
    (pydantic or ``bandit.wire``) whose decision was made without consent, and how many lost
    something. Stripped ones are copies; anything else (sends, outcomes, watermarks, refusals)
    passes as it is, and ``events`` itself when nothing is stripped."""
    out: list[Any] | None = None
    stripped = 0
    for i, e in enumerate(events):
        kind = type(e)
        if (kind in _LOGGED and (e.context is not None or e.segments)
                and e.decision_id[-1:] not in _WITH_CONSENT):
            if out is None:
                out = list(events)
            out[i] = (e.model_copy(update={"context": None, "segments": {}})
                      if kind is Impression or kind is LoggedDecision
                      else msgspec.structs.replace(e, context=None, segments={}))
            stripped += 1
    return (events if out is None else out), stripped


def _with_consent_bit(words: np.ndarray, consent: np.ndarray) -> None:
    """Set the lowest bit of each id's low word (n, 2) to its request's consent (n,) bool."""
    words[:, 1] = (words[:, 1] & ~np.uint64(1)) | consent.astype(np.uint64)


def holdout_mask(campaign: str, user_ids: Sequence[str], fraction: float) -> np.ndarray:
    """(n,) bool: ``_in_holdout`` of every user, with the hash's arithmetic on arrays."""
    prefix, blake2b = f"holdout\x1f{campaign}\x1f".encode(), hashlib.blake2b
    digests = b"".join([blake2b(prefix + u.encode(), digest_size=8).digest() for u in user_ids])
    words = np.frombuffer(digests, dtype="<u8") >> np.uint64(11)
    return words.astype(np.float64) * 2.0**-53 < fraction


def id_words(id_rng: np.random.Generator | None, n: int) -> np.ndarray:
    """(n, 2) uint64: the random words of n decision ids, high word first (their lowest
    bit is overwritten by the consent bit); from the OS unless ``id_rng`` (reproducible runs)."""
    if id_rng is None:
        return np.frombuffer(os.urandom(16 * n), dtype=">u8").reshape(n, 2).astype(np.uint64)
    return id_rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)


def one_id_words(id_rng: np.random.Generator | None) -> tuple[int, int]:
    """``id_words(id_rng, 1)[0]`` as two Python ints, without the array machinery."""
    if id_rng is None:
        return _ID_WORDS.unpack(os.urandom(16))
    # integers(0, 2**64, (n, 2), uint64) over the full range is the bit generator's raw
    # output, word by word (numpy masks nothing off and rejects nothing): the same two words.
    raw = id_rng.bit_generator.random_raw
    return raw(), raw()


def subject_key(user_id: str) -> bytes:
    """The unkeyed 16-byte BLAKE2b hash of a user id: the index of the subscriber's secrets
    (``bandit.engine.pseudonyms``; never written to the decision or joined logs, whose subject
    keys are keyed pseudonyms), and the subject key of legacy impressions, which carry the user
    id itself. Unkeyed: anyone who guesses a user id can compute it."""
    return hashlib.blake2b(user_id.encode(), digest_size=16, person=b"cmab erasure").digest()
