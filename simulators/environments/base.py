"""The environment base: contexts, the true click probability of every arm, Bernoulli clicks,
and the two options every environment shares (drift, a late arm)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from bandit.errors import InvalidInputError


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def one_hot(index: np.ndarray, size: int) -> np.ndarray:
    """index (n,) int in 0..size-1 -> (n, size) float64 with a single 1.0 per row."""
    return (index[:, None] == np.arange(size)).astype(np.float64)


class Environment(ABC):
    """A bandit problem with known click probabilities, optional drift and a late arm.

    Subclasses set ``name``, ``arm_names`` (n_arms,), ``dim`` and ``arm_features`` (n_arms, m)
    (and ``slot``, the name of the one decision, for reports), draw contexts, and map contexts
    to logits under a truth (an array of hidden parameters); this class blends the start and
    end truths over steps and samples clicks.
    """

    name: str
    slot: str = "arm"
    arm_names: tuple[str, ...]
    dim: int
    arm_features: np.ndarray

    def __init__(
        self,
        n_arms: int,
        start: np.ndarray,
        end: np.ndarray,
        *,
        drift_steps: int | None = None,
        new_arm_at: int | None = None,
    ) -> None:
        if drift_steps is not None and drift_steps <= 0:
            raise InvalidInputError(f"drift_steps must be a positive step count, got {drift_steps}")
        if new_arm_at is not None and new_arm_at < 0:
            raise InvalidInputError(f"new_arm_at must be a step >= 0, got {new_arm_at}")
        self.n_arms = n_arms
        self.drift_steps = drift_steps
        self.new_arm_at = new_arm_at
        self._start, self._end = start, end
        # First step at which each arm may be chosen; only the last arm can arrive late.
        self.arm_available_from = np.zeros(n_arms, dtype=np.int64)
        if new_arm_at is not None:
            self.arm_available_from[-1] = new_arm_at

    @abstractmethod
    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw n contexts: X (n, dim) float64, C-contiguous, X[:, 0] == 1.0."""

    @abstractmethod
    def _logits(self, X: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Click logits of every arm under one truth: X (n, dim) -> (n, n_arms)."""

    def _link(self, logits: np.ndarray) -> np.ndarray:
        """Logits (n, n_arms) -> click probabilities (n, n_arms)."""
        return sigmoid(logits)

    def drift_fraction(self, step: int | np.ndarray) -> np.ndarray:
        """How far preferences have moved from the start truth (0) to the end truth (1).

        step: a step index or an array (n,) of them; returns float64 of the same shape.
        """
        step = np.asarray(step, dtype=np.float64)
        if self.drift_steps is None:
            return np.zeros_like(step)
        return np.clip(step / self.drift_steps, 0.0, 1.0)

    def expected_rewards(self, X: np.ndarray, step: int | np.ndarray = 0) -> np.ndarray:
        """True click probability of every arm: X (n, dim), step int or (n,) -> (n, n_arms).

        The row maximum over eligible arms is the oracle's expected reward.
        """
        logits = self._logits(X, self._start)
        if self.drift_steps is not None:
            s = np.broadcast_to(self.drift_fraction(step), (X.shape[0],))[:, None]
            logits = (1.0 - s) * logits + s * self._logits(X, self._end)
        return self._link(logits)

    def sample_rewards(
        self,
        X: np.ndarray,
        arms: np.ndarray,
        rng: np.random.Generator,
        step: int | np.ndarray = 0,
    ) -> np.ndarray:
        """Bernoulli clicks for the chosen arms: X (n, dim), arms (n,) int -> (n,) float64 0/1."""
        p = self.expected_rewards(X, step)[np.arange(X.shape[0]), arms]
        return (rng.random(X.shape[0]) < p).astype(np.float64)

    def eligible(self, step: int | np.ndarray) -> np.ndarray:
        """Which arms may be chosen: step int -> (n_arms,) bool, steps (n,) -> (n, n_arms) bool."""
        return np.asarray(step)[..., None] >= self.arm_available_from
