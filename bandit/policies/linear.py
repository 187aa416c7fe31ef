"""The linear family: a ridge model per arm (LinUCB, linear Thompson sampling, epsilon-greedy)
and the scoring it shares with hybrid LinUCB (``_LinearScoring``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Self

import numpy as np
from scipy import special

from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.kernels import choice, linear, single
from bandit.policies.base import Policy, Rng, _as_rng, _DrawBuffer, _finite_float, _ridge_inverse

# Gauss-Legendre rule for the win-probability quadrature (per piece of the breakpoint grid).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
# Each arm counts over RADIUS standard deviations either side of its mean; a quadrature piece
# spans at most RADIUS / STEPS sds of the narrowest arm it overlaps (its error against adaptive
# quadrature is checked in tests/bandit/kernels/test_kernels.py).
_RADIUS, _STEPS = 7.0, 4
# Rank-one (Sherman-Morrison) updates an arm takes before its inverse is recomputed from its
# sums, which bounds the rounding a long chain of updates could build up.
_REFACTOR_EVERY = 1_000
_TINY = np.finfo(np.float64).tiny  # keeps the normal quantile of a 0.0 draw finite
# Rows per call of linear TS's batch kernel with propensities: its draws go a block at a time.
_BLOCK = 8_192


class _LinearScoring(Policy):
    """Decisions from a per-arm mean theta_a . x and width sqrt(x^T Q_a x), where the subclass
    derives ``_theta`` (k, d) and ``_Ainv`` = Q (k, d, d) from its sums in ``_refresh``.

    LinUCB ranks by mean + alpha width, epsilon-greedy by the mean, linear TS by a draw from
    N(mean, (v width)^2); the deterministic ones carry an epsilon-uniform floor.
    """

    epsilon: float
    _alpha = 0.0
    _dirty: bool
    _theta: np.ndarray
    _Ainv: np.ndarray
    _no_noise = np.empty(0)

    def _refresh(self) -> None:
        raise NotImplementedError

    _bonus_scale: ClassVar[str] = "_alpha"

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        mean, width = np.empty(X.shape[0]), np.empty(X.shape[0])
        linear.chosen_moments(self._theta, self._Ainv, X, arms, mean, width)
        return mean, getattr(self, self._bonus_scale) * width

    def decide_row(self, x: np.ndarray, mask: np.ndarray | None,
                   u: np.ndarray) -> tuple[int, float, float, float]:
        # One kernel call for choice, propensity, mean and bonus; a non-finite x (no value to
        # rank) goes the checked way, which raises what the batch path raises.
        if self._dirty:
            self._refresh()
        arm, p, mean, bonus = single.linear_decide(
            self._theta, self._Ainv, x, self._alpha, self._active if mask is None else mask,
            self.epsilon, u, getattr(self, self._bonus_scale))
        if arm < 0:
            return super().decide_row(x, mask, u)
        return arm, p, mean, bonus

    def decide_row_vector(self, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray,
                          vector: np.ndarray) -> tuple[int, float, float, float]:
        # The same kernel call, the floor's distribution written from the values it ranked.
        if self._dirty:
            self._refresh()
        arm, p, mean, bonus = single.linear_decide_vector(
            self._theta, self._Ainv, x, self._alpha, self._active if mask is None else mask,
            self.epsilon, u, getattr(self, self._bonus_scale), vector)
        if arm < 0:
            return Policy.decide_row_vector(self, x, mask, u, vector)
        return arm, p, mean, bonus

    def contributions(self, X: Any, arms: Any) -> np.ndarray:
        """(n, dim): theta_a[j] * x[j], each feature's share of the chosen arm's expected reward
        (for hybrid LinUCB, of the arm's effective coefficient, shared part included; for
        linear TS, of what the arm's expected reward exceeds the pooled mean reward by)."""
        X = self._contexts(X)
        arms = self._arm_array(arms, X.shape[0])
        self._refresh()
        return self._theta[arms] * X

    # The per-event verb skips the generic path: its arithmetic is so small that every NumPy
    # call on the way would cost as much again. The kernel refuses non-finite input itself
    # (a -1 arm), which the check below turns into an error.

    def choose_one(self, x: Any = None, *, eligible: Any = None, rng: Rng = None) -> int:
        x = self._shaped(x)
        mask = self._all_active if eligible is None else self._mask(eligible, 1)
        if self._dirty:
            self._refresh()
        u0, u1 = self._pairs.pair() if rng is None else _as_rng(rng).random(2).tolist()
        arm, _ = linear.choose_one(self._theta, self._Ainv, x, self._alpha, self._noise_one(rng),
                                   mask[0], self.epsilon, u0, u1)
        if arm < 0:
            raise InvalidInputError("x: contains NaN or inf")
        return arm

    def _noise(self, n: int, rng: Rng | np.ndarray) -> np.ndarray:
        return np.empty((0, self.n_arms))

    def _noise_one(self, rng: Rng) -> np.ndarray:
        return self._no_noise

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self._refresh()
        n = X.shape[0]
        U = self._draw_uniforms(n, rng)
        arms = np.empty(n, dtype=np.int64)
        probs = np.empty(n)
        linear.choose(self._theta, self._Ainv, X, self._alpha, self._noise(n, rng), mask,
                      self.epsilon, U, arms, probs)
        return arms, probs

    def _moments(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        mean = np.empty((X.shape[0], self.n_arms))
        sd = np.empty_like(mean)
        linear.moments(self._theta, self._Ainv, X, mean, sd)
        return mean, sd

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mean, sd = self._moments(X)
        out = np.empty_like(mean)
        choice.floor_probabilities(mean + self._alpha * sd, mask, self.epsilon, out)
        return out

    def _scores(self, X: np.ndarray) -> np.ndarray:
        mean, sd = self._moments(X)
        return mean + self._alpha * sd


class _DisjointLinear(_LinearScoring):
    """A ridge model per arm: A_a = l2 I + sum x x^T (kept as the raw sum S_a), b_a = sum r x."""

    _sum_names: ClassVar[tuple[str, ...]] = ("S", "b", "counts")
    _per_arm = frozenset(_sum_names)
    _grams = ("S",)

    def __init__(self, n_arms: int, dim: int, *, l2: float, epsilon: float,
                 half_life_ms: float | None, rng: Rng) -> None:
        super().__init__(n_arms, dim, half_life_ms=half_life_ms, rng=rng)
        self.l2 = _finite_float("l2", l2, low=0.0, low_open=True)
        self.epsilon = _finite_float("epsilon", epsilon, low=0.0, high=1.0)
        k, d = self.n_arms, self.dim
        self._S = np.zeros((k, d, d))
        self._b = np.zeros((k, d))
        self._counts = np.zeros(k)
        self._Ainv = np.repeat(np.eye(d)[None] / self.l2, k, axis=0)
        self._theta = np.zeros((k, d))
        self._stale = np.zeros(k, dtype=np.bool_)
        self._dirty = False  # any(self._stale), kept as a plain bool for the per-event path
        self._updates = [0] * k  # rank-one updates since each arm was last factorized

    def _state_changed(self) -> None:
        self._stale[:] = True
        self._dirty = True

    def _refresh(self) -> None:
        # Once per batch of learning, never per decision: this is the O(d^3) step.
        if not self._dirty:
            return
        idx = np.flatnonzero(self._stale)
        S, b = self._S[idx], self._b[idx]
        if (now := self._decayed()) != 1.0:
            S, b = now * S, now * b
        # Through the Cholesky factor, so A^-1 = L^-T L^-1 comes out symmetric and PD.
        try:
            L_inv = np.linalg.inv(np.linalg.cholesky(S + self.l2 * np.eye(self.dim)))
            Ainv = np.swapaxes(L_inv, 1, 2) @ L_inv
        except np.linalg.LinAlgError:
            Ainv = None
        Ainv = _ridge_inverse(Ainv, S, self.l2)
        self._Ainv[idx] = Ainv
        self._fit(idx, Ainv, b, now)
        self._stale[idx] = False
        self._dirty = False
        for a in idx:
            self._updates[a] = 0

    def _fit(self, idx: np.ndarray, Ainv: np.ndarray, b: np.ndarray, now: float) -> None:
        """The estimates of arms ``idx`` from their new inverses and b, both at the newest
        event time (``now``: the factor that brought the sums there)."""
        self._theta[idx] = (Ainv @ b[..., None])[..., 0]

    def _grow(self, features: np.ndarray | None) -> None:
        self._grow_arrays()
        d = self.dim
        self._Ainv = np.ascontiguousarray(np.concatenate([self._Ainv, np.eye(d)[None] / self.l2]))
        self._theta = np.ascontiguousarray(np.concatenate([self._theta, np.zeros((1, d))]))
        self._stale = np.append(self._stale, False)
        self._updates.append(0)

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        linear.accumulate(self._S, self._b, self._counts, arms, X, rewards, weights)
        self._stale[arms] = True
        self._dirty = True

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        # O(d^2) Sherman-Morrison update of the arm's inverse; the kernel refuses NaN itself.
        if self.half_life_ms is not None:
            super().learn_one(arm, x, reward, ts_ms=ts_ms)
            return
        a = self._arm(arm)
        x = self._shaped(x)
        if self._dirty or self._updates[a] >= _REFACTOR_EVERY:
            self._stale[a] = True
            self._dirty = True
            self._refresh()
        r = reward if type(reward) is float else self._reward(reward)
        if not self._learn_row(a, x, r):
            raise InvalidInputError(f"x or reward: contains NaN or inf (reward={reward!r})")
        self._updates[a] += 1

    def _learn_row(self, a: int, x: np.ndarray, r: float) -> bool:
        """One event into the sums, the arm's inverse and the estimates; False, touching
        nothing, when x or r is not finite."""
        return bool(linear.learn_one(self._S, self._b, self._counts, self._Ainv, self._theta,
                                     a, x, r, 1.0))

    def _params(self) -> dict[str, Any]:
        return {"n_arms": self.n_arms, "dim": self.dim, "l2": self.l2,
                "epsilon": self.epsilon, "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        return cls(**params, rng=rng)


class LinUCB(_DisjointLinear):
    """Disjoint LinUCB (Li et al. 2010, Algorithm 1) with an epsilon-uniform exploration floor.

    Score theta_a . x + alpha sqrt(x^T A_a^-1 x); with probability ``epsilon`` the arm is uniform
    over the eligible ones, so every eligible arm has a known probability > 0 (for off-policy
    evaluation of the logs). Ties between maxima are broken uniformly at random.

    The defaults (alpha 0.2, l2 10, epsilon 0.01) are for a campaign nobody tunes, chosen on
    the learning-quality benchmark (``benchmarks.quality``, README). An l2 of 10 is the ridge
    of a prior that each coefficient is small beside the click noise: with many features per
    arm it keeps an arm's fit from chasing its first few hundred events, and it bounds the
    bonus of a context unlike any seen by |x| / sqrt(l2), so alpha 0.2 explores about as much
    as a one-sigma Bayesian bound at click-sized noise. The floor costs epsilon times the gap
    between the best arm and a uniform choice, and keeps every eligible arm's probability
    above zero (for off-policy evaluation of the logs).

    >>> policy = LinUCB(n_arms=3, dim=2, alpha=0.5, epsilon=0.0, rng=0)
    >>> policy.learn_many(np.array([1]), np.array([[1.0, 0.0]]), np.array([1.0]))
    >>> policy.choose_many(np.array([[1.0, 0.0], [0.0, 1.0]]), rng=0)
    array([1, 0])
    """

    kind = "lin_ucb"

    def __init__(self, n_arms: int, dim: int, alpha: float = 0.2, l2: float = 10.0,
                 epsilon: float = 0.01, half_life_ms: float | None = None, rng: Rng = None) -> None:
        super().__init__(n_arms, dim, l2=l2, epsilon=epsilon, half_life_ms=half_life_ms, rng=rng)
        self.alpha = _finite_float("alpha", alpha, low=0.0)
        self._alpha = self.alpha

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "alpha": self.alpha}


class EpsilonGreedy(_DisjointLinear):
    """Epsilon-greedy over the per-arm ridge estimate theta_a . x; propensities are exact.

    >>> policy = EpsilonGreedy(n_arms=2, dim=1, epsilon=0.2, rng=0)
    >>> policy.learn_many(np.array([0]), np.array([[1.0]]), np.array([1.0]))
    >>> policy.propensities(np.array([[1.0]]))
    array([[0.9, 0.1]])
    """

    kind = "epsilon_greedy"

    def __init__(self, n_arms: int, dim: int, epsilon: float = 0.1, l2: float = 1.0,
                 half_life_ms: float | None = None, rng: Rng = None) -> None:
        super().__init__(n_arms, dim, l2=l2, epsilon=epsilon, half_life_ms=half_life_ms, rng=rng)


class LinTS(_DisjointLinear):
    """Linear Thompson sampling: arm a's score is drawn from N(m + theta_a . x, v^2 x^T A_a^-1 x).

    The prior is centred on the pooled mean reward m (every arm's rewards over every arm's
    events; 0 before any): theta_a is the ridge fit to the rewards less m, so an arm not yet
    tried scores about m rather than 0. With a prior mean of 0, the first arm tried looks
    better than every untried one by about the mean reward, more than a small ``v`` explores,
    and a policy learning an event at a time locks onto it. The sums of rewards
    (``reward_sums``) and of contexts (``x_sums``) per arm give theta_a = A_a^-1 (b_a -
    m x_sums_a) exactly under merges, decay and forgetting, as the other sums do; a state
    written before they were kept is refused (``from_state``).

    Drawing the score per decision is the same as drawing theta_a ~ N(theta_hat, v^2 A_a^-1) per
    decision, at O(d^2) instead of O(d^3). ``v`` is about the reward noise's standard deviation
    (0.2 suits click rewards). The draws are independent across arms, so the probability that
    an arm wins is a one-dimensional integral, computed by quadrature.

    >>> policy = LinTS(n_arms=3, dim=1, v=0.1, rng=0)
    >>> policy.learn_many(np.array([0, 1] * 50), np.ones((100, 1)), np.tile([1.0, 0.0], 50))
    >>> policy.scores(np.array([[1.0]])).round(2)
    array([[0.99, 0.01, 0.5 ]])
    """

    kind = "lin_ts"
    _bonus_scale = "v"
    _sum_names = ("S", "b", "counts", "reward_sums", "x_sums")
    _per_arm = frozenset(_sum_names)

    def __init__(self, n_arms: int, dim: int, v: float = 0.2, l2: float = 1.0,
                 half_life_ms: float | None = None, rng: Rng = None) -> None:
        super().__init__(n_arms, dim, l2=l2, epsilon=0.0, half_life_ms=half_life_ms, rng=rng)
        self.v = _finite_float("v", v, low=0.0, low_open=True)
        self._normals = _DrawBuffer(self._rng, self.n_arms, normal=True)
        k, d = self.n_arms, self.dim
        self._reward_sums = np.zeros(k)
        self._x_sums = np.zeros((k, d))
        self._theta_b = np.zeros((k, d))  # A^-1 b
        self._theta_s = np.zeros((k, d))  # A^-1 x_sums
        self._offset = 0.0  # the pooled mean reward m

    @classmethod
    def from_state(cls, state: dict[str, Any], *, rng: Rng = None) -> Self:
        """Rebuild a policy from ``state()``. A state without the sums of rewards and contexts
        (written before the prior was centred on the mean reward) is refused: they cannot be
        derived from the others; learn the logged events again."""
        arrays = state.get("arrays") if isinstance(state, dict) else None
        if isinstance(arrays, dict) and state.get("kind") == cls.kind:
            missing = [name for name in ("reward_sums", "x_sums") if name not in arrays]
            if missing:
                raise IncompatibleStateError(
                    f"{cls.kind}: state has no array {missing[0]!r} (written before linear TS "
                    "centred its prior on the mean reward, which needs it); learn the logged "
                    "events again")
        return super().from_state(state, rng=rng)

    def _fit(self, idx: np.ndarray, Ainv: np.ndarray, b: np.ndarray, now: float) -> None:
        self._theta_b[idx] = (Ainv @ b[..., None])[..., 0]
        self._theta_s[idx] = now * (Ainv @ self._x_sums[idx][..., None])[..., 0]
        # The pooled mean moves with every event, so every arm's estimate does (O(k d)); the
        # decay factor scales both sums alike and leaves it as it is.
        total = float(self._counts.sum())
        self._offset = float(self._reward_sums.sum()) / total if total > 0.0 else 0.0
        np.subtract(self._theta_b, self._offset * self._theta_s, out=self._theta)

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        linear.accumulate_means(self._reward_sums, self._x_sums, arms, X, rewards, weights)
        super()._accumulate(arms, X, rewards, weights)

    def _learn_row(self, a: int, x: np.ndarray, r: float) -> bool:
        offset = linear.learn_one_centred(
            self._S, self._b, self._counts, self._reward_sums, self._x_sums, self._Ainv,
            self._theta_b, self._theta_s, self._theta, a, x, r, 1.0)
        if offset != offset:  # NaN: x or r not finite
            return False
        self._offset = offset
        return True

    def _noise(self, n: int, rng: Rng | np.ndarray) -> np.ndarray:
        if isinstance(rng, np.ndarray):  # caller's uniforms, through the normal quantile
            Z = special.ndtri(np.clip(rng[:, 2:], _TINY, None))
        elif rng is None:
            Z = self._normals.take(n)
        else:
            Z = _as_rng(rng).standard_normal((n, self.n_arms))
        return np.ascontiguousarray(self.v * Z)

    def _noise_one(self, rng: Rng) -> np.ndarray:
        return self._noise(1, rng)[0]

    def _grow(self, features: np.ndarray | None) -> None:
        super()._grow(features)
        d = self.dim
        self._theta_b = np.ascontiguousarray(np.concatenate([self._theta_b, np.zeros((1, d))]))
        self._theta_s = np.ascontiguousarray(np.concatenate([self._theta_s, np.zeros((1, d))]))
        self._normals = _DrawBuffer(self._rng, self.n_arms, normal=True)

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, bonus = super()._expectation(X, arms)
        return mean + self._offset, bonus

    # Its probabilities are the quadrature's, not a floor's: the generic path.
    decide_row_vector = Policy.decide_row_vector

    def decide_row(self, x: np.ndarray, mask: np.ndarray | None,
                   u: np.ndarray) -> tuple[int, float, float, float]:
        if self._dirty:
            self._refresh()
        noise = self.v * special.ndtri(np.clip(u[2:], _TINY, None))  # as _noise, for one row
        arm, p, mean, bonus = single.lints_decide(
            self._theta, self._Ainv, x, noise, self._active if mask is None else mask, u,
            self.v, _GL_NODES, _GL_WEIGHTS, _RADIUS, _STEPS)
        if arm < 0:
            return Policy.decide_row(self, x, mask, u)
        return arm, p, mean + self._offset, bonus

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not with_propensities:
            return super()._choose(X, mask, rng, with_propensities)[0], None
        # One pass: each row's moments serve both its draw and its propensity.
        self._refresh()
        n = X.shape[0]
        U = self._draw_uniforms(n, rng)
        arms = np.empty(n, dtype=np.int64)
        probs = np.empty(n)
        per_row = mask.shape[0] > 1
        start = 0
        for Z in self._normal_blocks(n, rng):
            end = start + Z.shape[0]
            linear.thompson_choose(self._theta, self._Ainv, X[start:end], Z,
                                   mask[start:end] if per_row else mask, U[start:end], self.v,
                                   _GL_NODES, _GL_WEIGHTS, _RADIUS, _STEPS, arms[start:end],
                                   probs[start:end])
            start = end
        return arms, probs

    def _normal_blocks(self, n: int, rng: Rng | np.ndarray) -> Iterator[np.ndarray]:
        """The standard normals of ``_noise`` (before the factor v), in blocks of rows: a
        batch's (n, n_arms) draws are never all in memory at once (fresh memory is slow to
        touch the first time)."""
        if rng is None:
            yield from self._normals.take_blocks(n, _BLOCK)
            return
        draws = rng if isinstance(rng, np.ndarray) else None
        gen = None if isinstance(rng, np.ndarray) else _as_rng(rng)
        block = np.empty((min(_BLOCK, n), self.n_arms))
        for start in range(0, n, _BLOCK):
            out = block[: min(_BLOCK, n - start)]
            if draws is not None:  # the caller's uniforms, through the normal quantile
                np.clip(draws[start : start + out.shape[0], 2:], _TINY, None, out=out)
                special.ndtri(out, out=out)
            elif gen is not None:
                gen.standard_normal(out=out)
            yield out

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mean, sd = self._moments(X)
        out = np.empty_like(mean)
        choice.gaussian_max_probabilities(mean, self.v * sd, mask, _GL_NODES, _GL_WEIGHTS,
                                          _RADIUS, _STEPS, out)
        return out

    def _scores(self, X: np.ndarray) -> np.ndarray:
        # The pooled mean is every arm's, so the choices and their probabilities (from the
        # moments without it) are the same with it.
        return self._moments(X)[0] + self._offset

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        del params["epsilon"]
        return {**params, "v": self.v}
