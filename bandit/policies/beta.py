"""Beta-Bernoulli Thompson sampling (``BetaTS``): context-free, exact win probabilities."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from bandit.kernels import choice
from bandit.kernels.beta import beta_max_probabilities, thompson_pick
from bandit.policies.base import Policy, Rng, _as_rng, _finite_float, _positive_int

# Grid pieces of Beta TS's win-probability quadrature span at most this many logit-scale sds of
# the narrowest arm there, with a 10-node Gauss-Legendre rule each (see bandit/kernels/beta.py;
# its error against adaptive quadrature is checked in tests/bandit/kernels/test_beta_kernels.py).
_BETA_PIECE_SDS = 2.0
_BETA_NODES, _BETA_WEIGHTS = np.polynomial.legendre.leggauss(10)
# decide_row's entry for a mask: the CDF, pmf, means and sds over the arms, and the last arm
# with a probability > 0.
_RowEntry = tuple[list[float], list[float], list[float], list[float], int]


class _GammaDraws:
    """The standard normals (row 0) and uniforms (row 1) of single decisions' Beta draws
    (``kernels.beta.thompson_pick``), taken from the policy's generator in blocks and read at
    the cursors ``pos``."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng, self._block = rng, block
        self.buf = np.empty((2, 0))
        self.pos = np.zeros(2, dtype=np.int64)

    def refill(self) -> None:
        """A fresh block; what was left unread is dropped (independent draws: nothing lost)."""
        self.buf = np.stack([self._rng.standard_normal(self._block), self._rng.random(self._block)])
        self.pos[:] = 0


class BetaTS(Policy):
    """Beta-Bernoulli Thompson sampling: arm a ~ Beta(alpha + successes_a, beta + failures_a).

    Context-free: X may have any number of columns (dim=0 by default) and is not read. A reward
    in [0, 1] counts as that fraction of a success. The probability that each arm wins is
    computed by quadrature once per state and eligibility mask.

    >>> policy = BetaTS(n_arms=2, rng=0)
    >>> policy.learn_many(np.array([0, 0, 1]), np.zeros((3, 0)), np.array([1.0, 1.0, 0.0]))
    >>> policy.propensities(np.zeros((1, 0))).round(3)
    array([[0.9, 0.1]])
    """

    kind = "beta_ts"
    _sum_names = ("successes", "failures", "counts")
    _per_arm = frozenset(_sum_names)
    _nonnegative = _sum_names
    reward_range = (0.0, 1.0)
    _min_dim = 0

    def __init__(self, n_arms: int, alpha: float = 1.0, beta: float = 1.0, dim: int = 0,
                 half_life_ms: float | None = None, rng: Rng = None) -> None:
        super().__init__(n_arms, dim, half_life_ms=half_life_ms, rng=rng)
        self.alpha = _finite_float("alpha", alpha, low=0.0, low_open=True)
        self.beta = _finite_float("beta", beta, low=0.0, low_open=True)
        self._successes = np.zeros(self.n_arms)
        self._failures = np.zeros(self.n_arms)
        self._counts = np.zeros(self.n_arms)
        # A mask's bytes -> its pmf (n_arms,); (its bytes,) -> decide_row's entry. One dict,
        # so that one clear() drops both when the state changes.
        self._pmf_cache: dict[bytes | tuple[bytes], np.ndarray | _RowEntry] = {}
        self._gamma = _GammaDraws(self._rng)

    def choose_one(self, x: Any = None, *, eligible: Any = None, rng: Rng = None) -> int:
        # One kernel call per decision: the eligible arms' Beta draws, by Marsaglia-Tsang Gammas
        # from the policy's own stream (a caller's generator takes the batch path instead).
        if rng is not None:
            return super().choose_one(x, eligible=eligible, rng=rng)
        if self.dim or not (x is None or (type(x) is np.ndarray and x.shape == (0,))):
            self._context(x)  # checked, never read
        mask = self._active if eligible is None else self._mask(eligible, 1)[0]
        draws, now = self._gamma, self._decayed()
        while (arm := thompson_pick(self._successes, self._failures, self.alpha, self.beta, now,
                                    mask, draws.buf, draws.pos)) < 0:
            draws.refill()
        return int(arm)

    def _contexts(self, X: Any) -> np.ndarray:
        if self.dim == 0 and isinstance(X, int | np.integer) and not isinstance(X, bool):
            return np.empty((_positive_int("n", X), 0))
        return super()._contexts(X)

    def _state_changed(self) -> None:
        self._pmf_cache.clear()

    def _grow(self, features: np.ndarray | None) -> None:
        self._grow_arrays()
        self._state_changed()

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        # Into the sums row by row (np.add.at is unbuffered, in order), never a batch's own
        # sum added at once: the sums then do not depend on how the events were batched.
        np.add.at(self._successes, arms, weights * rewards)
        np.add.at(self._failures, arms, weights * (1.0 - rewards))
        np.add.at(self._counts, arms, weights)
        self._state_changed()

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        # The common case checked inline (an int arm, a float reward in [0, 1], no decay): the
        # generic checks would cost more than the update.
        if (self.half_life_ms is None and type(arm) is int and type(reward) is float
                and 0 <= arm < self.n_arms and 0.0 <= reward <= 1.0):
            self._learn_one(arm, x, reward)
        else:
            super().learn_one(arm, x, reward, ts_ms=ts_ms)

    def _learn_one(self, arm: int, x: Any, reward: float) -> None:
        self._successes[arm] += reward
        self._failures[arm] += 1.0 - reward
        self._counts[arm] += 1.0
        self._state_changed()

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        now = self._decayed()
        return self.alpha + now * self._successes, self.beta + now * self._failures

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n = X.shape[0]
        if isinstance(rng, np.ndarray):
            # Caller's uniforms: sample the exact win probabilities (the same distribution as
            # drawing from every posterior), one uniform per decision.
            P = self._propensities(X, mask)
            cdf = np.cumsum(P, axis=1)
            # Zero-probability arms own an empty slice of the CDF, so they are never reached.
            arms = (cdf <= rng[:, 1:2] * cdf[:, -1:]).sum(axis=1)
            over = arms >= self.n_arms  # u * total rounded up to total: the last possible arm
            arms[over] = self.n_arms - 1 - np.argmax(P[over][:, ::-1] > 0, axis=1)
            return arms, (P[np.arange(n), arms] if with_propensities else None)
        a, b = self._posterior()
        draws = (self._rng if rng is None else _as_rng(rng)).beta(a, b, size=(n, self.n_arms))
        arms = np.empty(n, dtype=np.int64)
        probs = np.empty(n)
        choice.choose_floor(draws, mask, 0.0, self._draw_uniforms(n, rng), arms, probs)
        if not with_propensities:
            return arms, None
        return arms, self._propensities(X, mask)[np.arange(n), arms]

    def decide_row(self, x: np.ndarray, mask: np.ndarray | None,
                   u: np.ndarray) -> tuple[int, float, float, float]:
        # Everything but the draw depends on the state and the mask only: the CDF the batch
        # path sums, the means and sds of _expectation, kept as Python floats next to the
        # batch path's pmfs (a tuple key), so a change of state clears both.
        m = self._active if mask is None else mask
        key = (m.tobytes(),)
        entry = self._pmf_cache.get(key)
        if entry is None:
            pmf = self._propensities(np.empty((1, 0)), m[None, :])[0]
            a, b = self._posterior()
            mean = a / (a + b)
            sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
            last = self.n_arms - 1 - int(np.argmax(pmf[::-1] > 0))
            entry = (np.cumsum(pmf).tolist(), pmf.tolist(), mean.tolist(), sd.tolist(), last)
            self._pmf_cache[key] = entry
        cdf, pmf, mean, sd, last = entry
        # As _choose: the arms whose CDF is <= u * total, counted (a CDF that rounds down
        # somewhere need not be sorted); u * total rounded up to total: the last possible arm.
        t = float(u[1]) * cdf[-1]
        arm = 0
        for c in cdf:
            arm += c <= t
        if arm >= self.n_arms:
            arm = last
        return arm, pmf[arm], mean[arm], sd[arm]

    def decide_row_vector(self, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray,
                          vector: np.ndarray) -> tuple[int, float, float, float]:
        decided = self.decide_row(x, mask, u)  # it leaves the mask's pmf in the cache
        vector[:] = self._pmf_cache[((self._active if mask is None else mask).tobytes(),)][1]
        return decided

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if mask.shape[0] == 1:  # one mask (a single decision's, or none): no np.unique
            unique, inverse = mask, np.zeros(1, dtype=np.int64)
        else:
            unique, inverse = np.unique(mask, axis=0, return_inverse=True)
        pmfs = np.empty(unique.shape, dtype=np.float64)
        for r, row in enumerate(unique):
            key = row.tobytes()
            if key not in self._pmf_cache:
                a, b = self._posterior()
                pmf = np.empty((1, self.n_arms))
                beta_max_probabilities(a, b, row[None, :], _BETA_NODES, _BETA_WEIGHTS,
                                       _BETA_PIECE_SDS, pmf)
                self._pmf_cache[key] = pmf[0]
            pmfs[r] = self._pmf_cache[key]
        return pmfs[inverse.reshape(-1)] if mask.shape[0] == n else np.repeat(pmfs, n, axis=0)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        a, b = self._posterior()
        return np.repeat((a / (a + b))[None, :], X.shape[0], axis=0)

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = self._posterior()
        mean = a / (a + b)
        sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
        return mean[arms], sd[arms]

    def _params(self) -> dict[str, Any]:
        return {"n_arms": self.n_arms, "alpha": self.alpha, "beta": self.beta, "dim": self.dim,
                "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        return cls(**params, rng=rng)
