"""What every policy shares: the ``Policy`` base with its verbs, state and merge; the checks
at the public edge; the state header; seeds and random-draw buffers; the ridge inverse."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeGuard, cast, overload

import numpy as np
from numpy.typing import NDArray

from bandit.errors import IncompatibleStateError, InvalidInputError, UnknownArmError
from bandit.kernels import decay

if TYPE_CHECKING:
    from bandit.policies.vw import VWPolicy

STATE_FORMAT = 1
VW_KIND = "vw"
# Forgetting: a sum may end this far below zero, relative to what it was, through rounding
# alone, and an arm with at most this share of its weight left has nothing left.
_FORGET_ROUNDING = 1e-9

Rng = np.random.Generator | int | None


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

    def __init__(self, rng: np.random.Generator, width: int, normal: bool,
                 block: int = 2048) -> None:
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

    def take_blocks(self, n: int, rows: int) -> Iterator[np.ndarray]:
        """``take(n)`` in consecutive blocks of at most ``rows`` rows: the same draws, but where
        ``take`` would draw all n rows at once, they are drawn a block at a time into one
        reused array (use each block before asking for the next), never (n, width) of fresh
        memory."""
        if self._i + n <= self._buf.shape[0] or n < self._block:
            yield self.take(n)
            return
        self._buf = np.empty((0, self._width))  # what take leaves: every row drawn is used
        self._i = 0
        block = np.empty((min(rows, n), self._width))
        draw = self._rng.standard_normal if self._normal else self._rng.random
        for start in range(0, n, rows):
            out = block[: min(rows, n - start)]
            draw(out=out)
            yield out


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


def _float_vector(name: str, values: Any, n: int) -> np.ndarray:
    """``values`` as a C-contiguous float64 array of shape (n,), or an error naming ``name``."""
    try:
        v = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected numbers") from None
    if v.shape != (n,):
        raise InvalidInputError(f"{name}: expected shape ({n},), got {v.shape}")
    return v


def _arm_feature_row(features: Any, m: int) -> np.ndarray:
    """A new arm's features as a (1, m) float64 row, or an error: m finite numbers."""
    f = np.asarray(features if features is not None else np.nan, dtype=np.float64)
    if f.shape != (m,) or not np.isfinite(f).all():
        raise InvalidInputError(f"features: expected {m} finite numbers, got {features!r}")
    return f[None, :]


def check_state_header(state: Any, kind: str) -> None:
    """IncompatibleStateError unless ``state`` is a state dict of ``kind`` in this format."""
    if not isinstance(state, dict) or state.get("kind") != kind:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise IncompatibleStateError(f"expected a {kind!r} state, got {got!r}")
    if state.get("format") != STATE_FORMAT:
        raise IncompatibleStateError(
            f"{kind}: expected state format {STATE_FORMAT}, got {state.get('format')!r}")


def is_vw(policy: object) -> TypeGuard[VWPolicy]:
    """``isinstance(policy, VWPolicy)`` without importing ``bandit.policies.vw`` (and so
    vowpalwabbit): a VW slot learns in order at the logged propensities and never merges."""
    return isinstance(policy, Policy) and policy.kind == VW_KIND


class _EdgeChecks:
    """Validation, once, at the public edge: contexts, arms, rewards, draws, masks and event
    times become the C-contiguous arrays the kernels trust, or an error that names the input."""

    n_arms: int
    dim: int
    _active: np.ndarray
    _all_active: np.ndarray

    def _context(self, x: Any) -> np.ndarray:
        if self.dim == 0 and x is None:
            return np.empty(0)
        x = self._shaped(x)
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

    def _shaped(self, x: Any) -> np.ndarray:
        """x as a float64 array of shape (dim,); finiteness is left to the caller (the
        per-event kernels refuse NaN and inf themselves)."""
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"x: expected {self.dim} numbers, got {x!r:.80}") from None
        if x.shape != (self.dim,):
            raise InvalidInputError(f"x: expected shape ({self.dim},), got {x.shape}")
        return x

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
        r = _float_vector("rewards", rewards, n)
        low, high = self.reward_range
        bad = ~np.isfinite(r) | (r < low) | (r > high)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            span = "" if low == -math.inf else f" in [{low}, {high}]"
            raise InvalidInputError(
                f"rewards: expected finite numbers{span}, got {r[i]} at row {i}")
        return r

    def _draws(self, draws: Any, n: int) -> np.ndarray:
        U = np.asarray(draws, dtype=np.float64)
        if U.shape != (n, 2 + self.n_arms):
            raise InvalidInputError(
                f"draws: expected shape ({n}, {2 + self.n_arms}), got {U.shape}")
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
                    f"eligible: expected shape ({self.n_arms},) or ({n}, {self.n_arms}), "
                    f"got {e.shape}")
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


class Policy(_EdgeChecks):
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
    _counts: np.ndarray  # (n_arms,) event weights: every kind with sums keeps them
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

    @overload
    def choose_many(self, X: Any, *, eligible: Any = None, rng: Rng = None, draws: Any = None,
                    with_propensities: Literal[False] = False) -> NDArray[np.int64]: ...

    @overload
    def choose_many(self, X: Any, *, eligible: Any = None, rng: Rng = None, draws: Any = None,
                    with_propensities: Literal[True]
                    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...

    @overload
    def choose_many(self, X: Any, *, eligible: Any = None, rng: Rng = None, draws: Any = None,
                    with_propensities: bool
                    ) -> NDArray[np.int64] | tuple[NDArray[np.int64], NDArray[np.float64]]: ...

    def choose_many(self, X: Any, *, eligible: Any = None, rng: Rng = None, draws: Any = None,
                    with_propensities: bool = False
                    ) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
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

    def propensities(self, X: Any, *, eligible: Any = None) -> NDArray[np.float64]:
        """(n, n_arms): the probability that each arm is chosen for each row; 0 off the mask."""
        X = self._contexts(X)
        return self._propensities(X, self._mask(eligible, X.shape[0]))

    def scores(self, X: Any) -> NDArray[np.float64]:
        """(n, n_arms): the value each arm is ranked by (its mean for sampling policies);
        -inf for retired arms."""
        X = self._contexts(X)
        out = self._scores(X)
        out[:, ~self._active] = -np.inf
        return out

    def expectation(self, X: Any, arms: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
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

    def decide_row_vector(self, x: np.ndarray, mask: np.ndarray | None, u: np.ndarray,
                          vector: np.ndarray) -> tuple[int, float, float, float]:
        """``decide_row``, and every arm's probability of being chosen for x written to
        ``vector`` (n_arms,) float64: what ``propensities(x[None], eligible=mask)[0]`` gives,
        without its checks (the engine's rows are finite, its masks eligible and active).
        Policies whose fused path ranks the arms anyway fill it from that ranking."""
        decided = self.decide_row(x, mask, u)
        vector[:] = self._propensities(x[None, :], self._all_active if mask is None
                                       else mask[None, :])[0]
        return decided

    def learn_one(self, arm: int, x: Any, reward: float, *, ts_ms: float | None = None) -> None:
        """Learn that ``arm`` got ``reward`` in context x (dim,), at event time ``ts_ms``."""
        a = self._arm(arm)
        r = self._reward(reward)
        if self.half_life_ms is not None:
            ts = None if ts_ms is None else np.array([ts_ms], dtype=np.float64)
            self.learn_many(np.array([a]), self._context(x)[None, :], np.array([r]), ts_ms=ts)
            return
        self._learn_one(a, x, r)

    def _rows(self, arms: Any, X: Any, rewards: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A batch's arms (n,), X (n, dim) and rewards (n,), each checked."""
        X = self._contexts(X)
        return self._arm_array(arms, X.shape[0]), X, self._reward_array(rewards, X.shape[0])

    def learn_many(self, arms: Any, X: Any, rewards: Any, *, ts_ms: Any = None) -> None:
        """Learn a batch: arms (n,) ints, X (n, dim), rewards (n,), ts_ms (n,) event times."""
        arms, X, rewards = self._rows(arms, X, rewards)
        n = X.shape[0]
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

    def forget_many(self, arms: Any, X: Any, rewards: Any, *, ts_ms: Any = None) -> None:
        """Take rows learned before out of the sums: subtract exactly what ``learn_many`` with
        the same arms (n,), X (n, dim), rewards (n,) and event times ts_ms (n,) added, in any
        order and batching. With ``half_life_ms`` a row weighs 2^((ts - t_ref) / half_life),
        its contribution as it stands in the sums kept at ``t_ref``, wherever the reference
        moved after it was learned.

        The clock stays: ``t_ref_ms`` and ``t_newest_ms`` remain where learning, forgotten rows
        included, left them (event time does not go back). The policy is then the one that
        never learned the rows, its clock advanced to the same time: the sums seen from any
        common time (``sums_at``) agree, and so do the decisions at the same newest event
        time, up to rounding. Derived factors are refitted from the sums.

        Forgetting rows that were never learned is the caller's error. A row later than the
        newest event learned, or a sum of nonnegative terms (a count, a Gram diagonal, Beta's
        successes and failures) taken below zero beyond rounding, raise InvalidInputError and
        leave the sums as they were. An arm left with at most 1e-9 of its weight (rounding of
        the subtraction; with decay also rows some 30 half-lives older than those forgotten)
        has nothing left: its sums become exactly zero, as if never learned, and the shared
        sums too once every arm is empty, so that ties between untouched arms stay ties.
        """
        arms, X, rewards = self._rows(arms, X, rewards)
        n = X.shape[0]
        if n == 0:
            return
        if self.half_life_ms is None:
            weights = np.ones(n)
        else:
            ts = self._event_times(ts_ms, n)
            if self._t_ref is None or self._t_newest is None:
                raise InvalidInputError("ts_ms: nothing was learned, so there is nothing to forget")
            late = np.flatnonzero(ts > self._t_newest)
            if len(late):
                raise InvalidInputError(
                    f"ts_ms: row {late[0]} at {ts[late[0]]!r} is later than the newest event "
                    f"learned ({self._t_newest!r}), so it was never learned")
            weights = 2.0 ** ((ts - self._t_ref) / self.half_life_ms)
        before = {name: getattr(self, "_" + name).copy() for name in self._sum_names
                  if name not in self._shape_params}
        self._accumulate(arms, X, rewards, -weights)
        problem = self._below_zero(before)
        if problem is not None:
            for name, value in before.items():
                getattr(self, "_" + name)[...] = value
            self._state_changed()
            raise InvalidInputError(
                f"arms, X, rewards: {problem}: these rows were not all learned")
        empty = self._counts <= _FORGET_ROUNDING * before["counts"]
        if empty.any():
            for name in before:
                if name in self._per_arm:
                    getattr(self, "_" + name)[empty] = 0.0
                elif empty.all():
                    getattr(self, "_" + name)[...] = 0.0
        self._clamp_at_zero()
        self._state_changed()

    # Sums of nonnegative terms, and sums of outer products x x^T (whose diagonals are):
    # forgetting that takes one clearly below zero took out rows that were never learned.
    _nonnegative: ClassVar[tuple[str, ...]] = ("counts",)
    _grams: ClassVar[tuple[str, ...]] = ()

    def _below_zero(self, before: dict[str, np.ndarray]) -> str | None:
        """What went below zero beyond rounding (``before``: the sums before forgetting), or
        None. Rounding is judged against the largest such sum of the array: an entry left at
        zero by earlier forgetting may have had large terms too."""
        checks = [(name, getattr(self, "_" + name), before[name]) for name in self._nonnegative]
        checks += [(f"the diagonal of {name}",
                    np.diagonal(getattr(self, "_" + name), axis1=-2, axis2=-1),
                    np.diagonal(before[name], axis1=-2, axis2=-1)) for name in self._grams]
        for what, now, was in checks:
            bad = np.flatnonzero(now < -_FORGET_ROUNDING * max(float(was.max()), 0.0))
            if len(bad):
                at = np.unravel_index(bad[0], now.shape)
                return (f"{what} at {tuple(int(i) for i in at)} would fall from "
                        f"{was[at]:.6g} to {now[at]:.6g}")
        return None

    def _clamp_at_zero(self) -> None:
        """Rounding below zero, which ``_below_zero`` let pass, back to zero: the sums of
        nonnegative terms and the Gram diagonals."""
        for name in self._nonnegative:
            np.maximum(getattr(self, "_" + name), 0.0, out=getattr(self, "_" + name))
        for name in self._grams:
            gram = getattr(self, "_" + name)
            i = np.arange(gram.shape[-1])
            gram[..., i, i] = np.maximum(gram[..., i, i], 0.0)

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
            raise InvalidInputError(
                f"arm {a} is the last active arm; add another before retiring it")
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
                    f"{cls.kind}: array {name!r} should have shape {target.shape}, "
                    f"got {value.shape}")
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
            raise IncompatibleStateError(
                f"cannot merge {self.kind} policies with other active arms")
        for name in self._shape_params:
            if not np.array_equal(mine["arrays"][name], theirs["arrays"][name]):
                raise IncompatibleStateError(f"cannot merge {self.kind} policies with other {name}")
        t_ref = t_newest = None
        if self.half_life_ms is not None and (mine["t_ref_ms"], theirs["t_ref_ms"]) != (None, None):
            # The later reference; with a whole-number half-life both are on one grid, so the
            # older sums move by an exact power of two.
            t_ref = max(t for t in (mine["t_ref_ms"], theirs["t_ref_ms"]) if t is not None)
            t_newest = max(t for t in (mine["t_newest_ms"], theirs["t_newest_ms"])
                           if t is not None)
        ours, others = self.sums_at(t_ref), other.sums_at(t_ref)
        merged = dict(mine, t_ref_ms=t_ref, t_newest_ms=t_newest, arrays=dict(mine["arrays"]))
        for name in self._sum_names:
            if name in self._shape_params:
                continue
            merged["arrays"][name] = ours[name] + others[name]
        return type(self).from_state(merged, rng=rng)

    def sums_at(self, t_ms: float | None) -> dict[str, np.ndarray]:
        """The sums of ``state()["arrays"]`` (without ``active``; arm features as they are)
        seen from event time ``t_ms``: each event weighs 2^((its time - t_ms) / half_life).
        Without decay, before the first event, or for t_ms None: the sums as kept.

        Policies whose references differ compare here: a merge adds its parts' sums at the
        later reference, and a policy that forgot rows keeps the reference they moved it to.
        """
        scale = 1.0
        if self.half_life_ms is not None and self._t_ref is not None and t_ms is not None:
            scale = 2.0 ** (-(t_ms - self._t_ref) / self.half_life_ms)
        return {name: getattr(self, "_" + name).copy() if name in self._shape_params
                else scale * getattr(self, "_" + name) for name in self._sum_names}

    _shape_params: ClassVar[tuple[str, ...]] = ()

    def _decayed(self) -> float:
        """The factor that brings the sums from ``t_ref`` to the newest event time learned,
        in (0, 1]; 1 without decay. Models are fitted to the sums times this factor."""
        t_ref, t_newest = self._t_ref, self._t_newest
        if t_ref is None or t_newest is None or t_newest == t_ref:  # both are set, or neither
            return 1.0
        # t_ref is set only by learning with a half-life (or by the state of such a policy).
        return 2.0 ** (-(t_newest - t_ref) / cast(float, self.half_life_ms))

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

    def _accumulate(self, arms: np.ndarray, X: np.ndarray, rewards: np.ndarray,
                    weights: np.ndarray) -> None:
        raise NotImplementedError

    def _learn_one(self, arm: int, x: Any, reward: float) -> None:
        self._accumulate(np.array([arm]), self._context(x)[None, :], np.array([reward]), np.ones(1))

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """arms (n,) int64 for contexts X (n, dim) under the (1 or n, n_arms) mask, and their
        probabilities (n,) when ``with_propensities`` (else None); ``rng`` an array is the
        caller's draws (n, 2 + n_arms)."""
        raise NotImplementedError

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError
