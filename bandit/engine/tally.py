"""Running reward sums (count, sum, sum of squares) and outcome counts (decisions, and per
outcome type the decisions that had one and its events) that learning adds to, partition
merges sum, snapshots keep, reports read and erasure subtracts from.

Erasure (``bandit.engine.erase``) finds what learning added for some decisions by learning
them into blank tallies (``learn.tally_columns``) and takes that out (``untallied``,
``untallied_counts``, ``_Clustered.less``): counts exactly, float sums by subtraction (equal
to never having learned them up to float rounding). What is left without decisions is what a
tally that never saw the decisions holds: a tally entry without decisions leaves its dict
(learning creates one only for a decision), a sum over no decisions is exactly zero."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bandit.engine.intervals import (
    CLUSTERS,
    always_valid_interval,
    clustered_difference,
    fixed_interval,
)
from bandit.errors import InvalidInputError
from bandit.kernels import counts as counts_kernels
from bandit.models import OUTCOME_TYPES, Interval
from bandit.models.reports import Group

_Z95 = 1.959963984540054
# A decision's group, indexed by its holdout flag.
GROUPS: tuple[Group, Group] = ("personalized", "holdout")
_K = len(OUTCOME_TYPES)


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


def _groups(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The groups ``codes`` (n,) (each in 0..size-1) name, in order of first appearance, and
    their row counts (both (groups,) int64): one pass, no sort."""
    counts = np.zeros(size, dtype=np.int64)
    first = np.full(size, len(codes), dtype=np.int64)
    counts_kernels.groups(codes, counts, first)
    seen = np.flatnonzero(counts)
    seen = seen[np.argsort(first[seen], kind="stable")]
    return seen, counts[seen]


def _add_grouped(tallies: dict, names: Sequence, codes: np.ndarray, rewards: np.ndarray) -> None:
    """``tallies[names[k]].add(r)`` for each (k, r) of ``codes`` (n,) and ``rewards`` (n,),
    vectorized: the sums are added in row order, so every float sum is the one the
    event-at-a-time loop makes. Tallies are created in order of first appearance."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    seen, counts = _groups(codes, len(names))
    total, squares = np.zeros(len(names)), np.zeros(len(names))
    for k in seen.tolist():
        t = tallies.get(names[k])
        if t is not None:
            total[k], squares[k] = t.total, t.squares
    counts_kernels.reward_sums(codes, np.ascontiguousarray(rewards, dtype=np.float64), total,
                               squares)
    for k, n in zip(seen.tolist(), counts.tolist(), strict=True):
        t = tallies.setdefault(names[k], _Tally())
        t.n += n
        t.total, t.squares = float(total[k]), float(squares[k])


@dataclass
class _Outcomes:
    """Decisions (n) and, per outcome type (``OUTCOME_TYPES`` order), the decisions with at
    least one learned event of the type (``reached``) and the learned events (``events``):
    integers, so every sum is exact whatever the order or the partitions."""

    n: int = 0
    reached: list[int] = field(default_factory=lambda: [0] * _K)
    events: list[int] = field(default_factory=lambda: [0] * _K)

    def __add__(self, other: _Outcomes) -> _Outcomes:
        return _Outcomes(self.n + other.n,
                         [a + b for a, b in zip(self.reached, other.reached, strict=True)],
                         [a + b for a, b in zip(self.events, other.events, strict=True)])

    def minus(self, other: _Outcomes) -> _Outcomes:
        return _Outcomes(self.n - other.n,
                         [a - b for a, b in zip(self.reached, other.reached, strict=True)],
                         [a - b for a, b in zip(self.events, other.events, strict=True)])


def _add_outcomes(tallies: dict, names: Sequence, codes: np.ndarray,
                  outcomes: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Add decision i (outcome counts ``outcomes[i]``, (n, len(OUTCOME_TYPES)) >= 0; with
    ``rows`` (n,), ``outcomes[rows[i]]``) to ``tallies[names[codes[i]]]`` for every i, in one
    pass over the rows. Tallies are created in order of first appearance, as
    ``_add_grouped`` creates them."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    seen, counts = _groups(codes, len(names))
    reached = np.zeros((len(names), _K), dtype=np.int64)
    events = np.zeros((len(names), _K), dtype=np.int64)
    counts_kernels.outcome_sums(codes, np.ascontiguousarray(outcomes, dtype=np.int64),
                                np.arange(len(codes)) if rows is None else rows, reached, events)
    for k, n in zip(seen.tolist(), counts.tolist(), strict=True):
        t = tallies.setdefault(names[k], _Outcomes())
        t.n += n
        t.reached = [a + b for a, b in zip(t.reached, reached[k].tolist(), strict=True)]
        t.events = [a + b for a, b in zip(t.events, events[k].tolist(), strict=True)]


@dataclass(eq=False)
class _Clustered:
    """Per subscriber bucket (``intervals.CLUSTERS``, by subject key): decisions (``n``), the
    decisions reaching each outcome type (``reached``, (CLUSTERS, len(OUTCOME_TYPES))) and
    the reward: the sums a lift variance clustered by subscriber needs
    (``intervals.clustered_difference``). They add across partitions like every tally, and
    a subscriber's decisions can be taken out again (``-``, erasure): integer counts exactly,
    the reward up to float rounding."""

    n: np.ndarray = field(default_factory=lambda: np.zeros(CLUSTERS, np.int64))
    reached: np.ndarray = field(default_factory=lambda: np.zeros((CLUSTERS, _K), np.int64))
    reward: np.ndarray = field(default_factory=lambda: np.zeros(CLUSTERS))

    def add(self, clusters: np.ndarray, outcomes: np.ndarray, rewards: np.ndarray) -> None:
        """Add decision i (bucket ``clusters[i]``, outcome counts ``outcomes[i]`` (n, K),
        reward ``rewards[i]``) for every i, one pass per column kind."""
        self.add_sums(*clustered_sums(clusters, outcomes, rewards, 1))

    def add_sums(self, n: np.ndarray, reached: np.ndarray, reward: np.ndarray) -> None:
        """Add ``clustered_sums`` of one group: n (CLUSTERS,), reached (CLUSTERS, K),
        reward (CLUSTERS,)."""
        self.n += n
        self.reached += reached
        self.reward += reward

    def __add__(self, other: _Clustered) -> _Clustered:
        return _Clustered(self.n + other.n, self.reached + other.reached,
                          self.reward + other.reward)

    def __sub__(self, other: _Clustered) -> _Clustered:
        return _Clustered(self.n - other.n, self.reached - other.reached,
                          self.reward - other.reward)

    def less(self, other: _Clustered, what: str) -> _Clustered:
        """These sums without ``other``'s (``-``), a bucket left without decisions holding a
        reward of exactly zero; InvalidInputError naming ``what`` if a count would fall below
        zero (the decisions were never learned)."""
        left = self - other
        for name, mine, after in (("n", self.n, left.n), ("reached", self.reached, left.reached)):
            _not_negative(what, name, mine, after)
        left.reward[left.n == 0] = 0.0
        return left

    def same(self, other: _Clustered) -> bool:
        """Whether every sum equals ``other``'s exactly."""
        return (np.array_equal(self.n, other.n) and np.array_equal(self.reached, other.reached)
                and np.array_equal(self.reward, other.reward))

    def column(self, kind: int | None) -> np.ndarray:
        """Per bucket, the decisions reaching outcome type ``kind`` (an index into
        OUTCOME_TYPES), or the reward for None."""
        return self.reward if kind is None else self.reached[:, kind]


def clustered_sums(codes: np.ndarray, outcomes: np.ndarray, rewards: np.ndarray,
                   groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group g and bucket c, code g * CLUSTERS + c of each decision (``codes`` (n,)): the
    decisions (groups * CLUSTERS,), those reaching each outcome type (groups * CLUSTERS, K)
    and the reward summed in row order from zero (what ``_Clustered.add`` adds to a group)."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    size = groups * CLUSTERS
    reached, events = (np.zeros((size, _K), dtype=np.int64) for _ in range(2))
    counts_kernels.outcome_sums(codes, np.ascontiguousarray(outcomes, dtype=np.int64),
                                np.arange(len(codes)), reached, events)
    return (np.bincount(codes, minlength=size), reached,
            np.bincount(codes, weights=rewards, minlength=size))


def clustered_groups() -> dict[Group, _Clustered]:
    """An empty clustered tally per group (``GROUPS``)."""
    return {group: _Clustered() for group in GROUPS}


def clustered_lift(personalized: _Clustered, holdout: _Clustered, kind: int | None,
                   rho: float) -> tuple[Interval, Interval] | None:
    """Personalized minus holdout rate of outcome type ``kind`` (None: mean reward) with
    its fixed-horizon and always-valid 95% intervals (``bandit.engine.intervals``), the
    variance clustered by subscriber bucket, time = decisions of both groups; None unless
    both groups have decisions in two buckets. A rate difference lies in [-1, 1], so its
    intervals are cut there (still covering whenever the uncut ones do: early on, the
    always-valid one is far wider)."""
    lift = clustered_difference(personalized.n, personalized.column(kind), holdout.n,
                                holdout.column(kind))
    if lift is None:
        return None
    t = float(personalized.n.sum() + holdout.n.sum())
    fixed, valid = fixed_interval(*lift), always_valid_interval(*lift, t, rho)
    if kind is None:
        return fixed, valid
    return _within_one(fixed), _within_one(valid)


def _within_one(x: Interval) -> Interval:
    return Interval(estimate=x.estimate, low=max(x.low, -1.0), high=min(x.high, 1.0))


def _not_negative(what: str, name: str, before: np.ndarray | int, after: np.ndarray | int
                  ) -> None:
    """InvalidInputError if a count ``after`` erasure is negative: the decisions it takes out
    were not all learned."""
    low = np.asarray(after)
    if low.size and low.min() < 0:
        at = np.unravel_index(int(np.argmin(low)), low.shape) if low.ndim else ()
        raise InvalidInputError(
            f"{what}: {name}{list(map(int, at)) if at else ''} would fall from "
            f"{int(np.asarray(before)[at])} to {int(low[at])}: these decisions were not all "
            "learned")


def untallied(tallies: dict, erased: dict, what: str) -> dict:
    """``tallies`` less ``erased`` (per key a ``_Tally`` or ``_Outcomes``: what learning added
    for some decisions), as a new dict in ``tallies``' order: counts exactly, float sums by
    subtraction; an entry left without decisions leaves it, as learning never made one.
    InvalidInputError naming ``what`` and the key if a count would fall below zero (or events
    stay without decisions): nothing changes. Entries ``erased`` does not name are shared."""
    out = dict(tallies)
    for key, theirs in erased.items():
        mine = out.get(key, type(theirs)())
        left = mine.minus(theirs)
        where = f"{what} {key!r}"
        _not_negative(where, "n", mine.n, left.n)
        if isinstance(left, _Outcomes):
            for name in ("reached", "events"):
                _not_negative(where, name, np.array(getattr(mine, name)),
                              np.array(getattr(left, name)))
            if not left.n and any(left.reached + left.events):
                raise InvalidInputError(f"{where}: outcomes would stay without decisions: "
                                        "these decisions were not all learned")
        if left.n:
            out[key] = left
        else:
            out.pop(key, None)
    return out


def untallied_counts(counts: dict[tuple[str, str], dict[str, int]],
                     erased: dict[tuple[str, str], dict[str, int]],
                     what: str) -> dict[tuple[str, str], dict[str, int]]:
    """``untallied`` of a slot's decisions per segment value and arm (``segment_counts``):
    arms left without decisions leave their value's counts, values left without any leave."""
    out = dict(counts)
    for key, arms in erased.items():
        mine = dict(out.get(key, {}))
        for arm, n in arms.items():
            before = mine.get(arm, 0)
            _not_negative(f"{what} {key!r}, arm {arm!r}", "n", before, before - n)
            if before - n:
                mine[arm] = before - n
            else:
                mine.pop(arm, None)
        if mine:
            out[key] = mine
        else:
            out.pop(key, None)
    return out


def untallied_total(total: _Tally, erased: _Tally, what: str) -> _Tally:
    """A campaign group's reward tally less ``erased``: zero sums once no decision is left."""
    left = total.minus(erased)
    _not_negative(what, "n", total.n, left.n)
    return left if left.n else _Tally()
