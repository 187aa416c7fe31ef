"""Reports: per slot and arm impressions, reward and CTR with intervals, holdout lift, and
the bias audit by segment value."""

from __future__ import annotations

import math

from bandit.engine.campaign import _Campaign, _Slot
from bandit.engine.tally import _Z95, _Tally
from bandit.models import ArmReport, CampaignReport, Interval, SegmentReport, SlotReport

# Bias audit: a segment value is flagged when its arm allocation is this far (total variation)
# from the slot's overall allocation, on at least this many impressions; or when its reward
# rate and that of the segment's other values differ beyond chance (95% interval of the gap
# excludes 0, both sides with at least _AUDIT_MIN impressions) and the lower is under this
# fraction of the higher (the "four-fifths rule" of disparate-impact audits).
_AUDIT_TV, _AUDIT_MIN, _AUDIT_CTR_RATIO = 0.25, 50, 0.8


def report(c: _Campaign) -> CampaignReport:
    """Per slot and arm (retired ones too): impressions, reward, CTR with a 95% interval,
    share of traffic; holdout lift with its interval; the bias audit by segment value: arm
    allocation and reward rate, each flagged on a large disparity (``_AUDIT_*``,
    ``_ctr_gap``), never on fewer than ``_AUDIT_MIN`` impressions."""
    return CampaignReport(
        campaign=c.spec.name, model_version=c.version, paused=c.paused,
        impressions=c.personalized.n + c.holdout.n,
        personalized_ctr=c.personalized.interval(), holdout_ctr=c.holdout.interval(),
        lift=_lift(c), slots=[_slot_report(s) for s in c.slots])


def _slot_report(s: _Slot) -> SlotReport:
    """A slot's arms (retired ones too) and its bias audit by segment value."""
    total = sum(t.n for t in s.arm_tally.values())
    arms = [
        ArmReport(arm=arm, active=bool(on), impressions=s.arm_tally.get(arm, _Tally()).n,
                  reward=s.arm_tally.get(arm, _Tally()).total,
                  ctr=s.arm_tally.get(arm, _Tally()).interval(),
                  share=s.arm_tally.get(arm, _Tally()).n / total if total else 0.0)
        for arm, on in zip(s.arm_ids, s.policy.active, strict=True)
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
        tv = 0.5 * sum(abs(allocation[a] - overall[a]) for a in s.arm_ids)
        reasons = []
        if n >= _AUDIT_MIN and tv >= _AUDIT_TV:
            reasons.append(f"arm allocation differs from the slot's overall by "
                           f"{tv:.2f} (total variation)")
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
    return SlotReport(slot=s.spec.name, policy=s.spec.policy.kind, arms=arms,
                      segments=segments)


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


def _lift(c: _Campaign) -> Interval | None:
    p, h = c.personalized, c.holdout
    if p.n < 2 or h.n < 2:
        return None
    diff = p.mean() - h.mean()
    half = _Z95 * math.sqrt(p.var_of_mean() + h.var_of_mean())
    return Interval(estimate=diff, low=diff - half, high=diff + half)
