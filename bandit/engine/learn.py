"""Learning: closed decisions (joined events, or the join's columns) -> the slots' policies
and report tallies, in one batch per campaign and slot."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bandit.engine.campaign import _Campaign, _is_vw, _Slot, build_campaign, slot_matrix
from bandit.engine.intervals import CLUSTERS, clusters_of
from bandit.engine.join import Closed
from bandit.engine.tally import (
    GROUPS,
    _add_grouped,
    _add_outcomes,
    _Clustered,
    _groups,
    clustered_sums,
)
from bandit.errors import InvalidInputError, UnknownArmError
from bandit.models import OUTCOME_TYPES, CampaignSpec
from bandit.models.reports import Group
from bandit.policies import Policy
from bandit.wire.protocols import JoinedLike

_OUTCOME_INDEX = {kind: k for k, kind in enumerate(OUTCOME_TYPES)}


@dataclass
class _Learned:
    """A campaign's closed decisions as columns, what ``learn_columns`` learns: n
    decisions in order; per slot of the campaign (by name) the arm index in the slot (-1 where
    the decision has no such slot), its logged propensity and its reward (unclipped);
    ``context`` the encoded contexts of the decisions with ``has_context``, in order; ``best``
    a decision's best reward over its slots; ``segments`` as ``segment_pairs``; ``outcomes``
    its learned events per outcome type (``OUTCOME_TYPES`` order); ``clusters`` each
    decision's subscriber bucket (``intervals.clusters_of`` of its subject key); ``after``, for
    decisions the erasure ledger gives back (``Ledger.columns``), how many of the campaign's
    decisions were learned after each (None: unknown)."""

    ts: np.ndarray  # (n,) float64
    holdout: np.ndarray  # (n,) int64
    best: np.ndarray  # (n,) float64
    arms: dict[str, np.ndarray]  # slot -> (n,) int64
    propensities: dict[str, np.ndarray]  # slot -> (n,) float64
    rewards: dict[str, np.ndarray]  # slot -> (n,) float64
    has_context: np.ndarray  # (n,) bool
    context: np.ndarray  # (n with context, dim) float64
    segments: tuple[list, np.ndarray, np.ndarray, int]
    outcomes: np.ndarray  # (n, len(OUTCOME_TYPES)) int64
    clusters: np.ndarray  # (n,) int64
    after: np.ndarray | None = None  # (n,) int64


def by_campaign(campaigns: Mapping[str, _Campaign], get: Callable[[str], _Campaign],
                joined: Sequence[JoinedLike]) -> dict[str, list[JoinedLike]]:
    """``joined`` grouped by campaign, each event checked: unknown campaigns (``get`` raises),
    slots, arms or outcome types, or a negative outcome count, refuse the whole batch before
    anything is learned."""
    grouped: dict[str, list[JoinedLike]] = {}
    slots: dict[str, dict[str, _Slot]] = {}  # per campaign, by name
    for i, e in enumerate(joined):
        named = slots.get(e.campaign)
        if named is None:
            named = slots[e.campaign] = {x.spec.name: x for x in get(e.campaign).slots}
        for slot, choice in e.slots.items():
            s = named.get(slot) or get(e.campaign).slot(slot)  # unknown: raises
            if choice.arm not in s.arm_index:
                raise UnknownArmError(f"event {i}: campaign {e.campaign!r}, slot {slot!r}: "
                                      f"no arm {choice.arm!r}")
        for kind, count in e.outcomes.items():
            if kind not in _OUTCOME_INDEX or count < 0:
                raise InvalidInputError(
                    f"event {i}: outcomes: {kind!r}: " + (
                        f"not an outcome type (one of {', '.join(OUTCOME_TYPES)})"
                        if kind not in _OUTCOME_INDEX else f"count {count} is negative"))
        grouped.setdefault(e.campaign, []).append(e)
    return grouped


def closed_campaigns(closed: Closed) -> list[tuple[str, np.ndarray]]:
    """Each campaign of the join's closed decisions, in order of first appearance, with its
    rows."""
    campaigns = [shape[0] for shape in closed.shapes]
    of_row = np.array([campaigns.index(name) for name in campaigns])[closed.shape]
    return [(campaigns[k], np.flatnonzero(of_row == k)) for k in dict.fromkeys(of_row.tolist())]


def event_columns(c: _Campaign, events: list[JoinedLike]) -> _Learned:
    """The columns of ``events`` (all of campaign ``c``, checked)."""
    default = c.spec.default_reward
    arms, propensities, rewards = {}, {}, {}
    for s in c.slots:
        name, index = s.spec.name, s.arm_index
        choices = [e.slots.get(name) for e in events]
        arms[name] = np.array([-1 if x is None else index[x.arm] for x in choices],
                              dtype=np.int64)
        propensities[name] = np.array([0.0 if x is None else x.propensity for x in choices],
                                      dtype=np.float64)
        rewards[name] = np.array([e.rewards.get(name, default) for e in events],
                                 dtype=np.float64)
    has_context = np.array([e.context is not None for e in events], dtype=np.bool_)
    outcomes = np.zeros((len(events), len(OUTCOME_TYPES)), dtype=np.int64)
    for i, e in enumerate(events):
        for kind, count in e.outcomes.items():
            outcomes[i, _OUTCOME_INDEX[kind]] = count
    return _Learned(
        ts=np.array([e.ts for e in events], dtype=np.float64),
        holdout=np.array([e.holdout for e in events], dtype=np.int64),
        best=np.array([max(e.rewards.values(), default=default) for e in events],
                      dtype=np.float64),
        arms=arms, propensities=propensities, rewards=rewards, has_context=has_context,
        context=c.context.encode([e.context for e in events if e.context is not None]),
        segments=segment_pairs(events), outcomes=outcomes,
        clusters=clusters_of([e.subject for e in events]))


def closed_columns(c: _Campaign, closed: Closed, rows: np.ndarray) -> _Learned:
    """The columns of the join's closed decisions ``rows`` (all of campaign ``c``)."""
    n, names = len(rows), closed.names
    shape = closed.shape[rows]
    arms = {s.spec.name: np.full(n, -1, dtype=np.int64) for s in c.slots}
    propensities = {s.spec.name: np.zeros(n) for s in c.slots}
    rewards = {s.spec.name: np.full(n, c.spec.default_reward) for s in c.slots}
    best = np.full(n, c.spec.default_reward)
    has_context = np.zeros(n, dtype=np.bool_)
    X = np.zeros((n, c.context.dim))
    pairs: list[tuple[np.ndarray, np.ndarray]] = []  # per shape: (rows, pair per segment)
    keys: dict[tuple[str, str], int] = {}
    for k in np.unique(shape).tolist():
        _, slots, context_keys, segment_keys = closed.shapes[k]
        at = np.flatnonzero(shape == k)
        mine = rows[at]
        for j, name in enumerate(slots):
            index = c.slot(name).arm_index
            named = closed.arm[mine, j]
            table = _table(named, len(names))
            seen = np.flatnonzero(table)
            table[seen] = [index[names[a]] for a in seen.tolist()]
            arms[name][at] = table[named]
            propensities[name][at] = closed.propensity[mine, j]
            # Python's max over the rewards in slot order: the first, then any greater.
            column = closed.reward[mine, j]
            rewards[name][at] = column
            best[at] = column if j == 0 else np.where(column > best[at], column, best[at])
        if context_keys is not None:
            has_context[at] = True
            whole = len(at) == n  # the usual batch: one shape, encoded into X in place
            sub = X if whole else np.zeros((len(at), c.context.dim))
            c.context.encode_columns([key for key, _ in context_keys],
                                     closed.context[mine, :len(context_keys)], names, sub)
            if not whole:
                X[at] = sub
        if segment_keys:
            codes = np.empty((len(at), len(segment_keys)), dtype=np.int64)
            for j, key in enumerate(segment_keys):
                named = closed.segment[mine, j]
                table = _table(named, len(names))
                seen = np.flatnonzero(table)
                table[seen] = [keys.setdefault((key, names[v]), len(keys))
                               for v in seen.tolist()]
                codes[:, j] = table[named]
            pairs.append((at, codes))
    if pairs:  # event by event, each in its segment order: as segment_pairs lists them
        event = np.concatenate([np.repeat(at, codes.shape[1]) for at, codes in pairs])
        code = np.concatenate([codes.ravel() for _, codes in pairs])
        if len(pairs) > 1:  # shapes interleave: their rows' pairs merge by row, stably
            order = np.argsort(event, kind="stable")
            event, code = event[order], code[order]
        segments = (list(keys), event, code, n)
    else:
        segments = ([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), n)
    return _Learned(ts=closed.ts[rows], holdout=_take(closed.holdout, rows).astype(np.int64),
                    best=best, arms=arms, propensities=propensities, rewards=rewards,
                    has_context=has_context,
                    context=X if has_context.all() else X[has_context], segments=segments,
                    outcomes=_take(closed.outcomes, rows).astype(np.int64),
                    clusters=clusters_of([closed.subjects[r] for r in rows.tolist()]))


def _table(codes: np.ndarray, size: int) -> np.ndarray:
    """(size,) int64: 1 at the values ``codes`` (each in 0..size-1) holds, 0 elsewhere; the
    caller writes each present value's new code there and maps ``codes`` through it (the
    distinct values in increasing order, as np.unique's, without its sort)."""
    table = np.zeros(size, dtype=np.int64)
    table[codes] = 1
    return table


def learn_columns(c: _Campaign, cols: _Learned) -> None:
    """The learning itself, for either entry point: per slot the policy (context and
    context-free), then the report tallies (``tally_columns``) and the campaign's version."""
    for s in c.slots:
        for policy, (a, X, r, ts), logged in slot_batches(s, cols):
            policy.learn_many(a, X, r, ts_ms=ts, **logged)
    tally_columns(c, cols)
    c.version += 1


def tally_columns(c: _Campaign, cols: _Learned) -> None:
    """Add the columns to every report tally of campaign ``c``: per slot (``tally``, and
    the slot's clustered tallies, its reward clipped as its policy learns it), then the
    campaign's totals, outcomes and clustered tallies (its reward: a decision's best).
    Erasure runs it on blank tallies to find what learning added
    (``bandit.engine.erase``)."""
    for s in c.slots:
        name = s.spec.name
        rows = np.flatnonzero(cols.arms[name] >= 0)
        if not len(rows):
            continue
        holdout, outcomes = _take(cols.holdout, rows), _take(cols.outcomes, rows)
        low, high = s.policy.reward_range
        rewards = np.clip(_take(cols.rewards[name], rows), low, high)
        tally(s, _take(cols.arms[name], rows), rewards, rows, cols.segments, holdout, outcomes)
        _add_clustered(s.clustered, holdout, _take(cols.clusters, rows), outcomes, rewards)
    totals = {0: c.personalized, 1: c.holdout}
    _add_grouped(totals, [0, 1], cols.holdout, cols.best)
    _add_outcomes(c.outcomes, GROUPS, cols.holdout, cols.outcomes)
    _add_clustered(c.clustered, cols.holdout, cols.clusters, cols.outcomes, cols.best)


def _take(column: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``column[rows]`` for increasing ``rows``; the column itself (no copy) when they are
    all of its rows, as they are for a slot every decision has."""
    return column if len(rows) == len(column) else column[rows]


# A policy's share of a slot's learning: (arms, X, rewards, ts_ms), and the keyword arguments.
_Batch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def slot_batches(s: _Slot, cols: _Learned) -> list[tuple[Policy, _Batch, dict[str, np.ndarray]]]:
    """What slot ``s``'s policies learn of the columns, in order: per policy (arms, X, rewards,
    event times) and for VW the logged propensities. The context-free fallback learns every
    decision with the slot, the policy the ones with a context over the context and the
    earlier slots' choices; a context-free slot's policy is its fallback and learns them all.
    Rewards are clipped into the policy's range: a Bernoulli model (Beta TS) learns "at least
    one click" from a sum of clicks."""
    name = s.spec.name
    present = cols.arms[name] >= 0
    rows = np.flatnonzero(present)
    if not len(rows):
        return []
    # Columns, not copies, where the rows are all of them (policies leave inputs untouched).
    arms, ts = _take(cols.arms[name], rows), _take(cols.ts, rows)
    low, high = s.policy.reward_range
    rewards = np.clip(_take(cols.rewards[name], rows), low, high)
    # VW learns each event at the propensity it was logged with.
    vw = _is_vw(s)
    logged = {"propensities": _take(cols.propensities[name], rows)} if vw else {}
    if s.fallback is s.policy:  # context-free slot: every event, context or not
        return [(s.policy, (arms, np.empty((len(rows), 0)), rewards, ts), {})]
    batches = [(s.fallback, (arms, np.ones((len(rows), 1)), rewards, ts), logged)]
    with_context = np.flatnonzero(cols.has_context)
    ctx = np.flatnonzero(present[with_context])
    if len(ctx):
        event = _take(with_context, ctx)
        chosen = {prev: np.maximum(cols.arms[prev][event], 0) for prev, _ in s.conditioned}
        X = slot_matrix(s, _take(cols.context, ctx), chosen)
        if len(event) < len(rows):
            arms, rewards, ts = cols.arms[name][event], np.clip(
                cols.rewards[name][event], low, high), cols.ts[event]
            logged = {"propensities": cols.propensities[name][event]} if vw else {}
        batches.append((s.policy, (arms, X, rewards, ts), logged))
    return batches


def _add_clustered(tallies: Mapping[Group, _Clustered], holdout: np.ndarray,
                   clusters: np.ndarray, outcomes: np.ndarray, rewards: np.ndarray) -> None:
    """Add each decision to its group's (``GROUPS[holdout[i]]``) clustered tally, both groups
    in one pass (a bucket's reward sums its decisions in row order either way)."""
    n, reached, reward = clustered_sums(holdout * CLUSTERS + clusters, outcomes, rewards,
                                        len(GROUPS))
    for flag, group in enumerate(GROUPS):
        at = slice(flag * CLUSTERS, (flag + 1) * CLUSTERS)
        if n[at].any():
            tallies[group].add_sums(n[at], reached[at], reward[at])


def segment_pairs(events: Sequence[JoinedLike]) -> tuple[list, np.ndarray, np.ndarray, int]:
    """Every (event, segment value) pair of a batch: the values seen (segment, value),
    per pair the event's index and the value's index (in event order), and the number of
    events."""
    index: dict[tuple[str, str], int] = {}
    rows, codes = [], []
    for i, e in enumerate(events):
        for key in e.segments.items():
            rows.append(i)
            codes.append(index.setdefault(key, len(index)))
    return (list(index), np.array(rows, dtype=np.int64), np.array(codes, dtype=np.int64),
            len(events))


def tally(s: _Slot, arms: np.ndarray, rewards: np.ndarray, rows: np.ndarray,
          segments: tuple[list, np.ndarray, np.ndarray, int], holdout: np.ndarray,
          outcomes: np.ndarray) -> None:
    """Add a slot's events to its report tallies: reward per arm, reward and outcomes per
    (arm, group), reward, outcomes and per-arm counts per segment value. ``arms``,
    ``rewards``, ``holdout`` (n,) and ``outcomes`` (n, len(OUTCOME_TYPES)) belong to the
    batch's events ``rows``; ``segments`` is ``segment_pairs`` of the whole batch."""
    rewards = np.asarray(rewards, dtype=np.float64)
    _add_grouped(s.arm_tally, s.arm_ids, arms, rewards)
    groups = [(arm, group) for arm in s.arm_ids for group in GROUPS]
    codes = arms * len(GROUPS) + holdout
    _add_grouped(s.group_tally, groups, codes, rewards)
    _add_outcomes(s.outcome_tally, groups, codes, outcomes)
    keys, event, code, n_events = segments
    if not len(code):
        return
    position = np.full(n_events, -1, dtype=np.int64)  # event -> its row among ``rows``
    position[rows] = np.arange(len(rows))
    at = position[event]
    code, at = code[at >= 0], at[at >= 0]
    _add_grouped(s.segment_tally, keys, code, rewards[at])
    _add_outcomes(s.segment_outcomes, keys, code, outcomes, at)
    pairs = code * len(s.arm_ids) + arms[at]
    seen, counts = _groups(pairs, len(keys) * len(s.arm_ids))
    for pair, n in zip(seen.tolist(), counts.tolist(), strict=True):
        key, arm = keys[pair // len(s.arm_ids)], s.arm_ids[pair % len(s.arm_ids)]
        mine = s.segment_counts.setdefault(key, {})
        mine[arm] = mine.get(arm, 0) + n


def encode_slot_contexts(spec: CampaignSpec, slot: str,
                         events: Sequence[JoinedLike]) -> tuple[np.ndarray, list[str]]:
    """The input of ``slot``'s policy for logged events, as the engine builds it when it learns
    them: X (n, dim) (campaign context, then a one-hot of each earlier slot it conditions on)
    and the column names (dim,). Every event must carry a context; offline evaluation uses it
    so that a policy replayed on the log sees what the live one saw."""
    c = build_campaign(spec, np.random.default_rng(0))
    s = c.slot(slot)
    base = c.context.encode([e.context or {} for e in events])
    chosen = {prev: np.array([c.slot(prev).arm_index.get(e.slots[prev].arm, 0)
                              if prev in e.slots else 0 for e in events], dtype=np.int64)
              for prev, _ in s.conditioned}
    return slot_matrix(s, base, chosen), list(s.columns)
