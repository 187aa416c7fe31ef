"""Reports: per slot and arm impressions, reward and CTR with intervals, holdout lift, and
the bias audit by segment value; outcome rates per arm and group with Wilson intervals, and
their lift (personalized minus holdout) with two intervals whose variance is clustered by
subscriber (``bandit.engine.intervals``): a fixed-horizon one and an always-valid one.

Why clustered: a subscriber is in every send, and their decisions are correlated (the same
person opens, or ignores, every email), so intervals that treat decisions as independent
(Newcombe's, kept here as ``rate_lift`` for a single send, where each subscriber appears once)
are too narrow over a campaign; tests/bandit/engine/test_lift_coverage.py measures both."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import cast

from bandit.engine import guardrails as _guardrails
from bandit.engine.campaign import _Campaign, _Slot
from bandit.engine.intervals import rho_for
from bandit.engine.tally import _Z95, GROUPS, _Clustered, _Outcomes, _Tally, clustered_lift
from bandit.models import (
    OUTCOME_TYPES,
    ArmReport,
    CampaignReport,
    Interval,
    OutcomeType,
    SegmentReport,
    SlotReport,
)
from bandit.models.reports import Group, GroupReport, OutcomeLift, OutcomeRate

# Bias audit: a segment value is flagged when its arm allocation is this far (total variation)
# from the slot's overall allocation, on at least this many impressions; or when its reward
# rate and that of the segment's other values differ beyond chance (95% interval of the gap
# excludes 0, both sides with at least _AUDIT_MIN impressions) and the lower is under this
# fraction of the higher (the "four-fifths rule" of disparate-impact audits).
_AUDIT_TV, _AUDIT_MIN, _AUDIT_CTR_RATIO = 0.25, 50, 0.8
# Outcome types whose lift is always reported, learned events or not.
GUARDRAILS = ("unsubscribe", "complaint")
_TYPES = cast(tuple[OutcomeType, ...], OUTCOME_TYPES)


def report(c: _Campaign) -> CampaignReport:
    """Per slot and arm (retired ones too): impressions, reward, CTR with a 95% interval,
    share of traffic; holdout lift with its interval; the bias audit by segment value: arm
    allocation and reward rate, each flagged on a large disparity (``_AUDIT_*``,
    ``_ctr_gap``), never on fewer than ``_AUDIT_MIN`` impressions. Outcome rates per arm and
    group (``outcome_rate``) and their lift per type (``outcome_lift``) for the campaign and
    each slot; the lifts, reward's and outcome types', with a fixed-horizon and an
    always-valid interval clustered by subscriber (tightest at ``spec.lift_horizon``); each
    guardrail's test and why one paused the campaign."""
    outcomes = {group: c.outcomes.get(group, _Outcomes()) for group in GROUPS}
    rho = rho_for(c.spec.lift_horizon)
    reward = clustered_lift(c.clustered["personalized"], c.clustered["holdout"], None, rho)
    return CampaignReport(
        campaign=c.spec.name, model_version=c.version, paused=c.paused,
        impressions=c.personalized.n + c.holdout.n,
        personalized_ctr=c.personalized.interval(), holdout_ctr=c.holdout.interval(),
        lift=None if reward is None else reward[0],
        lift_always_valid=None if reward is None else reward[1],
        slots=[_slot_report(s, rho) for s in c.slots],
        groups={group: _group_report(tally, outcomes[group]) for group, tally in
                zip(GROUPS, (c.personalized, c.holdout), strict=True)},
        outcome_lift=outcome_lift(c.clustered, rho),
        guardrails=_guardrails.report(c), paused_by=c.paused_by)


def outcome_rate(reached: int, n: int) -> tuple[float | None, Interval | None]:
    """The rate ``reached / n`` and its 95% Wilson score interval (inside [0, 1], never
    empty at 0 or n); (None, None) when n is 0."""
    if n == 0:
        return None, None
    p, z2 = reached / n, _Z95 * _Z95
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, Interval(estimate=p, low=max(center - half, 0.0), high=min(center + half, 1.0))


def rate_lift(a: tuple[int, int], b: tuple[int, int]) -> Interval | None:
    """Rate of ``a`` minus rate of ``b`` ((reached, n) each) with the 95% Newcombe hybrid
    score interval (method 10 of Newcombe 1998: each side's Wilson interval, combined);
    None unless both have decisions. It treats decisions as independent: right for one send
    (each subscriber once), too narrow over sends to the same subscribers."""
    pa, wa = outcome_rate(*a)
    pb, wb = outcome_rate(*b)
    if pa is None or pb is None or wa is None or wb is None:
        return None
    d = pa - pb
    return Interval(estimate=d, low=d - math.hypot(pa - wa.low, wb.high - pb),
                    high=d + math.hypot(wa.high - pa, pb - wb.low))


def _rates(t: _Outcomes) -> dict[OutcomeType, OutcomeRate]:
    """Every outcome type's rate over the decisions of ``t``."""
    out = {}
    for kind, reached, events in zip(_TYPES, t.reached, t.events, strict=True):
        rate, interval = outcome_rate(reached, t.n)
        out[kind] = OutcomeRate(decisions=t.n, reached=reached, events=events, rate=rate,
                                interval=interval)
    return out


def outcome_lift(clustered: dict[Group, _Clustered], rho: float
                 ) -> dict[OutcomeType, OutcomeLift]:
    """Per outcome type that either group learned an event of, and always for the
    ``GUARDRAILS``: personalized minus holdout rate with its fixed-horizon and always-valid
    intervals clustered by subscriber (``tally.clustered_lift``), with both groups' n."""
    personalized, holdout = clustered["personalized"], clustered["holdout"]
    reached = personalized.reached.sum(axis=0) + holdout.reached.sum(axis=0)
    out = {}
    for k, kind in enumerate(_TYPES):
        if reached[k] or kind in GUARDRAILS:
            pair = clustered_lift(personalized, holdout, k, rho)
            out[kind] = OutcomeLift(
                personalized=int(personalized.n.sum()), holdout=int(holdout.n.sum()),
                lift=None if pair is None else pair[0],
                always_valid=None if pair is None else pair[1])
    return out


def _total(tallies: Iterable[_Outcomes]) -> _Outcomes:
    return sum(tallies, _Outcomes())


def _group_report(reward: _Tally, outcomes: _Outcomes) -> GroupReport:
    return GroupReport(decisions=reward.n, reward=reward.total,
                       mean_reward=reward.interval(), outcomes=_rates(outcomes))


def _groups(s: _Slot, arms: list[str]) -> dict[Group, tuple[_Tally, _Outcomes]]:
    """Per group, the reward and outcome tallies of ``arms`` of slot ``s`` together."""
    out = {}
    for group in GROUPS:
        keys = [(arm, group) for arm in arms if (arm, group) in s.group_tally]
        out[group] = (sum((s.group_tally[k] for k in keys), _Tally()),
                      _total(s.outcome_tally.get(k, _Outcomes()) for k in keys))
    return out


def _arm_outcomes(s: _Slot, arm: str
                  ) -> tuple[dict[OutcomeType, OutcomeRate], dict[Group, GroupReport]]:
    """An arm's outcome rates over all its decisions, and its groups that have decisions."""
    groups = _groups(s, [arm])
    rates = _rates(_total(outcomes for _, outcomes in groups.values()))
    return rates, {group: _group_report(*pair) for group, pair in groups.items() if pair[0].n}


def _slot_report(s: _Slot, rho: float) -> SlotReport:
    """A slot's arms (retired ones too), its lifts (``outcome_lift`` of its decisions, mixing
    ``rho``) and its bias audit by segment value."""
    total = sum(t.n for t in s.arm_tally.values())
    arms = [
        ArmReport(arm=arm, active=bool(on), impressions=s.arm_tally.get(arm, _Tally()).n,
                  reward=s.arm_tally.get(arm, _Tally()).total,
                  ctr=s.arm_tally.get(arm, _Tally()).interval(),
                  share=s.arm_tally.get(arm, _Tally()).n / total if total else 0.0,
                  outcomes=rates, groups=groups)
        for arm, on in zip(s.arm_ids, s.policy.active, strict=True)
        for rates, groups in [_arm_outcomes(s, arm)]
    ]
    overall = {a.arm: a.share for a in arms}
    by_segment: dict[str, _Tally] = {}  # every value of a segment together
    for (segment, _), tally in s.segment_tally.items():
        whole = by_segment.setdefault(segment, _Tally())
        whole.n, whole.total = whole.n + tally.n, whole.total + tally.total
        whole.squares += tally.squares
    segments = []
    for (segment, value), counts in sorted(s.segment_counts.items()):
        n = sum(counts.values())
        allocation = {arm: counts.get(arm, 0) / n for arm in s.arm_ids}
        reasons = []
        if far := allocation_gap(n, [allocation[a] for a in s.arm_ids],
                                 [overall[a] for a in s.arm_ids]):
            reasons.append(f"arm allocation differs from the slot's overall by {far}")
        tally = s.segment_tally[(segment, value)]
        rest = by_segment[segment].minus(tally)
        gap, unequal = _ctr_gap(tally, rest)
        if gap is not None and unequal:  # unequal has a gap
            a, b = tally.mean(), rest.mean()
            reasons.append(
                f"reward rate {a:.4f} vs {b:.4f} for the other {segment!r} values "
                f"({min(a, b) / max(a, b):.2f}x; gap {gap.low:+.4f} to "
                f"{gap.high:+.4f}, 95%)")
        segments.append(SegmentReport(
            segment=segment, value=value, impressions=n, ctr=tally.interval(),
            allocation=allocation, ctr_gap=gap, flagged=bool(reasons),
            reason="; ".join(reasons) or None))
    groups = _groups(s, s.arm_ids)
    return SlotReport(slot=s.spec.name, policy=s.spec.policy.kind, arms=arms,
                      segments=segments,
                      groups={group: _group_report(*pair) for group, pair in groups.items()},
                      outcome_lift=outcome_lift(s.clustered, rho))


def allocation_gap(n: int, shares: Sequence[float], overall: Sequence[float]) -> str | None:
    """The bias audit's allocation rule, for a segment value's ``n`` decisions with these arm
    ``shares`` against the ``overall`` ones (same arm order): flagged when ``n`` is at least
    ``_AUDIT_MIN`` and the total variation at least ``_AUDIT_TV``; then how far, as text."""
    tv = 0.5 * sum(abs(a - b) for a, b in zip(shares, overall, strict=True))
    return f"{tv:.2f} (total variation)" if n >= _AUDIT_MIN and tv >= _AUDIT_TV else None


def _ctr_gap(this: _Tally, rest: _Tally) -> tuple[Interval | None, bool]:
    """Reward rate of a segment value minus that of the segment's other values, with a 95%
    normal-approximation interval, and whether that is a disparity: both sides have
    _AUDIT_MIN impressions, the interval excludes 0 and the lower rate is under
    _AUDIT_CTR_RATIO times the higher (a gap both real and large; rewards >= 0)."""
    if this.n < 2 or rest.n < 2:
        return None, False
    a, b = this.mean(), rest.mean()
    half = _Z95 * math.sqrt(this.var_of_mean() + rest.var_of_mean())
    gap = Interval(estimate=a - b, low=a - b - half, high=a - b + half)
    unequal = (min(this.n, rest.n) >= _AUDIT_MIN and not gap.low <= 0 <= gap.high
               and min(a, b) >= 0 and min(a, b) < _AUDIT_CTR_RATIO * max(a, b))
    return gap, unequal
