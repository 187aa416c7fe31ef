"""Bandit policies: thin objects that hold additive sums and derived factors and call kernels.

Every policy has the same verbs: ``choose_one(x)``, ``choose_many(X)``, ``scores(X)``,
``propensities(X)``, ``learn_one(arm, x, reward)``, ``learn_many(arms, X, rewards)``,
``merge(other)``, ``state()`` / ``from_state(state)``, ``add_arm()`` and ``retire_arm(arm)``.
Inputs are validated here, once; kernels trust their arrays.

The learned state is a sum over events (plus, with decay, the event time it refers to), so two
policies that learned disjoint parts of a stream merge into the policy that learned all of it.
``learn_many`` adds its rows to the sums one after another, so a sequence of events learned in
any split into calls gives the same sums bit for bit; with ``half_life_ms`` too, since the
sums' reference time moves by whole half-lives at the row that crosses one (a power of two,
exact for a whole-number half-life) and each row is weighed against the reference in force
at that row (``bandit.kernels.decay``).
Inverses and factors are derived from the sums when the state changes and are never part of
the state; between refactorizations the per-event path updates them in O(d^2).
"""

from __future__ import annotations

import math
import operator
from typing import Any, ClassVar, Self

import numpy as np
from scipy import special

from bandit.errors import IncompatibleStateError, InvalidInputError, UnknownArmError
from bandit.kernels import choice, decay, hybrid, linear, single
from bandit.kernels.beta import beta_max_probabilities

__all__ = [
    "Bart",
    "BetaTS",
    "EpsilonGreedy",
    "HybridLinUCB",
    "LinTS",
    "LinUCB",
    "Policy",
    "VWPolicy",
    "from_state",
]

STATE_FORMAT = 1
# Gauss-Legendre rule for the win-probability quadrature (per piece of the breakpoint grid).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
# Each arm counts over RADIUS standard deviations either side of its mean; a quadrature piece
# spans at most RADIUS / STEPS sds of the narrowest arm it overlaps: max error 2e-11 against
# adaptive quadrature on W1 rows (5e-12 on random K <= 8 posteriors; STEPS 3 gave 3e-9), 23 us
# per W1 row against 74 us for the former grid (a breakpoint every 7/3 sds of every arm).
_RADIUS, _STEPS = 7.0, 4
# Rank-one (Sherman-Morrison) updates an arm takes before its inverse is recomputed from its
# sums, which bounds the rounding a long chain of updates could build up.
_REFACTOR_EVERY = 1_000

Rng = np.random.Generator | int | None
_TINY = np.finfo(np.float64).tiny  # keeps the normal quantile of a 0.0 draw finite


def _as_rng(rng: Rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool) and rng >= 0):
        return np.random.default_rng(rng)
    raise InvalidInputError(f"rng: expected a numpy Generator or a seed >= 0, got {rng!r}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _finite_float(name: str, value: Any, *, low: float = -math.inf, low_open: bool = False,
                  high: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < low or v > high or (
        low_open and v == low
    ):
        bound = f"{'>' if low_open else '>='} {low}" if low > -math.inf else ""
        if high < math.inf:
            bound = f"{bound} and <= {high}" if bound else f"<= {high}"
        raise InvalidInputError(f"{name}: expected a finite number {bound}, got {value!r}".rstrip())
    return v


def _ridge_inverse(Ainv: np.ndarray | None, S: np.ndarray, l2: float) -> np.ndarray:
    """``Ainv`` (m, d, d), the caller's (S_i + l2 I)^-1 for PSD sums S (m, d, d), if it is
    sane (finite, diagonal at most 1/l2, as every such inverse's is); otherwise (None, or
    rounding made S + l2 I numerically singular: squares of features near FEATURE_LIMIT,
    repeated, swamp l2) the inverse through S's eigendecomposition, eigenvalues floored at
    0: finite, symmetric, PD and at most 1/l2, with l2 never added to the huge entries."""
    if Ainv is not None and np.isfinite(Ainv).all() and (
            np.diagonal(Ainv, axis1=-2, axis2=-1) <= (1.0 + 1e-6) / l2).all():
        return Ainv
    lam, V = np.linalg.eigh(0.5 * (S + np.swapaxes(S, -1, -2)))
    return np.ascontiguousarray(
        (V / (np.maximum(lam, 0.0) + l2)[..., None, :]) @ np.swapaxes(V, -1, -2))


class _DrawBuffer:
    """Random draws taken ahead in blocks, so one decision does not pay a Generator call."""

    def __init__(self, rng: np.random.Generator, width: int, normal: bool, block: int = 2048):
        self._rng, self._width, self._normal, self._block = rng, width, normal, block
        self._buf = np.empty((0, width))
        self._i = 0

    def take(self, n: int) -> np.ndarray:
        """The next n rows, (n, width), C-contiguous."""
        if self._i + n > self._buf.shape[0]:
            size = (max(self._block, n), self._width)
            self._buf = self._rng.standard_normal(size) if self._normal else self._rng.random(size)
            self._i = 0
        out = self._buf[self._i : self._i + n]
        self._i += n
        return out


class _PairBuffer:
    """Uniform pairs for single decisions, as Python floats (unpacking a NumPy row costs more
    than the decision's arithmetic)."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng, self._block = rng, block
        self._values: list[float] = []
        self._i = 0

    def pair(self) -> tuple[float, float]:
        i = self._i
        if i + 2 > len(self._values):
            self._values = self._rng.random(self._block).tolist()
            i = 0
        self._i = i + 2
        return self._values[i], self._values[i + 1]


class Policy:
    """What every policy shares: arms (active or retired), randomness, validation, decay.

    Subclasses provide the sums (``_sum_names``), how events add to them and how decisions are
    scored. ``half_life_ms`` turns on exponential forgetting in event time: an event weighs
    2^-(age / half_life) at the newest event time learned (``t_newest``), the model's now. The
    sums are kept as seen from ``t_ref``, less than a half-life before ``t_newest`` and moved
    by whole half-lives (``bandit.kernels.decay``); the models scale them to ``t_newest``
    (``_decayed``).
    """

    kind: ClassVar[str]
    _sum_names: ClassVar[tuple[str, ...]]
    _min_dim: ClassVar[int] = 1

    def __init__(self, n_arms: int, dim: int, *, half_life_ms: float | None, rng: Rng) -> None:
        self.n_arms = _positive_int("n_arms", n_arms)
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < self._min_dim:
            raise InvalidInputError(f"dim: expected an integer >= {self._min_dim}, got {dim!r}")
        self.dim = int(dim)
        self.half_life_ms = (
            None if half_life_ms is None
            else _finite_float("half_life_ms", half_life_ms, low=0.0, low_open=True)
        )
        self._rng = _as_rng(rng)
        self._active = np.ones(self.n_arms, dtype=np.bool_)
        self._all_active = self._active[None, :]
        self._t_ref: float | None = None
        self._t_newest: float | None = None
        self._uniforms = _DrawBuffer(self._rng, 2, normal=False)
        self._pairs = _PairBuffer(self._rng)

    # -- public verbs ---------------------------------------------------------------------

    @property
    def active(self) -> np.ndarray:
        """(n_arms,) bool: True for arms that can be chosen, False for retired ones."""
        return self._active.copy()

    def choose_one(self, x: Any = None, *, eligible: Any = None, rng: Rng = None) -> int:
        """Choose an arm for one context x (dim,)."""
        X = self._context(x)[None, :]
        arms, _ = self._choose(X, self._mask(eligible, 1), rng, with_propensities=False)
        return int(arms[0])

    def choose_many(self, X: Any, *, eligible: Any = None, rng: Rng = None, draws: Any = None,
                    with_propensities: bool = False):
        """Choose an arm per row of X (n, dim): arms (n,) int64, and their probabilities (n,)
        when ``with_propensities``. ``eligible`` is a bool mask (n_arms,) or (n, n_arms).

        ``draws`` (n, 2 + n_arms) uniforms in [0, 1) replace the generator, so a caller that
        derives them from a decision's id makes every decision reproducible on its own:
        columns 0-1 drive exploration and tie-breaks (Beta TS samples its exact win
        probabilities with column 1), columns 2.. the per-arm noise of linear TS.
        """
        X = self._contexts(X)
        source = rng if draws is None else self._draws(draws, X.shape[0])
        arms, probs = self._choose(X, self._mask(eligible, X.shape[0]), source, with_propensities)
        return (arms, probs) if with_propensities else arms

    def propensities(self, X: Any, *, eligible: Any = None) -> np.ndarray:
        """(n, n_arms): the probability that each arm is chosen for each row; 0 off the mask."""
        X = self._contexts(X)
        return self._propensities(X, self._mask(eligible, X.shape[0]))

    def scores(self, X: Any) -> np.ndarray:
        """(n, n_arms): the value each arm is ranked by (its mean for sampling policies);
        -inf for retired arms."""
        X = self._contexts(X)
        out = self._scores(X)
        out[:, ~self._active] = -np.inf
        return out

    def expectation(self, X: Any, arms: Any) -> tuple[np.ndarray, np.ndarray]:
        """For each row of X (n, dim) and its arm (n,): the expected reward and the exploration
        bonus the policy gives that arm (UCB bonus, posterior scale, or 0 for greedy)."""
        X = self._contexts(X)
        return self._expectation(X, self._arm_array(arms, X.shape[0]))

    def decide_row(self, x: np.ndarray, mask: np.ndarray | None,
                   u: np.ndarray) -> tuple[int, float, float, float]:
        """One decision, for the engine's single-row path: (arm, propensity, expected reward,
        exploration bonus), what ``choose_many(x[None], eligible=mask, draws=u[None],
        with_propensities=True)`` and ``expectation`` give for that row, bit for bit.

        x (dim,) float64, mask (n_arms,) bool eligible active arms (at least one; None: every
        active arm), u (2 + n_arms,) the decision's uniforms. The linear policies, Bart and
        Beta TS override it with a fused path that trusts a finite x (the engine's rows are)
        and comes back here for anything else; this one takes the checked batch calls.
        """
        X = x[None, :]
        arms, probs = self.choose_many(X, eligible=mask, draws=u[None, :], with_propensities=True)
        mean, bonus = self.expectation(X, arms)
        return int(arms[0]), float(probs[0]), float(mean[0]), float(bonus[0])

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        """Learn that ``arm`` got ``reward`` in context x (dim,), at event time ``ts_ms``."""
        a = self._arm(arm)
        r = self._reward(reward)
        if self.half_life_ms is not None:
            ts = None if ts_ms is None else np.array([ts_ms], dtype=np.float64)
            self.learn_many(np.array([a]), self._context(x)[None, :], np.array([r]), ts_ms=ts)
            return
        self._learn_one(a, x, r)

    def learn_many(self, arms: Any, X: Any, rewards: Any, *, ts_ms: Any = None) -> None:
        """Learn a batch: arms (n,) ints, X (n, dim), rewards (n,), ts_ms (n,) event times."""
        X = self._contexts(X)
        n = X.shape[0]
        arms = self._arm_array(arms, n)
        rewards = self._reward_array(rewards, n)
        if n == 0:
            return
        if self.half_life_ms is None:
            self._accumulate(arms, X, rewards, np.ones(n))
            return
        ts = self._event_times(ts_ms, n)
        weights, moves, factors = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n)
        runs, t_ref = decay.weights(ts, self.half_life_ms,
                                    math.nan if self._t_ref is None else self._t_ref,
                                    weights, moves, factors)
        # Where the reference moves, the sums learned so far move with it, then the next rows
        # are added: the order of operations is the rows' own, whatever the batching.
        lo = 0
        for r in range(runs):
            hi = int(moves[r])
            if hi > lo:
                self._accumulate(arms[lo:hi], X[lo:hi], rewards[lo:hi], weights[lo:hi])
            self._scale(float(factors[r]))
            lo = hi
        self._accumulate(arms[lo:], X[lo:], rewards[lo:], weights[lo:])
        newest = float(ts.max())
        self._t_ref = t_ref
        if self._t_newest is None or newest > self._t_newest:
            self._t_newest = newest
            self._state_changed()  # every arm's model moves to the new now

    def add_arm(self, features: Any = None) -> int:
        """Add an arm that starts from the prior; returns its index."""
        if features is not None:
            raise InvalidInputError(f"{self.kind} arms have no features; got {features!r}")
        self._grow(None)
        return self.n_arms - 1

    def retire_arm(self, arm: int) -> None:
        """Never choose ``arm`` again (probability 0); its sums stay, late rewards still count."""
        a = self._arm(arm)
        if self._active.sum() == 1 and self._active[a]:
            raise InvalidInputError(f"arm {a} is the last active arm; add another before retiring it")
        self._active[a] = False
        self._arms_changed()

    def _arms_changed(self) -> None:
        self._all_active = self._active[None, :]

    def state(self) -> dict[str, Any]:
        """Everything learned, as plain data: kind, format, params, the time the sums refer
        to (``t_ref_ms``) and the newest event time learned (``t_newest_ms``), both None
        without decay or events, and arrays."""
        arrays = {name: getattr(self, "_" + name).copy() for name in self._sum_names}
        arrays["active"] = self._active.copy()
        return {
            "kind": self.kind,
            "format": STATE_FORMAT,
            "params": self._params(),
            "t_ref_ms": self._t_ref,
            "t_newest_ms": self._t_newest,
            "arrays": arrays,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, rng: Rng = None) -> Self:
        """Rebuild a policy from ``state()``; a state of another kind or shape is refused."""
        check_state_header(state, cls.kind)
        arrays = state.get("arrays")
        if not isinstance(arrays, dict):
            raise IncompatibleStateError(f"{cls.kind}: state has no 'arrays' mapping")
        try:
            policy = cls._from_params(state["params"], arrays, rng)
        except KeyError as exc:
            raise IncompatibleStateError(f"{cls.kind}: state is missing {exc}") from None
        except TypeError as exc:
            raise IncompatibleStateError(f"{cls.kind}: bad params in state: {exc}") from None
        # A state without t_newest_ms (written before it existed) has sums seen from the
        # newest event time itself.
        t_ref = state.get("t_ref_ms")
        t_newest = state.get("t_newest_ms", t_ref)
        if (t_ref is None) != (t_newest is None):
            raise IncompatibleStateError(
                f"{cls.kind}: t_ref_ms and t_newest_ms are both set or both None, got "
                f"{t_ref!r} and {t_newest!r}")
        if t_ref is not None:
            t_ref = _finite_float("t_ref_ms", t_ref)
            t_newest = _finite_float("t_newest_ms", t_newest, low=t_ref)
        policy._t_ref, policy._t_newest = t_ref, t_newest
        for name in (*cls._sum_names, "active"):
            if name not in arrays:
                raise IncompatibleStateError(f"{cls.kind}: state has no array {name!r}")
            target = policy._active if name == "active" else getattr(policy, "_" + name)
            value = np.asarray(arrays[name])
            if value.shape != target.shape:
                raise IncompatibleStateError(
                    f"{cls.kind}: array {name!r} should have shape {target.shape}, got {value.shape}"
                )
            if name != "active" and not np.isfinite(value).all():
                raise IncompatibleStateError(f"{cls.kind}: array {name!r} has NaN or inf")
            if name == "counts" and (value < 0).any():
                raise IncompatibleStateError(f"{cls.kind}: negative counts in state")
            target[...] = value
        if not policy._active.any():
            raise IncompatibleStateError(f"{cls.kind}: state has no active arm")
        policy._arms_changed()
        policy._state_changed()
        return policy

    def merge(self, other: Policy, *, rng: Rng = None) -> Self:
        """The policy that learned both event sets: sums added at a common reference time."""
        if type(other) is not type(self):
            raise IncompatibleStateError(
                f"cannot merge {type(self).__name__} with {type(other).__name__}"
            )
        mine, theirs = self.state(), other.state()
        for what in ("params",):
            if mine[what] != theirs[what]:
                raise IncompatibleStateError(
                    f"cannot merge {self.kind} policies with different {what}: "
                    f"{mine[what]} vs {theirs[what]}"
                )
        if not np.array_equal(mine["arrays"]["active"], theirs["arrays"]["active"]):
            raise IncompatibleStateError(f"cannot merge {self.kind} policies with other active arms")
        for name in self._shape_params:
            if not np.array_equal(mine["arrays"][name], theirs["arrays"][name]):
                raise IncompatibleStateError(f"cannot merge {self.kind} policies with other {name}")
        t_ref = t_newest = None
        scale_mine = scale_theirs = 1.0
        if self.half_life_ms is not None and (mine["t_ref_ms"], theirs["t_ref_ms"]) != (None, None):
            # The later reference; with a whole-number half-life both are on one grid, so the
            # older sums move by an exact power of two.
            t_ref = max(t for t in (mine["t_ref_ms"], theirs["t_ref_ms"]) if t is not None)
            t_newest = max(t for t in (mine["t_newest_ms"], theirs["t_newest_ms"])
                           if t is not None)
            if mine["t_ref_ms"] is not None:
                scale_mine = 2.0 ** (-(t_ref - mine["t_ref_ms"]) / self.half_life_ms)
            if theirs["t_ref_ms"] is not None:
                scale_theirs = 2.0 ** (-(t_ref - theirs["t_ref_ms"]) / self.half_life_ms)
        merged = dict(mine, t_ref_ms=t_ref, t_newest_ms=t_newest, arrays=dict(mine["arrays"]))
        for name in self._sum_names:
            if name in self._shape_params:
                continue
            merged["arrays"][name] = (
                scale_mine * mine["arrays"][name] + scale_theirs * theirs["arrays"][name]
            )
        return type(self).from_state(merged, rng=rng)

    # -- validation, once, at the public edge -------------------------------------------

    _shape_params: ClassVar[tuple[str, ...]] = ()

    def _context(self, x: Any) -> np.ndarray:
        if self.dim == 0 and x is None:
            return np.empty(0)
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"x: expected {self.dim} numbers, got {x!r:.80}") from None
        if x.shape != (self.dim,):
            raise InvalidInputError(f"x: expected shape ({self.dim},), got {x.shape}")
        if not np.isfinite(x).all():
            raise InvalidInputError("x: contains NaN or inf")
        return x

    def _contexts(self, X: Any) -> np.ndarray:
        try:
            X = np.ascontiguousarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"X: expected an (n, {self.dim}) array of numbers") from None
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise InvalidInputError(f"X: expected shape (n, {self.dim}), got {X.shape}")
        if not np.isfinite(X).all():
            rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
            raise InvalidInputError(f"X: row {rows[0]} contains NaN or inf")
        return X

    def _arm(self, arm: Any) -> int:
        try:
            a = operator.index(arm)
        except TypeError:
            raise InvalidInputError(f"arm: expected an integer, got {arm!r}") from None
        if not 0 <= a < self.n_arms:
            raise UnknownArmError(f"arm: expected 0..{self.n_arms - 1}, got {a}")
        return a

    def _arm_array(self, arms: Any, n: int) -> np.ndarray:
        arms = np.asarray(arms)
        if arms.shape != (n,):
            raise InvalidInputError(f"arms: expected shape ({n},), got {arms.shape}")
        if n and not np.issubdtype(arms.dtype, np.integer):
            raise InvalidInputError(f"arms: expected integers, got dtype {arms.dtype}")
        arms = np.ascontiguousarray(arms, dtype=np.int64)
        if n and (arms.min() < 0 or arms.max() >= self.n_arms):
            bad = arms[(arms < 0) | (arms >= self.n_arms)][0]
            raise UnknownArmError(f"arms: expected 0..{self.n_arms - 1}, got {bad}")
        return arms

    # Rewards the policy can learn (the engine clips aggregated rewards into it). Bounded so
    # that r x stays far from overflow (features are within +-1e9): a sum of many clicks of
    # bandit.models.REWARD_LIMIT each is clipped here rather than poison the sums with inf.
    reward_range: ClassVar[tuple[float, float]] = (-1e12, 1e12)

    def _reward(self, reward: Any) -> float:
        low, high = self.reward_range
        return _finite_float("reward", reward, low=low, high=high)

    def _reward_array(self, rewards: Any, n: int) -> np.ndarray:
        try:
            r = np.ascontiguousarray(rewards, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("rewards: expected numbers") from None
        if r.shape != (n,):
            raise InvalidInputError(f"rewards: expected shape ({n},), got {r.shape}")
        low, high = self.reward_range
        bad = ~np.isfinite(r) | (r < low) | (r > high)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            span = "" if low == -math.inf else f" in [{low}, {high}]"
            raise InvalidInputError(f"rewards: expected finite numbers{span}, got {r[i]} at row {i}")
        return r

    def _draws(self, draws: Any, n: int) -> np.ndarray:
        U = np.asarray(draws, dtype=np.float64)
        if U.shape != (n, 2 + self.n_arms):
            raise InvalidInputError(f"draws: expected shape ({n}, {2 + self.n_arms}), got {U.shape}")
        if not ((U >= 0.0) & (U < 1.0)).all():
            raise InvalidInputError("draws: expected uniforms in [0, 1)")
        return U

    def _mask(self, eligible: Any, n: int) -> np.ndarray:
        """(1, n_arms) or (n, n_arms) bool: eligible and active."""
        if eligible is None:
            # At least one arm is always active (retire_arm and from_state see to it).
            return self._all_active
        else:
            e = np.asarray(eligible)
            if e.dtype != np.bool_:
                raise InvalidInputError(f"eligible: expected a bool mask, got dtype {e.dtype}")
            if e.shape == (self.n_arms,):
                e = e[None, :]
            elif e.shape != (n, self.n_arms):
                raise InvalidInputError(
                    f"eligible: expected shape ({self.n_arms},) or ({n}, {self.n_arms}), got {e.shape}"
                )
            mask = np.ascontiguousarray(e & self._active[None, :])
        empty = ~mask.any(axis=1)
        if empty.any():
            raise InvalidInputError(f"eligible: row {np.flatnonzero(empty)[0]} has no active arm")
        return mask

    def _event_times(self, ts_ms: Any, n: int) -> np.ndarray:
        if ts_ms is None:
            raise InvalidInputError("ts_ms: event times are required when half_life_ms is set")
        ts = np.ascontiguousarray(ts_ms, dtype=np.float64)
        if ts.shape != (n,) or not np.isfinite(ts).all():
            raise InvalidInputError(f"ts_ms: expected {n} finite event times, got shape {ts.shape}")
        return ts

    def _decayed(self) -> float:
        """The factor that brings the sums from ``t_ref`` to the newest event time learned,
        in (0, 1]; 1 without decay. Models are fitted to the sums times this factor."""
        if self._t_ref is None or self._t_newest == self._t_ref:
            return 1.0
        return 2.0 ** (-(self._t_newest - self._t_ref) / self.half_life_ms)

    def _scale(self, factor: float) -> None:
        for name in self._sum_names:
            if name not in self._shape_params:
                getattr(self, "_" + name)[...] *= factor
        self._state_changed()

    def _draw_uniforms(self, n: int, rng: Rng | np.ndarray) -> np.ndarray:
        if isinstance(rng, np.ndarray):  # caller's draws, validated by choose_many
            return np.ascontiguousarray(rng[:, :2])
        return self._uniforms.take(n) if rng is None else _as_rng(rng).random((n, 2))

    def _grow_arrays(self, extra: dict[str, np.ndarray] | None = None) -> None:
        """Append one arm (zero sums) to every per-arm array."""
        for name in self._sum_names:
            arr = getattr(self, "_" + name)
            if name in self._per_arm:
                new = (extra or {}).get(name, np.zeros((1, *arr.shape[1:])))
                setattr(self, "_" + name, np.ascontiguousarray(np.concatenate([arr, new])))
        self._active = np.append(self._active, True)
        self.n_arms += 1
        self._arms_changed()

    _per_arm: ClassVar[frozenset[str]] = frozenset()

    # -- hooks ---------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_params(cls, params: dict[str, Any], arrays: dict[str, Any], rng: Rng) -> Self:
        raise NotImplementedError

    def _state_changed(self) -> None:
        raise NotImplementedError

    def _grow(self, features: np.ndarray | None) -> None:
        raise NotImplementedError

    def _accumulate(self, arms, X, rewards, weights) -> None:
        raise NotImplementedError

    def _learn_one(self, arm: int, x: Any, reward: float) -> None:
        self._accumulate(np.array([arm]), self._context(x)[None, :], np.array([reward]), np.ones(1))

    def _choose(self, X, mask, rng, with_propensities):
        raise NotImplementedError

    def _propensities(self, X, mask) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, X) -> np.ndarray:
        raise NotImplementedError

    def _expectation(self, X, arms) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


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

    def _expectation(self, X, arms) -> tuple[np.ndarray, np.ndarray]:
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

    def contributions(self, X: Any, arms: Any) -> np.ndarray:
        """(n, dim): theta_a[j] * x[j], each feature's share of the chosen arm's expected reward
        (for hybrid LinUCB, of the arm's effective coefficient, shared part included)."""
        X = self._contexts(X)
        arms = self._arm_array(arms, X.shape[0])
        self._refresh()
        return self._theta[arms] * X

    # The per-event verb skips the generic path: at d = 20 the arithmetic takes about a
    # microsecond, so every NumPy call on the way would double the cost. The kernel refuses
    # non-finite input itself (a -1 arm), which the check below turns into an error.

    def choose_one(self, x: Any, *, eligible: Any = None, rng: Rng = None) -> int:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise InvalidInputError(f"x: expected shape ({self.dim},), got {x.shape}")
        mask = self._all_active if eligible is None else self._mask(eligible, 1)
        if self._dirty:
            self._refresh()
        u0, u1 = self._pairs.pair() if rng is None else _as_rng(rng).random(2).tolist()
        arm, _ = linear.choose_one(self._theta, self._Ainv, x, self._alpha, self._noise_one(rng),
                                   mask[0], self.epsilon, u0, u1)
        if arm < 0:
            raise InvalidInputError("x: contains NaN or inf")
        return arm

    def _noise(self, n: int, rng: Rng) -> np.ndarray:
        return np.empty((0, self.n_arms))

    def _noise_one(self, rng: Rng) -> np.ndarray:
        return self._no_noise

    def _choose(self, X, mask, rng, with_propensities):
        self._refresh()
        n = X.shape[0]
        U = self._draw_uniforms(n, rng)
        arms = np.empty(n, dtype=np.int64)
        probs = np.empty(n)
        linear.choose(self._theta, self._Ainv, X, self._alpha, self._noise(n, rng), mask,
                      self.epsilon, U, arms, probs)
        return arms, probs

    def _moments(self, X) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        mean = np.empty((X.shape[0], self.n_arms))
        sd = np.empty_like(mean)
        linear.moments(self._theta, self._Ainv, X, mean, sd)
        return mean, sd

    def _propensities(self, X, mask) -> np.ndarray:
        mean, sd = self._moments(X)
        out = np.empty_like(mean)
        choice.floor_probabilities(mean + self._alpha * sd, mask, self.epsilon, out)
        return out

    def _scores(self, X) -> np.ndarray:
        mean, sd = self._moments(X)
        return mean + self._alpha * sd


class _DisjointLinear(_LinearScoring):
    """A ridge model per arm: A_a = l2 I + sum x x^T (kept as the raw sum S_a), b_a = sum r x."""

    _sum_names = ("S", "b", "counts")
    _per_arm = frozenset(_sum_names)

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
        self._theta[idx] = (Ainv @ b[..., None])[..., 0]
        self._stale[idx] = False
        self._dirty = False
        for a in idx:
            self._updates[a] = 0

    def _grow(self, features: np.ndarray | None) -> None:
        self._grow_arrays()
        d = self.dim
        self._Ainv = np.ascontiguousarray(np.concatenate([self._Ainv, np.eye(d)[None] / self.l2]))
        self._theta = np.ascontiguousarray(np.concatenate([self._theta, np.zeros((1, d))]))
        self._stale = np.append(self._stale, False)
        self._updates.append(0)

    def _accumulate(self, arms, X, rewards, weights) -> None:
        linear.accumulate(self._S, self._b, self._counts, arms, X, rewards, weights)
        self._stale[arms] = True
        self._dirty = True

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        # O(d^2) Sherman-Morrison update of the arm's inverse; the kernel refuses NaN itself.
        if self.half_life_ms is not None:
            super().learn_one(arm, x, reward, ts_ms=ts_ms)
            return
        a = self._arm(arm)
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise InvalidInputError(f"x: expected shape ({self.dim},), got {x.shape}")
        if self._dirty or self._updates[a] >= _REFACTOR_EVERY:
            self._stale[a] = True
            self._dirty = True
            self._refresh()
        r = reward if type(reward) is float else self._reward(reward)
        ok = linear.learn_one(self._S, self._b, self._counts, self._Ainv, self._theta, a, x, r, 1.0)
        if not ok:
            raise InvalidInputError(f"x or reward: contains NaN or inf (reward={reward!r})")
        self._updates[a] += 1

    def _params(self) -> dict[str, Any]:
        return {"n_arms": self.n_arms, "dim": self.dim, "l2": self.l2,
                "epsilon": self.epsilon, "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params, arrays, rng):
        return cls(**params, rng=rng)


class LinUCB(_DisjointLinear):
    """Disjoint LinUCB (Li et al. 2010, Algorithm 1) with an epsilon-uniform exploration floor.

    Score theta_a . x + alpha sqrt(x^T A_a^-1 x); with probability ``epsilon`` the arm is uniform
    over the eligible ones, so every eligible arm has a known probability > 0 (for off-policy
    evaluation of the logs). Ties between maxima are broken uniformly at random.

    >>> policy = LinUCB(n_arms=3, dim=2, alpha=0.5, epsilon=0.0, rng=0)
    >>> policy.learn_many(np.array([1]), np.array([[1.0, 0.0]]), np.array([1.0]))
    >>> policy.choose_many(np.array([[1.0, 0.0], [0.0, 1.0]]), rng=0)
    array([1, 0])
    """

    kind = "lin_ucb"

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, l2: float = 1.0,
                 epsilon: float = 0.05, half_life_ms: float | None = None, rng: Rng = None) -> None:
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
    """Linear Thompson sampling: arm a's score is drawn from N(theta_a . x, v^2 x^T A_a^-1 x).

    Drawing the score per decision is the same as drawing theta_a ~ N(theta_hat, v^2 A_a^-1) per
    decision, at O(d^2) instead of O(d^3). ``v`` is about the reward noise's standard deviation:
    0.2 suits click rewards (0.5 lost 5-10 points of the oracle's reward in simulation). The draws are independent across arms, so the
    probability that an arm wins is a one-dimensional integral, computed by quadrature.

    >>> policy = LinTS(n_arms=2, dim=1, v=0.1, rng=0)
    >>> policy.learn_many(np.array([0] * 50), np.ones((50, 1)), np.ones(50))
    >>> policy.propensities(np.array([[1.0]])).round(3)
    array([[1., 0.]])
    """

    kind = "lin_ts"
    _bonus_scale = "v"

    def __init__(self, n_arms: int, dim: int, v: float = 0.2, l2: float = 1.0,
                 half_life_ms: float | None = None, rng: Rng = None) -> None:
        super().__init__(n_arms, dim, l2=l2, epsilon=0.0, half_life_ms=half_life_ms, rng=rng)
        self.v = _finite_float("v", v, low=0.0, low_open=True)
        self._normals = _DrawBuffer(self._rng, self.n_arms, normal=True)

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
        self._normals = _DrawBuffer(self._rng, self.n_arms, normal=True)

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
        return arm, p, mean, bonus

    def _choose(self, X, mask, rng, with_propensities):
        arms, _ = super()._choose(X, mask, rng, with_propensities)
        if not with_propensities:
            return arms, None
        probs = self._propensities(X, mask)
        return arms, probs[np.arange(X.shape[0]), arms]

    def _propensities(self, X, mask) -> np.ndarray:
        mean, sd = self._moments(X)
        out = np.empty_like(mean)
        choice.gaussian_max_probabilities(mean, self.v * sd, mask, _GL_NODES, _GL_WEIGHTS,
                                          _RADIUS, _STEPS, out)
        return out

    def _scores(self, X) -> np.ndarray:
        return self._moments(X)[0]

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        del params["epsilon"]
        return {**params, "v": self.v}


# Grid pieces of Beta TS's win-probability quadrature span at most this many logit-scale sds of
# the narrowest arm there, with a 10-node Gauss-Legendre rule each: worst error 7e-12 against
# adaptive quadrature on the edge cases of tests/test_beta_kernels.py (8 nodes: 2e-9, about as
# fast), see bandit/kernels/beta.py.
_BETA_PIECE_SDS = 2.0
_BETA_NODES, _BETA_WEIGHTS = np.polynomial.legendre.leggauss(10)


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
        self._pmf_cache: dict[bytes, np.ndarray] = {}

    def _contexts(self, X: Any) -> np.ndarray:
        if self.dim == 0 and isinstance(X, int | np.integer) and not isinstance(X, bool):
            return np.empty((_positive_int("n", X), 0))
        return super()._contexts(X)

    def _state_changed(self) -> None:
        self._pmf_cache.clear()

    def _grow(self, features: np.ndarray | None) -> None:
        self._grow_arrays()
        self._state_changed()

    def _accumulate(self, arms, X, rewards, weights) -> None:
        # Into the sums row by row (np.add.at is unbuffered, in order), never a batch's own
        # sum added at once: the sums then do not depend on how the events were batched.
        np.add.at(self._successes, arms, weights * rewards)
        np.add.at(self._failures, arms, weights * (1.0 - rewards))
        np.add.at(self._counts, arms, weights)
        self._state_changed()

    def _learn_one(self, arm: int, x: Any, reward: float) -> None:
        self._successes[arm] += reward
        self._failures[arm] += 1.0 - reward
        self._counts[arm] += 1.0
        self._state_changed()

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        now = self._decayed()
        return self.alpha + now * self._successes, self.beta + now * self._failures

    def _choose(self, X, mask, rng, with_propensities):
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

    def _propensities(self, X, mask) -> np.ndarray:
        n = X.shape[0]
        if mask.shape[0] == 1:  # one mask (a single decision's, or none): np.unique takes ~35 us
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

    def _scores(self, X) -> np.ndarray:
        a, b = self._posterior()
        return np.repeat((a / (a + b))[None, :], X.shape[0], axis=0)

    def _expectation(self, X, arms) -> tuple[np.ndarray, np.ndarray]:
        a, b = self._posterior()
        mean = a / (a + b)
        sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
        return mean[arms], sd[arms]

    def _params(self) -> dict[str, Any]:
        return {"n_arms": self.n_arms, "alpha": self.alpha, "beta": self.beta, "dim": self.dim,
                "half_life_ms": self.half_life_ms}

    @classmethod
    def _from_params(cls, params, arrays, rng):
        return cls(**params, rng=rng)


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
        m = self._arm_features.shape[1]
        f = np.asarray(features if features is not None else np.nan, dtype=np.float64)
        if f.shape != (m,) or not np.isfinite(f).all():
            raise InvalidInputError(f"features: expected {m} finite numbers, got {features!r}")
        self._grow(f)
        return self.n_arms - 1

    def _grow(self, features: np.ndarray | None) -> None:
        self._grow_arrays({"arm_features": features[None, :]})
        self._dirty = True

    def _state_changed(self) -> None:
        self._dirty = True

    def _accumulate(self, arms, X, rewards, weights) -> None:
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
    def _from_params(cls, params, arrays, rng):
        return cls(**params, arm_features=np.asarray(arrays["arm_features"]), rng=rng)


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
        cross = (X[:, :, None] * F[:, None, :]).reshape(X.shape[0], -1)
        return np.ascontiguousarray(np.hstack([X, F, cross]))

    def add_arm(self, features: Any = None) -> int:
        m = self._arm_features.shape[1]
        f = np.asarray(features if features is not None else np.nan, dtype=np.float64)
        if f.shape != (m,) or not np.isfinite(f).all():
            raise InvalidInputError(f"features: expected {m} finite numbers, got {features!r}")
        self._grow_arrays({"arm_features": f[None, :]})
        return self.n_arms - 1

    def _state_changed(self) -> None:
        self._dirty = True

    def _accumulate(self, arms, X, rewards, weights) -> None:
        linear.accumulate(self._S, self._b, np.zeros(1), np.zeros(len(arms), dtype=np.int64),
                          self._phi(X, arms), rewards, weights)
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

    def _scores(self, X) -> np.ndarray:
        # theta . phi(x, a) = x.theta_x + f_a.theta_f + x^T Theta_xf f_a, for all rows and arms
        # in three matrix products.
        self._refresh()
        F = self._arm_features
        return ((X @ self._theta_x)[:, None] + (F @ self._theta_f)[None, :]
                + (X @ self._theta_xf) @ F.T)

    def _choose(self, X, mask, rng, with_propensities):
        n = X.shape[0]
        arms, probs = np.empty(n, dtype=np.int64), np.empty(n)
        choice.choose_floor(np.ascontiguousarray(self._scores(X)), mask, self.epsilon,
                            self._draw_uniforms(n, rng), arms, probs)
        return arms, probs

    def _propensities(self, X, mask) -> np.ndarray:
        out = np.empty((X.shape[0], self.n_arms))
        choice.floor_probabilities(np.ascontiguousarray(self._scores(X)), mask, self.epsilon, out)
        return out

    # What decide_row reuses between refreshes and arm additions (see _row_terms).
    _row_cache: tuple | None = None

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
        # The products stay NumPy's (BLAS) in the batch path's shapes, so every bit agrees;
        # what does not depend on x is cached, and the choice is one kernel call.
        f_theta, F_T, coefficients = self._row_terms()
        X = x[None, :]
        scores = (X @ self._theta_x)[:, None] + f_theta + (X @ self._theta_xf) @ F_T
        arm, p = choice.pick(scores[0], self._active if mask is None else mask, self.epsilon,
                             u[0], u[1])
        if arm < 0:
            return super().decide_row(x, mask, u)
        f = self._arm_features[arm]
        phi = np.concatenate((x, f, np.multiply.outer(x, f).ravel()))[None, :]
        return arm, p, float((phi @ coefficients)[0]), 0.0

    def _expectation(self, X, arms) -> tuple[np.ndarray, np.ndarray]:
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
    def _from_params(cls, params, arrays, rng):
        return cls(**params, arm_features=np.asarray(arrays["arm_features"]), rng=rng)


_KINDS: dict[str, type[Policy]] = {
    cls.kind: cls for cls in (Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB)
}


def check_state_header(state: Any, kind: str) -> None:
    """IncompatibleStateError unless ``state`` is a state dict of ``kind`` in this format."""
    if not isinstance(state, dict) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise IncompatibleStateError(f"expected a {kind!r} state, got {got!r}")
    if state.get("format") != STATE_FORMAT:
        raise IncompatibleStateError(
            f"{kind}: expected state format {STATE_FORMAT}, got {state.get('format')!r}")


def from_state(state: dict[str, Any], *, rng: Rng = None) -> Policy:
    """Rebuild whichever policy ``state`` describes (dispatch on its ``kind``)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "vw":
        __getattr__("VWPolicy")  # registers it in _KINDS
    if kind not in _KINDS:
        raise IncompatibleStateError(f"unknown policy kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[kind].from_state(state, rng=rng)


def __getattr__(name: str) -> Any:
    # VWPolicy builds on Policy, so bandit.vw imports this module; the name is resolved on first
    # use rather than at import time, which keeps the import one-way (and VW unloaded until
    # someone asks for it).
    if name == "VWPolicy":
        from bandit.vw import VWPolicy

        _KINDS[VWPolicy.kind] = VWPolicy
        return VWPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
