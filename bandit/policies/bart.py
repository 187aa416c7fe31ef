"""BaRT (``Bart``): one Bayesian ridge shared by every arm over the context, the arm's features
and their interactions; epsilon-greedy over its mean."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from bandit.errors import InvalidInputError
from bandit.kernels import choice, linear
from bandit.policies.base import Policy, Rng, _arm_feature_row, _finite_float, _ridge_inverse


class Bart(Policy):
    """BaRT (McInerney et al., RecSys 2018): one reward model shared by every arm of a slot,
    over the context x (d,), the arm's features f_a (m,) and their pairwise interactions,
    phi(x, a) = [x, f_a, x (x) f_a], fitted as a Bayesian ridge (the paper's factorization
    machine, here exact because d * m stays small); epsilon-greedy over its mean, so the
    propensities are exact. A new arm is scored from its features on day one.

    >>> F = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    >>> policy = Bart(dim=1, arm_features=F, epsilon=0.0, rng=0)
    >>> policy.learn_many(np.array([0, 1, 0, 1]), np.ones((4, 1)), np.array([1.0, 0.0, 1.0, 0.0]))
    >>> policy.choose_one(np.array([1.0]))
    0
    """

    kind = "bart"
    _sum_names = ("arm_features", "S", "b", "counts")
    _per_arm = frozenset(("arm_features", "counts"))
    _shape_params = ("arm_features",)
    _grams = ("S",)

    def __init__(self, dim: int, arm_features: Any, epsilon: float = 0.1, l2: float = 1.0,
                 half_life_ms: float | None = None, rng: Rng = None) -> None:
        F = np.asarray(arm_features, dtype=np.float64)
        if F.ndim != 2 or F.shape[0] < 1 or F.shape[1] < 1 or not np.isfinite(F).all():
            raise InvalidInputError(
                f"arm_features: expected a finite (n_arms, m) array, got shape {F.shape}"
            )
        super().__init__(F.shape[0], dim, half_life_ms=half_life_ms, rng=rng)
        self.epsilon = _finite_float("epsilon", epsilon, low=0.0, high=1.0)
        self.l2 = _finite_float("l2", l2, low=0.0, low_open=True)
        p = self.dim + F.shape[1] + self.dim * F.shape[1]
        self._arm_features = np.ascontiguousarray(F.copy())
        self._S = np.zeros((1, p, p))  # one shared model: the kernels see a single "arm"
        self._b = np.zeros((1, p))
        self._counts = np.zeros(self.n_arms)
        self._dirty = True

    @property
    def arm_features(self) -> np.ndarray:
        """(n_arms, m) the features of every arm."""
        return self._arm_features.copy()

    def _phi(self, X: np.ndarray, arms: np.ndarray) -> np.ndarray:
        """(n, p) interaction features of each row with its arm."""
        F = self._arm_features[arms]
        (n, d), m = X.shape, F.shape[1]
        out = np.empty((n, d + m + d * m))  # written in place: no temporaries of (n, p)
        out[:, :d] = X
        out[:, d:d + m] = F
        np.multiply(X[:, :, None], F[:, None, :], out=out[:, d + m:].reshape(n, d, m))
        return out

    def add_arm(self, features: Any = None) -> int:
        row = _arm_feature_row(features, self._arm_features.shape[1])
        self._grow_arrays({"arm_features": row})
        return self.n_arms - 1

    def _state_changed(self) -> None:
        self._dirty = True

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        # phi is formed a row at a time inside the kernel: an (n, p) matrix of the batch
        # would be written and read back from memory (bench_worker's S5 learn stage).
        linear.accumulate_interactions(self._S[0], self._b[0], arms, X, self._arm_features,
                                       rewards, weights)
        np.add.at(self._counts, arms, weights)  # row by row, as the sums: see BetaTS
        self._dirty = True

    def _refresh(self) -> None:
        if not self._dirty:
            return
        p = self._S.shape[1]
        S, b = self._S, self._b
        if (now := self._decayed()) != 1.0:
            S, b = now * S, now * b
        try:
            theta = np.linalg.solve(S[0] + self.l2 * np.eye(p), b[0])
        except np.linalg.LinAlgError:
            theta = np.full(p, np.nan)
        if not np.isfinite(theta).all():  # rounding made S + l2 I singular: see _ridge_inverse
            theta = _ridge_inverse(None, S, self.l2)[0] @ b[0]
        d, m = self.dim, self._arm_features.shape[1]
        self._theta_x, self._theta_f = theta[:d], theta[d : d + m]
        self._theta_xf = theta[d + m :].reshape(d, m)
        self._dirty = False

    def _scores(self, X: np.ndarray) -> np.ndarray:
        # theta . phi(x, a) = x.theta_x + f_a.theta_f + x^T Theta_xf f_a, for all rows and arms
        # in three matrix products.
        self._refresh()
        F = self._arm_features
        return ((X @ self._theta_x)[:, None] + (F @ self._theta_f)[None, :]
                + (X @ self._theta_xf) @ F.T)

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n = X.shape[0]
        arms, probs = np.empty(n, dtype=np.int64), np.empty(n)
        choice.choose_floor(np.ascontiguousarray(self._scores(X)), mask, self.epsilon,
                            self._draw_uniforms(n, rng), arms, probs)
        return arms, probs

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_arms))
        choice.floor_probabilities(np.ascontiguousarray(self._scores(X)), mask, self.epsilon, out)
        return out

    # What decide_row reuses between refreshes and arm additions (see _row_terms).
    _row_cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _row_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parts of _scores and _expectation that do not depend on x, computed as they
        compute them: F theta_f (1, n_arms), F^T and the concatenated coefficients (p,); kept
        until _refresh makes new coefficients or an arm is added (both make new arrays)."""
        self._refresh()
        cached = self._row_cache
        if cached is None or cached[0] is not self._theta_f or cached[1] is not self._arm_features:
            F = self._arm_features
            cached = self._row_cache = (
                self._theta_f, F, (F @ self._theta_f)[None, :], F.T,
                np.concatenate([self._theta_x, self._theta_f, self._theta_xf.ravel()]))
        return cached[2:]

    def decide_row(self, x: np.ndarray, mask: np.ndarray | None,
                   u: np.ndarray) -> tuple[int, float, float, float]:
        return self._decide_row(x, mask, u, None)

    def decide_row_vector(self, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray,
                          vector: np.ndarray) -> tuple[int, float, float, float]:
        return self._decide_row(x, mask, u, vector)

    def _decide_row(self, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray,
                    vector: np.ndarray | None) -> tuple[int, float, float, float]:
        # The products stay NumPy's (BLAS) in the batch path's shapes, so every bit agrees;
        # what does not depend on x is cached, and the choice is one kernel call (the floor's
        # distribution, for ``vector``, one more over the same scores).
        f_theta, F_T, coefficients = self._row_terms()
        X = x[None, :]
        scores = (X @ self._theta_x)[:, None] + f_theta + (X @ self._theta_xf) @ F_T
        m = self._active if mask is None else mask
        arm, p = choice.pick(scores[0], m, self.epsilon, u[0], u[1])
        if arm < 0:
            return super().decide_row(x, mask, u)
        if vector is not None:
            choice.floor_probabilities(scores, m[None, :], self.epsilon, vector[None, :])
        f = self._arm_features[arm]
        phi = np.concatenate((x, f, np.multiply.outer(x, f).ravel()))[None, :]
        return arm, p, float((phi @ coefficients)[0]), 0.0

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        return (self._phi(X, arms) @ np.concatenate(
            [self._theta_x, self._theta_f, self._theta_xf.ravel()]), np.zeros(X.shape[0]))

    def contributions(self, X: Any, arms: Any) -> np.ndarray:
        """(n, dim): each context feature's share of the arm's expected reward,
        x[j] (theta_x[j] + (Theta_xf f_a)[j]); the arm-only part is left out."""
        X = self._contexts(X)
        arms = self._arm_array(arms, X.shape[0])
        self._refresh()
        return X * (self._theta_x[None, :] + self._arm_features[arms] @ self._theta_xf.T)

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "epsilon": self.epsilon, "l2": self.l2,
                "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        return cls(**params, arm_features=np.asarray(arrays["arm_features"]), rng=rng)
