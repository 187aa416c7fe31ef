"""Erasure from the model: a subject's closed decisions taken out of every slot's policy.

Learning adds each closed decision to sums (``bandit.engine.learn``); forgetting it subtracts
exactly what it added, decayed to each state's reference time (``Policy.forget_many``), so a
campaign that learned a stream and then forgot a subject's decisions holds the policies of one
that never learned them (its clock aside: see ``forget_many``). VW slots are not sums and
cannot forget; they are named for retraining from the log without the subject. The report
tallies are left as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from bandit.engine.campaign import _Campaign, _campaign_of, _is_vw, _Slot
from bandit.engine.learn import by_campaign, event_columns, slot_batches
from bandit.policies import Policy
from bandit.wire.protocols import JoinedLike


def forget_joined(c: _Campaign, joined: Sequence[JoinedLike]) -> list[str]:
    """Take ``joined``, closed decisions of campaign ``c`` as ``.joined`` carries them, out of
    every slot's policy and context-free fallback: each forgets what learning the decisions
    had it learn (``slot_batches``: the same arms, inputs, clipped rewards and event times).
    Returns the names of the VW slots among those the decisions name, which cannot forget and
    are left as they are: retrain them from the log without these decisions.

    All or nothing: the decisions are checked as learning checks them (campaign, slots, arms,
    outcome types), and every policy forgets on a copy that replaces it only once all have
    succeeded, so rows a policy never learned (InvalidInputError) change nothing. The
    campaign's model version moves when a policy changed. The caller holds the engine's lock.
    """
    if not joined:
        return []
    name = c.spec.name
    events = by_campaign({name: c}, lambda other: _campaign_of({name: c}, other), joined)[name]
    cols = event_columns(c, events)
    retrain: list[str] = []
    forgotten: list[tuple[_Slot, Policy, Policy]] = []
    for s in c.slots:
        batches = slot_batches(s, cols)
        if not batches:
            continue
        if _is_vw(s):
            retrain.append(s.spec.name)
            continue
        # One copy per policy: a context-free slot's fallback is its policy.
        copies = {id(p): copy.deepcopy(p) for p in (s.policy, s.fallback)}
        for policy, (arms, X, rewards, ts), _ in batches:
            copies[id(policy)].forget_many(arms, X, rewards, ts_ms=ts)
        forgotten.append((s, copies[id(s.policy)], copies[id(s.fallback)]))
    for s, policy, fallback in forgotten:
        s.policy, s.fallback = policy, fallback
    if forgotten:
        c.version += 1
    return retrain
