"""The Engine: campaigns, slots, arm ids <-> indices, holdout, consent, decisions and learning.

Requests arrive validated by their pydantic models; the engine checks once what only it knows
(the campaign exists, the context fits its schema, the arms exist) and turns contexts into one
float64 matrix per slot so that the policies' batch kernels do the work.

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
import io
import math
import os
import re
import struct
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from bandit import wire
from bandit.errors import (
    ConflictError,
    IncompatibleStateError,
    InvalidInputError,
    NotFoundError,
    OverCapacityError,
    UnknownArmError,
)
from bandit.join import Closed, Joiner, JoinResult, subject_key
from bandit.kernels import draws as draw_kernels
from bandit.kernels.text import interleave, row_bounds
from bandit.models import (
    FEATURE_LIMIT,
    Arm,
    ArmReport,
    CampaignReport,
    CampaignSpec,
    Click,
    Contribution,
    Decision,
    DecisionRequest,
    EligibilityRule,
    Impression,
    Interval,
    JoinedEvent,
    SegmentReport,
    SlotChoice,
    SlotDecision,
    SlotReport,
    SlotSpec,
    check_arm_features,
)
from bandit.policies import (
    Bart,
    BetaTS,
    EpsilonGreedy,
    HybridLinUCB,
    LinTS,
    LinUCB,
    Policy,
    VWPolicy,
    from_state,
)

SNAPSHOT_MAGIC = "bandit-engine-snapshot"
SNAPSHOT_FORMAT = 2  # 2: the open attribution windows as binary columns
_JOIN = "join/"  # snapshot arrays of the attribution join (policy arrays are "ci/si/role/")
_Z95 = 1.959963984540054
_EXPLAIN_TOP = 3
# A slot's learned state is refused beyond this many float64 numbers (256 MiB), so that one
# campaign spec cannot exhaust the server.
_MAX_STATE_NUMBERS = 32 * 2**20
# Bias audit: a segment value is flagged when its arm allocation is this far (total variation)
# from the slot's overall allocation, on at least this many impressions; or when its reward
# rate and that of the segment's other values differ beyond chance (95% interval of the gap
# excludes 0, both sides with at least _AUDIT_MIN impressions) and the lower is under this
# fraction of the higher (the "four-fifths rule" of disparate-impact audits).
_AUDIT_TV, _AUDIT_MIN, _AUDIT_CTR_RATIO = 0.25, 50, 0.8


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


_ONE = np.ones(1)  # the context-free fallback's input row (read only)
_ID_WORDS = struct.Struct(">QQ")  # a decision id's two words from 16 bytes, high word first


@dataclass(frozen=True)
class OneDecision:
    """A single decision: its JSON text (as ``DecisionBatch.json_lines`` writes it), and per
    slot, in campaign order, the slot's name and the chosen arm's id (for metrics)."""

    json: str
    campaign: str
    slots: list[str]
    arms: list[str]


_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')  # what a JSON string must escape


def _json_strings(values: Sequence[str]) -> bytes:
    """The JSON texts of strings, separated by newlines (which no JSON text holds raw), as
    orjson writes them; one call for the whole column when none needs escaping."""
    if _JSON_ESCAPED.search("".join(values)) is None:
        return ('"' + '"\n"'.join(values) + '"').encode()
    return b"\n".join(orjson.dumps(v) for v in values)


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


def strip_consentless(events: Sequence[Any]) -> tuple[Sequence[Any], int]:
    """``events`` with context and segments dropped from every impression (pydantic or
    ``bandit.wire``) whose decision was made without consent, and how many impressions lost
    something. Stripped impressions are copies; anything else (clicks, watermarks, refusals)
    passes as it is, and ``events`` itself when nothing is stripped."""
    out: list[Any] | None = None
    stripped = 0
    for i, e in enumerate(events):
        kind = type(e)
        if ((kind is Impression or kind is wire.Impression)
                and (e.context is not None or e.segments)
                and e.decision_id[-1:] not in _WITH_CONSENT):
            if out is None:
                out = list(events)
            out[i] = (msgspec.structs.replace(e, context=None, segments={})
                      if kind is wire.Impression
                      else e.model_copy(update={"context": None, "segments": {}}))
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


class _Encoder:
    """Named values -> a float64 row in schema order: numeric features as is, categorical ones
    one-hot with an 'unknown' bucket, an optional leading 1.0."""

    def __init__(self, features: Sequence[Any], intercept: bool, what: str) -> None:
        self.what = what
        self.columns: list[str] = ["(intercept)"] if intercept else []
        self._numeric: list[tuple[str, int, float | None]] = []
        self._categorical: list[tuple[str, int, dict[str, int]]] = []
        for f in features:
            if f.kind == "numeric":
                self._numeric.append((f.name, len(self.columns), f.default))
                self.columns.append(f.name)
            else:
                start = len(self.columns)
                self._categorical.append((f.name, start, {v: i for i, v in enumerate(f.values)}))
                self.columns += [f"{f.name}={v}" for v in f.values] + [f"{f.name}=(unknown)"]
        self.names = {f.name for f in features}
        self.intercept = intercept
        # Row shapes (keys, value types) that ``check`` passed -> their numbers, as a tuple.
        self._passed: dict[tuple, Callable[[dict[str, Any]], tuple]] = {}

    @property
    def dim(self) -> int:
        return len(self.columns)

    def encode(self, rows: Sequence[dict[str, Any]], out: np.ndarray | None = None) -> np.ndarray:
        """(n, dim) from n mappings; unknown names, missing numeric values and wrong types
        are refused with the row and the feature named."""
        X = np.zeros((len(rows), self.dim)) if out is None else out
        if self.intercept:
            X[:, 0] = 1.0
        if len(rows) > 1 and self._encode_uniform(rows, X):
            self._bounded(X)
            return X
        for i, row in enumerate(rows):
            X[i] = self._values(row, i)
        self._bounded(X)
        return X

    def encode_one(self, row: dict[str, Any]) -> np.ndarray:
        """``encode([row])[0]`` (dim,), with the same errors, for one row: its values go into
        a list and become an array in one call (a single decision would pay a NumPy item
        assignment per feature)."""
        x = np.array(self._values(row, 0), dtype=np.float64)
        # Every column but the numeric ones holds 0 or 1: one test of the whole row, and
        # _bounded's for the message.
        if not (np.abs(x) <= FEATURE_LIMIT).all():
            self._bounded(x[None, :])
        return x

    def _values(self, row: dict[str, Any], i: int) -> list[float]:
        """Row ``i``'s values in column order; unknown names, missing numeric values and
        wrong types are refused with the row and the feature named."""
        if not row.keys() <= self.names:
            unknown = sorted(set(row) - self.names)
            raise InvalidInputError(f"{self.what} row {i}: unknown feature {unknown[0]!r}; "
                                    f"expected some of {sorted(self.names)}")
        values = [0.0] * len(self.columns)
        if self.intercept:
            values[0] = 1.0
        for name, col, default in self._numeric:
            value = row.get(name, default)
            if value is None:
                raise InvalidInputError(f"{self.what} row {i}: missing numeric feature {name!r}")
            if isinstance(value, str):
                raise InvalidInputError(
                    f"{self.what} row {i}: feature {name!r} expects a number, got {value!r}")
            values[col] = value
        for name, start, index in self._categorical:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(
                    f"{self.what} row {i}: feature {name!r} expects a string, got {value!r}")
            values[start + index.get(value, len(index))] = 1.0
        return values

    def _bounded(self, X: np.ndarray) -> None:
        """Refuse a numeric value beyond +-FEATURE_LIMIT (bandit.models), naming its row."""
        if not self._numeric:
            return
        cols = [col for _, col, _ in self._numeric]
        bad = ~(np.abs(X[:, cols]) <= FEATURE_LIMIT)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise InvalidInputError(
                f"{self.what} row {i}: feature {self._numeric[j][0]!r} is {float(X[i, cols[j]])!r}, "
                f"beyond +-{FEATURE_LIMIT:g} (scale it: the policies are linear in it)")

    def _encode_uniform(self, rows: Sequence[dict[str, Any]], X: np.ndarray) -> bool:
        """``encode``'s common case in one pass over the values: every row has the same numeric
        features in the same order, each a float (as pydantic hands them over). Fills X and
        says True; anything else (a string, another key order, a categorical value, a missing
        feature without default) says False before X is touched, for the row by row path."""
        keys = tuple(rows[0])
        numeric = {name: (col, default) for name, col, default in self._numeric}
        if (not all(key in numeric for key in keys)
                or any(default is None and name not in keys for name, _, default in self._numeric)
                or not all(map(keys.__eq__, map(tuple, rows)))):
            return False
        try:  # float.__float__ refuses a str (or an int) where float() would convert it
            flat = np.fromiter(map(float.__float__, chain.from_iterable(map(dict.values, rows))),
                               dtype=np.float64, count=len(rows) * len(keys))
        except TypeError:
            return False
        X[:, [numeric[key][0] for key in keys]] = flat.reshape(len(rows), len(keys))
        for name, col, default in self._numeric:
            if name not in keys:
                X[:, col] = default
        for _, start, index in self._categorical:  # none given: the 'unknown' bucket
            X[:, start + len(index)] = 1.0
        return True

    def encode_columns(self, keys: Sequence[str], values: np.ndarray, names: Sequence[str],
                       out: np.ndarray) -> None:
        """``encode`` of rows that share their keys, from columns: ``values`` (n, len(keys))
        holds numbers, and for categorical features indices into ``names``; fills ``out`` (n,
        dim). The rows must have passed ``check`` (the join's rows did, on the way in)."""
        n = values.shape[0]
        where = {key: j for j, key in enumerate(keys)}
        if self.intercept:
            out[:, 0] = 1.0
        for name, col, default in self._numeric:
            j = where.get(name)
            if j is None and default is None:
                raise InvalidInputError(f"{self.what} row 0: missing numeric feature {name!r}")
            out[:, col] = default if j is None else values[:, j]
        for name, start, index in self._categorical:
            j = where.get(name)
            if j is None:
                out[:, start + len(index)] = 1.0
                continue
            seen, codes = np.unique(values[:, j].astype(np.int64), return_inverse=True)
            offset = np.array([index.get(names[v], len(index)) for v in seen.tolist()],
                              dtype=np.int64)
            out[np.arange(n), start + offset[codes.reshape(-1)]] = 1.0
        self._bounded(out)

    def encode_values(self, rows: Sequence[Any], values: Callable[[Any], tuple], absent: object,
                      out: np.ndarray) -> None:
        """``encode`` of rows whose ``values(row)`` are their values in the order of the
        features (``absent`` where a row omits one), already checked for type: numbers for
        numeric features, strings for categorical ones; fills ``out`` (n, dim). A numeric
        feature without a default that a row omits raises InvalidInputError."""
        if self.intercept:
            out[:, 0] = 1.0
        if not self._categorical and len(rows):
            # All numeric: one pass over every value into the matrix, unless one is omitted.
            width = len(self._numeric)
            try:
                flat = np.fromiter(chain.from_iterable(map(values, rows)), dtype=np.float64,
                                   count=len(rows) * width)
            except TypeError:
                pass  # an omitted value: feature by feature below
            else:
                out[:, [col for _, col, _ in self._numeric]] = flat.reshape(len(rows), width)
                self._bounded(out)
                return
        # Feature by feature, in schema order (the order of their first columns).
        columns = list(zip(*map(values, rows))) or [()] * (len(self._numeric)
                                                          + len(self._categorical))
        order = sorted([(col, "numeric", name, default) for name, col, default in self._numeric]
                       + [(start, "categorical", name, index)
                          for name, start, index in self._categorical])
        for (col, kind, name, extra), column in zip(order, columns):
            if kind == "numeric":
                if any(v is absent for v in column):
                    if extra is None:
                        raise InvalidInputError(f"{self.what}: missing numeric feature {name!r}")
                    column = [extra if v is absent else v for v in column]
                out[:, col] = column
            else:
                index = extra
                out[np.arange(len(column)),
                    col + np.array([index.get(v, len(index)) for v in column], dtype=np.int64)
                    ] = 1.0
        self._bounded(out)

    def check(self, row: dict[str, Any]) -> None:
        """``encode([row])``'s checks without building the row (the stream checks every
        event's context once); a refused row gets ``encode``'s error."""
        # Rows of one stream mostly share their keys and value types: a shape seen to pass
        # passes again, once its numbers are within bounds.
        shape = (*row, *map(type, row.values()))
        numbers = self._passed.get(shape)
        if numbers is None:
            if not (row.keys() <= self.names and all(
                    not isinstance(row.get(name, default), str | None)
                    for name, _, default in self._numeric) and all(
                    isinstance(row.get(name), str | None) for name, _, _ in self._categorical)):
                self.encode([row])  # raises, naming the row and feature
                return
            keys = [name for name, _, _ in self._numeric if name in row]
            numbers = (lambda r: ()) if not keys else (
                (lambda r, k=keys[0]: (r[k],)) if len(keys) == 1 else itemgetter(*keys))
            if len(self._passed) < 1024:
                self._passed[shape] = numbers
        values = numbers(row)
        if values and not (-FEATURE_LIMIT <= min(values) and max(values) <= FEATURE_LIMIT):
            self.encode([row])  # raises: the value out of bounds


def _rule_holds(rule: EligibilityRule, value: Any) -> bool:
    if value is None:
        return False
    target = rule.value
    try:
        match rule.op:
            case "eq":
                return value == target
            case "ne":
                return value != target
            case "in":
                return value in target  # type: ignore[operator]
            case "not_in":
                return value not in target  # type: ignore[operator]
            case "lt":
                return value < target  # type: ignore[operator]
            case "le":
                return value <= target  # type: ignore[operator]
            case "gt":
                return value > target  # type: ignore[operator]
            case _:
                return value >= target  # type: ignore[operator]
    except TypeError:  # a string against a number: the rule cannot hold
        return False


def _state_numbers(kind: str, k: int, d: int, m: int) -> int:
    """How many float64 numbers a slot's policy keeps (sums and derived factors)."""
    match kind:
        case "beta_ts":
            return 3 * k
        case "hybrid_lin_ucb":
            p = d * m
            return p * p + 2 * k * d * p + 3 * k * d * d
        case "bart":
            p = d + m + d * m
            return 2 * p * p
        case "vw":  # VW's table: 2^18 weights of 4 float32 (times bag or cover, at most 16)
            return 2**19
        case _:
            return 2 * k * d * d


def _check_size(slot: SlotSpec, k: int, d: int, m: int) -> None:
    numbers = _state_numbers(slot.policy.kind, k, d, m)
    if numbers > _MAX_STATE_NUMBERS:
        raise InvalidInputError(
            f"slot {slot.name!r}: {slot.policy.kind} with {k} arms, {d} context columns and {m} "
            f"arm-feature columns needs {numbers * 8 / 2**20:,.0f} MiB of state; at most "
            f"{_MAX_STATE_NUMBERS * 8 / 2**20:,.0f} MiB (fewer categorical values or arms)")


def _make_policy(slot: SlotSpec, dim: int, arm_features: np.ndarray, seed: int) -> Policy:
    spec, k = slot.policy, len(slot.arms)
    rng = np.random.default_rng(seed)
    match spec.kind:
        case "beta_ts":  # context-free: it is handed a zero-width view of the context
            return BetaTS(k, alpha=spec.alpha, beta=spec.beta, dim=0,
                          half_life_ms=spec.half_life_ms, rng=rng)
        case "lin_ucb":
            return LinUCB(k, dim, alpha=spec.alpha, l2=spec.l2, epsilon=spec.epsilon,
                          half_life_ms=spec.half_life_ms, rng=rng)
        case "lin_ts":
            return LinTS(k, dim, v=spec.v, l2=spec.l2, half_life_ms=spec.half_life_ms, rng=rng)
        case "epsilon_greedy":
            return EpsilonGreedy(k, dim, epsilon=spec.epsilon, l2=spec.l2,
                                 half_life_ms=spec.half_life_ms, rng=rng)
        case "bart":
            return Bart(dim, arm_features, epsilon=spec.epsilon, l2=spec.l2,
                        half_life_ms=spec.half_life_ms, rng=rng)
        case "vw":
            return VWPolicy(dim, arm_features if slot.arm_features else None, n_arms=k,
                            exploration=spec.exploration, epsilon=spec.epsilon, bag=spec.bag,
                            cover=spec.cover, interactions=spec.interactions, lrq=spec.lrq,
                            learning_rate=spec.learning_rate, extra_args=spec.extra_args, rng=rng)
        case _:
            return HybridLinUCB(dim, arm_features, alpha=spec.alpha, l2=spec.l2,
                                epsilon=spec.epsilon, half_life_ms=spec.half_life_ms, rng=rng)


def _align(mine: _Slot, theirs: _Slot) -> tuple[Policy, Policy | None] | None:
    """Copies of a partition's slot policies with this engine's arms and retirements, ready to
    merge; None when the partition has arms this engine does not know. The fallback is None
    where it is the policy itself."""
    if theirs.arm_ids != mine.arm_ids[:len(theirs.arm_ids)]:
        return None
    def aligned(policy: Policy) -> Policy:
        copy = from_state(policy.state())
        for arm in range(len(theirs.arm_ids), len(mine.arm_ids)):
            features = (mine.encoder.encode([mine.spec.arms[arm].features])[0]
                        if isinstance(copy, HybridLinUCB | Bart) else None)
            copy.add_arm(features)
        for arm in np.flatnonzero(copy.active & ~mine.policy.active):
            copy.retire_arm(int(arm))
        return copy

    shared = theirs.fallback is theirs.policy
    return aligned(theirs.policy), None if shared else aligned(theirs.fallback)


@dataclass
class _Tally:
    """Count, sum and sum of squares of rewards: a mean with a normal-approximation interval."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, reward: float) -> None:
        self.n += 1
        self.total += reward
        self.squares += reward * reward

    def mean(self) -> float:
        return self.total / self.n

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(self.n + other.n, self.total + other.total, self.squares + other.squares)

    def var_of_mean(self) -> float:
        m = self.mean()
        return max(self.squares / self.n - m * m, 0.0) * self.n / (self.n - 1) / self.n

    def minus(self, other: _Tally) -> _Tally:
        return _Tally(self.n - other.n, self.total - other.total, self.squares - other.squares)

    def interval(self) -> Interval | None:
        """The mean with a 95% normal-approximation interval; None below two observations."""
        if self.n < 2:
            return None
        m, half = self.mean(), _Z95 * math.sqrt(self.var_of_mean())
        return Interval(estimate=m, low=m - half, high=m + half)


def _add_grouped(tallies: dict, names: Sequence, codes: np.ndarray, rewards: np.ndarray) -> None:
    """``tallies[names[k]].add(r)`` for each (k, r) of ``codes`` (n,) and ``rewards`` (n,),
    vectorized: np.add.at adds unbuffered in the given order, so every float sum is the one
    the event-at-a-time loop makes. Tallies are created in order of first appearance."""
    seen, first, counts = np.unique(codes, return_index=True, return_counts=True)
    order = np.argsort(first)
    total, squares = np.zeros(len(names)), np.zeros(len(names))
    for k in seen:
        t = tallies.get(names[k])
        if t is not None:
            total[k], squares[k] = t.total, t.squares
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf as Python floats do
        np.add.at(total, codes, rewards)
        np.add.at(squares, codes, rewards * rewards)
    for k, n in zip(seen[order], counts[order]):
        t = tallies.setdefault(names[k], _Tally())
        t.n += int(n)
        t.total, t.squares = float(total[k]), float(squares[k])


@dataclass
class _Slot:
    spec: SlotSpec
    index: int  # position in the campaign
    arm_ids: list[str]
    arm_index: dict[str, int]
    encoder: _Encoder  # the slot's arm features
    conditioned: list[tuple[str, int]]  # earlier slots it conditions on, one-hot widths
    columns: list[str]  # names of the policy's input columns
    policy: Policy  # over the campaign context plus earlier slots' choices
    fallback: Policy  # context-free (intercept only): consent-less requests
    arm_tally: dict[str, _Tally] = field(default_factory=dict)
    segment_counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    segment_tally: dict[tuple[str, str], _Tally] = field(default_factory=dict)

    @property
    def default(self) -> int:
        return self.arm_index[self.spec.default_arm]


@dataclass
class _Campaign:
    spec: CampaignSpec
    context: _Encoder
    slots: list[_Slot]
    paused: bool = False
    version: int = 0
    personalized: _Tally = field(default_factory=_Tally)
    holdout: _Tally = field(default_factory=_Tally)

    def slot(self, name: str) -> _Slot:
        for s in self.slots:
            if s.spec.name == name:
                return s
        raise NotFoundError(f"campaign {self.spec.name!r}: no slot {name!r}")



@dataclass
class _Learned:
    """A campaign's closed decisions as columns, what ``Engine._learn_columns`` learns: n
    decisions in order; per slot of the campaign (by name) the arm index in the slot (-1 where
    the decision has no such slot), its logged propensity and its reward (unclipped);
    ``context`` the encoded contexts of the decisions with ``has_context``, in order; ``best``
    a decision's best reward over its slots; ``segments`` as ``Engine._segment_pairs``."""

    ts: np.ndarray  # (n,) float64
    holdout: np.ndarray  # (n,) int64
    best: np.ndarray  # (n,) float64
    arms: dict[str, np.ndarray]  # slot -> (n,) int64
    propensities: dict[str, np.ndarray]  # slot -> (n,) float64
    rewards: dict[str, np.ndarray]  # slot -> (n,) float64
    has_context: np.ndarray  # (n,) bool
    context: np.ndarray  # (n with context, dim) float64
    segments: tuple[list, np.ndarray, np.ndarray, int]


@dataclass(frozen=True)
class SlotColumns:
    """One slot's answers for a batch, as arrays (n,)."""

    slot: str
    arm_ids: list[str]
    arms: np.ndarray
    propensity: np.ndarray
    expected_reward: np.ndarray
    exploration_bonus: np.ndarray
    explanations: list[list[Contribution] | None] | None


@dataclass(frozen=True)
class DecisionBatch:
    """The decisions of one batch, column by column: building a pydantic object per decision
    would cost more than deciding. ``decisions()`` gives the models, ``to_dicts()`` plain data
    for orjson, ``ndjson()`` the bytes the service sends."""

    campaign: str
    decision_ids: list[str]
    user_ids: list[str]
    holdout: np.ndarray
    model_version: int
    slots: list[SlotColumns]

    def __len__(self) -> int:
        return len(self.decision_ids)

    def to_dicts(self) -> list[dict[str, Any]]:
        columns = [
            (s.slot, [s.arm_ids[a] for a in s.arms.tolist()], s.propensity.tolist(),
             s.expected_reward.tolist(), s.exploration_bonus.tolist(), s.explanations)
            for s in self.slots
        ]
        holdout = self.holdout.tolist()
        return [
            {
                "decision_id": self.decision_ids[i],
                "campaign": self.campaign,
                "user_id": self.user_ids[i],
                "holdout": holdout[i],
                "model_version": self.model_version,
                "slots": [
                    {"slot": slot, "arm": arms[i], "propensity": p[i], "expected_reward": m[i],
                     "exploration_bonus": b[i],
                     "explanation": None if ex is None or ex[i] is None
                     else [c.model_dump() for c in ex[i]]}
                    for slot, arms, p, m, b, ex in columns
                ],
            }
            for i in range(len(self))
        ]

    def json_lines(self) -> list[str]:
        """One JSON text per decision (n,), the same text as ``orjson.dumps`` of ``to_dicts()``
        gives, built column by column: orjson writes each float column in one call and one
        ``%`` template per row fills in the rest, with no dict per decision or per slot (3x
        faster on a 280,000 x 4-slot send). No text contains a raw newline: JSON escapes them
        in strings, so the lines join into NDJSON or, with commas, into a JSON array."""

        def text(value: Any) -> str:  # a JSON constant inside the template: % doubled
            return orjson.dumps(value).decode().replace("%", "%%")

        def floats(column: np.ndarray) -> list[str]:
            if not len(column):
                return []
            return orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")

        # Decision ids are 32 hex digits: quoted as they are, nothing to escape.
        columns: list[list[str]] = [
            [f'"{d}"' for d in self.decision_ids],
            [orjson.dumps(u).decode() for u in self.user_ids],
            np.where(self.holdout, "true", "false").tolist()]
        slots = []
        for s in self.slots:
            slots.append('{"slot":' + text(s.slot) + ',"arm":%s,"propensity":%s,'
                         '"expected_reward":%s,"exploration_bonus":%s,"explanation":%s}')
            arm_texts = [orjson.dumps(a).decode() for a in s.arm_ids]
            columns.append([arm_texts[a] for a in s.arms.tolist()])
            columns += [floats(s.propensity), floats(s.expected_reward),
                        floats(s.exploration_bonus)]
            columns.append(["null"] * len(self) if s.explanations is None else [
                "null" if e is None else orjson.dumps([c.model_dump() for c in e]).decode()
                for e in s.explanations])
        template = ('{"decision_id":%s,"campaign":' + text(self.campaign)
                    + ',"user_id":%s,"holdout":%s,"model_version":' + text(self.model_version)
                    + ',"slots":[' + ",".join(slots) + "]}")
        return [template % row for row in zip(*columns, strict=True)]

    def ndjson(self, end: bytes = b"\n") -> bytes:
        """Every decision's JSON text (``json_lines``' text, as bytes), each followed by ``end``:
        NDJSON as it is, or with ``end=b","`` a JSON array's items. Each column's texts are
        written into one buffer (orjson writes a float column in one call) and a kernel copies
        the rows out of it, so no Python object is made per decision: 2-3x faster than
        ``json_lines`` on a 280,000 x 4-slot send."""
        n = len(self)
        if n == 0:
            return b""
        blobs: list[bytes] = []  # column texts, each separated by a byte none of them holds
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        size = 0

        def column(blob: bytes, separator: int, rows: np.ndarray | None = None,
                   count: int = n) -> None:
            # ``rows`` picks each decision's text out of a table of ``count`` (arms, holdout).
            nonlocal size
            starts, ends = row_bounds(np.frombuffer(blob, dtype=np.uint8), separator, count)
            if rows is not None:
                starts, ends = starts[rows], ends[rows]
            bounds.append((starts + size, ends + size))
            blobs.append(blob)
            size += len(blob)

        def floats(values: np.ndarray) -> None:
            column(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1], ord(","))

        # Decision ids are 32 hex digits: the template quotes them, nothing to escape.
        column("\n".join(self.decision_ids).encode(), ord("\n"))
        column(_json_strings(self.user_ids), ord("\n"))
        column(b"false\ntrue", ord("\n"), self.holdout.astype(np.int64), 2)
        pieces = ['{"decision_id":"', '","campaign":' + orjson.dumps(self.campaign).decode()
                  + ',"user_id":', ',"holdout":',
                  ',"model_version":' + orjson.dumps(self.model_version).decode() + ',"slots":[']
        for j, s in enumerate(self.slots):
            slot = orjson.dumps(s.slot).decode()
            pieces[-1] += ("," if j else "") + '{"slot":' + slot + ',"arm":'
            column(b"\n".join(orjson.dumps(a) for a in s.arm_ids), ord("\n"), s.arms,
                   len(s.arm_ids))
            pieces.append(',"propensity":')
            floats(s.propensity)
            pieces.append(',"expected_reward":')
            floats(s.expected_reward)
            pieces.append(',"exploration_bonus":')
            floats(s.exploration_bonus)
            pieces.append(',"explanation":')
            if s.explanations is None:
                column(b"null", ord("\n"), np.zeros(n, dtype=np.int64), 1)
            else:
                column(b"\n".join(b"null" if e is None else orjson.dumps(
                    [c.model_dump() for c in e]) for e in s.explanations), ord("\n"))
            pieces.append("}")
        pieces[-1] += "]}" + end.decode()
        template = [p.encode() for p in pieces]
        piece_at = np.cumsum([0] + [len(p) for p in template], dtype=np.int64)
        starts = np.stack([b[0] for b in bounds], axis=1)
        ends = np.stack([b[1] for b in bounds], axis=1)
        out = np.empty(n * int(piece_at[-1]) + int((ends - starts).sum()), dtype=np.uint8)
        interleave(np.frombuffer(b"".join(template), dtype=np.uint8), piece_at,
                   np.frombuffer(b"".join(blobs), dtype=np.uint8), starts, ends, out)
        return out.tobytes()

    def decisions(self) -> list[Decision]:
        # From the JSON text: pydantic's JSON path beats validating dicts (6 s vs 8.3 s for
        # 280,000 x 4 slots); building 1.4 M models is the cost: use the columns when you can.
        return [Decision.model_validate_json(line) for line in self.json_lines()]

    def impressions(self, requests: Sequence[DecisionRequest], ts_ms: int) -> list[Impression]:
        """The impression events of these decisions, sent at ``ts_ms``: what a sender logs
        once the messages went out. A request without consent logs no context and no
        segments (ingestion would drop them: ``strip_consentless``)."""
        out = []
        for d, r in zip(self.to_dicts(), requests, strict=True):
            out.append(Impression(
                event_id=f"imp-{d['decision_id']}", decision_id=d["decision_id"],
                campaign=self.campaign, user_id=d["user_id"], ts=ts_ms,
                slots={s["slot"]: SlotChoice(arm=s["arm"], propensity=s["propensity"])
                       for s in d["slots"]},
                context=r.context if r.consent else None,
                segments=r.segments if r.consent else {},
                holdout=d["holdout"], model_version=self.model_version))
        return out


@dataclass(frozen=True)
class RequestColumns:
    """Decision requests (n) of one campaign as columns, what ``Engine.decide_columns``
    decides: ``context`` (n, dim) the encoded contexts (zero rows without consent), and for
    every feature an eligibility rule of the campaign reads, each request's value
    (``rule_values``: the context's, else the segments', else None)."""

    campaign: str
    user_ids: list[str]
    consent: np.ndarray  # (n,) bool
    explain: np.ndarray  # (n,) bool
    context: np.ndarray  # (n, dim) float64
    rule_values: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows(self, start: int, stop: int) -> RequestColumns:
        """Requests start..stop-1, as columns."""
        return RequestColumns(self.campaign, self.user_ids[start:stop],
                              self.consent[start:stop], self.explain[start:stop],
                              self.context[start:stop],
                              {f: v[start:stop] for f, v in self.rule_values.items()})


def _slot_row(s: _Slot, base: np.ndarray, chosen: dict[str, int]) -> np.ndarray:
    """``Engine._slot_matrix`` of one row: the context base (dim,), then a one-hot of each
    earlier slot's chosen arm (``chosen``: slot name -> arm) that slot ``s`` conditions on."""
    if not s.conditioned:
        return base
    blocks = [base]
    for prev, width in s.conditioned:
        onehot = np.zeros(width)
        onehot[min(chosen[prev], width - 1)] = 1.0
        blocks.append(onehot)
    return np.concatenate(blocks)


def _rule_features(c: _Campaign) -> list[str]:
    """The features the eligibility rules of a campaign's slots read."""
    return list(dict.fromkeys(rule.feature for s in c.slots for rule in s.spec.eligibility))


class Engine:
    """Campaigns and their policies, in one process; thread-safe (one lock).

    >>> from bandit.models import CampaignSpec
    >>> engine = Engine(seed=1)
    >>> _ = engine.create_campaign(CampaignSpec.model_validate({"name": "weekly", "holdout": 0.0,
    ...     "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}))
    >>> d = engine.decide(DecisionRequest(campaign="weekly", user_id="u1"))
    >>> d.slots[0].arm in {"a", "b"}, 0 < d.slots[0].propensity <= 1
    (True, True)
    """

    def __init__(self, *, seed: int = 0, id_seed: int | None = None) -> None:
        """``seed``: the policies' generators (and merges). ``id_seed``: for reproducible runs
        only, decision ids from a generator with this seed instead of the operating system
        (see the module docstring): two engines with the same ``id_seed`` issue the same ids."""
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._id_rng = None if id_seed is None else np.random.default_rng(id_seed)
        self.stripped_impressions = 0  # impressions ``ingest`` took context or segments from
        self._campaigns: dict[str, _Campaign] = {}
        self._lock = threading.RLock()
        self._joiner = Joiner(self.campaign)
        self.rejected_events = 0
        self.ready = False

    # -- campaigns ----------------------------------------------------------------------

    def create_campaign(self, spec: CampaignSpec) -> CampaignSpec:
        with self._lock:
            if spec.name in self._campaigns:
                raise ConflictError(f"campaign {spec.name!r} already exists")
            self._campaigns[spec.name] = self._build(spec)
            return spec

    def _build(self, spec: CampaignSpec) -> _Campaign:
        context = _Encoder(spec.context.features, spec.context.intercept, "context")
        campaign = _Campaign(spec=spec, context=context, slots=[])
        for i, s in enumerate(spec.slots):
            encoder = _Encoder(s.arm_features, intercept=False, what=f"slot {s.name!r} arm features")
            F = encoder.encode([a.features for a in s.arms]) if s.arm_features else np.ones((len(s.arms), 1))
            # An earlier slot's choice enters as a one-hot over its arms at creation plus one
            # column for arms added later, so the input width never changes.
            conditioned = [(prev, len(campaign.slot(prev).arm_ids) + 1) for prev in s.condition_on]
            columns = list(context.columns)
            for prev, _ in conditioned:
                columns += [f"{prev}={arm}" for arm in campaign.slot(prev).arm_ids]
                columns.append(f"{prev}=(added later)")
            _check_size(s, len(s.arms), len(columns), F.shape[1])
            seed = int(self._rng.integers(2**63))
            policy = _make_policy(s, len(columns), F, seed)
            fallback = policy if s.policy.kind == "beta_ts" else _make_policy(s, 1, F, seed + 1)
            for j in (j for j, a in enumerate(s.arms) if a.retired):
                for p in {id(policy): policy, id(fallback): fallback}.values():
                    p.retire_arm(j)
            campaign.slots.append(_Slot(
                spec=s, index=i, arm_ids=[a.id for a in s.arms],
                arm_index={a.id: j for j, a in enumerate(s.arms)}, encoder=encoder,
                conditioned=conditioned, columns=columns, policy=policy, fallback=fallback))
        return campaign

    def campaigns(self) -> list[CampaignSpec]:
        with self._lock:
            return [c.spec for c in self._campaigns.values()]

    def campaign(self, name: str) -> CampaignSpec:
        return self._get(name).spec

    def _get(self, name: str) -> _Campaign:
        try:
            return self._campaigns[name]
        except KeyError:
            raise NotFoundError(f"no campaign {name!r}") from None

    def add_arm(self, campaign: str, slot: str, arm: Arm) -> CampaignSpec:
        """Add an arm to a running slot; it starts from the prior (hybrid: from its features)."""
        with self._lock:
            c = self._get(campaign)
            s = c.slot(slot)
            if arm.id in s.arm_index:
                raise ConflictError(f"campaign {campaign!r}, slot {slot!r}: arm {arm.id!r} exists")
            try:
                check_arm_features(s.spec, arm)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
            _check_size(s.spec, len(s.arm_ids) + 1, s.policy.dim, max(s.encoder.dim, 1))
            features = (s.encoder.encode([arm.features])[0]
                        if isinstance(s.policy, HybridLinUCB | Bart)
                        or (isinstance(s.policy, VWPolicy) and s.spec.arm_features) else None)
            for policy in {id(s.policy): s.policy, id(s.fallback): s.fallback}.values():
                policy.add_arm(features)
                if arm.retired:
                    policy.retire_arm(len(s.arm_ids))
            s.spec = s.spec.model_copy(update={"arms": [*s.spec.arms, arm]})
            s.arm_index[arm.id] = len(s.arm_ids)
            s.arm_ids.append(arm.id)
            c.spec = c.spec.model_copy(
                update={"slots": [x.spec for x in c.slots]})
            return c.spec

    def retire_arm(self, campaign: str, slot: str, arm_id: str) -> CampaignSpec:
        """Never choose ``arm_id`` again; decisions already made keep their propensities."""
        with self._lock:
            c = self._get(campaign)
            s = c.slot(slot)
            if arm_id not in s.arm_index:
                raise UnknownArmError(f"campaign {campaign!r}, slot {slot!r}: no arm {arm_id!r}")
            if arm_id == s.spec.default_arm:
                raise ConflictError(f"campaign {campaign!r}, slot {slot!r}: {arm_id!r} is the "
                                    "default arm (holdout and pause use it); it cannot retire")
            a = s.arm_index[arm_id]
            if not s.policy.active[a]:
                return c.spec
            for policy in {id(s.policy): s.policy, id(s.fallback): s.fallback}.values():
                try:
                    policy.retire_arm(a)
                except InvalidInputError as exc:
                    raise ConflictError(str(exc)) from None
            # Marked in the spec: GET campaign and snapshots show the arm, retired.
            arms = [x.model_copy(update={"retired": True}) if x.id == arm_id else x
                    for x in s.spec.arms]
            s.spec = s.spec.model_copy(update={"arms": arms})
            c.spec = c.spec.model_copy(update={"slots": [x.spec for x in c.slots]})
            return c.spec

    def pause(self, campaign: str, paused: bool = True) -> CampaignSpec:
        """The kill switch: while paused every subscriber gets each slot's default arm."""
        with self._lock:
            c = self._get(campaign)
            c.paused = paused
            return c.spec

    def is_paused(self, campaign: str) -> bool:
        return self._get(campaign).paused

    def model_version(self, campaign: str) -> int:
        return self._get(campaign).version

    def slot_policy(self, campaign: str, slot: str) -> tuple[Policy, list[str], list[str]]:
        """A slot's policy (not a copy), the names of its input columns and its arm ids."""
        s = self._get(campaign).slot(slot)
        return s.policy, list(s.columns), list(s.arm_ids)

    def active_arms(self, campaign: str, slot: str) -> list[str]:
        s = self._get(campaign).slot(slot)
        return [a for a, on in zip(s.arm_ids, s.policy.active) if on]

    # -- decisions ----------------------------------------------------------------------

    def in_holdout(self, campaign: str, user_id: str) -> bool:
        """Stable per (campaign, user): the same subscribers stay out for the whole campaign."""
        return _in_holdout(campaign, user_id, self._get(campaign).spec.holdout)

    def decide(self, request: DecisionRequest) -> Decision:
        """One subscriber's decision: ``decide_batch(request.campaign, [request])``'s, by the
        single-row path of ``decide_one``."""
        with self._lock:
            return Decision.model_validate_json(self._decide_one(request).json)

    def decide_one(self, request: Any) -> OneDecision:
        """One subscriber's decision as its JSON text, the same (decision id, arms,
        propensities, explanations, holdout, bytes) as ``decide_batch(request.campaign,
        [request]).json_lines()[0]`` from the same engine state, and the same errors; but
        without the batch machinery, which costs more than deciding for one row.

        ``request`` is a ``DecisionRequest`` or anything with its attributes (the service's
        msgspec mirror). An event loop that must not wait takes ``lock`` without blocking
        first (recording a large batch of events holds it ~15 us per event).
        """
        with self._lock:
            return self._decide_one(request)

    @property
    def lock(self) -> threading.RLock:
        """The engine's (reentrant) lock: a caller can try it without blocking, then decide
        while holding it."""
        return self._lock

    def _decide_one(self, r: Any) -> OneDecision:
        # decide_batch for n = 1, step for step (the same id words, the same errors at the
        # same points), with scalars where it has columns, and one fused call per slot
        # (Policy.decide_row) for choice, propensity, mean and bonus.
        c = self._get(r.campaign)
        if self._id_rng is None:
            hi, lo = _ID_WORDS.unpack(os.urandom(16))  # as _id_words reads them
        else:
            # _id_words' integers(0, 2**64, (n, 2), uint64) over the full range is the bit
            # generator's raw output, word by word (numpy masks nothing off and rejects
            # nothing): the same two words, without the ~3 us of the general call.
            raw = self._id_rng.bit_generator.random_raw
            hi, lo = raw(), raw()
        consent = r.consent
        lo = lo & ~1 | bool(consent)  # the consent bit
        decision_id = f"{hi:016x}{lo:016x}"
        holdout = _in_holdout(r.campaign, r.user_id, c.spec.holdout)
        # encode_one refuses what is not a finite number within bounds, so every row the
        # policies see is finite: their fused paths need no check of their own.
        base = c.context.encode_one(r.context) if consent else np.zeros(c.context.dim)
        # Holdout and pause decide no slot: no draws. Otherwise every slot's at once.
        live = not holdout and not c.paused
        width = 2 + max((len(s.arm_ids) for s in c.slots), default=0)
        draws = slot_draws(hi ^ lo, len(c.slots), width) if live else None
        chosen: dict[str, int] = {}
        arms: list[str] = []
        slots: list[str] = []
        numbers: list[float] = []  # per slot: propensity, expected reward, exploration bonus
        explanations: list[str] = []
        for s in c.slots:
            x = _slot_row(s, base, chosen)
            a, p, mean, bonus = s.default, 1.0, 0.0, 0.0
            mask = None
            if live and s.spec.eligibility:
                eligible = self._eligible(s, 1, {rule.feature: [
                    r.context.get(rule.feature, r.segments.get(rule.feature))]
                    for rule in s.spec.eligibility})
                mask = eligible[0] & s.policy.active
            if live and (mask is None or mask.any()):
                policy, xp = (s.policy, x) if consent else (s.fallback, _ONE)
                a, p, mean, bonus = policy.decide_row(
                    xp if policy.dim else xp[:0], mask, draws[s.index, :2 + len(s.arm_ids)])
            explanation = "null"
            if r.explain:
                e = self._explain(s, x[None, :], np.array([a], dtype=np.int64),
                                  np.array([not holdout and consent]))[0]
                if e is not None:
                    explanation = orjson.dumps([item.model_dump() for item in e]).decode()
            chosen[s.spec.name] = a
            arms.append(s.arm_ids[a])
            slots.append(s.spec.name)
            numbers += (p, mean, bonus)
            explanations.append(explanation)
        # The floats as json_lines writes them: orjson over a float64 array.
        texts = orjson.dumps(np.array(numbers, dtype=np.float64),
                             option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
        dumps = orjson.dumps
        parts = [f'{{"slot":{dumps(slot).decode()},"arm":{dumps(arm).decode()},'
                 f'"propensity":{texts[3 * j]},"expected_reward":{texts[3 * j + 1]},'
                 f'"exploration_bonus":{texts[3 * j + 2]},"explanation":{explanations[j]}}}'
                 for j, (slot, arm) in enumerate(zip(slots, arms, strict=True))]
        text = (f'{{"decision_id":"{decision_id}","campaign":{dumps(r.campaign).decode()},'
                f'"user_id":{dumps(r.user_id).decode()},"holdout":{"true" if holdout else "false"},'
                f'"model_version":{dumps(c.version).decode()},"slots":[{",".join(parts)}]}}')
        return OneDecision(text, r.campaign, slots, arms)

    def decide_many(self, campaign: str, requests: Sequence[DecisionRequest]) -> list[Decision]:
        return self.decide_batch(campaign, requests).decisions()

    def decide_batch(self, campaign: str, requests: Sequence[DecisionRequest]) -> DecisionBatch:
        """Decide every slot for every request, slot by slot, each slot in one batch call."""
        with self._lock:
            c = self._get(campaign)
            for i, r in enumerate(requests):
                if r.campaign != campaign:
                    raise InvalidInputError(
                        f"request {i}: campaign {r.campaign!r} differs from the batch's {campaign!r}")
            n = len(requests)
            # Ids are drawn before the contexts are read: a refused batch uses up its ids.
            words = self._id_words(n)
            consent = np.fromiter((r.consent for r in requests), dtype=bool, count=n)
            # Without consent the context is neither read nor used: those rows stay zero and
            # are decided by the context-free fallback.
            base = np.zeros((n, c.context.dim))
            given = np.flatnonzero(consent)
            base[given] = c.context.encode([requests[i].context for i in given])
            columns = RequestColumns(
                campaign=campaign, user_ids=[r.user_id for r in requests], consent=consent,
                explain=np.fromiter((r.explain for r in requests), dtype=bool, count=n),
                context=base,
                rule_values={f: [r.context.get(f, r.segments.get(f)) for r in requests]
                             for f in _rule_features(c)})
            return self._decide_columns(c, columns, words)

    def request_columns(self, campaign: str, user_ids: list[str], consent: np.ndarray,
                        explain: np.ndarray, contexts: Sequence[Any],
                        values: Callable[[Any], tuple], segments: Sequence[Mapping[str, str]],
                        absent: object) -> RequestColumns:
        """The columns of requests whose contexts a decoder already checked against the
        campaign's schema (``bandit.batch_wire``): ``values(contexts[i])`` are request i's
        values in the order of the schema's features, numbers for numeric ones and strings for
        categorical ones, ``absent`` where the request omits the feature. A numeric feature
        without a default that a consenting request omits raises InvalidInputError (without
        naming the row: the caller asks ``decide_batch`` for the error it would give)."""
        with self._lock:
            c = self._get(campaign)
        n = len(user_ids)
        base = np.zeros((n, c.context.dim))
        given = np.flatnonzero(consent)
        if len(given) == n:
            c.context.encode_values(contexts, values, absent, base)
        elif len(given):
            sub = np.zeros((len(given), c.context.dim))
            c.context.encode_values([contexts[i] for i in given], values, absent, sub)
            base[given] = sub
        position = {f.name: j for j, f in enumerate(c.spec.context.features)}
        rule_values = {}
        for name in _rule_features(c):
            j = position.get(name)
            if j is None:
                rule_values[name] = [seg.get(name) for seg in segments]
            else:
                column = [values(row)[j] for row in contexts]
                rule_values[name] = [seg.get(name) if v is absent else v
                                     for v, seg in zip(column, segments)]
        return RequestColumns(campaign=campaign, user_ids=user_ids, consent=consent,
                              explain=explain, context=base, rule_values=rule_values)

    def decide_columns(self, columns: RequestColumns) -> DecisionBatch:
        """``decide_batch`` of requests given as columns (``request_columns``): the same
        decisions, ids drawn alike."""
        with self._lock:
            c = self._get(columns.campaign)
            return self._decide_columns(c, columns, self._id_words(len(columns)))

    def _id_words(self, n: int) -> np.ndarray:
        """(n, 2) uint64: the random words of n decision ids, high word first (their lowest
        bit is overwritten by the consent bit)."""
        if self._id_rng is None:
            return np.frombuffer(os.urandom(16 * n), dtype=">u8").reshape(n, 2).astype(np.uint64)
        return self._id_rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)

    def _decide_columns(self, c: _Campaign, columns: RequestColumns,
                        words: np.ndarray) -> DecisionBatch:
        """The decisions of ``columns`` with ids from ``words`` (n, 2) uint64 and the consent
        bit, each slot in one batch call per policy. Holds the lock (the caller's)."""
        _with_consent_bit(words, columns.consent)
        seeds = words[:, 0] ^ words[:, 1]
        holdout = holdout_mask(c.spec.name, columns.user_ids, c.spec.holdout)
        skip = holdout | ~columns.consent  # not personalized: no explanation
        explain = bool(columns.explain.any())
        chosen: dict[str, np.ndarray] = {}
        slots = []
        for s in c.slots:
            X = self._slot_matrix(c, s, columns.context, chosen)
            arms, probs, mean, bonus = self._decide_slot(c, s, columns, X, seeds, holdout)
            explanations = self._explain(s, X, arms, columns.explain & ~skip) if explain else None
            chosen[s.spec.name] = arms
            slots.append(SlotColumns(s.spec.name, list(s.arm_ids), arms, probs, mean, bonus,
                                     explanations))
        return DecisionBatch(c.spec.name, _decision_ids(words), columns.user_ids, holdout,
                             c.version, slots)

    def _slot_matrix(self, c: _Campaign, s: _Slot, base: np.ndarray,
                     chosen: dict[str, np.ndarray]) -> np.ndarray:
        """The campaign context, then a one-hot of each earlier slot this one conditions on
        (its arms at creation, plus one column for arms added later)."""
        if not s.conditioned:
            return base
        blocks = [base]
        for prev, width in s.conditioned:
            onehot = np.zeros((base.shape[0], width))
            onehot[np.arange(base.shape[0]), np.minimum(chosen[prev], width - 1)] = 1.0
            blocks.append(onehot)
        return np.ascontiguousarray(np.hstack(blocks))

    def _eligible(self, s: _Slot, n: int, rule_values: dict[str, list[Any]]
                  ) -> np.ndarray | None:
        """(n, k) bool: the arms each of n requests may get, from the values the slot's
        eligibility rules read (``RequestColumns.rule_values``); None without rules."""
        if not s.spec.eligibility:
            return None
        mask = np.ones((n, len(s.arm_ids)), dtype=bool)
        for rule in s.spec.eligibility:
            values = rule_values[rule.feature]
            mask[:, s.arm_index[rule.arm]] &= np.fromiter(
                (_rule_holds(rule, v) for v in values), dtype=bool, count=n)
        return mask

    def _decide_slot(self, c, s, columns, X, seeds, holdout):
        n, k = len(columns), len(s.arm_ids)
        consent = columns.consent
        arms = np.full(n, s.default, dtype=np.int64)
        probs = np.ones(n)
        mean, bonus = np.zeros(n), np.zeros(n)
        if c.paused:
            return arms, probs, mean, bonus
        eligible = self._eligible(s, n, columns.rule_values)
        if eligible is not None:
            eligible &= s.policy.active[None, :]
        live = ~holdout
        if eligible is not None:
            # No eligible arm left for a subscriber: the default arm, deterministically.
            live &= eligible.any(axis=1)
        draws = decision_draws(seeds, s.index, 2 + k)
        for policy, rows, Xp in ((s.policy, live & consent, X),
                                 (s.fallback, live & ~consent, np.ones((n, 1)))):
            idx = np.flatnonzero(rows)
            if idx.size == 0:
                continue
            Xp = Xp if policy.dim else Xp[:, :0]
            m = None if eligible is None else eligible[idx]
            a, p = policy.choose_many(Xp[idx], eligible=m, draws=draws[idx], with_propensities=True)
            arms[idx], probs[idx] = a, p
            mean[idx], bonus[idx] = policy.expectation(Xp[idx], a)
        return arms, probs, mean, bonus

    def _explain(self, s, X, arms, ask):
        """Top features by |theta_a[j] x[j]| for the rows ``ask`` (n,) bool (those that asked
        and were personalized)."""
        out: list[list[Contribution] | None] = [None] * len(arms)
        rows = np.flatnonzero(ask)
        contributions = getattr(s.policy, "contributions", None)
        if not len(rows) or contributions is None:
            return out
        C = contributions(X[rows], arms[rows])
        for row, i in zip(C, rows.tolist()):
            top = np.argsort(-np.abs(row))[:_EXPLAIN_TOP]
            out[i] = [Contribution(feature=s.columns[j], value=float(row[j])) for j in top if row[j]]
        return out

    # -- learning -----------------------------------------------------------------------

    def learn(self, joined: Sequence[JoinedEvent]) -> None:
        """Learn closed attribution windows, batched per campaign and slot. Events of unknown
        campaigns, slots or arms are refused before anything is learned."""
        with self._lock:
            by_campaign: dict[str, list[JoinedEvent]] = {}
            slots: dict[str, dict[str, _Slot]] = {}  # per campaign, by name
            for i, e in enumerate(joined):
                named = slots.get(e.campaign)
                if named is None:
                    named = slots[e.campaign] = {x.spec.name: x for x in self._get(e.campaign).slots}
                for slot, choice in e.slots.items():
                    s = named.get(slot) or self._get(e.campaign).slot(slot)  # unknown: raises
                    if choice.arm not in s.arm_index:
                        raise UnknownArmError(f"event {i}: campaign {e.campaign!r}, slot {slot!r}: "
                                              f"no arm {choice.arm!r}")
                by_campaign.setdefault(e.campaign, []).append(e)
            for name, events in by_campaign.items():
                c = self._campaigns[name]
                self._learn_columns(c, self._event_columns(c, events))

    def learn_closed(self, closed: Closed) -> None:
        """``learn(closed.events())`` straight from the join's columns, without an event per
        decision (the campaigns, slots and arms were checked when the impressions came in).
        The same model, bit for bit (tests/test_engine.py)."""
        with self._lock:
            campaigns = [shape[0] for shape in closed.shapes]
            of_row = np.array([campaigns.index(name) for name in campaigns])[closed.shape]
            for k in dict.fromkeys(of_row.tolist()):
                c = self._get(campaigns[k])
                self._learn_columns(c, self._closed_columns(c, closed,
                                                            np.flatnonzero(of_row == k)))

    def _event_columns(self, c: _Campaign, events: list[JoinedEvent]) -> _Learned:
        """The columns of ``events`` (all of campaign ``c``, checked)."""
        default = c.spec.default_reward
        arms, propensities, rewards = {}, {}, {}
        for s in c.slots:
            name, index = s.spec.name, s.arm_index
            choices = [e.slots.get(name) for e in events]
            arms[name] = np.array([-1 if x is None else index[x.arm] for x in choices],
                                  dtype=np.int64)
            propensities[name] = np.array([0.0 if x is None else x.propensity for x in choices],
                                          dtype=np.float64)
            rewards[name] = np.array([e.rewards.get(name, default) for e in events],
                                     dtype=np.float64)
        has_context = np.array([e.context is not None for e in events], dtype=np.bool_)
        return _Learned(
            ts=np.array([e.ts for e in events], dtype=np.float64),
            holdout=np.array([e.holdout for e in events], dtype=np.int64),
            best=np.array([max(e.rewards.values(), default=default) for e in events],
                          dtype=np.float64),
            arms=arms, propensities=propensities, rewards=rewards, has_context=has_context,
            context=c.context.encode([e.context for e in events if e.context is not None]),
            segments=self._segment_pairs(events))

    def _closed_columns(self, c: _Campaign, closed: Closed, rows: np.ndarray) -> _Learned:
        """The columns of the join's closed decisions ``rows`` (all of campaign ``c``)."""
        n, names = len(rows), closed.names
        shape = closed.shape[rows]
        arms = {s.spec.name: np.full(n, -1, dtype=np.int64) for s in c.slots}
        propensities = {s.spec.name: np.zeros(n) for s in c.slots}
        rewards = {s.spec.name: np.full(n, c.spec.default_reward) for s in c.slots}
        best = np.full(n, c.spec.default_reward)
        has_context = np.zeros(n, dtype=np.bool_)
        X = np.zeros((n, c.context.dim))
        pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row, position, pair)
        keys: dict[tuple[str, str], int] = {}
        for k in np.unique(shape).tolist():
            _, slots, context_keys, segment_keys = closed.shapes[k]
            at = np.flatnonzero(shape == k)
            mine = rows[at]
            for j, name in enumerate(slots):
                index = c.slot(name).arm_index
                seen, codes = np.unique(closed.arm[mine, j], return_inverse=True)
                arms[name][at] = np.array([index[names[a]] for a in seen.tolist()],
                                          dtype=np.int64)[codes.reshape(-1)]
                propensities[name][at] = closed.propensity[mine, j]
                rewards[name][at] = closed.reward[mine, j]
                # Python's max over the rewards in slot order: the first, then any greater.
                column = closed.reward[mine, j]
                best[at] = column if j == 0 else np.where(column > best[at], column, best[at])
            if context_keys is not None:
                has_context[at] = True
                sub = np.zeros((len(at), c.context.dim))
                c.context.encode_columns([key for key, _ in context_keys],
                                         closed.context[mine, :len(context_keys)], names, sub)
                X[at] = sub
            for j, key in enumerate(segment_keys):
                seen, codes = np.unique(closed.segment[mine, j], return_inverse=True)
                pair = np.array([keys.setdefault((key, names[v]), len(keys))
                                 for v in seen.tolist()], dtype=np.int64)
                pairs.append((at, np.full(len(at), j), pair[codes.reshape(-1)]))
        if pairs:  # event by event, each in its segment order: as _segment_pairs lists them
            event, position, code = (np.concatenate(x) for x in zip(*pairs))
            order = np.lexsort((position, event))
            segments = (list(keys), event[order], code[order], n)
        else:
            segments = ([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), n)
        return _Learned(ts=closed.ts[rows], holdout=closed.holdout[rows].astype(np.int64),
                        best=best, arms=arms, propensities=propensities, rewards=rewards,
                        has_context=has_context, context=X[has_context], segments=segments)

    def _learn_columns(self, c: _Campaign, cols: _Learned) -> None:
        """The learning itself, for either entry point: per slot the policy (context and
        context-free) and the report tallies, then the campaign's totals and version."""
        ts = cols.ts
        with_context = np.flatnonzero(cols.has_context)
        ts_ctx = ts[with_context]
        for s in c.slots:
            name = s.spec.name
            present = cols.arms[name] >= 0
            rows = np.flatnonzero(present)
            if not len(rows):
                continue
            arms = cols.arms[name][rows]
            # A Bernoulli model (Beta TS) learns "at least one click" from a sum of clicks.
            low, high = s.policy.reward_range
            rewards = np.clip(cols.rewards[name][rows], low, high)
            # VW learns each event at the propensity it was logged with.
            vw = isinstance(s.policy, VWPolicy)
            logged = {"propensities": cols.propensities[name][rows]} if vw else {}
            if s.fallback is s.policy:  # context-free slot: every event, context or not
                s.policy.learn_many(arms, np.empty((len(rows), 0)), rewards, ts_ms=ts[rows])
            else:
                s.fallback.learn_many(arms, np.ones((len(rows), 1)), rewards, ts_ms=ts[rows],
                                      **logged)
                ctx = np.flatnonzero(present[with_context])
                if len(ctx):
                    event = with_context[ctx]
                    chosen = {prev: np.maximum(cols.arms[prev][event], 0)
                              for prev, _ in s.conditioned}
                    X = self._slot_matrix(c, s, cols.context[ctx], chosen)
                    r = np.clip(cols.rewards[name][event], low, high)
                    if vw:
                        logged = {"propensities": cols.propensities[name][event]}
                    s.policy.learn_many(cols.arms[name][event], X, r, ts_ms=ts_ctx[ctx],
                                        **logged)
            self._tally(s, arms, rewards, rows, cols.segments)
        totals = {0: c.personalized, 1: c.holdout}
        _add_grouped(totals, [0, 1], cols.holdout, cols.best)
        c.version += 1

    @staticmethod
    def _segment_pairs(events: Sequence[JoinedEvent]) -> tuple[list, np.ndarray, np.ndarray, int]:
        """Every (event, segment value) pair of a batch: the values seen (segment, value),
        per pair the event's index and the value's index (in event order), and the number of
        events."""
        index: dict[tuple[str, str], int] = {}
        rows, codes = [], []
        for i, e in enumerate(events):
            for key in e.segments.items():
                rows.append(i)
                codes.append(index.setdefault(key, len(index)))
        return (list(index), np.array(rows, dtype=np.int64), np.array(codes, dtype=np.int64),
                len(events))

    @staticmethod
    def _tally(s: _Slot, arms: np.ndarray, rewards: np.ndarray, rows: list[int],
               segments: tuple[list, np.ndarray, np.ndarray, int]) -> None:
        """Add a slot's events to its report tallies, per arm and per segment value (with
        per-arm counts). ``arms``, ``rewards`` (n,) belong to the batch's events ``rows``;
        ``segments`` is ``_segment_pairs`` of the whole batch."""
        rewards = np.asarray(rewards, dtype=np.float64)
        _add_grouped(s.arm_tally, s.arm_ids, arms, rewards)
        keys, event, code, n_events = segments
        if not len(code):
            return
        position = np.full(n_events, -1, dtype=np.int64)  # event -> its row among ``rows``
        position[rows] = np.arange(len(rows))
        at = position[event]
        code, at = code[at >= 0], at[at >= 0]
        _add_grouped(s.segment_tally, keys, code, rewards[at])
        pairs = code * len(s.arm_ids) + arms[at]
        seen, first, counts = np.unique(pairs, return_index=True, return_counts=True)
        for pair, n in zip(seen[np.argsort(first)], counts[np.argsort(first)]):
            key, arm = keys[pair // len(s.arm_ids)], s.arm_ids[pair % len(s.arm_ids)]
            mine = s.segment_counts.setdefault(key, {})
            mine[arm] = mine.get(arm, 0) + int(n)

    def record(self, events: Sequence[Impression | Click]) -> int:
        """The in-process event path: impressions and clicks through the attribution join;
        closed windows are learned; a consent-less decision's impression loses its context
        and segments (``ingest``). Unknown campaigns, slots, arms or context features refuse
        the whole batch before anything changes, and so does an impression over the join's
        cap (``limit_pending``: OverCapacityError). Returns how many of ``events`` the join
        accepted (duplicates, late and orphan clicks are counted in ``rejected_events``); clicks
        of earlier calls that this call's time turns into orphans do not count against it."""
        # Stripped here, not in ingest, so that the rejected events are the ones given to it.
        events, stripped = strip_consentless(events)
        mine = {id(e) for e in events}  # alive until the return: ids stay theirs
        rejected = self.ingest(events, whole=True).rejected
        with self._lock:
            self.stripped_impressions += stripped
        return len(events) - sum(id(r.event) in mine for r in rejected)

    def limit_pending(self, max_pending: int) -> None:
        """Keep at most ``max_pending`` decisions of a campaign open in the attribution join
        (``bandit.join``); not part of a snapshot, so set again after loading one."""
        with self._lock:
            self._joiner.max_pending = max_pending

    def ingest(self, events: Sequence[Impression | Click],
               watermark: float | None = None, *, checked: bool = False,
               lap: Callable[[str | None], None] | None = None,
               whole: bool = False) -> JoinResult:
        """``record`` with the join's whole result: the closed decisions it learned and the
        events it rejected (duplicate, late, orphan) with reasons. ``watermark`` (event time)
        closes windows instead of the newest event time seen; the stream worker passes the
        slowest of its input streams. A bad event refuses the batch (see ``check_event``),
        unless ``checked`` says the caller already passed each through ``check_event``.
        Events may also be ``bandit.wire`` Structs (the stream worker's decoder). ``lap``
        (a timing hook, ``streams.worker.Stages.lap``) is called with "join" and "learn".
        ``whole``: an impression over the join's cap refuses the batch (OverCapacityError)
        instead of being rejected alone. Impressions of decisions made without consent lose
        their context and segments first (``strip_consentless``; counted in
        ``stripped_impressions``), so theirs is never checked, kept or learned."""
        events, stripped = strip_consentless(events)
        with self._lock:
            self.stripped_impressions += stripped
            for i, e in enumerate([] if checked else events):
                try:
                    self.check_event(e)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"event {i} ({e.event_id}): {exc}") from None
            if whole and (over := self._joiner.over_cap(events, watermark)):
                refused = Counter(events[i].campaign for i in over)
                raise OverCapacityError(
                    f"{len(over)} of the impressions would leave more than "
                    f"{self._joiner.max_pending} decisions waiting for their attribution "
                    f"windows (campaign {', '.join(map(repr, sorted(refused)))}; setting "
                    "max_pending): nothing was recorded; retry once windows have closed",
                    dict(refused))
            result = self._joiner.add(events, watermark)
            if lap is not None:
                lap("join")
            if result.closed is not None and len(result.closed):
                self.learn_closed(result.closed)
                if lap is not None:
                    lap("learn")
            self.rejected_events += len(result.rejected)
            return result

    def check_event(self, e: Impression | Click) -> None:
        """InvalidInputError if the event does not fit the engine's campaigns: unknown campaign,
        slot or arm, or a context outside the campaign's schema."""
        try:
            c = self._get(e.campaign)
            if e.type == "impression":
                for slot, choice in e.slots.items():
                    if choice.arm not in c.slot(slot).arm_index:
                        raise UnknownArmError(f"slot {slot!r}: no arm {choice.arm!r}")
                if e.context is not None:
                    c.context.check(e.context)
            elif e.slot is not None:
                c.slot(e.slot)
        except (NotFoundError, UnknownArmError) as exc:
            raise InvalidInputError(str(exc)) from None

    def event_checker(self) -> Callable[[Impression | Click], None]:
        """``check_event`` for a batch of events during which the campaigns do not change (the
        stream worker's): each campaign's slots are looked up once, then an event costs a dict
        lookup per slot; whatever misses is passed to ``check_event``, whose error it raises."""
        campaigns, arms_of = self._campaigns, {}  # campaign -> slot name -> its arm index

        def check(e: Impression | Click) -> None:
            slots = arms_of.get(e.campaign)
            if slots is None:
                c = campaigns.get(e.campaign)
                if c is None:
                    self.check_event(e)  # raises: no such campaign
                slots = arms_of[e.campaign] = {s.spec.name: s.arm_index for s in c.slots}
            if e.type == "impression":
                for slot, choice in e.slots.items():
                    arms = slots.get(slot)
                    if arms is None or choice.arm not in arms:
                        self.check_event(e)  # raises: no such slot or arm
                if e.context is not None:
                    campaigns[e.campaign].context.check(e.context)
            elif e.slot is not None and e.slot not in slots:
                self.check_event(e)  # raises: no such slot

        return check

    # -- partition states (the stream worker) --------------------------------------------

    def campaign_record(self, name: str) -> dict[str, Any]:
        """What another process needs to hold the same campaign: the spec, the retired arms per
        slot and the pause flag, JSON-ready (the stream's campaigns topic carries it)."""
        with self._lock:
            c = self._get(name)
            return {"spec": c.spec.model_dump(mode="json"), "paused": c.paused,
                    "retired": {s.spec.name: [a for a, on in zip(s.arm_ids, s.policy.active)
                                              if not on] for s in c.slots}}

    def sync_campaign(self, record: dict[str, Any]) -> None:
        """Bring a campaign to ``campaign_record``'s content: create it, add the arms it lacks,
        retire arms, set the pause flag. Idempotent; a record that changes anything but arms
        (slots, schema, policies) is refused with IncompatibleStateError."""
        try:
            spec = CampaignSpec.model_validate(record["spec"])
            retired, paused = dict(record["retired"]), bool(record["paused"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"campaign record: {exc}") from None
        with self._lock:
            if spec.name not in self._campaigns:
                self.create_campaign(spec)
            c = self._campaigns[spec.name]
            mine = [x.model_dump(exclude={"arms"}) for x in c.spec.slots]
            if (mine != [x.model_dump(exclude={"arms"}) for x in spec.slots]
                    or c.spec.model_dump(exclude={"slots"}) != spec.model_dump(exclude={"slots"})):
                raise IncompatibleStateError(
                    f"campaign {spec.name!r}: the record changes more than its arms")
            for slot in spec.slots:
                s = c.slot(slot.name)
                for arm in slot.arms:
                    if arm.id not in s.arm_index:
                        self.add_arm(spec.name, slot.name, arm)
                for arm_id in retired.get(slot.name, []):
                    self.retire_arm(spec.name, slot.name, arm_id)
            c.paused = paused

    def absorb(self, partials: Sequence[Engine]) -> int:
        """Make this engine's model the sum of partition engines' models (the stream worker's
        partial states): policy sums, report tallies and versions of every campaign that this
        engine holds. Partials lacking a campaign or holding arms this engine does not know
        are left out of that campaign. VW slots keep this engine's models: VW learns in order,
        so its model comes from the single VW learner (``absorb_vw``), never from partitions.
        Everything is built aside and swapped in under the lock, so a decision sees the old
        model or the new one. Returns the campaigns updated."""
        with self._lock:
            names = list(self._campaigns)
        built = {}
        for name in names:
            c = self._campaigns[name]
            parts = [p._campaigns[name] for p in partials if name in p._campaigns]
            slots = []
            for s in c.slots:
                aligned = [x for x in (_align(s, p.slot(s.spec.name)) for p in parts) if x]
                if not aligned:
                    break
                if isinstance(s.policy, VWPolicy):  # no sum to take: kept (absorb_vw's)
                    policy = fallback = None
                else:
                    policy, fallback = aligned[0]
                    for other, other_fallback in aligned[1:]:
                        policy = policy.merge(other, rng=self._seed)
                        if fallback is not None:
                            fallback = fallback.merge(other_fallback, rng=self._seed)
                tallies = [p.slot(s.spec.name) for p in parts]
                slots.append((policy, fallback, tallies))
            else:
                if parts:
                    built[name] = (slots, parts)
        with self._lock:
            for name, (slots, parts) in built.items():
                c = self._campaigns[name]
                for s, (policy, fallback, tallies) in zip(c.slots, slots):
                    if policy is not None:
                        s.policy = policy
                        s.fallback = policy if fallback is None else fallback
                    s.arm_tally, s.segment_counts, s.segment_tally = {}, {}, {}
                    for t in tallies:
                        for arm, tally in t.arm_tally.items():
                            s.arm_tally[arm] = s.arm_tally.get(arm, _Tally()) + tally
                        for key, counts in t.segment_counts.items():
                            mine = s.segment_counts.setdefault(key, {})
                            for arm, n in counts.items():
                                mine[arm] = mine.get(arm, 0) + n
                        for key, tally in t.segment_tally.items():
                            s.segment_tally[key] = s.segment_tally.get(key, _Tally()) + tally
                c.personalized = sum((p.personalized for p in parts), _Tally())
                c.holdout = sum((p.holdout for p in parts), _Tally())
                c.version = sum(p.version for p in parts)
            return len(built)

    def absorb_vw(self, learned: Engine) -> int:
        """Take the VW slots' models (context and context-free) from ``learned``, the VW
        learner's engine, which is handed over (its policies are used, not copied). A slot is
        taken only where ``learned`` holds the same arms (a learner behind an arm addition
        leaves the slot alone until it catches up); arms retired here stay retired. Swapped in
        under the lock like ``absorb``. Returns the slots updated."""
        taken = []
        with self._lock:
            names = [n for n in self._campaigns if n in learned._campaigns]
        for name in names:
            theirs = {x.spec.name: x for x in learned._campaigns[name].slots}
            for s in self._campaigns[name].slots:
                other = theirs.get(s.spec.name)
                if (not isinstance(s.policy, VWPolicy) or other is None
                        or not isinstance(other.policy, VWPolicy) or other.arm_ids != s.arm_ids):
                    continue
                for policy in {id(p): p for p in (other.policy, other.fallback)}.values():
                    for arm in np.flatnonzero(policy.active & ~s.policy.active):
                        policy.retire_arm(int(arm))
                taken.append((s, other.policy, other.fallback))
        with self._lock:
            for s, policy, fallback in taken:
                s.policy, s.fallback = policy, fallback
            return len(taken)

    def erase(self, user_id: str, at_ms: float) -> int:
        """Erasure at ``at_ms`` (event time): the subject's decisions with an impression at or
        before it leave the join and are refused if they come again; their user id and string
        values leave the snapshot (learned sums and report tallies are aggregates and stay).
        Returns how many pending decisions were dropped."""
        return self.erase_subjects({subject_key(user_id): at_ms})[0]

    def erase_subjects(self, subjects: Mapping[bytes, float]) -> tuple[int, bool]:
        """``erase`` by ``subject_key`` (the stream worker's erase records): how many pending
        decisions were dropped and whether anything changed (see ``Joiner.erase``)."""
        with self._lock:
            return self._joiner.erase(subjects)

    def open_windows(self) -> int:
        """How many decisions wait in the attribution join for their window to close."""
        with self._lock:
            return self._joiner.open_count

    def warm_up(self) -> None:
        """Compile (or load from the cache) every kernel a decision or a learn can reach, so
        the first request does not pay for it; then the engine is ready."""
        probe = Engine(seed=0)
        kinds = ["beta_ts", "lin_ucb", "hybrid_lin_ucb", "lin_ts", "epsilon_greedy", "bart"]
        probe.create_campaign(CampaignSpec.model_validate({
            "name": "warm-up", "holdout": 0.0,
            "slots": [{"name": kind, "arms": [{"id": "a", "features": {"f": 1.0}},
                                              {"id": "b", "features": {"f": 0.0}}],
                       "default_arm": "a", "policy": {"kind": kind},
                       "arm_features": [{"kind": "numeric", "name": "f"}]} for kind in kinds]}))
        requests = [DecisionRequest(campaign="warm-up", user_id=f"u{i}", explain=True,
                                    consent=i % 2 == 0) for i in range(4)]
        batch = probe.decide_batch("warm-up", requests)
        probe.record(batch.impressions(requests, ts_ms=0))
        probe.record([Click(event_id="c", decision_id=batch.decision_ids[0], campaign="warm-up",
                            ts=0), Click(event_id="late", decision_id="f" * 32,
                                         campaign="warm-up", ts=10**10)])
        probe.decide_batch("warm-up", requests)
        probe.decide_one(requests[0])  # the single-row path's own kernel
        self.ready = True

    # -- snapshots ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Campaigns, policy sums, report tallies and open attribution windows, in one file,
        written atomically (a crash leaves the old file or the new one, never half of one)."""
        data = self.to_bytes()
        target = Path(path)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def to_bytes(self, extra: dict[str, Any] | None = None) -> bytes:
        """The snapshot ``save`` writes, as bytes; ``extra`` (JSON-ready) rides along and comes
        back from ``from_bytes`` (the stream worker keeps its offsets there)."""
        with self._lock:
            meta, arrays = self._snapshot()
        meta["extra"] = extra
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        campaigns = []
        for ci, c in enumerate(self._campaigns.values()):
            slots = []
            for si, s in enumerate(c.slots):
                policies = {}
                for role, policy in (("policy", s.policy), ("fallback", s.fallback)):
                    state = policy.state()
                    for name, value in state["arrays"].items():
                        arrays[f"{ci}/{si}/{role}/{name}"] = value
                    policies[role] = {k: v for k, v in state.items() if k != "arrays"}
                slots.append({
                    "policies": policies,
                    "shared_fallback": s.fallback is s.policy,
                    "conditioned": s.conditioned,
                    "columns": s.columns,
                    "arm_tally": {a: vars(t) for a, t in s.arm_tally.items()},
                    "segments": [[seg, val, counts, vars(s.segment_tally[(seg, val)])]
                                 for (seg, val), counts in s.segment_counts.items()],
                })
            campaigns.append({
                "spec": c.spec.model_dump(mode="json"), "paused": c.paused, "version": c.version,
                "personalized": vars(c.personalized), "holdout": vars(c.holdout), "slots": slots,
            })
        joiner, windows = self._joiner.state()
        arrays.update({f"{_JOIN}{name}": value for name, value in windows.items()})
        meta = {"magic": SNAPSHOT_MAGIC, "format": SNAPSHOT_FORMAT, "campaigns": campaigns,
                "joiner": joiner, "rejected_events": self.rejected_events}
        return meta, arrays

    @classmethod
    def load(cls, path: str | os.PathLike, *, seed: int = 0,
             id_seed: int | None = None) -> Engine:
        """An engine from ``save``; a corrupt or foreign file gets IncompatibleStateError.
        ``seed`` and ``id_seed`` as for ``Engine``: a snapshot holds no id generator, so a
        loaded engine issues fresh ids unless ``id_seed`` is given."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IncompatibleStateError(f"{path}: not an engine snapshot ({exc})") from None
        return cls.from_bytes(data, seed=seed, id_seed=id_seed, what=str(path))[0]

    @classmethod
    def from_bytes(cls, data: bytes, *, seed: int = 0, id_seed: int | None = None,
                   what: str = "snapshot",
                   model_only: bool = False) -> tuple[Engine, dict[str, Any] | None]:
        """The engine of ``to_bytes`` and its ``extra``; damaged data gets
        IncompatibleStateError naming ``what``. ``model_only`` leaves the attribution join
        empty without reading it (the decision service needs the model, not the windows)."""
        path = what
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = orjson.loads(npz["meta"].tobytes())
                # Members are read on access: a model-only load never touches the windows.
                arrays = {k: npz[k] for k in npz.files if k != "meta"
                          and not (model_only and k.startswith(_JOIN))}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise IncompatibleStateError(f"{path}: not an engine snapshot ({exc})") from None
        if not isinstance(meta, dict) or meta.get("magic") != SNAPSHOT_MAGIC:
            raise IncompatibleStateError(f"{path}: not an engine snapshot")
        if meta.get("format") != SNAPSHOT_FORMAT:
            raise IncompatibleStateError(
                f"{path}: snapshot format {meta.get('format')!r}, expected {SNAPSHOT_FORMAT}")
        engine = cls(seed=seed, id_seed=id_seed)
        try:
            for ci, item in enumerate(meta["campaigns"]):
                c = engine._build(CampaignSpec.model_validate(item["spec"]))
                c.paused, c.version = bool(item["paused"]), int(item["version"])
                c.personalized, c.holdout = _Tally(**item["personalized"]), _Tally(**item["holdout"])
                for si, (s, saved) in enumerate(zip(c.slots, item["slots"], strict=True)):
                    restored = {}
                    for role, head in saved["policies"].items():
                        prefix = f"{ci}/{si}/{role}/"
                        state = dict(head, arrays={k[len(prefix):]: v for k, v in arrays.items()
                                                   if k.startswith(prefix)})
                        restored[role] = from_state(state, rng=int(engine._rng.integers(2**63)))
                    # Widths fixed at creation, before arms were added to earlier slots.
                    s.conditioned = [(prev, int(w)) for prev, w in saved["conditioned"]]
                    s.columns = list(saved["columns"])
                    s.policy = restored["policy"]
                    s.fallback = s.policy if saved["shared_fallback"] else restored["fallback"]
                    s.arm_tally = {a: _Tally(**t) for a, t in saved["arm_tally"].items()}
                    for seg, val, counts, tally in saved["segments"]:
                        s.segment_counts[(seg, val)] = dict(counts)
                        s.segment_tally[(seg, val)] = _Tally(**tally)
                engine._campaigns[c.spec.name] = c
            if not model_only:
                engine._joiner = Joiner.from_state(
                    meta["joiner"], {k[len(_JOIN):]: v for k, v in arrays.items()
                                     if k.startswith(_JOIN)}, engine.campaign)
            engine.rejected_events = int(meta["rejected_events"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleStateError(f"{path}: damaged snapshot ({exc})") from None
        return engine, meta.get("extra")

    # -- reporting ----------------------------------------------------------------------

    def report(self, campaign: str) -> CampaignReport:
        """Per slot and arm (retired ones too): impressions, reward, CTR with a 95% interval,
        share of traffic; holdout lift with its interval; the bias audit by segment value: arm
        allocation and reward rate, each flagged on a large disparity (``_AUDIT_*``,
        ``_ctr_gap``), never on fewer than ``_AUDIT_MIN`` impressions."""
        with self._lock:
            c = self._get(campaign)
            slots = []
            for s in c.slots:
                total = sum(t.n for t in s.arm_tally.values())
                arms = [
                    ArmReport(arm=arm, active=bool(on), impressions=s.arm_tally.get(arm, _Tally()).n,
                              reward=s.arm_tally.get(arm, _Tally()).total,
                              ctr=s.arm_tally.get(arm, _Tally()).interval(),
                              share=s.arm_tally.get(arm, _Tally()).n / total if total else 0.0)
                    for arm, on in zip(s.arm_ids, s.policy.active)
                ]
                overall = {a.arm: a.share for a in arms}
                by_segment: dict[str, _Tally] = {}  # every value of a segment together
                for (segment, _), tally in s.segment_tally.items():
                    whole = by_segment.setdefault(segment, _Tally())
                    whole.n, whole.total = whole.n + tally.n, whole.total + tally.total
                    whole.squares += tally.squares
                segments = []
                for (segment, value), counts in sorted(s.segment_counts.items()):
                    n = sum(counts.values())
                    allocation = {arm: counts.get(arm, 0) / n for arm in s.arm_ids}
                    tv = 0.5 * sum(abs(allocation[a] - overall[a]) for a in s.arm_ids)
                    reasons = []
                    if n >= _AUDIT_MIN and tv >= _AUDIT_TV:
                        reasons.append(f"arm allocation differs from the slot's overall by "
                                       f"{tv:.2f} (total variation)")
                    tally = s.segment_tally[(segment, value)]
                    rest = by_segment[segment].minus(tally)
                    gap, unequal = self._ctr_gap(tally, rest)
                    if unequal:
                        a, b = tally.mean(), rest.mean()
                        reasons.append(
                            f"reward rate {a:.4f} vs {b:.4f} for the other {segment!r} values "
                            f"({min(a, b) / max(a, b):.2f}x; gap {gap.low:+.4f} to "
                            f"{gap.high:+.4f}, 95%)")
                    segments.append(SegmentReport(
                        segment=segment, value=value, impressions=n, ctr=tally.interval(),
                        allocation=allocation, ctr_gap=gap, flagged=bool(reasons),
                        reason="; ".join(reasons) or None))
                slots.append(SlotReport(slot=s.spec.name, policy=s.spec.policy.kind, arms=arms,
                                        segments=segments))
            return CampaignReport(
                campaign=campaign, model_version=c.version, paused=c.paused,
                impressions=c.personalized.n + c.holdout.n,
                personalized_ctr=c.personalized.interval(), holdout_ctr=c.holdout.interval(),
                lift=self._lift(c), slots=slots)

    @staticmethod
    def _ctr_gap(this: _Tally, rest: _Tally) -> tuple[Interval | None, bool]:
        """Reward rate of a segment value minus that of the segment's other values, with a 95%
        normal-approximation interval, and whether that is a disparity: both sides have
        _AUDIT_MIN impressions, the interval excludes 0 and the lower rate is under
        _AUDIT_CTR_RATIO times the higher (a gap both real and large; rewards >= 0)."""
        if this.n < 2 or rest.n < 2:
            return None, False
        a, b = this.mean(), rest.mean()
        half = _Z95 * math.sqrt(this.var_of_mean() + rest.var_of_mean())
        gap = Interval(estimate=a - b, low=a - b - half, high=a - b + half)
        unequal = (min(this.n, rest.n) >= _AUDIT_MIN and not gap.low <= 0 <= gap.high
                   and min(a, b) >= 0 and min(a, b) < _AUDIT_CTR_RATIO * max(a, b))
        return gap, unequal

    @staticmethod
    def _lift(c: _Campaign) -> Interval | None:
        p, h = c.personalized, c.holdout
        if p.n < 2 or h.n < 2:
            return None
        diff = p.mean() - h.mean()
        half = _Z95 * math.sqrt(p.var_of_mean() + h.var_of_mean())
        return Interval(estimate=diff, low=diff - half, high=diff + half)


def encode_slot_contexts(spec: CampaignSpec, slot: str,
                         events: Sequence[JoinedEvent]) -> tuple[np.ndarray, list[str]]:
    """The input of ``slot``'s policy for logged events, as the engine builds it when it learns
    them: X (n, dim) (campaign context, then a one-hot of each earlier slot it conditions on)
    and the column names (dim,). Every event must carry a context; offline evaluation uses it
    so that a policy replayed on the log sees what the live one saw."""
    engine = Engine()
    c = engine._build(spec)
    s = c.slot(slot)
    base = c.context.encode([e.context or {} for e in events])
    chosen = {prev: np.array([c.slot(prev).arm_index.get(e.slots[prev].arm, 0)
                              if prev in e.slots else 0 for e in events], dtype=np.int64)
              for prev, _ in s.conditioned}
    return engine._slot_matrix(c, s, base, chosen), list(s.columns)
