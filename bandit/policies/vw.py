"""Vowpal Wabbit as a policy: ``--cb_explore_adf`` behind the project's verbs.

VW keeps the reward model (a cost regression over the context, the arm's features and their
interactions, or ``--lrq``'s factorization machine) and the exploration (``squarecb``,
``epsilon``, ``bag``, ``cover``); it answers a decision with a pmf over the arms it was shown.
This module turns context rows and arms into VW examples (``VWFormat`` names the features;
each arm's action example is parsed once, and one shared example is refilled per row with the
context's pre-hashed features, as VW's text parser would hash them, values as the nearest
float32; a batch decision sets it up once for all its rows), renormalizes the float32 pmf in
float64, samples the arm from it with the caller's uniform, and learns with cost = -reward at
the logged propensity.

VW learns in order and its model is not a sum, so a VW slot has a single learner: ``merge`` is
refused. Its state is the model file's bytes plus the constructor arguments; a policy rebuilt
from it predicts, and goes on learning, exactly as the original would have.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self, overload

import numpy as np
from vowpalwabbit import pyvw

from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.models import check_vw_args
from bandit.models.specs import check_vw_gamma
from bandit.policies.base import (
    STATE_FORMAT,
    VW_KIND,
    Policy,
    Rng,
    _finite_float,
    _float_vector,
    _positive_int,
    check_state_header,
)

__all__ = ["EXPLORATIONS", "VWFormat", "VWPolicy"]

EXPLORATIONS = ("squarecb", "epsilon", "bag", "cover")
# Namespaces: the context is the shared example's "c", each arm an action example's "a"; VW
# names an interaction by the namespaces' first letters ("-q ca").
CONTEXT_NS, ARM_NS = "c", "a"
_LEARNERS = {"squarecb": "cb_explore_adf_squarecb", "epsilon": "cb_explore_adf_greedy",
             "bag": "cb_explore_adf_bag", "cover": "cb_explore_adf_cover"}
_predict_multi = pyvw.pylibvw.vw.predict_multi
_learn_multi = pyvw.pylibvw.vw.learn_multi
_CB_LABEL = pyvw.LabelType.CONTEXTUAL_BANDIT
_setup, _unsetup = pyvw.pylibvw.vw.setup_example, pyvw.pylibvw.vw.unsetup_example
_erase_namespace = pyvw.pylibvw.example.erase_namespace
_push_features = pyvw.pylibvw.example.push_feature_list
_feature = pyvw.pylibvw.example.feature
_CONTEXT_ORD = ord(CONTEXT_NS)


_F32_TINY = float(np.finfo(np.float32).tiny)  # VW's smallest normal feature value
_CHUNK = 4096  # rows whose values are Python floats at once in a batch decision


class VWFormat:
    """Context rows (dim,) and arms -> VW text lines; the one place that knows the format.

    An arm's action line holds its id and its features (``|a id2 f0:0.5 f1:1``); it is
    formatted once per arm, when the arm is added, never per decision. A context row becomes
    ``shared |c x0:0.25 x3:1``. Zero values are left out, as VW's parser drops them anyway,
    and so are values too small for the 32-bit floats VW reads (under 2^-126 in magnitude):
    VW holds them as zero at best, and its text parser turns some (around 1e-130 to 1e-215)
    into NaN, which would make every propensity NaN.

    >>> fmt = VWFormat(dim=2, arm_features=np.array([[0.5, 0.0]]))
    >>> fmt.shared_line(np.array([1.0, 0.0]))
    'shared |c x0:1.0'
    >>> fmt.action_lines
    ['|a id0 f0:0.5']
    >>> fmt.label_line(0, reward=1.0, propensity=0.25)
    '0:-1.0:0.25 |a id0 f0:0.5'
    """

    def __init__(self, dim: int, arm_features: np.ndarray) -> None:
        """``arm_features`` (n_arms, m), m >= 0."""
        self.dim = dim
        # Column j of a context row is feature x<j> of namespace c.
        self.context_features = [f"x{j}" for j in range(dim)]
        self._names = [f"{name}:" for name in self.context_features]
        self.action_lines: list[str] = []
        for f in arm_features:
            self.add_arm(f)

    def add_arm(self, features: np.ndarray) -> str:
        """Format the next arm's action line from its features (m,); returns it."""
        a = len(self.action_lines)
        parts = [f"|{ARM_NS} id{a}"] + [f"f{j}:{v!r}" for j, v in enumerate(features.tolist())
                                        if abs(v) >= _F32_TINY]
        self.action_lines.append(" ".join(parts))
        return self.action_lines[-1]

    def shared_line(self, x: np.ndarray) -> str:
        """The shared example of one context row x (dim,)."""
        names = self._names
        return f"shared |{CONTEXT_NS} " + " ".join(
            [names[j] + repr(v) for j, v in enumerate(x.tolist()) if abs(v) >= _F32_TINY])

    def label_line(self, arm: int, reward: float, propensity: float) -> str:
        """The chosen arm's action line with its label: cost -reward at the logged propensity."""
        return f"0:{0.0 - float(reward)!r}:{float(propensity)!r} {self.action_lines[arm]}"

    def lines(self, x: np.ndarray, arms: Sequence[int]) -> list[str]:
        """A whole multi-line example in text: the shared line, then the arms' action lines."""
        return [self.shared_line(x)] + [self.action_lines[a] for a in arms]


class VWPolicy(Policy):
    """Vowpal Wabbit ``--cb_explore_adf`` over the context x (dim,) and the arms' features.

    ``exploration`` is one of ``squarecb`` (default), ``epsilon``, ``bag`` or ``cover``;
    ``epsilon`` is the exploration rate of the last three, ``bag`` and ``cover`` their numbers
    of models; ``gamma_scale`` and ``gamma_exponent`` set squarecb's greediness (VW's
    ``--gamma_scale``, ``--gamma_exponent``: gamma = scale * t^exponent, larger is greedier;
    VW's defaults when None), and ``learning_rate`` is VW's ``--learning_rate``.
    ``interactions`` are VW ``-q`` pairs over the namespaces ``c`` (context) and ``a`` (arm:
    its id and features), default ``["ca"]``, without which no choice depends on the context;
    ``lrq`` (e.g. ``"ca4"``) adds a rank-4 factorization of the context x arm interactions
    (BaRT's factorization machine). ``extra_args`` takes whitelisted VW options
    (``bandit.models.VW_EXTRA_OPTIONS``). Arms have features ``arm_features`` (n_arms, m), or
    only an id when ``n_arms`` is given instead; a new arm is a new action line, scored from its
    features on day one.

    Learning needs each event's logged propensity (VW weighs the chosen arm's cost by it);
    without one an event counts as chosen uniformly among the active arms. VW has no event-time
    decay (``ts_ms`` is accepted for the common signature and not used): its learning rate is
    its forgetting. Nor can it take a subscriber's rows out (``forget_many`` refuses): its
    weights are not a sum of per-row terms, so erasure retrains the slot from the log without
    them.

    >>> policy = VWPolicy(dim=2, n_arms=2, rng=0)
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 200)
    >>> policy.learn_many(np.tile([0, 1], 200), X, np.ones(400), propensities=np.full(400, 0.5))
    >>> policy.learn_many(np.tile([1, 0], 200), X, np.zeros(400), propensities=np.full(400, 0.5))
    >>> policy.choose_many(X[:2], draws=np.full((2, 4), 0.5)).tolist()
    [0, 1]
    """

    kind = VW_KIND
    _sum_names = ()

    def __init__(self, dim: int, arm_features: Any = None, n_arms: int | None = None,
                 exploration: str = "squarecb", epsilon: float = 0.05, bag: int = 5,
                 cover: int = 5, interactions: Sequence[str] = ("ca",), lrq: str | None = None,
                 learning_rate: float | None = None, extra_args: Sequence[str] = (),
                 gamma_scale: float | None = None, gamma_exponent: float | None = None,
                 rng: Rng = None) -> None:
        if arm_features is None:
            if n_arms is None:
                raise InvalidInputError("arm_features or n_arms: expected one of them")
            F = np.zeros((_positive_int("n_arms", n_arms), 0))
        else:
            F = np.asarray(arm_features, dtype=np.float64)
            if F.ndim != 2 or F.shape[0] < 1 or not np.isfinite(F).all():
                raise InvalidInputError(
                    f"arm_features: expected a finite (n_arms, m) array, got shape {F.shape}")
            if n_arms is not None and n_arms != F.shape[0]:
                raise InvalidInputError(
                    f"n_arms: {n_arms!r} differs from the {F.shape[0]} rows of arm_features")
        super().__init__(F.shape[0], dim, half_life_ms=None, rng=rng)
        if exploration not in EXPLORATIONS:
            raise InvalidInputError(
                f"exploration: expected one of {list(EXPLORATIONS)}, got {exploration!r}")
        self.exploration = exploration
        self.epsilon = _finite_float("epsilon", epsilon, low=0.0, high=1.0)
        self.bag = _positive_int("bag", bag)
        self.cover = _positive_int("cover", cover)
        if isinstance(interactions, str):
            raise InvalidInputError(
                f"interactions: expected a list of namespace pairs, got {interactions!r}")
        self.interactions = [str(q) for q in interactions]
        for q in self.interactions:
            if not 2 <= len(q) <= 3 or set(q) - {CONTEXT_NS, ARM_NS}:
                raise InvalidInputError(f"interactions: expected letters of 'c' (context) and "
                                        f"'a' (arm), 2 or 3 of them, got {q!r}")
        if lrq is not None and (len(lrq) < 3 or set(lrq[:2]) - {CONTEXT_NS, ARM_NS}
                                or not lrq[2:].isdigit() or int(lrq[2:]) < 1):
            raise InvalidInputError(f"lrq: expected two namespace letters and a rank, like 'ca4', "
                                    f"got {lrq!r}")
        self.lrq = lrq
        self.learning_rate = (None if learning_rate is None else
                              _finite_float("learning_rate", learning_rate, low=0.0, low_open=True))
        try:
            self.extra_args = check_vw_args(list(extra_args))
            self.gamma_scale, self.gamma_exponent = check_vw_gamma(
                exploration, gamma_scale, gamma_exponent, self.extra_args)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self._arm_features = np.ascontiguousarray(F.copy())
        self._format = VWFormat(self.dim, self._arm_features)
        self._seed = int(self._rng.integers(2**31))
        self._attach(pyvw.Workspace(arg_list=self.arguments()))

    # -- VW ------------------------------------------------------------------------------

    def arguments(self) -> list[str]:
        """The VW command line this policy's workspace was made with."""
        args = ["--cb_explore_adf", "--quiet", "--random_seed", str(self._seed)]
        if self.exploration == "squarecb":
            args.append("--squarecb")
        else:
            args += ["--epsilon", repr(self.epsilon)]
            if self.exploration in ("bag", "cover"):
                args += [f"--{self.exploration}", str(getattr(self, self.exploration))]
        for q in self.interactions:
            args += ["--interactions", q]
        if self.lrq is not None:
            args += ["--lrq", self.lrq]
        if self.learning_rate is not None:
            args += ["--learning_rate", repr(self.learning_rate)]
        if self.gamma_scale is not None:
            args += ["--gamma_scale", repr(self.gamma_scale)]
        if self.gamma_exponent is not None:
            args += ["--gamma_exponent", repr(self.gamma_exponent)]
        return args + self.extra_args

    def _attach(self, workspace: pyvw.Workspace) -> None:
        self._ws = workspace
        # Every arm's action example is parsed once and reused by every decision and learn:
        # VW merges the shared features into it for the call and takes them out again. The
        # shared example is one object too, refilled per row with the context's features,
        # hashed once here as VW's text parser hashes ``x<j>`` in namespace ``c`` (no text
        # per row: formatting and parsing it cost more than VW's predict). Not with --lrq,
        # whose predictions then drift from VW's own text path (a test compares them): there
        # the precomputed action lines are parsed per call.
        self._reuse = self.lrq is None
        self._actions = ([self._example(line) for line in self._format.action_lines]
                         if self._reuse else [])
        if self._reuse:
            self._ns_hash = workspace.hash_space(CONTEXT_NS)
            self._hashes = [workspace.hash_feature(name, self._ns_hash)
                            for name in self._format.context_features]
            self._shared = shared = self._example("shared |" + CONTEXT_NS)
            _unsetup(workspace, shared)  # kept unset between calls: _fill sets it up
            # An empty text namespace is not made; erasing features keeps the namespace.
            pyvw.pylibvw.example.ensure_namespace_exists(shared, _CONTEXT_ORD)
            # The same features as setup_example leaves them (indices scaled to the weights'
            # stride), read back from VW: a batch sets the shared example up once and then
            # refills it with these, so a row costs no setup_example and unsetup_example.
            _push_features(shared, workspace, _CONTEXT_ORD, self._ns_hash,
                           [(h, 1.0) for h in self._hashes])
            _setup(workspace, shared)
            self._set_up_hashes = [_feature(shared, _CONTEXT_ORD, j) for j in range(self.dim)]
            _unsetup(workspace, shared)
            _erase_namespace(shared, _CONTEXT_ORD)
        self._arms_changed()

    def _example(self, line: str) -> pyvw.pylibvw.example:
        # Examples made here belong to Python (freed with the object), not to the workspace's
        # pool: finish_example on a partial multi-line example (a shared line without its
        # actions) reads past its end inside VW. They are pylibvw's own class, not its Python
        # subclass pyvw.Example, which every native call then has to look up anew.
        return pyvw.pylibvw.example(self._ws, _CB_LABEL.value, line)

    def _fill(self, values: list[float]) -> pyvw.pylibvw.example:
        """The reusable shared example holding a context row (its ``dim`` values), set up for
        one VW call; ``_unsetup`` it after the call. Its features are those of
        ``VWFormat.shared_line`` (zero and sub-float32 values left out), each value as the
        nearest float32 (VW's text parser may land an ulp off it)."""
        shared = self._shared
        _erase_namespace(shared, _CONTEXT_ORD)
        _push_features(shared, self._ws, _CONTEXT_ORD, self._ns_hash,
                       [(h, v) for h, v in zip(self._hashes, values, strict=True)
                        if v >= _F32_TINY or v <= -_F32_TINY])
        _setup(self._ws, shared)
        return shared

    def _multi(self, x: np.ndarray, arms: Sequence[int], label_arm: int = -1,
               label: str = "") -> list[pyvw.pylibvw.example]:
        """The multi-line example of context x (dim,) and ``arms``, in that order, the arm
        ``label_arm`` carrying ``label``; give it back to ``_release`` after the call."""
        fmt = self._format
        if self._reuse:
            return [self._fill(x.tolist())] + [
                self._example(label) if a == label_arm else self._actions[a] for a in arms]
        return self._ws.parse([fmt.shared_line(x)] + [label if a == label_arm else
                                                       fmt.action_lines[a] for a in arms])

    def _release(self, examples: list[pyvw.pylibvw.example]) -> None:
        if self._reuse:
            _unsetup(self._ws, examples[0])
        else:  # parsed from the workspace's pool, and complete: back they go
            self._ws.finish_example(examples)

    def _arms_changed(self) -> None:
        super()._arms_changed()
        self._active_idx = np.flatnonzero(self._active)

    def model_bytes(self) -> bytes:
        """The VW model file (with its learning state, so learning goes on where it stopped)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.vw"
            self._ws.save(str(path))
            return path.read_bytes()

    def export(self, path: str | Path, *, names: bool = True) -> None:
        """Write the model as text: VW's ``--invert_hash`` (weights by feature name, for the
        features of the arms and of a context with every column set) or, with
        ``names=False``, ``--readable_model`` (weights by hash index)."""
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.vw"
            model.write_bytes(self.model_bytes())
            option = "--invert_hash" if names else "--readable_model"
            ws = pyvw.Workspace(arg_list=["--quiet", "-i", str(model), option, str(path)])
            if names:  # invert_hash names only what it sees: show it every feature once
                ws.predict(self._format.lines(np.ones(self.dim), range(self.n_arms)))
            ws.finish()

    # -- decisions -----------------------------------------------------------------------

    @overload
    def _predict(self, X: np.ndarray, mask: np.ndarray,
                 scores: Literal[False] = False) -> tuple[np.ndarray, None]: ...

    @overload
    def _predict(self, X: np.ndarray, mask: np.ndarray,
                 scores: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...

    def _predict(self, X: np.ndarray, mask: np.ndarray, scores: bool = False
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """pmf (n, n_arms) in float64, renormalized over each row's eligible arms (0 elsewhere),
        and, when ``scores``, VW's reward estimates (n, n_arms) (-cost; -inf off the mask)."""
        n, k = X.shape[0], self.n_arms
        P = np.zeros((n, k))
        S = np.full((n, k), -np.inf) if scores else None
        # Rows by their set of eligible arms (one set for all rows without a per-row mask).
        groups: dict[bytes, list[int]] = {}
        if mask.shape[0] == 1:
            groups = {b"": list(range(n))} if n else {}
        else:
            for i, row in enumerate(mask):
                groups.setdefault(row.tobytes(), []).append(i)
        for rows in groups.values():
            idx = np.flatnonzero(mask[0] if mask.shape[0] == 1 else mask[rows[0]])
            pmfs, ests = self._predict_rows(X, rows, idx.tolist(), scores)
            at = (np.asarray(rows)[:, None], idx)
            P[at] = pmfs
            if S is not None:
                S[at] = ests
        P /= P.sum(axis=1, keepdims=True)
        return P, S

    def _predict_rows(self, X: np.ndarray, rows: list[int], arms: list[int],
                      scores: bool) -> tuple[np.ndarray, list[list[float]]]:
        """VW's pmf over ``arms`` for each of X's ``rows`` (len(rows), len(arms)) and, when
        ``scores``, its reward estimates (-cost). The batch-decision path: with reused examples
        the shared example is set up once, and a row costs its refill (one list of (index,
        value) pairs) and one predict call (the VW row of ``benchmarks.bench_vw``)."""
        pmfs = np.empty((len(rows), len(arms)))
        ests: list[list[float]] = []
        if not self._reuse:
            for i, out in zip(rows, pmfs, strict=True):
                example = self._multi(X[i], arms)
                _predict_multi(self._ws, example)
                out[:] = example[0].get_action_scores()
                if scores:
                    ests.append([-e.get_partial_prediction() for e in example[1:]])
                self._release(example)
            return pmfs, ests
        ws, shared = self._ws, self._shared
        example = [shared] + [self._actions[a] for a in arms]
        pmf_of, hashes, ns_hash = shared.get_action_scores, self._set_up_hashes, self._ns_hash
        _erase_namespace(shared, _CONTEXT_ORD)
        _setup(ws, shared)
        try:
            for start in range(0, len(rows), _CHUNK):
                Xr = X[rows[start : start + _CHUNK]]
                dense = (np.abs(Xr) >= _F32_TINY).all(axis=1).tolist()
                # The chunk's values as Python floats at once (array's tolist makes them faster
                # than NumPy's); each row's zip takes the next dim of them.
                values = iter(array("d", Xr.tobytes()).tolist())
                chunk: list[float] = []
                keep = chunk.extend
                for full in dense:
                    row = list(zip(hashes, values, strict=False))
                    _erase_namespace(shared, _CONTEXT_ORD)
                    _push_features(shared, ws, _CONTEXT_ORD, ns_hash, row if full else [
                        (h, v) for h, v in row if v >= _F32_TINY or v <= -_F32_TINY])
                    _predict_multi(ws, example)
                    keep(pmf_of())
                    if scores:
                        ests.append([-e.get_partial_prediction() for e in example[1:]])
                pmfs[start : start + len(dense)] = np.reshape(chunk, (len(dense), len(arms)))
        finally:
            _unsetup(ws, shared)
        return pmfs, ests

    def _choose(self, X: np.ndarray, mask: np.ndarray, rng: Rng | np.ndarray,
                with_propensities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        n = X.shape[0]
        P, _ = self._predict(X, mask)
        u = self._draw_uniforms(n, rng)[:, 0]
        cdf = np.cumsum(P, axis=1)
        # Zero-probability arms own an empty slice of the CDF, so they are never reached.
        arms = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1)
        over = arms >= self.n_arms  # u * total rounded up to total: the last possible arm
        arms[over] = self.n_arms - 1 - np.argmax(P[over][:, ::-1] > 0, axis=1)
        return arms, (P[np.arange(n), arms] if with_propensities else None)

    def _propensities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._predict(X, mask)[0]

    def _scores(self, X: np.ndarray) -> np.ndarray:
        return self._predict(X, self._all_active, scores=True)[1]

    def _expectation(self, X: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The reward model's estimate for the arm alone (a regression per action line: the
        # other arms do not change it); exploration has no per-arm bonus to report.
        n = X.shape[0]
        mean = np.empty(n)
        for i, a in enumerate(arms.tolist()):
            example = self._multi(X[i], [a])
            _predict_multi(self._ws, example)
            mean[i] = -example[1].get_partial_prediction()
            self._release(example)
        return mean, np.zeros(n)

    # -- learning ------------------------------------------------------------------------

    def learn_one(self, arm: int, x: Any, reward: float, *, propensity: float | None = None,
                  ts_ms: float | None = None) -> None:
        """Learn that ``arm``, chosen with probability ``propensity``, got ``reward`` in
        context x (dim,)."""
        a = self._arm(arm)
        r = self._reward(reward)
        p = (1.0 / self._active_idx.size if propensity is None else
             _finite_float("propensity", propensity, low=0.0, low_open=True, high=1.0))
        self._learn(a, self._context(x), r, p)

    def learn_many(self, arms: Any, X: Any, rewards: Any, *, propensities: Any = None,
                   ts_ms: Any = None) -> None:
        """Learn a batch in order: arms (n,), X (n, dim), rewards (n,), the logged
        propensities (n,) in (0, 1]."""
        X = self._contexts(X)
        n = X.shape[0]
        arms = self._arm_array(arms, n)
        rewards = self._reward_array(rewards, n)
        if propensities is None:
            p = np.full(n, 1.0 / self._active_idx.size)
        else:
            p = _float_vector("propensities", propensities, n)
            bad = ~((p > 0.0) & (p <= 1.0))
            if bad.any():
                i = np.flatnonzero(bad)[0]
                raise InvalidInputError(f"propensities: expected numbers in (0, 1], got {p[i]} "
                                        f"at row {i}")
        for a, x, r, q in zip(arms.tolist(), X, rewards.tolist(), p.tolist(), strict=True):
            self._learn(a, x, r, q)

    def _learn(self, arm: int, x: np.ndarray, reward: float, propensity: float) -> None:
        # The active arms as they were offered (a retired arm's late reward still counts).
        arms = self._active_idx.tolist() if self._active[arm] else [*self._active_idx.tolist(), arm]
        example = self._multi(x, arms, arm, self._format.label_line(arm, reward, propensity))
        _learn_multi(self._ws, example)
        self._release(example)

    # -- arms, state ---------------------------------------------------------------------

    @property
    def arm_features(self) -> np.ndarray:
        """(n_arms, m) the features of every arm."""
        return self._arm_features.copy()

    def add_arm(self, features: Any = None) -> int:
        m = self._arm_features.shape[1]
        f = np.asarray(np.zeros(0) if features is None and m == 0 else
                       features if features is not None else np.nan, dtype=np.float64)
        if f.shape != (m,) or not np.isfinite(f).all():
            raise InvalidInputError(f"features: expected {m} finite numbers, got {features!r}")
        self._arm_features = np.ascontiguousarray(np.vstack([self._arm_features, f[None, :]]))
        line = self._format.add_arm(f)
        if self._reuse:
            self._actions.append(self._example(line))
        self._active = np.append(self._active, True)
        self.n_arms += 1
        self._arms_changed()
        return self.n_arms - 1

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "exploration": self.exploration, "epsilon": self.epsilon,
                "bag": self.bag, "cover": self.cover, "interactions": list(self.interactions),
                "lrq": self.lrq, "learning_rate": self.learning_rate,
                "extra_args": list(self.extra_args), "gamma_scale": self.gamma_scale,
                "gamma_exponent": self.gamma_exponent}

    def state(self) -> dict[str, Any]:
        """The constructor's arguments, the arms (features, active) and the model's bytes."""
        return {"kind": self.kind, "format": STATE_FORMAT, "params": self._params(),
                "t_ref_ms": None,
                "arrays": {"model": np.frombuffer(self.model_bytes(), dtype=np.uint8).copy(),
                           "arm_features": self._arm_features.copy(),
                           "active": self._active.copy()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], *, rng: Rng = None) -> Self:
        """Rebuild the policy from ``state()``: same model, same predictions."""
        check_state_header(state, cls.kind)
        try:
            arrays = state["arrays"]
            F = np.asarray(arrays["arm_features"], dtype=np.float64)
            active = np.asarray(arrays["active"])
            model = np.asarray(arrays["model"])
            policy = cls(**state["params"], arm_features=F, rng=rng)
        except (KeyError, TypeError) as exc:
            raise IncompatibleStateError(
                f"{cls.kind}: bad or missing part of state: {exc}") from None
        except InvalidInputError as exc:
            raise IncompatibleStateError(f"{cls.kind}: bad params in state: {exc}") from None
        if active.shape != (policy.n_arms,) or active.dtype != np.bool_ or not active.any():
            raise IncompatibleStateError(
                f"{cls.kind}: array 'active' should be {policy.n_arms} bools with one True")
        if model.dtype != np.uint8 or model.ndim != 1:
            raise IncompatibleStateError(f"{cls.kind}: array 'model' should be bytes (uint8)")
        policy._active[...] = active
        policy._attach(cls._load(model.tobytes(), policy.exploration))
        return policy

    @staticmethod
    def _load(data: bytes, exploration: str) -> pyvw.Workspace:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.vw"
            path.write_bytes(data)
            try:
                ws = pyvw.Workspace(arg_list=["--quiet", "-i", str(path)])
            except RuntimeError as exc:
                raise IncompatibleStateError(f"vw: the model does not load: {exc}") from None
        learners = ws.get_enabled_learners()
        if _LEARNERS[exploration] not in learners:
            ws.finish()
            raise IncompatibleStateError(
                f"vw: the model is not a cb_explore_adf {exploration} model (learners {learners})")
        return ws

    def forget_many(self, arms: Any, X: Any, rewards: Any, *, ts_ms: Any = None) -> None:
        """Refused (IncompatibleStateError): VW's model is not a sum, so rows cannot be taken
        out of it; a slot that must forget a subscriber is retrained from its log without
        that subscriber's decisions."""
        raise IncompatibleStateError(
            "cannot forget rows of a vw policy: VW learns in order and its model is not a sum; "
            "retrain the slot from the log without the subscriber's decisions")

    def merge(self, other: Policy, *, rng: Rng = None) -> Self:
        raise IncompatibleStateError(
            "cannot merge vw policies: VW learns in order and its model is not a sum, so a VW "
            "slot has a single learner")

    def __getstate__(self) -> dict[str, Any]:
        # The workspace and its parsed examples are native objects: the model travels as bytes.
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_ws", "_actions", "_shared")}
        state["_model"] = self.model_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = state.pop("_model")
        self.__dict__.update(state)
        self._attach(self._load(model, self.exploration))
