"""The static reports' outcome tables: the demo's (from the service's report JSON) and the
simulation's (from its engines' reports) show every outcome type per group and its lift; the
allocation-by-segment heatmaps of the demo, the simulation and the offline evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.models import OUTCOME_TYPES, CampaignSpec, JoinedEvent
from simulators.email_campaign import EmailCampaign
from simulators.offline.logs import LoggedBandit
from simulators.replay import compare, make_targets
from simulators.reports import demo, simulation
from simulators.reports import replay as replay_report
from simulators.simulate import make_policies, simulate


def _engine_report() -> dict:
    """A campaign whose personalized decisions clicked 4 in 10, holdout 1 in 10, one holdout
    decision unsubscribed."""
    engine = Engine()
    engine.create_campaign(CampaignSpec.model_validate({
        "name": "w", "holdout": 0.5, "attribution_window_ms": 1000,
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                   "policy": {"kind": "beta_ts"}}]}))
    engine.learn([JoinedEvent(
        decision_id=f"{i:032x}", campaign="w", subject=subject_key(f"u{i}").hex(), ts=i,
        slots={"s": {"arm": "b" if i < 10 else "a", "propensity": 0.5}}, holdout=i >= 10,
        outcomes=({"click": 1} if i % 10 < (4 if i < 10 else 1) else {})
        | ({"unsubscribe": 1} if i == 19 else {}),
        rewards={"s": 1.0 if i % 10 < (4 if i < 10 else 1) else 0.0}) for i in range(20)])
    return engine.report("w").model_dump(mode="json")


def test_the_demo_report_shows_outcome_rates_and_lift(tmp_path):
    reached = dict.fromkeys(OUTCOME_TYPES, [0, 0]) | {"click": [4, 1], "unsubscribe": [0, 1]}
    send = demo.SendResult(send=1, decisions=20, model_version=1, holdout=10, reached=reached,
                           reward=[4.0, -4.0], expected=0.3, oracle=0.4, uniform=0.2,
                           seconds=1.0, events_per_s=20.0, dead_letters=0,
                           allocation={"s": {"a": 10, "b": 10}})
    page = demo.write_report([send], _engine_report(), tmp_path, subscribers=20,
                             seed=0).read_text()
    markdown = (tmp_path / "report.md").read_text()
    assert "## Outcomes" in markdown and "<h2>Outcomes</h2>" in page
    # Wilson 4/10 and 1/10; lift +30 points, with both intervals, each labelled; no opens:
    # "no events".
    assert "| lift [95% fixed-horizon] | lift [95% always-valid] |" in markdown
    assert "clustered by subscriber" in markdown and "confidence sequence" in markdown
    assert "| click | 40.00% [16.82, 68.73] | 10.00% [1.79, 40.42] | +30.00 [" in markdown
    assert ("| open | 0.00% [0.00, 27.75] | 0.00% [0.00, 27.75] | no events | no events |"
            in markdown)
    assert "| unsubscribe | 0.00% [0.00, 27.75] | 10.00% [1.79, 40.42] | -10.00 [" in markdown
    for kind in OUTCOME_TYPES:
        assert f"<td>{kind}</td>" in page
    # The send's own table (the simulator's side): every type, each group's rate and lift.
    assert "## Outcomes per send" in markdown and "<h2>Outcomes per send</h2>" in page
    assert "| 1 | click | 40.00% | 10.00% | +30.00 [" in markdown
    assert "| 1 | unsubscribe | 0.00% | 10.00% | -10.00 [" in markdown
    assert "| 1 | bounce | 0.00% | 0.00% | +0.00 [" in markdown
    # The headline: CTR of each group and the click lift, as the live table shows it too.
    assert "| 1 | 20 | 40.00% | 10.00% | +30.00 [" in markdown
    (row,) = demo.live_rows([send])
    assert row[2].splitlines()[:3] == ["40.00%", "10.00%", "+30.00"]
    assert [demo.LIVE_HEADER[2 + i] for i in range(6)] == [
        "click", "open", "conv.", "unsub.", "compl.", "bounce"]


def _simulation_report(tmp_path) -> tuple[dict, str, str]:
    """A short Beta TS simulation's engine reports, and its report page (HTML, Markdown)."""
    env = EmailCampaign()
    engines = make_policies(["beta_ts"], env, seed=0)
    result = simulate(env, engines, 400, batch_size=200, seed=0, progress=False)
    reports = {name: e.report(next(iter(e._campaigns))).model_dump(mode="json")
               for name, e in engines.items()}
    page = simulation.write_report(result, tmp_path, reports).read_text()
    markdown = (tmp_path / "report.md").read_text()
    return reports, page, markdown


def test_the_simulation_report_shows_each_engines_outcome_table(tmp_path):
    _, page, markdown = _simulation_report(tmp_path)
    assert "## Outcomes: beta_ts" in markdown and "<h2>Outcomes: beta_ts</h2>" in page
    for kind in ("reward", *OUTCOME_TYPES):
        assert f"| {kind} |" in markdown
    # No holdout in a simulation run: the guardrails' lift is shown, without an interval.
    assert "| complaint | 0.00% [" in markdown and "| n/a | n/a |" in markdown


def _segmented_report() -> dict:
    """60 decisions per region: 'eu' always got arm 'a' and clicked, the others got 'a' or 'b'
    in turn and never clicked (so every region is flagged); a region named like markup."""
    engine = Engine()
    engine.create_campaign(CampaignSpec.model_validate({
        "name": "w", "attribution_window_ms": 1000, "context": {"segments": ["region"]},
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                   "policy": {"kind": "beta_ts"}}]}))
    regions = ["eu", "us", "<b>x|y</b>"]
    engine.learn([JoinedEvent(
        decision_id=f"{i:032x}", campaign="w", subject=subject_key(f"u{i}").hex(), ts=i,
        slots={"s": {"arm": "a" if i % 3 == 0 or i % 2 else "b", "propensity": 0.5}},
        holdout=False, segments={"region": regions[i % 3]},
        outcomes={"click": 1} if i % 3 == 0 else {}, rewards={"s": float(i % 3 == 0)})
        for i in range(180)])
    return engine.report("w").model_dump(mode="json")


def test_the_demo_report_shows_the_bias_audit_as_a_heatmap(tmp_path):
    report = _segmented_report()
    reached = dict.fromkeys(OUTCOME_TYPES, [0, 0])
    send = demo.SendResult(send=1, decisions=180, model_version=1, holdout=0, reached=reached,
                           reward=[60.0, 0.0], expected=0.3, oracle=0.4, uniform=0.2,
                           seconds=1.0, events_per_s=20.0, dead_letters=0,
                           allocation={"s": {"a": 120, "b": 60}})
    page = demo.write_report([send], report, tmp_path, subscribers=180, seed=0).read_text()
    markdown = (tmp_path / "report.md").read_text()
    # Which arms each value got (a row per value, a column per arm), not a reward rate per
    # slot: eu always 'a', the others half and half; the slot's allocation above them.
    assert "## Bias audit" in markdown and "### Slot s" in markdown
    assert "| segment = value | learned | a | b |" in markdown
    assert "| every decision |  | 66.7% | 33.3% |" in markdown
    assert "| ⚑ region = eu | 60 | 100.0% | 0.0% |" in markdown
    assert "| ⚑ region = us | 60 | 50.0% | 50.0% |" in markdown
    assert "| ⚑ region = <b>x\\|y</b> | 60 | 50.0% | 50.0% |" in markdown
    assert ("- ⚑ region = eu: arm allocation differs from the slot's overall by 0.33 (total "
            "variation); reward rate 1.0000 vs 0.0000") in markdown
    assert '<table class="heatmap">' in page
    assert "region = &lt;b&gt;x|y&lt;/b&gt;" in page and "<b>x|y</b>" not in page
    assert page.count('<tr class="flagged"><td>⚑ region') == 3


def test_the_simulation_report_shows_each_engines_heatmaps(tmp_path):
    reports, page, markdown = _simulation_report(tmp_path)
    assert "## Bias audit: beta_ts" in markdown and "<h2>Bias audit: beta_ts</h2>" in page
    slots = [s["slot"] for s in reports["beta_ts"]["slots"]]
    for slot in slots:
        assert f"### Slot {slot}" in markdown
    assert page.count('<table class="heatmap">') == len(slots)
    assert "| region = " in markdown and "| age_band = " in markdown


def _plan_log(rng) -> LoggedBandit:
    """A uniform log of 240 events over 3 actions; the categorical feature 'plan' (one-hot
    columns, as the engine and the OBD reader name them) has 'free' on 120 events and
    '<b>x|y</b>' on 120; 'team' is on none."""
    n = 240
    plan = np.arange(n) % 2
    X = np.column_stack([np.ones(n), plan == 0, plan == 1, np.zeros(n), rng.normal(size=n)])
    return LoggedBandit(X.astype(float), rng.integers(3, size=n), rng.integers(2, size=n) * 1.0,
                        np.full(n, 1 / 3), n_actions=3, action_names=("a", "b", "<c>"),
                        context_names=("(intercept)", "plan=free", "plan=<b>x|y</b>",
                                       "plan=team", "score"), name="plans")


def test_the_replay_report_shows_each_policys_allocation_by_segment(rng, tmp_path):
    log = _plan_log(rng)
    skewed = np.where((log.X[:, 1] == 1)[:, None], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5])
    targets = {"uniform": np.full((log.n, 3), 1 / 3), "skewed": skewed,
               **make_targets(["lin_ucb"], log)}
    for estimators in (["replay"], ["replay", "ips"]):
        result = compare(log, dict(targets), estimators, n_boot=20, progress=False)
        page = replay_report.write_report(result, tmp_path).read_text()
        markdown = (tmp_path / "report.md").read_text()
        assert "## Allocation by segment" in markdown and "<h2>Allocation by segment</h2>" in page
        assert page.count('<table class="heatmap">') == 3
        for name in targets:
            assert f"### Policy {name}" in markdown
        heatmaps = json.loads((tmp_path / "results.json").read_text())["segments"]
        for heatmap in heatmaps.values():
            assert [(r["segment"], r["value"]) for r in heatmap["rows"]] == [
                ("plan", "free"), ("plan", "<b>x|y</b>")]
            for row in heatmap["rows"]:
                assert row["impressions"] == 120 and sum(row["shares"]) == pytest.approx(1.0)
        # The probabilities the estimators read, per value; the audit's allocation rule flags
        # both halves of the skewed table (total variation 0.5 from its overall), none of
        # uniform's.
        assert "| segment = value | events | a | b | <c> |" in markdown
        assert "| every event |  | 50.0% | 25.0% | 25.0% |" in markdown
        assert "| ⚑ plan = free | 120 | 100.0% | 0.0% | 0.0% |" in markdown
        assert "| ⚑ plan = <b>x\\|y</b> | 120 | 0.0% | 50.0% | 50.0% |" in markdown
        assert "| plan = free | 120 | 33.3% | 33.3% | 33.3% |" in markdown
        assert "plan = &lt;b&gt;x|y&lt;/b&gt;" in page and "<b>x|y</b>" not in page
        assert "<th>&lt;c&gt;</th>" in page and "<c>" not in page
        assert page.count('<tr class="flagged"><td>⚑ plan') >= 2
