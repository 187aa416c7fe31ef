"""The report's lift intervals on subscribers whose responses are correlated across sends
(``simulators.correlated``): the fixed-horizon interval clustered by subscriber covers the true
lift in about 95% of runs, the always-valid one at every look (after every send) in at least
95%, and the unclustered Newcombe interval it replaced does not; the report reads the clustered
tallies that learning fills, partition merges sum and snapshots keep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from bandit.engine import Engine
from bandit.engine import snapshot as _snapshot
from bandit.engine.intervals import always_valid_interval, clusters_of, fixed_interval, rho_for
from bandit.engine.join import subject_key
from bandit.engine.report import rate_lift
from bandit.engine.tally import GROUPS, _Clustered, clustered_groups, clustered_lift
from bandit.errors import IncompatibleStateError
from bandit.models import OUTCOME_TYPES, CampaignSpec, Click, DecisionRequest
from simulators.correlated import CorrelatedPanel
from tests import reference, streamdata
from tests.bandit.engine.test_outcomes import _closed, _decisions

_RUNS, _SENDS = 300, 8
_HORIZON = CampaignSpec.model_fields["lift_horizon"].default
_CLICK, _OPEN = OUTCOME_TYPES.index("click"), OUTCOME_TYPES.index("open")


def _runs(panel: CorrelatedPanel, seed: int):
    """Per seeded run, after each send: the clustered tallies per group and each group's
    (decisions, decisions reaching each type) totals, as the engine's learning adds them."""
    for r in range(_RUNS):
        rng = np.random.default_rng([seed, r])
        run = panel.draw(f"run{r}", rng)
        tallies = clustered_groups()
        looks = []
        for _ in range(_SENDS):
            outcomes = run.send(rng)
            for flag, group in enumerate(GROUPS):
                at = run.holdout == bool(flag)
                tallies[group].add(run.clusters[at], outcomes[at], run.rewards(outcomes[at]))
            looks.append({g: _Clustered() + t for g, t in tallies.items()})
        yield looks


def _newcombe(tallies, kind):
    p, h = tallies["personalized"], tallies["holdout"]
    return rate_lift((int(p.reached[:, kind].sum()), int(p.n.sum())),
                     (int(h.reached[:, kind].sum()), int(h.n.sum())))


@pytest.mark.slow
def test_clustered_intervals_cover_the_true_lift_and_newcombe_does_not():
    """300 seeded runs of 8 sends to the same 10,000 subscribers (10% held out; opens and
    clicks are habits: correlation 1/6 and 1/7 between a subscriber's sends). The 95%
    fixed-horizon interval clustered by subscriber, read once after the last send, covers
    the true lift of the click rate (the reward) and of the open rate in 92% to 98% of the
    runs; the always-valid interval, read after every send, covers it at all 8 looks at once in
    at least 95%; Newcombe's interval, which treats the 80,000 decisions as independent, covers
    the click lift in under 90% (the design effect 1 + 7/7 = 2 makes it about 1/sqrt(2) too
    narrow)."""
    panel = CorrelatedPanel(n=10_000, holdout=0.1)
    truth = {_CLICK: panel.true_lift("click"), _OPEN: panel.true_lift("open")}
    rho = rho_for(_HORIZON)
    fixed = {k: 0 for k in truth}
    always = {k: 0 for k in truth}
    newcombe = 0
    for looks in _runs(panel, seed=17):
        last = looks[-1]
        for k, true in truth.items():
            pair = clustered_lift(last["personalized"], last["holdout"], k, rho)
            assert pair is not None
            fixed[k] += pair[0].low <= true <= pair[0].high
            every = [clustered_lift(t["personalized"], t["holdout"], k, rho) for t in looks]
            always[k] += all(p is not None and p[1].low <= true <= p[1].high for p in every)
        unclustered = _newcombe(last, _CLICK)
        assert unclustered is not None
        newcombe += unclustered.low <= truth[_CLICK] <= unclustered.high
        # The reward is the click: its lift is the click lift's, estimate and interval.
        reward = clustered_lift(last["personalized"], last["holdout"], None, rho)
        click = clustered_lift(last["personalized"], last["holdout"], _CLICK, rho)
        assert reward is not None and click is not None
        assert reward[0].estimate == pytest.approx(click[0].estimate, abs=1e-15)
    for k in truth:
        assert 0.92 <= fixed[k] / _RUNS <= 0.98, (OUTCOME_TYPES[k], fixed[k])
        assert always[k] / _RUNS >= 0.95, (OUTCOME_TYPES[k], always[k])
    assert newcombe / _RUNS < 0.90, newcombe


def test_the_panel_true_lift_is_the_mean_lift_of_its_subscribers():
    # The closed form against the subscribers' own rates, averaged over a large population.
    panel = CorrelatedPanel(n=200_000, holdout=0.5)
    run = panel.draw("mean", np.random.default_rng(3))
    for kind in ("open", "click", "conversion"):
        k = OUTCOME_TYPES.index(kind)
        got = run.rates[~run.holdout, k].mean() - run.rates[run.holdout, k].mean()
        a, b = panel.rates[kind]
        spread = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) * 4 / panel.n)
        assert abs(got - panel.true_lift(kind)) < 5 * spread, kind


def _spec():
    return CampaignSpec.model_validate({
        "name": "weekly", "holdout": 0.2, "attribution_window_ms": 1000, "lift_horizon": 5_000,
        "slots": [{"name": "subject", "arms": [{"id": "plain"}, {"id": "bold"}],
                   "default_arm": "plain", "policy": {"kind": "beta_ts"}}]})


def test_the_report_reads_the_clustered_tallies_end_to_end():
    """Three sends to the same 600 subscribers through Engine.decide_batch and Engine.record
    (impressions, then clicks of the correlated panel, windows closed by the next send): the
    report's click and reward lifts are the clustered fixed-horizon and always-valid intervals
    of the one-at-a-time twin over the learned decisions, mixing at the spec's lift_horizon,
    and not Newcombe's."""
    spec = _spec()
    engine = Engine(seed=1)
    engine.create_campaign(spec)
    panel = CorrelatedPanel(n=600, holdout=0.2)
    rng = np.random.default_rng(8)
    run = panel.draw(spec.name, rng)
    requests = [DecisionRequest(campaign=spec.name, user_id=u) for u in panel.users]
    groups, clicked, subjects = [], [], []
    for send in range(3):
        batch = engine.decide_batch(spec.name, requests)
        ts = 10_000 * (send + 1)
        engine.record(batch.impressions(requests, ts_ms=ts))
        assert np.array_equal(batch.holdout, run.holdout)  # the panel's holdout is the engine's
        clicks = run.send(rng)[:, _CLICK].astype(bool)
        engine.record([Click(event_id=f"c{send}-{i}", decision_id=batch.decision_ids[i],
                             campaign=spec.name, ts=ts + 1) for i in np.flatnonzero(clicks)])
        groups += (~run.holdout).astype(int).tolist()
        clicked += clicks.astype(float).tolist()
        subjects += [subject_key(u).hex() for u in panel.users]
    engine.record([Click(event_id="late", decision_id="f" * 32, campaign=spec.name,
                         ts=10**9)])  # time moves on: every window closes
    report = engine.report(spec.name)
    assert report.impressions == 3 * panel.n
    est, var = reference.clustered_difference(groups, clicked, clusters_of(subjects))
    fixed = fixed_interval(est, var)
    always = always_valid_interval(est, var, 3 * panel.n, rho_for(spec.lift_horizon))
    click = report.outcome_lift["click"]
    for lift, valid in ((click.lift, click.always_valid), (report.lift, report.lift_always_valid)):
        assert lift is not None and valid is not None
        assert (lift.estimate, lift.low, lift.high) == pytest.approx(
            (fixed.estimate, fixed.low, fixed.high), rel=1e-9, abs=1e-12)
        assert (valid.low, valid.high) == pytest.approx((always.low, always.high), rel=1e-9)
    assert report.slots[0].outcome_lift["click"] == report.outcome_lift["click"]
    held = int(run.holdout.sum())
    unclustered = rate_lift((int(sum(c for g, c in zip(groups, clicked, strict=True) if g)),
                             3 * (panel.n - held)),
                            (int(sum(c for g, c in zip(groups, clicked, strict=True) if not g)),
                             3 * held))
    assert unclustered is not None and unclustered.low != pytest.approx(fixed.low, rel=1e-6)


def _clustered_state(engine):
    c = engine._campaigns["news"]
    return [c.clustered] + [s.clustered for s in c.slots]


def _same(a, b):
    return all(x[g].same(y[g]) for x, y in zip(a, b, strict=True) for g in GROUPS)


@settings(max_examples=40, deadline=None)
@given(decisions=_decisions)
def test_partition_merges_and_snapshots_keep_the_clustered_sums_exactly(decisions):
    spec = streamdata.spec()
    one = Engine()
    one.create_campaign(spec)
    one.learn_closed(_closed(decisions, spec))
    parts = []
    for p in range(3):
        part = Engine()
        part.create_campaign(spec)
        mine = [d for d in decisions if d["partition"] == p]
        if mine:
            part.learn_closed(_closed(mine, spec))
        parts.append(Engine.from_bytes(part.to_bytes())[0])  # a partition's checkpoint
    merged = Engine()
    merged.create_campaign(spec)
    merged.absorb(parts)
    # Counts are integers and the click rewards dyadic: every sum exact, in any order.
    assert _same(_clustered_state(merged), _clustered_state(one))
    restored = Engine.from_bytes(merged.to_bytes())[0]
    assert _same(_clustered_state(restored), _clustered_state(one))
    total = one._campaigns["news"].clustered
    assert sum(int(total[g].n.sum()) for g in GROUPS) == len(decisions)
    # Taking a partition's sums out again leaves the others' (erasure subtracts so).
    rest = {g: merged._campaigns["news"].clustered[g] - parts[0]._campaigns["news"].clustered[g]
            for g in GROUPS}
    others = {g: parts[1]._campaigns["news"].clustered[g] + parts[2]._campaigns["news"].clustered[g]
              for g in GROUPS}
    assert _same([rest], [others])


def test_a_snapshot_whose_clustered_arrays_do_not_fit_is_refused():
    spec = streamdata.spec()
    engine = Engine()
    engine.create_campaign(spec)
    decisions = [{"slots": (("subject", "plain", 0.5),), "segments": {}, "holdout": i % 3 == 0,
                  "clicks": [], "outcomes": [1, 0, 0, 0, 0, 0], "partition": 0, "user": i}
                 for i in range(12)]
    engine.learn_closed(_closed(decisions, spec))
    meta, arrays = _snapshot.read(engine.to_bytes(), "x", False)
    assert arrays["clustered/0/holdout/counts"].dtype == np.int8  # the narrowest that holds
    bad = dict(arrays, **{"clustered/0/holdout/counts": arrays["clustered/0/holdout/counts"][1:]})
    with pytest.raises(IncompatibleStateError, match="clustered tallies do not fit together"):
        Engine.from_bytes(_snapshot.to_bytes(meta, bad), what="x")
