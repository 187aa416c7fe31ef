"""Guardrails: bounds on the lift of outcome types (``CampaignSpec.guardrails``), tested as
outcomes close; a breach is the kill switch.

The test. A guardrail bounds the lift of an outcome type: the personalized minus the holdout
share of decisions with the outcome, clustered by subscriber bucket (``intervals``). It is
read after every learned batch, so a fixed-horizon test would raise false alarms far more
often than its level (every look is another chance). It is therefore the dual of the
always-valid interval, the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
Kennedy and Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences",
Annals of Statistics 52(6), 2024, Theorem 2.2; ``intervals.always_valid_interval``, tightest
near the campaign's ``lift_horizon``): a guardrail breaches when the interval lies wholly above
``max_lift`` or wholly below ``min_lift``. The interval covers the running lift at every look at
once with probability about 95%, so a campaign whose lift is within its bounds trips (anywhere
in its run, however often it is looked at) in about 5% of runs or fewer (one bound: 2.5%),
asymptotically; rare outcomes make small samples err more, which a test over 200 simulated
campaigns bounds (tests/bandit/engine/test_guardrails.py). Continuous monitoring of this kind
is how online experimentation platforms watch their metrics.

Rare outcomes. Unsubscribes and complaints are rare (a few per thousand), and the variance of a
group's share is estimated from that group's own events: a holdout of 1,000 decisions without
an unsubscribe (likely at 0.2%) would claim a variance of zero for it, and the interval would
trip on the personalized group's first few unsubscribes. The variance used is the larger of
the clustered one and the binomial variance of the difference with one event and one non-event
added to each group (Agresti & Caffo, "Simple and effective confidence intervals for
proportions and differences of proportions result from adding two successes and two
failures", The American Statistician 54(4), 2000): it stays sound when a group has seen few
events and vanishes against the clustered one as events accrue, so the sequence keeps its
asymptotic guarantee. A guardrail also waits until each group has ``min_decisions``.

The switch. A breach pauses the campaign (every subscriber gets each slot's default arm) and
records why (``_Campaign.paused_by``: the outcome, the bound, the interval, when); the campaign
record carries it to every replica. Guardrails of a paused campaign are not evaluated: nothing
trips twice, and a campaign a person paused stays as they left it.

Resuming. A person resumes a campaign a guardrail paused (``resume``); the test restarts: the
clustered sums at the resume become the baseline, and from then on each guardrail tests the
decisions since, with the confidence sequence started afresh. The evidence that tripped it
does not trip it again at once, and what the campaign does next is judged on its own. A resume
after a pause by hand keeps the test running over everything (a person's pause is no verdict on
the outcomes).

Erasure. Erasing a subscriber takes their learned decisions out of the clustered sums
(``bandit.engine.erase``); those learned before the resume are in the baseline too and leave it
as well, so the guardrails test what a campaign that never learned the subscriber would test.
Which were learned before the resume is learn order, not decision time (a decision made before
the resume may close after it): the erasure ledger knows it when it holds every decision the
campaign learned (it is complete and nothing expired): the resume came after the first
``baseline`` decisions, i.e. before the last (sums minus baseline) ones. When the ledger cannot
tell (or the baseline came in a campaign record from a replica whose sums these are not), the
baseline keeps the subscriber's decisions, cut bucket by bucket to the sums left
(``baseline_without``): the test since the resume then misses at most the subscriber's decisions
learned before it, and never counts below zero.

Where it runs. The engine evaluates after each learned batch (``Engine.learn``,
``learn_closed``); in stream mode the decision service evaluates the merged model after each
absorb of the workers' states (``streams.follower``), since one partition sees part of the
data, and publishes a breach's campaign record (``Link.campaign_changed``). A stream worker's
partition engine evaluates its own part as it learns: its pause and reason stay in its copy,
which decides nothing, until the next campaign record it follows overwrites them.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np

from bandit.engine.campaign import _Campaign
from bandit.engine.intervals import always_valid_interval, clustered_difference, rho_for
from bandit.engine.tally import GROUPS, _Clustered
from bandit.models import OUTCOME_TYPES, Interval
from bandit.models.reports import Group, GuardrailReport, GuardrailState, PauseReason
from bandit.models.specs import Guardrail


def guard_interval(personalized: _Clustered, holdout: _Clustered, kind: int,
                   rho: float) -> Interval | None:
    """The lift of outcome type ``kind`` (an index into OUTCOME_TYPES) with its always-valid
    95% interval at t = the decisions of both groups, the variance the larger of the
    clustered one and the binomial one with an event and a non-event added to each group
    (see the module docstring); None unless both groups have decisions in two buckets."""
    n_p, n_h = float(personalized.n.sum()), float(holdout.n.sum())
    y_p, y_h = personalized.reached[:, kind], holdout.reached[:, kind]
    lift = clustered_difference(personalized.n, y_p, holdout.n, y_h)
    if lift is None:
        return None
    estimate, variance = lift
    a_p, a_h = (float(y_p.sum()) + 1) / (n_p + 2), (float(y_h.sum()) + 1) / (n_h + 2)
    variance = max(variance, a_p * (1 - a_p) / n_p + a_h * (1 - a_h) / n_h)
    return always_valid_interval(estimate, variance, n_p + n_h, rho)


def breached(g: Guardrail,
             interval: Interval) -> tuple[Literal["max_lift", "min_lift"], float] | None:
    """The bound ``interval`` lies wholly beyond, if any, and its value."""
    if g.max_lift is not None and interval.low > g.max_lift:
        return "max_lift", g.max_lift
    if g.min_lift is not None and interval.high < g.min_lift:
        return "min_lift", g.min_lift
    return None


def _since(c: _Campaign) -> dict[Group, _Clustered]:
    """Per group, the clustered sums since the baseline (all of them without one)."""
    if c.baseline is None:
        return c.clustered
    return {group: _Clustered(c.clustered[group].n - c.baseline[group].n,
                              c.clustered[group].reached - c.baseline[group].reached,
                              c.clustered[group].reward)
            for group in GROUPS}


def _rho(c: _Campaign) -> float:
    return rho_for(c.spec.lift_horizon)


def _tested(c: _Campaign) -> list[tuple[Guardrail, GuardrailReport]]:
    """Every guardrail of ``c`` with its test now."""
    sums, rho, out = _since(c), _rho(c), []
    n_p, n_h = int(sums["personalized"].n.sum()), int(sums["holdout"].n.sum())
    for g in c.spec.guardrails:
        interval = guard_interval(sums["personalized"], sums["holdout"],
                                  OUTCOME_TYPES.index(g.outcome), rho)
        state: GuardrailState = "waiting"
        if interval is not None and min(n_p, n_h) >= g.min_decisions:
            state = "ok" if breached(g, interval) is None else "breached"
        out.append((g, GuardrailReport(
            outcome=g.outcome, max_lift=g.max_lift, min_lift=g.min_lift,
            min_decisions=int(g.min_decisions), state=state, personalized=n_p, holdout=n_h,
            interval=interval)))
    return out


def report(c: _Campaign) -> list[GuardrailReport]:
    """Each guardrail's state, the decisions it counts and its always-valid interval."""
    return [r for _, r in _tested(c)]


def check(c: _Campaign, at_ms: int) -> PauseReason | None:
    """Evaluate the guardrails of a running campaign; on the first breached one (in spec
    order) pause it, record why and return the reason. A paused campaign is left alone."""
    if c.paused or not c.spec.guardrails:
        return None
    for g, r in _tested(c):
        if r.state == "breached" and r.interval is not None:
            bound, limit = cast(tuple[Literal["max_lift", "min_lift"], float],
                                breached(g, r.interval))
            c.paused = True
            c.paused_by = PauseReason(outcome=g.outcome, bound=bound, limit=limit,
                                      interval=r.interval, at_ms=int(at_ms))
            return c.paused_by
    return None


def baseline_without(c: _Campaign, learned_before: dict[Group, _Clustered] | None,
                     left: dict[Group, _Clustered]) -> dict[Group, _Clustered] | None:
    """The baseline once erasure has taken decisions out of ``c``'s clustered sums, leaving
    ``left`` (see the module docstring): less ``learned_before``, the erased decisions learned
    before the resume, when known (None: unknown); and within [0, ``left``] bucket by bucket,
    so that the guardrails never test negative counts since the resume."""
    if c.baseline is None:
        return None
    out = {}
    for group in GROUPS:
        base, now = c.baseline[group], left[group]
        n, reached = base.n, base.reached
        if learned_before is not None:
            n, reached = n - learned_before[group].n, reached - learned_before[group].reached
        out[group] = _Clustered(np.clip(n, 0, now.n), np.clip(reached, 0, now.reached),
                                np.zeros_like(base.reward))
    return out


def resume(c: _Campaign) -> None:
    """A person resumes ``c``: after a guardrail pause, the sums now become the baseline the
    guardrails test from (see the module docstring); the reason is cleared."""
    if c.paused and c.paused_by is not None:
        c.baseline = {group: _Clustered(t.n.copy(), t.reached.copy(), np.zeros_like(t.reward))
                      for group, t in c.clustered.items()}
    c.paused, c.paused_by = False, None
