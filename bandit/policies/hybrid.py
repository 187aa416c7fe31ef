"""Hybrid LinUCB (``HybridLinUCB``): a model shared by all arms over context x arm features,
plus a ridge model per arm."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from scipy.linalg import lapack

from bandit.errors import InvalidInputError
from bandit.kernels import hybrid, linear
from bandit.policies.base import Rng, _arm_feature_row, _finite_float, _ridge_inverse
from bandit.policies.linear import _REFACTOR_EVERY, _LinearScoring


class HybridLinUCB(_LinearScoring):
    """Hybrid LinUCB (Li et al. 2010, Algorithm 2): a model shared by all arms over
    z = x (x) f_a (context times arm features) plus a disjoint ridge model per arm.

    A new arm has no data of its own but is scored on day one through the shared part.
    ``arm_features`` (n_arms, m). Exploration floor ``epsilon`` as in LinUCB.

    >>> F = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> policy = HybridLinUCB(dim=1, arm_features=F, alpha=0.0, epsilon=0.0, rng=0)
    >>> policy.learn_many(np.array([1, 1]), np.ones((2, 1)), np.array([1.0, 1.0]))
    >>> policy.choose_one(np.array([1.0]))
    1
    """

    kind = "hybrid_lin_ucb"
    # The shared sums of Algorithm 2 (of z z^T, r z and x z^T) are functions of these, since an
    # event's z = M_a x is fixed by its arm (bandit.kernels.hybrid): only per-arm sums are kept.
    _sum_names = ("arm_features", "Sxx", "bx", "counts")
    _per_arm = frozenset(_sum_names)
    _shape_params = ("arm_features",)
    _grams = ("Sxx",)

    def __init__(self, dim: int, arm_features: Any, alpha: float = 1.0, l2: float = 1.0,
                 epsilon: float = 0.05, half_life_ms: float | None = None, rng: Rng = None) -> None:
        F = np.asarray(arm_features, dtype=np.float64)
        if F.ndim != 2 or F.shape[0] < 1 or F.shape[1] < 1 or not np.isfinite(F).all():
            raise InvalidInputError(
                f"arm_features: expected a finite (n_arms, m) array, got shape {F.shape}"
            )
        super().__init__(F.shape[0], dim, half_life_ms=half_life_ms, rng=rng)
        self.alpha = self._alpha = _finite_float("alpha", alpha, low=0.0)
        self.l2 = _finite_float("l2", l2, low=0.0, low_open=True)
        self.epsilon = _finite_float("epsilon", epsilon, low=0.0, high=1.0)
        k, d = self.n_arms, self.dim
        self._arm_features = np.ascontiguousarray(F.copy())
        self._Sxx = np.zeros((k, d, d))
        self._bx = np.zeros((k, d))
        self._counts = np.zeros(k)
        self._dirty = True
        self._updates = 0  # events learned one at a time since the last refactorization

    @property
    def arm_features(self) -> np.ndarray:
        """(n_arms, m) the features of every arm."""
        return self._arm_features.copy()

    def add_arm(self, features: Any = None) -> int:
        row = _arm_feature_row(features, self._arm_features.shape[1])
        self._grow_arrays({"arm_features": row})
        self._dirty = True
        return self.n_arms - 1

    def _state_changed(self) -> None:
        self._dirty = True

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        # A batch of events learned too small to pay for a refactorization (a replay's few kept
        # events) takes learn_one's rank-one updates, row by row; it adds the same sums.
        n, d, k = X.shape[0], self.dim, self.n_arms
        p = d * self._arm_features.shape[1]
        per_row, refactor = 3 * p * p + 4 * k * d * d, p**3 + k * p * p + 3 * k * d**3
        if (not self._dirty and self.half_life_ms is None and n * per_row < refactor
                and self._updates + n <= _REFACTOR_EVERY and (weights == 1.0).all()):
            hybrid.learn_rows(self._Sxx, self._bx, self._counts, self._arm_features, self._A_inv,
                              self._A0_inv, self._N, self._c, self._b0, self._beta, self._Mbeta,
                              self._theta, self._Ainv, self.l2, arms, X, rewards)
            self._updates += n
            return
        linear.accumulate(self._Sxx, self._bx, self._counts, arms, X, rewards, weights)
        self._dirty = True

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        # Without decay, one event moves every factor by rank-one updates (hybrid.learn_one)
        # instead of a refactorization; every _REFACTOR_EVERY events the factors are rebuilt
        # from the sums, which bounds the rounding the updates build up.
        if self.half_life_ms is not None:
            super().learn_one(arm, x, reward, ts_ms=ts_ms)
            return
        a = self._arm(arm)
        x = self._shaped(x)
        if self._dirty or self._updates >= _REFACTOR_EVERY:
            self._dirty = True
            self._refresh()
        r = reward if type(reward) is float else self._reward(reward)
        if not hybrid.learn_one(self._Sxx, self._bx, self._counts, self._arm_features,
                                self._A_inv, self._A0_inv, self._N, self._c, self._b0,
                                self._beta, self._Mbeta, self._theta, self._Ainv, self.l2, a, x,
                                r):
            raise InvalidInputError(f"x or reward: contains NaN or inf (reward={reward!r})")
        self._updates += 1

    def _refresh(self) -> None:
        # Every arm's statistics enter the shared A0, so any change refreshes everything:
        # O(k d^2 m^2 + p^3) once per batch of learning, never per decision.
        if not self._dirty:
            return
        d, p, l2 = self.dim, self.dim * self._arm_features.shape[1], self.l2
        F, Sxx, bx = self._arm_features, self._Sxx, self._bx
        if (now := self._decayed()) != 1.0:
            Sxx, bx = now * Sxx, now * bx
        try:
            A_inv = np.linalg.inv(Sxx + l2 * np.eye(d))
        except np.linalg.LinAlgError:
            A_inv = None
        A_inv = _ridge_inverse(A_inv, Sxx, l2)                       # A_a^-1, (k, d, d)
        # With B_a = Sxx_a M_a^T (M_a = I_d (x) f_a, z = M_a x) Algorithm 2's Schur complement
        # is A0 = l2 I + sum_a M_a C_a M_a^T with C_a = Sxx_a - Sxx_a A_a^-1 Sxx_a
        # = l2 Sxx_a A_a^-1, and b0 = sum_a M_a c_a with c_a = l2 A_a^-1 b_a.
        C = l2 * (Sxx @ A_inv)
        C = 0.5 * (C + np.swapaxes(C, 1, 2))
        c = l2 * (A_inv @ bx[..., None])[..., 0]
        A0, b0 = l2 * np.eye(p), np.zeros(p)
        hybrid.kron_sum(np.ascontiguousarray(C), F, A0)
        hybrid.kron_vector_sum(np.ascontiguousarray(c), F, b0)
        A0_inv = _spd_inverse(A0, l2)
        beta = A0_inv @ b0
        # The score is linear in x (see the module docstring of bandit.kernels.hybrid): mean
        # x.(theta_a + M_a^T beta) with theta_a = A_a^-1 (b_a - B_a beta), width^2 x^T Q_a x with
        # W_a = M_a - B_a^T A_a^-1 = l2 M_a A_a^-1 and Q_a = W_a^T A0^-1 W_a + A_a^-1.
        k = self.n_arms
        Mbeta, N = np.empty((k, d)), np.empty((k, d, d))
        hybrid.kron_vectors(beta, F, Mbeta)                            # M_a^T beta
        hybrid.kron_forms(np.ascontiguousarray(A0_inv), F, N)          # M_a^T A0^-1 M_a
        Q = A_inv + l2 * l2 * (A_inv @ N @ A_inv)
        self._Ainv = np.ascontiguousarray(0.5 * (Q + np.swapaxes(Q, 1, 2)))
        Ainv_b = (A_inv @ bx[..., None])[..., 0]
        self._theta = np.ascontiguousarray(Ainv_b + l2 * (A_inv @ Mbeta[..., None])[..., 0])
        # What learn_one updates in place, from the same sums.
        self._A_inv, self._A0_inv, self._N = (np.ascontiguousarray(A_inv),
                                              np.ascontiguousarray(A0_inv), N)
        self._c, self._b0, self._beta, self._Mbeta = np.ascontiguousarray(c), b0, beta, Mbeta
        self._dirty = False
        self._updates = 0

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "alpha": self.alpha, "l2": self.l2, "epsilon": self.epsilon,
                "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        return cls(**params, arm_features=np.asarray(arrays["arm_features"]), rng=rng)


def _spd_inverse(A0: np.ndarray, l2: float) -> np.ndarray:
    """(A0)^-1 for A0 = l2 I + a PSD sum (p, p), from its Cholesky factor (LAPACK potrf and
    potri: a third of the work of a general inverse) if A0 is PD; otherwise, or if the inverse
    is not sane, through its eigendecomposition (``_ridge_inverse``): rounding can hide the PSD
    part."""
    p = A0.shape[0]
    A0_inv = None
    L, info = lapack.dpotrf(0.5 * (A0 + A0.T), lower=1, clean=0)
    if info == 0:
        inv, info = lapack.dpotri(L, lower=1)
        if info == 0:
            A0_inv = np.tril(inv) + np.tril(inv, -1).T
    return _ridge_inverse(None if A0_inv is None else A0_inv[None],
                          (A0 - l2 * np.eye(p))[None], l2)[0]
