"""Deciding: the single-row path (``decide_one``) and the columnar path (``decide_columns``),
which give the same decision for the same request and engine state; requests as columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandit.engine.campaign import (
    _Campaign,
    _rule_features,
    _rule_holds,
    _Slot,
    _slot_row,
    slot_matrix,
)
from bandit.engine.decisionlog import DecisionLog
from bandit.engine.output import DecisionBatch, OneDecision, SlotColumns, one_json
from bandit.engine.pseudonyms import SubjectKeys
from bandit.engine.randomness import (
    _decision_ids,
    _in_holdout,
    _with_consent_bit,
    decision_draws,
    holdout_mask,
    one_id_words,
    slot_draws,
)
from bandit.errors import InvalidInputError
from bandit.models import Contribution
from bandit.wire.decisions import DecisionRequestLike

_ONE = np.ones(1)  # the context-free fallback's input row (read only)
_NO_DRAWS = np.empty((0, 0))  # a decision that decides no slot draws nothing (read only)
_EXPLAIN_TOP = 3


@dataclass(frozen=True)
class RequestColumns:
    """Decision requests (n) of one campaign as columns, what ``Engine.decide_columns``
    decides: ``context`` (n, dim) the encoded contexts (zero rows without consent), and for
    every feature an eligibility rule of the campaign reads, each request's value
    (``rule_values``: the context's, else the segments', else None). ``contexts`` and
    ``segments`` are the requests' own (a mapping, or a Struct of ``bandit.wire.batch``, per
    request), for the decision log."""

    campaign: str
    user_ids: list[str]
    consent: np.ndarray  # (n,) bool
    explain: np.ndarray  # (n,) bool
    context: np.ndarray  # (n, dim) float64
    rule_values: dict[str, list[Any]]
    contexts: Sequence[Any]
    segments: Sequence[Mapping[str, str]]

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows(self, start: int, stop: int) -> RequestColumns:
        """Requests start..stop-1, as columns."""
        return RequestColumns(self.campaign, self.user_ids[start:stop],
                              self.consent[start:stop], self.explain[start:stop],
                              self.context[start:stop],
                              {f: v[start:stop] for f, v in self.rule_values.items()},
                              self.contexts[start:stop], self.segments[start:stop])


def eligible(s: _Slot, n: int, rule_values: dict[str, list[Any]]) -> np.ndarray | None:
    """(n, k) bool: the arms each of n requests may get, from the values the slot's
    eligibility rules read (``RequestColumns.rule_values``); None without rules."""
    if not s.spec.eligibility:
        return None
    return eligibility_mask(s, n, rule_values)


def eligibility_mask(s: _Slot, n: int, rule_values: dict[str, list[Any]]) -> np.ndarray:
    """``eligible`` of a slot with eligibility rules."""
    mask = np.ones((n, len(s.arm_ids)), dtype=bool)
    for rule in s.spec.eligibility:
        values = rule_values[rule.feature]
        mask[:, s.arm_index[rule.arm]] &= np.fromiter(
            (_rule_holds(rule, v) for v in values), dtype=bool, count=n)
    return mask


_Slotted = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                 np.ndarray | None]


def _decide_slot(c: _Campaign, s: _Slot, columns: RequestColumns, X: np.ndarray,
                 seeds: np.ndarray, holdout: np.ndarray, logged: bool) -> _Slotted:
    """One slot's arms, propensities, expected rewards and bonuses (n,) for ``columns``, and
    when ``logged`` (a decision sink is set) every arm's probability (n, k) and the eligible
    arms (n, k) bool: probability 1 on the default arm where no policy decides."""
    n, k = len(columns), len(s.arm_ids)
    consent = columns.consent
    arms = np.full(n, s.default, dtype=np.int64)
    probs = np.ones(n)
    mean, bonus = np.zeros(n), np.zeros(n)
    P = eligible_arms = None
    if logged:
        P, eligible_arms = np.zeros((n, k)), np.zeros((n, k), dtype=bool)
        P[:, s.default], eligible_arms[:, s.default] = 1.0, True
    if c.paused:
        return arms, probs, mean, bonus, P, eligible_arms
    allowed = eligible(s, n, columns.rule_values)
    if allowed is not None:
        allowed &= s.policy.active[None, :]
    live = ~holdout
    if allowed is not None:
        # No eligible arm left for a subscriber: the default arm, deterministically.
        live &= allowed.any(axis=1)
    draws = decision_draws(seeds, s.index, 2 + k)
    for policy, rows, Xp in ((s.policy, live & consent, X),
                             (s.fallback, live & ~consent, np.ones((n, 1)))):
        idx = np.flatnonzero(rows)
        if idx.size == 0:
            continue
        Xp = Xp if policy.dim else Xp[:, :0]
        m = None if allowed is None else allowed[idx]
        a, p = policy.choose_many(Xp[idx], eligible=m, draws=draws[idx], with_propensities=True)
        arms[idx], probs[idx] = a, p
        mean[idx], bonus[idx] = policy.expectation(Xp[idx], a)
        if P is not None and eligible_arms is not None:
            P[idx] = policy.propensities(Xp[idx], eligible=m)
            eligible_arms[idx] = policy.active if m is None else m
    return arms, probs, mean, bonus, P, eligible_arms


def explain(s: _Slot, X: np.ndarray, arms: np.ndarray, ask: np.ndarray
            ) -> list[list[Contribution] | None]:
    """Top features by |theta_a[j] x[j]| for the rows ``ask`` (n,) bool (those that asked
    and were personalized)."""
    out: list[list[Contribution] | None] = [None] * len(arms)
    rows = np.flatnonzero(ask)
    contributions = getattr(s.policy, "contributions", None)
    if not len(rows) or contributions is None:
        return out
    C = contributions(X[rows], arms[rows])
    for row, i in zip(C, rows.tolist(), strict=True):
        top = np.argsort(-np.abs(row))[:_EXPLAIN_TOP]
        out[i] = [Contribution(feature=s.columns[j], value=float(row[j])) for j in top if row[j]]
    return out


def decide_one(c: _Campaign, r: Any, id_rng: np.random.Generator | None,
               subjects: SubjectKeys, ts: int | None = None,
               vectors: bool = True) -> OneDecision:
    """``decide_columns`` for one request, step for step (the same id words, the same errors
    at the same points), with scalars where it has columns, and one fused call per slot
    (Policy.decide_row) for choice, propensity, mean and bonus. ``r`` is a
    ``DecisionRequest`` or anything with its attributes (the service's msgspec mirror).
    ``ts`` (ms; a decision sink is set): the decision's ``DecisionLog`` rides along, with
    every arm's probability unless ``vectors`` is False, and the subscriber's pseudonym from
    ``subjects``."""
    hi, lo = one_id_words(id_rng)
    consent = r.consent
    lo = lo & ~1 | bool(consent)  # the consent bit
    decision_id = f"{hi:016x}{lo:016x}"
    holdout = _in_holdout(r.campaign, r.user_id, c.spec.holdout)
    # encode_one refuses what is not a finite number within bounds, so every row the
    # policies see is finite: their fused paths need no check of their own.
    base = c.context.encode_one(r.context) if consent else np.zeros(c.context.dim)
    # Holdout and pause decide no slot: no draws. Otherwise every slot's at once.
    live = not holdout and not c.paused
    width = 2 + max((len(s.arm_ids) for s in c.slots), default=0)
    draws = slot_draws(hi ^ lo, len(c.slots), width) if live else _NO_DRAWS
    chosen: dict[str, int] = {}
    arms: list[str] = []
    slots: list[str] = []
    numbers: list[float] = []  # per slot: propensity, expected reward, exploration bonus
    explanations: list[list[dict[str, Any]] | None] = []
    logged: list[tuple[_Slot, tuple[np.ndarray, np.ndarray] | tuple[None, None]]] = []
    for s in c.slots:
        x = _slot_row(s, base, chosen)
        a, p, mean, bonus = s.default, 1.0, 0.0, 0.0
        mask = None
        if live and s.spec.eligibility:
            allowed = eligibility_mask(s, 1, {rule.feature: [
                r.context.get(rule.feature, r.segments.get(rule.feature))]
                for rule in s.spec.eligibility})
            mask = allowed[0] & s.policy.active
        decided = live and (mask is None or mask.any())
        k = len(s.arm_ids)
        vector: tuple[np.ndarray, np.ndarray] | tuple[None, None] = (None, None)
        if decided:
            policy, xp = (s.policy, x) if consent else (s.fallback, _ONE)
            u = draws[s.index, :2 + k]
            if ts is not None and vectors:  # the log's vector from the same call
                P = np.empty((1, k))
                a, p, mean, bonus = policy.decide_row_vector(
                    xp if policy.dim else xp[:0], mask, u, P[0])
                vector = (P, (policy.active if mask is None else mask)[None, :])
            else:
                a, p, mean, bonus = policy.decide_row(xp if policy.dim else xp[:0], mask, u)
        explanation = None
        if r.explain:
            e = explain(s, x[None, :], np.array([a], dtype=np.int64),
                        np.array([not holdout and consent]))[0]
            if e is not None:
                explanation = [item.model_dump() for item in e]
        chosen[s.spec.name] = a
        arms.append(s.arm_ids[a])
        slots.append(s.spec.name)
        numbers += (p, mean, bonus)
        explanations.append(explanation)
        if ts is not None:
            if vectors and not decided:
                P, allowed = np.zeros((1, k)), np.zeros((1, k), dtype=bool)
                P[0, a], allowed[0, a] = 1.0, True
                vector = (P, allowed)
            logged.append((s, vector))
    log = None
    if ts is not None:
        # Each slot's (1,) columns are views of two arrays: two allocations per decision, not
        # four per slot.
        indices, values = np.array(list(chosen.values())), np.array(numbers)
        log = DecisionLog(
            r.campaign, [decision_id], [subjects.pseudonym(r.user_id)], ts, c.version,
            np.array([holdout]), np.array([bool(consent)]), [r.context], [r.segments],
            [SlotColumns(s.spec.name, list(s.arm_ids), indices[j:j + 1],
                         values[3 * j:3 * j + 1], values[3 * j + 1:3 * j + 2],
                         values[3 * j + 2:3 * j + 3], None, *vector)
             for j, (s, vector) in enumerate(logged)])
    text = one_json(decision_id, r.campaign, r.user_id, holdout, c.version, slots, arms,
                    numbers, explanations)
    return OneDecision(text, r.campaign, slots, arms, log)


def batch_columns(c: _Campaign, requests: Sequence[DecisionRequestLike]) -> RequestColumns:
    """The columns of pydantic requests of campaign ``c``: contexts encoded (zero rows without
    consent, whose context is neither read nor used: the context-free fallback decides them)."""
    n = len(requests)
    consent = np.fromiter((r.consent for r in requests), dtype=bool, count=n)
    base = np.zeros((n, c.context.dim))
    given = np.flatnonzero(consent)
    base[given] = c.context.encode([requests[i].context for i in given.tolist()])
    return RequestColumns(
        campaign=c.spec.name, user_ids=[r.user_id for r in requests], consent=consent,
        explain=np.fromiter((r.explain for r in requests), dtype=bool, count=n),
        context=base,
        rule_values={f: [r.context.get(f, r.segments.get(f)) for r in requests]
                     for f in _rule_features(c)},
        contexts=[r.context for r in requests], segments=[r.segments for r in requests])


def request_columns(c: _Campaign, user_ids: list[str], consent: np.ndarray,
                    explain: np.ndarray, contexts: Sequence[Any],
                    values: Callable[[Any], tuple], segments: Sequence[Mapping[str, str]],
                    absent: object) -> RequestColumns:
    """``Engine.request_columns`` of campaign ``c``."""
    n = len(user_ids)
    base = np.zeros((n, c.context.dim))
    given = np.flatnonzero(consent)
    if len(given) == n:
        c.context.encode_values(contexts, values, absent, base)
    elif len(given):
        sub = np.zeros((len(given), c.context.dim))
        c.context.encode_values([contexts[i] for i in given.tolist()], values, absent, sub)
        base[given] = sub
    position = {f.name: j for j, f in enumerate(c.spec.context.features)}
    rule_values = {}
    for name in _rule_features(c):
        j = position.get(name)
        if j is None:
            rule_values[name] = [seg.get(name) for seg in segments]
        else:
            column = [values(row)[j] for row in contexts]
            rule_values[name] = [seg.get(name) if v is absent else v
                                 for v, seg in zip(column, segments, strict=True)]
    return RequestColumns(campaign=c.spec.name, user_ids=user_ids, consent=consent,
                          explain=explain, context=base, rule_values=rule_values,
                          contexts=contexts, segments=segments)


@dataclass(frozen=True, eq=False)
class ValueColumns(Sequence[dict[str, Any]]):
    """Named values of n rows as columns (a file's, ``bandit.bulk``): ``values`` (n,
    len(keys)) float64, where a key in ``categorical`` holds indices into ``names`` (None
    there: the row omits the key). Row i, as a mapping, is built only when read (the decision
    log reads them; deciding does not).

    >>> rows = ValueColumns(("plan", "score"), np.array([[0.0, 1.5], [1.0, 2.0]]),
    ...                     ("pro", None), frozenset({"plan"}))
    >>> rows[0], rows[1], len(rows[1:])
    ({'plan': 'pro', 'score': 1.5}, {'score': 2.0}, 1)
    """

    keys: tuple[str, ...]
    values: np.ndarray  # (n, len(keys)) float64
    names: Sequence[str | None]
    categorical: frozenset[str]

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return ValueColumns(self.keys, self.values[i], self.names, self.categorical)
        row = {}
        for key, v in zip(self.keys, self.values[i].tolist(), strict=True):
            if key not in self.categorical:
                row[key] = v
            elif (name := self.names[int(v)]) is not None:
                row[key] = name
        return row

    def column(self, key: str) -> list[Any]:
        """The values of ``key`` (None where a row omits it, or without the key)."""
        if key not in self.keys:
            return [None] * len(self)
        column = self.values[:, self.keys.index(key)]
        if key not in self.categorical:
            return column.tolist()
        return [self.names[v] for v in column.astype(np.int64).tolist()]


def value_columns(c: _Campaign, user_ids: list[str], consent: np.ndarray, explain: np.ndarray,
                  contexts: ValueColumns, segments: ValueColumns) -> RequestColumns:
    """``Engine.value_columns`` of campaign ``c``: ``request_columns`` of requests whose
    contexts and segments come as columns, encoded without a Python object per row."""
    schema = {f.name: f.kind for f in c.spec.context.features}
    for key in contexts.keys:
        kind = schema.get(key)
        if kind is None or (kind == "categorical") != (key in contexts.categorical):
            given_kind = "categorical" if key in contexts.categorical else "numeric"
            raise InvalidInputError(f"contexts: {key!r} is no {given_kind} feature of campaign "
                                    f"{c.spec.name!r}")
    n = len(user_ids)
    base = np.zeros((n, c.context.dim))
    given = np.flatnonzero(consent)
    if len(given) == n:
        c.context.encode_columns(contexts.keys, contexts.values, contexts.names, base)
    elif len(given):
        sub = np.zeros((len(given), c.context.dim))
        c.context.encode_columns(contexts.keys, contexts.values[given], contexts.names, sub)
        base[given] = sub
    rule_values = {}
    for name in _rule_features(c):
        fallback = segments.column(name)
        rule_values[name] = [f if v is None else v
                             for v, f in zip(contexts.column(name), fallback, strict=True)]
    return RequestColumns(campaign=c.spec.name, user_ids=user_ids, consent=consent,
                          explain=explain, context=base, rule_values=rule_values,
                          contexts=contexts, segments=segments)


def decide_columns(c: _Campaign, columns: RequestColumns, words: np.ndarray,
                   subjects: SubjectKeys, ts: int | None = None,
                   vectors: bool = True) -> DecisionBatch:
    """The decisions of ``columns`` with ids from ``words`` (n, 2) uint64 and the consent
    bit, each slot in one batch call per policy. Holds the lock (the caller's). ``ts`` (ms;
    a decision sink is set): the batch carries its ``DecisionLog``, with every arm's
    probability unless ``vectors`` is False, and the subscribers' pseudonyms from
    ``subjects``."""
    _with_consent_bit(words, columns.consent)
    seeds = words[:, 0] ^ words[:, 1]
    holdout = holdout_mask(c.spec.name, columns.user_ids, c.spec.holdout)
    skip = holdout | ~columns.consent  # not personalized: no explanation
    asked = bool(columns.explain.any())
    chosen: dict[str, np.ndarray] = {}
    slots = []
    for s in c.slots:
        X = slot_matrix(s, columns.context, chosen)
        arms, probs, mean, bonus, P, allowed = _decide_slot(c, s, columns, X, seeds, holdout,
                                                            ts is not None and vectors)
        explanations = explain(s, X, arms, columns.explain & ~skip) if asked else None
        chosen[s.spec.name] = arms
        slots.append(SlotColumns(s.spec.name, list(s.arm_ids), arms, probs, mean, bonus,
                                 explanations, P, allowed))
    ids = _decision_ids(words)
    log = None if ts is None else DecisionLog(
        c.spec.name, ids, subjects.pseudonyms(columns.user_ids), ts, c.version,
        holdout, columns.consent, columns.contexts, columns.segments, slots)
    return DecisionBatch(c.spec.name, ids, columns.user_ids, holdout, c.version, slots, log)
