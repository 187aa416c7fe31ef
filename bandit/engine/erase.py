"""Erasure from the model: a subject's closed decisions taken out of every slot's policy and
every report tally.

Learning adds each closed decision to sums (``bandit.engine.learn``); forgetting it subtracts
exactly what it added, decayed to each state's reference time (``Policy.forget_many``), so a
campaign that learned a stream and then forgot a subject's decisions holds the policies of one
that never learned them (its clock aside: see ``forget_many``). VW slots are not sums and
cannot forget; they are named for retraining from the log without the subject.

The report tallies (``bandit.engine.tally``: per slot reward and outcomes per arm, group and
segment value, the campaign's totals, the lift's clustered sums) lose what learning added:
learning's own code (``learn.tally_columns``) tallies the decisions again on blank tallies,
which are then taken out, counts exactly, float sums by subtraction; an entry left without
decisions leaves the report, as it never appears in one that did not learn them, so the report
equals that campaign's up to float rounding (and its model version). The guardrails' baseline
of a resume loses the decisions learned before the resume (``guardrails.baseline_without``).
A count that would fall below zero means the decisions were never learned: the erasure is
refused. The tallies do not decay: decisions the erasure ledger let expire (decayed below
2^-40 in the policies) are still counted in them, and an erasure leaves them there.

The decisions come as ``.joined`` carries them (``forget_joined``) or as the columns learning
learned (``forget_columns``; the engine's erasure ledger, ``bandit.engine.ledger``, keeps
those).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bandit.engine import guardrails as _guardrails
from bandit.engine.campaign import _Campaign, _campaign_of, _is_vw, _Slot
from bandit.engine.learn import (
    _add_clustered,
    _Learned,
    by_campaign,
    event_columns,
    slot_batches,
    tally_columns,
)
from bandit.engine.tally import (
    GROUPS,
    _Tally,
    clustered_groups,
    untallied,
    untallied_counts,
    untallied_total,
)
from bandit.policies import Policy
from bandit.wire.protocols import JoinedLike

# A slot's report tallies, as ``_Slot`` names them.
_SLOT_TALLIES = ("arm_tally", "group_tally", "outcome_tally", "segment_tally",
                 "segment_outcomes")


@dataclass
class Erasure:
    """What ``Engine.erase`` did: ``dropped`` pending decisions left the join, ``forgotten``
    learned decisions left the model (and the erasure ledger), ``retrain`` names per campaign
    the VW slots that learned some of them and cannot forget (retrain them from the log
    without the subject); ``complete``: the ledger held every decision learned since it
    started (else some older contributions of the subject may remain in the model);
    ``changed``: anything changed (``Joiner.erase``'s sense, or a decision forgotten)."""

    dropped: int
    forgotten: int
    retrain: dict[str, list[str]]
    complete: bool
    changed: bool


@dataclass
class Forgetting:
    """A campaign's policies and report tallies with some decisions forgotten, built aside:
    ``apply`` swaps them in. ``retrain``: the VW slots among those the decisions name, left
    as they are; ``tallies``: per slot or campaign, its tallies' new values by attribute."""

    campaign: _Campaign
    retrain: list[str]
    swaps: list[tuple[_Slot, Policy, Policy]] = field(default_factory=list)
    tallies: list[tuple[_Slot | _Campaign, dict[str, Any]]] = field(default_factory=list)

    def apply(self) -> None:
        """Swap the forgotten policies and tallies in; the campaign's model version moves when
        anything changed. The caller holds the engine's lock, and nothing was learned since
        ``forget_columns`` built them."""
        for s, policy, fallback in self.swaps:
            s.policy, s.fallback = policy, fallback
        for target, values in self.tallies:
            for name, value in values.items():
                setattr(target, name, value)
        if self.swaps or self.tallies:
            self.campaign.version += 1


def forget_columns(c: _Campaign, cols: _Learned) -> Forgetting:
    """Every slot's policy and context-free fallback of campaign ``c`` with the decisions
    ``cols`` forgotten, on copies: each forgets what learning the columns had it learn
    (``slot_batches``: the same arms, inputs, clipped rewards and event times); and every
    report tally without them (``untally``). Rows a policy or tally never learned raise
    InvalidInputError (``forget_many``, ``tally.untallied``) and nothing is built; nothing
    changes until ``apply``."""
    forgetting = Forgetting(c, [])
    for s in c.slots:
        batches = slot_batches(s, cols)
        if not batches:
            continue
        if _is_vw(s):
            forgetting.retrain.append(s.spec.name)
            continue
        # One copy per policy: a context-free slot's fallback is its policy.
        copies = {id(p): copy.deepcopy(p) for p in (s.policy, s.fallback)}
        for policy, (arms, X, rewards, ts), _ in batches:
            copies[id(policy)].forget_many(arms, X, rewards, ts_ms=ts)
        forgetting.swaps.append((s, copies[id(s.policy)], copies[id(s.fallback)]))
    forgetting.tallies = untally(c, cols)
    return forgetting


def untally(c: _Campaign, cols: _Learned) -> list[tuple[_Slot | _Campaign, dict[str, Any]]]:
    """The report tallies of campaign ``c`` without the decisions ``cols``, as new values per
    slot (of those the decisions name) and for the campaign, ``c`` left as it is: what
    learning added is tallied again on blank tallies (``learn.tally_columns``) and taken out
    (``tally.untallied`` and kin: InvalidInputError if a count would fall below zero). The
    guardrails' baseline loses the decisions learned before the resume (module docstring of
    ``bandit.engine.guardrails``)."""
    if not len(cols.ts):
        return []
    blank = replace(c, slots=[replace(s, arm_tally={}, group_tally={}, outcome_tally={},
                                      segment_tally={}, segment_outcomes={},
                                      segment_counts={}, clustered=clustered_groups())
                              for s in c.slots],
                    personalized=_Tally(), holdout=_Tally(), outcomes={},
                    clustered=clustered_groups(), baseline=None)
    tally_columns(blank, cols)
    where = f"campaign {c.spec.name!r}"
    out: list[tuple[_Slot | _Campaign, dict[str, Any]]] = []
    for s, added in zip(c.slots, blank.slots, strict=True):
        if not added.arm_tally:
            continue
        what = f"{where}, slot {s.spec.name!r}"
        values: dict[str, Any] = {name: untallied(getattr(s, name), getattr(added, name),
                                                  f"{what}: {name}")
                                  for name in _SLOT_TALLIES}
        values["segment_counts"] = untallied_counts(s.segment_counts, added.segment_counts,
                                                    f"{what}: segment_counts")
        values["clustered"] = {g: s.clustered[g].less(added.clustered[g],
                                                      f"{what}: clustered {g}")
                               for g in GROUPS}
        out.append((s, values))
    clustered = {g: c.clustered[g].less(blank.clustered[g], f"{where}: clustered {g}")
                 for g in GROUPS}
    out.append((c, {
        "personalized": untallied_total(c.personalized, blank.personalized,
                                        f"{where}: personalized"),
        "holdout": untallied_total(c.holdout, blank.holdout, f"{where}: holdout"),
        "outcomes": untallied(c.outcomes, blank.outcomes, f"{where}: outcomes"),
        "clustered": clustered,
        "baseline": _guardrails.baseline_without(c, _learned_before(c, cols), clustered)}))
    return out


def _learned_before(c: _Campaign, cols: _Learned) -> dict | None:
    """Per group, the clustered sums of the decisions ``cols`` that campaign ``c`` learned
    before its resume (its ``baseline``), when ``cols.after`` tells: the resume came before
    the last (decisions now minus baseline) decisions learned. None when unknown."""
    if c.baseline is None or cols.after is None:
        return None
    since = sum(int(c.clustered[g].n.sum()) - int(c.baseline[g].n.sum()) for g in GROUPS)
    if since < 0:  # a baseline of other sums (a replica's record)
        return None
    before = np.flatnonzero(cols.after >= since)
    sums = clustered_groups()
    _add_clustered(sums, cols.holdout[before], cols.clusters[before], cols.outcomes[before],
                   cols.best[before])
    return sums


def forget_joined(c: _Campaign, joined: Sequence[JoinedLike]) -> list[str]:
    """Take ``joined``, closed decisions of campaign ``c`` as ``.joined`` carries them, out of
    every slot's policy and context-free fallback (``forget_columns``). Returns the names of
    the VW slots among those the decisions name, which cannot forget and are left as they
    are: retrain them from the log without these decisions.

    All or nothing: the decisions are checked as learning checks them (campaign, slots, arms,
    outcome types), and every policy forgets on a copy that replaces it only once all have
    succeeded, so rows a policy or report tally never learned (InvalidInputError) change
    nothing. The report tallies lose the decisions too (``untally``); the campaign's model
    version moves when anything changed. The caller holds the engine's lock.
    """
    if not joined:
        return []
    name = c.spec.name
    events = by_campaign({name: c}, lambda other: _campaign_of({name: c}, other), joined)[name]
    forgetting = forget_columns(c, event_columns(c, events))
    forgetting.apply()
    return forgetting.retrain
