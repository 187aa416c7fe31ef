"""Partition states: a model made the sum of partition engines' models (``absorb``), and the
VW slots' models taken from the single VW learner (``take_vw``). Models are built aside, then
swapped in by the caller under its lock, so a decision sees the old model or the new one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from bandit.engine.campaign import _Campaign, _is_vw, _Slot
from bandit.engine.tally import GROUPS, _Clustered, _Outcomes, _Tally
from bandit.policies import Bart, HybridLinUCB, Policy, from_state


def _align(mine: _Slot, theirs: _Slot) -> tuple[Policy, Policy | None] | None:
    """Copies of a partition's slot policies with this engine's arms and retirements, ready to
    merge; None when the partition has arms this engine does not know. The fallback is None
    where it is the policy itself."""
    if theirs.arm_ids != mine.arm_ids[:len(theirs.arm_ids)]:
        return None
    def aligned(policy: Policy) -> Policy:
        copy = from_state(policy.state())
        for arm in range(len(theirs.arm_ids), len(mine.arm_ids)):
            features = (mine.encoder.encode([mine.spec.arms[arm].features])[0]
                        if isinstance(copy, HybridLinUCB | Bart) else None)
            copy.add_arm(features)
        for retired in np.flatnonzero(copy.active & ~mine.policy.active):
            copy.retire_arm(int(retired))
        return copy

    shared = theirs.fallback is theirs.policy
    return aligned(theirs.policy), None if shared else aligned(theirs.fallback)


def merged(campaigns: Mapping[str, _Campaign], names: Sequence[str],
           partials: Sequence[Mapping[str, _Campaign]], seed: int) -> dict[str, Any]:
    """Per campaign of ``names`` that partials hold with arms this engine knows, in every
    slot: the slots' summed policies (None for VW slots, which keep theirs) with the
    partials' slots (for their tallies), and the partials' campaigns. Writes nothing."""
    built = {}
    for name in names:
        c = campaigns[name]
        parts = [p[name] for p in partials if name in p]
        slots = []
        for s in c.slots:
            aligned = [x for x in (_align(s, p.slot(s.spec.name)) for p in parts) if x]
            if not aligned:
                break
            if _is_vw(s):  # no sum to take: kept (absorb_vw's)
                policy = fallback = None
            else:
                policy, fallback = aligned[0]
                for other, other_fallback in aligned[1:]:
                    policy = policy.merge(other, rng=seed)
                    if fallback is not None:
                        # Every partition's slot has the same policy kind: a fallback of its
                        # own wherever this one has
                        fallback = fallback.merge(cast(Policy, other_fallback), rng=seed)
            tallies = [p.slot(s.spec.name) for p in parts]
            slots.append((policy, fallback, tallies))
        else:
            if parts:
                built[name] = (slots, parts)
    return built


def swap_in(campaigns: Mapping[str, _Campaign], built: Mapping[str, Any]) -> None:
    """Put ``merged``'s models and the partials' summed tallies and versions in place."""
    for name, (slots, parts) in built.items():
        c = campaigns[name]
        for s, (policy, fallback, tallies) in zip(c.slots, slots, strict=True):
            if policy is not None:
                s.policy = policy
                s.fallback = policy if fallback is None else fallback
            s.arm_tally, s.segment_counts, s.segment_tally = {}, {}, {}
            s.group_tally, s.outcome_tally, s.segment_outcomes = {}, {}, {}
            for t in tallies:
                _sum_into(s.arm_tally, t.arm_tally, _Tally)
                _sum_into(s.group_tally, t.group_tally, _Tally)
                _sum_into(s.outcome_tally, t.outcome_tally, _Outcomes)
                _sum_into(s.segment_outcomes, t.segment_outcomes, _Outcomes)
                for key, counts in t.segment_counts.items():
                    mine = s.segment_counts.setdefault(key, {})
                    for arm, n in counts.items():
                        mine[arm] = mine.get(arm, 0) + n
                for key, tally in t.segment_tally.items():
                    s.segment_tally[key] = s.segment_tally.get(key, _Tally()) + tally
        c.personalized = sum((p.personalized for p in parts), _Tally())
        c.holdout = sum((p.holdout for p in parts), _Tally())
        c.outcomes = {}
        for p in parts:
            _sum_into(c.outcomes, p.outcomes, _Outcomes)
        c.clustered = {g: sum((p.clustered[g] for p in parts), _Clustered()) for g in GROUPS}
        c.version = sum(p.version for p in parts)


def _sum_into(mine: dict, theirs: Mapping, empty: Callable[[], Any]) -> None:
    """``mine[key] += theirs[key]`` for every key of ``theirs``, a new key starting from
    ``empty()``, in ``theirs``' order."""
    for key, tally in theirs.items():
        mine[key] = mine.get(key, empty()) + tally


def vw_models(campaigns: Mapping[str, _Campaign], learned: Mapping[str, _Campaign],
              names: Sequence[str]) -> list[tuple[_Slot, Policy, Policy]]:
    """The VW slots' models (context, context-free) to take from ``learned``, the VW
    learner's campaigns, where it holds the same arms; arms retired here are retired there."""
    taken = []
    for name in names:
        theirs = {x.spec.name: x for x in learned[name].slots}
        for s in campaigns[name].slots:
            other = theirs.get(s.spec.name)
            if (not _is_vw(s) or other is None
                    or not _is_vw(other) or other.arm_ids != s.arm_ids):
                continue
            for policy in {id(p): p for p in (other.policy, other.fallback)}.values():
                for arm in np.flatnonzero(policy.active & ~s.policy.active):
                    policy.retire_arm(int(arm))
            taken.append((s, other.policy, other.fallback))
    return taken
