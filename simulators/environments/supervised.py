"""Supervised data turned into bandit feedback: arm = class, reward 1 when the arm is the label.

The classic conversion (as in Dudik et al. 2011 and Bietti et al.'s contextual bandit
bake-off): a policy sees a row's features, picks a class, and learns only whether that one
guess was right. The ground truth of a context x and arm a is the share of the dataset's rows
equal to x whose label is a (1 or 0 for a row that occurs once), so regret against the oracle
is exact.
"""

from __future__ import annotations

import numpy as np

from bandit.errors import InvalidInputError
from simulators.environments.base import Environment


class SupervisedBandit(Environment):
    """A classification set (X, y) as a bandit environment, one arm per class.

    X (n, d) finite features, y (n,) integer labels in 0..n_classes-1. Contexts are rows drawn
    uniformly with replacement, with a leading intercept: (n, d + 1). Arm features are the
    one-hot class (n_classes, n_classes). With drift, the class that earns the reward moves
    from the label y to y + 1 (mod n_classes): the probabilities blend linearly, so halfway
    both earn it half the time. With ``new_arm_at`` the last class can only be guessed from
    that step on.

    >>> X, y = gaussian_blobs(n=200, seed=0)
    >>> env = SupervisedBandit(X, y)
    >>> contexts = env.contexts(3, np.random.default_rng(0))
    >>> contexts.shape, env.expected_rewards(contexts).sum(axis=1)
    ((3, 6), array([1., 1., 1.]))
    """

    slot = "class"

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        class_names: tuple[str, ...] | None = None,
        name: str = "supervised",
        drift_steps: int | None = None,
        new_arm_at: int | None = None,
    ) -> None:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise InvalidInputError(f"X: expected a non-empty (n, d) array, got shape {X.shape}")
        if y.shape != (X.shape[0],):
            raise InvalidInputError(f"y: expected ({X.shape[0]},) labels, got shape {y.shape}")
        if y.dtype.kind not in "iu":
            raise InvalidInputError(f"y: expected integer labels, got dtype {y.dtype}")
        if not np.isfinite(X).all():
            row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise InvalidInputError(f"X row {row}: not finite")
        n_classes = int(y.max()) + 1 if class_names is None else len(class_names)
        if y.min() < 0 or y.max() >= n_classes:
            row = int(np.flatnonzero((y < 0) | (y >= n_classes))[0])
            raise InvalidInputError(f"y row {row}: label {y[row]} outside 0..{n_classes - 1}")
        if n_classes < 2:
            raise InvalidInputError(f"need at least 2 classes, got {n_classes}")
        self.name = name
        self.arm_names = class_names or tuple(f"class{c}" for c in range(n_classes))
        self.dim = X.shape[1] + 1
        self.arm_features = np.eye(n_classes)
        self._X = np.ascontiguousarray(X)
        # Identical rows share one truth: the label shares among them.
        unique, inverse = np.unique(self._X, axis=0, return_inverse=True)
        counts = np.zeros((unique.shape[0], n_classes))
        np.add.at(counts, (inverse.ravel(), y), 1.0)
        self._shares = counts / counts.sum(axis=1, keepdims=True)
        self._row_of = {row.tobytes(): i for i, row in enumerate(unique)}
        classes = np.arange(n_classes)
        super().__init__(n_classes, classes, np.roll(classes, 1), drift_steps=drift_steps,
                         new_arm_at=new_arm_at)

    def contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        X = np.empty((n, self.dim))
        X[:, 0] = 1.0
        X[:, 1:] = self._X[rng.integers(self._X.shape[0], size=n)]
        return X

    def _logits(self, X: np.ndarray, truth: np.ndarray) -> np.ndarray:
        # Here the "logits" are the reward probabilities themselves (the link is the identity),
        # so drift blends them linearly; truth[a] is the label that pays arm a.
        try:
            rows = [self._row_of[row.tobytes()] for row in np.ascontiguousarray(X[:, 1:])]
        except KeyError:
            known = {row.tobytes() for row in np.ascontiguousarray(X[:, 1:])} - set(self._row_of)
            first = next(i for i, row in enumerate(np.ascontiguousarray(X[:, 1:]))
                         if row.tobytes() in known)
            raise InvalidInputError(f"context row {first}: not a row of the dataset") from None
        return self._shares[rows][:, truth]

    def _link(self, logits: np.ndarray) -> np.ndarray:
        return logits


def gaussian_blobs(
    n: int = 2000, n_classes: int = 4, dim: int = 5, seed: int = 0, spread: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """A small classification set made here (no download): n rows (n, dim) around n_classes
    random centres in N(0, spread^2 I), unit noise; labels (n,) int64 in 0..n_classes-1.
    With the default spread classes overlap a little, so a linear classifier is not perfect."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(n_classes, dim))
    y = rng.integers(n_classes, size=n)
    X = centres[y] + rng.normal(size=(n, dim))
    return X, y.astype(np.int64)
