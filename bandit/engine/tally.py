"""Running reward sums (count, sum, sum of squares) that learning adds to, partition merges
sum, snapshots keep and reports read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bandit.models import Interval

_Z95 = 1.959963984540054


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
    for k, n in zip(seen[order], counts[order], strict=True):
        t = tallies.setdefault(names[k], _Tally())
        t.n += int(n)
        t.total, t.squares = float(total[k]), float(squares[k])
