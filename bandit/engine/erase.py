"""Erasure from the model: a subject's closed decisions taken out of every slot's policy.

Learning adds each closed decision to sums (``bandit.engine.learn``); forgetting it subtracts
exactly what it added, decayed to each state's reference time (``Policy.forget_many``), so a
campaign that learned a stream and then forgot a subject's decisions holds the policies of one
that never learned them (its clock aside: see ``forget_many``). VW slots are not sums and
cannot forget; they are named for retraining from the log without the subject. The report
tallies are left as they are (taking the decisions out of them is the next step of erasure).

The decisions come as ``.joined`` carries them (``forget_joined``) or as the columns learning
learned (``forget_columns``; the engine's erasure ledger, ``bandit.engine.ledger``, keeps
those).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

from bandit.engine.campaign import _Campaign, _campaign_of, _is_vw, _Slot
from bandit.engine.learn import _Learned, by_campaign, event_columns, slot_batches
from bandit.policies import Policy
from bandit.wire.protocols import JoinedLike


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
    """A campaign's policies with some decisions forgotten, built aside: ``apply`` swaps them
    in. ``retrain``: the VW slots among those the decisions name, left as they are."""

    campaign: _Campaign
    retrain: list[str]
    swaps: list[tuple[_Slot, Policy, Policy]] = field(default_factory=list)

    def apply(self) -> None:
        """Swap the forgotten policies in; the campaign's model version moves when one
        changed. The caller holds the engine's lock."""
        for s, policy, fallback in self.swaps:
            s.policy, s.fallback = policy, fallback
        if self.swaps:
            self.campaign.version += 1


def forget_columns(c: _Campaign, cols: _Learned) -> Forgetting:
    """Every slot's policy and context-free fallback of campaign ``c`` with the decisions
    ``cols`` forgotten, on copies: each forgets what learning the columns had it learn
    (``slot_batches``: the same arms, inputs, clipped rewards and event times). Rows a policy
    never learned raise InvalidInputError (``forget_many``) and nothing is built; nothing
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
    return forgetting


def forget_joined(c: _Campaign, joined: Sequence[JoinedLike]) -> list[str]:
    """Take ``joined``, closed decisions of campaign ``c`` as ``.joined`` carries them, out of
    every slot's policy and context-free fallback (``forget_columns``). Returns the names of
    the VW slots among those the decisions name, which cannot forget and are left as they
    are: retrain them from the log without these decisions.

    All or nothing: the decisions are checked as learning checks them (campaign, slots, arms,
    outcome types), and every policy forgets on a copy that replaces it only once all have
    succeeded, so rows a policy never learned (InvalidInputError) change nothing. The
    campaign's model version moves when a policy changed. The caller holds the engine's lock.
    """
    if not joined:
        return []
    name = c.spec.name
    events = by_campaign({name: c}, lambda other: _campaign_of({name: c}, other), joined)[name]
    forgetting = forget_columns(c, event_columns(c, events))
    forgetting.apply()
    return forgetting.retrain
