"""Hybrid LinUCB (``HybridLinUCB``): a model shared by all arms over context x arm features,
plus a ridge model per arm."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from bandit.errors import InvalidInputError
from bandit.kernels import hybrid
from bandit.policies.base import Rng, _arm_feature_row, _finite_float, _ridge_inverse
from bandit.policies.linear import _LinearScoring


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
    _sum_names = ("arm_features", "Szz", "bz", "Sxx", "Sxz", "bx", "counts")
    _per_arm = frozenset(("arm_features", "Sxx", "Sxz", "bx", "counts"))
    _shape_params = ("arm_features",)
    _grams = ("Szz", "Sxx")

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
        k, d, m = self.n_arms, self.dim, F.shape[1]
        p = d * m
        self._arm_features = np.ascontiguousarray(F.copy())
        self._Szz = np.zeros((p, p))
        self._bz = np.zeros(p)
        self._Sxx = np.zeros((k, d, d))
        self._Sxz = np.zeros((k, d, p))
        self._bx = np.zeros((k, d))
        self._counts = np.zeros(k)
        self._dirty = True

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
        hybrid.accumulate(self._Szz, self._bz, self._Sxx, self._Sxz, self._bx, self._counts,
                          arms, X, self._arm_features, rewards, weights)
        self._dirty = True

    def _refresh(self) -> None:
        # Every arm's statistics enter the shared A0, so any change refreshes everything:
        # O(k d^2 p + p^3) once per batch of learning, never per decision.
        if not self._dirty:
            return
        k, d, p = self.n_arms, self.dim, self._Szz.shape[0]
        Szz, bz, Sxx, Sxz, bx = self._Szz, self._bz, self._Sxx, self._Sxz, self._bx
        if (now := self._decayed()) != 1.0:
            Szz, bz, Sxx, Sxz, bx = (now * Szz, now * bz, now * Sxx, now * Sxz, now * bx)
        try:
            A_inv = np.linalg.inv(Sxx + self.l2 * np.eye(d))
        except np.linalg.LinAlgError:
            A_inv = None
        A_inv = _ridge_inverse(A_inv, Sxx, self.l2)
        G = A_inv @ Sxz                                             # A_a^-1 B_a, (k, d, p)
        Ainv_b = (A_inv @ bx[..., None])[..., 0]                    # A_a^-1 b_a, (k, d)
        A0 = self.l2 * np.eye(p) + Szz - np.einsum("kdp,kdq->pq", Sxz, G)
        b0 = bz - np.einsum("kdp,kd->p", Sxz, Ainv_b)
        try:
            L0_inv = np.linalg.inv(np.linalg.cholesky(0.5 * (A0 + A0.T)))
            A0_inv = L0_inv.T @ L0_inv
        except np.linalg.LinAlgError:
            A0_inv = None
        # A0 - l2 I is PSD (a sum of Schur complements); cancellation can hide that.
        A0_inv = _ridge_inverse(None if A0_inv is None else A0_inv[None],
                                (A0 - self.l2 * np.eye(p))[None], self.l2)[0]
        beta = A0_inv @ b0
        theta = Ainv_b - (G @ beta[:, None])[..., 0]
        # Algorithm 2's score is linear in x once z = M_a x is substituted (M_a = I_d (x) f_a):
        # mean x.(theta_a + M_a^T beta), width^2 x^T Q_a x with W_a = M_a - G_a^T and
        # Q_a = W_a^T A0^-1 W_a + A_a^-1. So decisions cost what disjoint LinUCB's cost.
        M = np.einsum("ij,kl->kilj", np.eye(d), self._arm_features).reshape(k, p, d)
        W = M - np.swapaxes(G, 1, 2)
        Q = np.swapaxes(W, 1, 2) @ A0_inv @ W + A_inv
        self._Ainv = np.ascontiguousarray(0.5 * (Q + np.swapaxes(Q, 1, 2)))
        self._theta = np.ascontiguousarray(theta + np.swapaxes(M, 1, 2) @ beta)
        self._dirty = False

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "alpha": self.alpha, "l2": self.l2, "epsilon": self.epsilon,
                "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        return cls(**params, arm_features=np.asarray(arrays["arm_features"]), rng=rng)
