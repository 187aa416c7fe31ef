"""Guardrails (``bandit.engine.guardrails``): the spec's checks; a harmful subject line trips
its guardrail within the sends its effect and the always-valid interval allow; a harmless
campaign trips in at most 5% of 200 runs checked after every send; a breach pauses the campaign
with its reason (report, metric, decisions on default arms) until a person resumes it, after
which the test restarts from the sums at the resume; the reason and the baseline travel in
campaign records and snapshots, and the stream service's merged model is evaluated too.

The outcomes are the email simulator's (``simulators.outcomes``): unsubscribes depend on the
subject line and the send hour only (urgency and night sends cost them), so a run draws them
from that table, per subscriber and send, and adds them to the tallies the engine keeps."""

from __future__ import annotations

import math
from itertools import count
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from bandit.engine import Engine
from bandit.engine import guardrails as _guardrails
from bandit.engine.campaign import _Campaign, build_campaign
from bandit.engine.intervals import always_valid_factor, clusters_of, rho_for
from bandit.engine.randomness import _in_holdout, subject_key
from bandit.engine.tally import GROUPS
from bandit.models import OUTCOME_TYPES, CampaignSpec, DecisionRequest, Unsubscribe
from bandit.models.specs import Guardrail
from bandit.service import create_app
from bandit.settings import Settings
from simulators.email_campaign import EmailCampaign
from simulators.outcomes import EmailOutcomes
from tests.servers import live

ENV = EmailCampaign()
FRAMING = {f: i for i, f in enumerate(ENV.FRAMINGS)}
UNSUBSCRIBE, COMPLAINT = OUTCOME_TYPES.index("unsubscribe"), OUTCOME_TYPES.index("complaint")
# The list every send goes to: the simulator's subscriber ids; holdout 5% (the default).
N, HOLDOUT = 20_000, 0.05
USERS = [f"s{i:07d}" for i in range(N)]


def _rates() -> tuple[np.ndarray, np.ndarray]:
    """The simulator's unsubscribe and complaint rates per (framing, send hour) (5, 24), per
    email sent (bounces included); the same for every subscriber."""
    f, h = np.meshgrid(np.arange(len(ENV.FRAMINGS)), np.arange(24), indexing="ij")
    rates = EmailOutcomes(ENV).rates(ENV.subscribers(f.size, np.random.default_rng(0)), {
        "subject_line": f.ravel(), "send_hour": h.ravel(),
        "offer": np.zeros(f.size, dtype=np.int64), "artwork": np.zeros(f.size, dtype=np.int64)})
    return rates["unsubscribe"].reshape(f.shape), rates["complaint"].reshape(f.shape)


UNSUB, COMPLAIN = _rates()
PLAIN_H09 = UNSUB[FRAMING["plain"], 9]  # the default arms: what the holdout gets


def spec(name: str, *guardrails: dict[str, Any], holdout: float = HOLDOUT) -> CampaignSpec:
    return CampaignSpec.model_validate({
        "name": name, "holdout": holdout, "attribution_window_ms": 1000,
        "slots": [{"name": "subject_line", "arms": [{"id": "plain"}, {"id": "urgency"}],
                   "default_arm": "plain", "policy": {"kind": "beta_ts"}},
                  {"name": "send_hour", "arms": [{"id": "h09"}, {"id": "h02"}],
                   "default_arm": "h09", "policy": {"kind": "beta_ts"}}],
        "guardrails": list(guardrails)})


class Sends:
    """Sends to the whole list, straight into a campaign's clustered tallies (what learning
    adds once their windows close): each subscriber's bucket from their subject key, holdout
    by the engine's hash, unsubscribes and complaints drawn from the simulator's rates."""

    def __init__(self, campaign: str) -> None:
        self.clusters = clusters_of([subject_key(u) for u in USERS])
        self.holdout = np.array([_in_holdout(campaign, u, HOLDOUT) for u in USERS])

    def send(self, c: _Campaign, framing: np.ndarray, hour: np.ndarray,
             rng: np.random.Generator) -> None:
        """One send: personalized subscriber i gets (framing[i], hour[i]); the holdout plain
        at 9h."""
        f = np.where(self.holdout, FRAMING["plain"], framing)
        h = np.where(self.holdout, 9, hour)
        unsubscribed = rng.random(N) < UNSUB[f, h]
        outcomes = np.zeros((N, len(OUTCOME_TYPES)), dtype=np.int64)
        outcomes[:, UNSUBSCRIBE] = unsubscribed
        outcomes[:, COMPLAINT] = unsubscribed & (rng.random(N) < COMPLAIN[f, h] / UNSUB[f, h])
        for flag, group in enumerate(GROUPS):
            mine = self.holdout == bool(flag)
            c.clustered[group].add(self.clusters[mine], outcomes[mine], np.zeros(mine.sum()))


# -- the spec -----------------------------------------------------------------------------


@pytest.mark.parametrize(("guardrails", "message"), [
    ([{"outcome": "unsubscribe"}], "max_lift or min_lift: give at least one"),
    ([{"outcome": "click", "min_lift": 0.01, "max_lift": 0.0}], "min_lift 0.01 is above"),
    ([{"outcome": "unsubscribe", "max_lift": 0.001},
      {"outcome": "unsubscribe", "min_lift": -0.1}],
     "guardrails: 2 guardrails on 'unsubscribe'; at most one per outcome type"),
    ([{"outcome": "unsubscribes", "max_lift": 0.001}], "guardrails.0.outcome"),
    ([{"outcome": "unsubscribe", "max_lift": 2.0}], "guardrails.0.max_lift"),
    ([{"outcome": "unsubscribe", "max_lift": 0.001, "min_decisions": 0}],
     "guardrails.0.min_decisions"),
    ([{"outcome": "unsubscribe", "max_lift": 0.001, "min_decisions": 10.5}],
     "expected a whole number"),
])
def test_a_bad_guardrail_is_refused_naming_its_field(guardrails, message):
    with pytest.raises(ValidationError) as error:
        spec("bad", *guardrails)
    text = str(error.value)
    assert message in text or message in ".".join(
        ".".join(map(str, e["loc"])) for e in error.value.errors()), text


def test_a_guardrail_defaults_to_1000_decisions_per_group():
    g = Guardrail.model_validate({"outcome": "complaint", "max_lift": 0.0005})
    assert (g.min_decisions, g.min_lift) == (1000, None)


def test_a_lift_below_min_lift_breaches_and_too_few_decisions_wait():
    """Clicks fall from 3% (holdout) to 1% (personalized) over 20,000 decisions each: a
    guardrail of -0.5 points breaches its min_lift; one that wants 50,000 decisions per group
    waits (and pauses nothing), whatever its interval says."""
    click = OUTCOME_TYPES.index("click")
    rng = np.random.default_rng(1)
    c = build_campaign(spec("clicks", {"outcome": "click", "min_lift": -0.005},
                            {"outcome": "open", "min_lift": -0.005,
                             "min_decisions": 50_000}), rng)
    for group, rate in zip(GROUPS, (0.01, 0.03), strict=True):
        outcomes = np.zeros((20_000, len(OUTCOME_TYPES)), dtype=np.int64)
        outcomes[:, click] = outcomes[:, OUTCOME_TYPES.index("open")] = (
            rng.random(20_000) < rate)
        c.clustered[group].add(rng.integers(1024, size=20_000), outcomes, np.zeros(20_000))
    clicks, opens = _guardrails.report(c)
    assert (clicks.state, opens.state) == ("breached", "waiting")
    assert opens.interval is not None and opens.interval.high < -0.005
    reason = _guardrails.check(c, at_ms=7)
    assert reason is not None and (reason.outcome, reason.bound, reason.limit) == (
        "click", "min_lift", -0.005)
    assert reason.interval.high < -0.005 and c.paused


# -- the test's error rates, on the simulator ---------------------------------------------


# How far the estimate may fall short (in its standard deviations) in the bound of
# ``sends_to_trip``: 5 sd is under 1e-6 for a normal estimate; the holdout's unsubscribe count
# (about 30 by then) is skewed like a Poisson's, which leaves it far below 1e-3.
MARGIN = 5


def sends_to_trip(harmful: float, limit: float, rho: float) -> int:
    """The sends by which a personalized unsubscribe rate ``harmful`` (holdout: the default
    arms') trips a guardrail ``max_lift = limit`` unless the estimate falls MARGIN standard
    deviations short: the first send s after which the expected lift exceeds the limit by
    the always-valid half width plus MARGIN standard deviations of the estimate (binomial:
    independent draws per send), with each group past min_decisions."""
    n_h = HOLDOUT * N
    n_p = N - n_h
    for s in count(1):
        sd = math.sqrt(harmful * (1 - harmful) / (s * n_p)
                       + PLAIN_H09 * (1 - PLAIN_H09) / (s * n_h))
        if (s * n_h >= 1000 and harmful - PLAIN_H09 - limit
                >= (always_valid_factor(s * N, rho) + MARGIN) * sd):
            return s
    raise AssertionError("unreachable")


def test_a_harmful_subject_line_trips_its_guardrail_within_the_bound():
    """Every personalized subscriber gets the urgency subject line at 9h: unsubscribes go
    from 0.25% to 0.67% (the simulator's odds times e), a lift of +0.42 points against a
    guardrail of +0.1 points. Over 20 seeds each run trips by the bound of
    ``sends_to_trip`` (19 sends; most runs trip within 2 to 4)."""
    guardrail = {"outcome": "unsubscribe", "max_lift": 0.001}
    harmful = UNSUB[FRAMING["urgency"], 9]
    assert harmful - PLAIN_H09 == pytest.approx(0.0042, abs=1e-4)
    horizon = CampaignSpec.model_fields["lift_horizon"].default
    bound = sends_to_trip(harmful, 0.001, rho_for(horizon))
    assert bound == 19
    sends = Sends("harm")
    tripped = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        c = build_campaign(spec("harm", guardrail), rng)
        for s in range(1, bound + 1):
            sends.send(c, np.full(N, FRAMING["urgency"]), np.full(N, 9), rng)
            if _guardrails.check(c, at_ms=s) is not None:
                break
        assert c.paused and c.paused_by is not None, f"seed {seed}: not tripped in {bound}"
        assert (c.paused_by.outcome, c.paused_by.bound, c.paused_by.limit) == (
            "unsubscribe", "max_lift", 0.001)
        assert c.paused_by.interval.low > 0.001 and c.paused_by.at_ms == s
        tripped.append(s)
    assert max(tripped) <= bound and np.median(tripped) <= 4


@pytest.mark.slow
def test_a_harmless_campaign_trips_in_at_most_5_percent_of_200_runs():
    """200 runs of 12 sends, checked after every send: personalized subscribers get any
    subject line but urgency at any hour from 6h (the simulator's unsubscribe rate of the
    default arms: no harm). Two guardrails per run: the issue's +0.1 points, and the hardest
    harmless one, max_lift 0 (the bound at the true lift itself: the one-sided error of the
    95% confidence sequence, nominally 2.5%). Each trips in at most 10 of the 200 runs."""
    sends = Sends("harmless")
    others = np.array([FRAMING[f] for f in ENV.FRAMINGS if f != "urgency"])
    assert np.allclose(UNSUB[others, 6:], PLAIN_H09)  # no harm
    trips = {0.001: 0, 0.0: 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        c = build_campaign(spec("harmless", {"outcome": "unsubscribe", "max_lift": 0.001}), rng)
        strict = build_campaign(spec("harmless", {"outcome": "unsubscribe", "max_lift": 0.0}),
                                rng)
        strict.clustered = c.clustered  # the same sends, the other bound
        for s in range(12):
            sends.send(c, rng.choice(others, N), rng.integers(6, 24, N), rng)
            _guardrails.check(c, at_ms=s)
            _guardrails.check(strict, at_ms=s)
        trips[0.001] += c.paused
        trips[0.0] += strict.paused
    assert trips[0.001] <= 10 and trips[0.0] <= 10, trips


# -- the kill switch, end to end ----------------------------------------------------------

HARM = {"outcome": "unsubscribe", "max_lift": 0.001}
LIST = [DecisionRequest(campaign="harm", user_id=f"s{i:07d}") for i in range(5000)]
ARM = {"plain": FRAMING["plain"], "urgency": FRAMING["urgency"], "h09": 9, "h02": 2}


def send(engine: Engine, k: int, rng: np.random.Generator,
         learner: Engine | None = None) -> None:
    """Send k of campaign "harm" to LIST through the engine: decisions, their impressions
    at 10 s times k, unsubscribes drawn from the simulator's rates for the arms the engine
    chose, and a watermark that closes their 1 s windows (learned, guardrails evaluated),
    all in ``learner`` when given (a stream worker's partition) instead of the engine."""
    ts = k * 10_000
    batch = engine.decide_batch("harm", LIST)
    chosen = {s.slot: np.array([ARM[s.arm_ids[a]] for a in s.arms.tolist()])
              for s in batch.slots}
    gone = rng.random(len(LIST)) < UNSUB[chosen["subject_line"], chosen["send_hour"]]
    learner = engine if learner is None else learner
    learner.record([*batch.impressions(LIST, ts_ms=ts), *(
        Unsubscribe(event_id=f"u-{d}", decision_id=d, campaign="harm", ts=ts + 100)
        for d in np.array(batch.decision_ids)[gone].tolist())])
    learner.ingest([], watermark=ts + 5000)


def defaults(decisions: list[dict[str, Any]]) -> bool:
    return all({s["slot"]: (s["arm"], s["propensity"]) for s in d["slots"]}
               == {"subject_line": ("plain", 1.0), "send_hour": ("h09", 1.0)}
               for d in decisions)


def test_a_breach_pauses_with_its_reason_is_counted_and_a_resume_restarts_the_test():
    """The engine chooses among urgency and night sends (nothing rewards it for avoiding
    them: no clicks are posted), the join learns what the simulator's subscribers do, and the
    unsubscribe guardrail trips: the campaign pauses, the report says why, decisions get the
    default arms, the service's metric counts the breach; a person resumes over HTTP, and
    the test restarts from the sums then."""
    engine = Engine(seed=3, id_seed=3)
    engine.create_campaign(spec("harm", HARM, holdout=0.5))
    rng = np.random.default_rng(3)
    for k in range(40):
        send(engine, k, rng)
        if engine.is_paused("harm"):
            break
    report = engine.report("harm")
    assert report.paused and report.paused_by is not None, "not tripped in 40 sends"
    assert (report.paused_by.outcome, report.paused_by.bound) == ("unsubscribe", "max_lift")
    assert report.paused_by.interval.low > 0.001
    (g,) = report.guardrails
    assert (g.state, g.personalized + g.holdout) == ("breached", 5000 * (k + 1))
    assert g.interval == report.paused_by.interval
    assert engine.breaches == {("harm", "unsubscribe"): 1}
    record = engine.campaign_record("harm")
    assert record["paused_by"] == report.paused_by.model_dump(mode="json")
    with live(create_app(engine, Settings())) as client:
        decisions = [client.post("/v1/decisions", json={"campaign": "harm",
                                                        "user_id": f"u{i}"}).json()
                     for i in range(50)]
        assert defaults(decisions)
        shown = client.get("/v1/campaigns/harm/report").json()
        assert shown["paused_by"] == record["paused_by"]
        assert shown["guardrails"][0]["state"] == "breached"
        metrics = client.get("/metrics").text
        assert 'cmab_guardrail_breaches_total{campaign="harm",outcome="unsubscribe"} 1.0' in (
            metrics)
        assert client.post("/v1/campaigns/harm/pause", json={"paused": False}).json() == {
            "campaign": "harm", "paused": False}
        shown = client.get("/v1/campaigns/harm/report").json()
        assert shown["paused"] is False and shown["paused_by"] is None
        assert {k: shown["guardrails"][0][k] for k in ("state", "personalized", "holdout")} == {
            "state": "waiting", "personalized": 0, "holdout": 0}
        decisions = [client.post("/v1/decisions", json={"campaign": "harm",
                                                        "user_id": f"u{i}"}).json()
                     for i in range(50)]
        assert not defaults(decisions)
    engine.decision_sink = None  # the app's join log: this test logs its own decisions
    # Resumed, the same evidence trips nothing: one more send is tested on its own.
    send(engine, 100, rng)
    (g,) = engine.report("harm").guardrails
    assert not engine.is_paused("harm") and g.personalized + g.holdout == 5000
    assert engine.breaches == {("harm", "unsubscribe"): 1}


def test_the_reason_and_the_baseline_travel_in_records_and_snapshots():
    """A second engine that follows the campaign record is paused with the same reason and
    gives default arms; a snapshot keeps reason and baseline; a resume's record carries the
    baseline, so the follower tests from the same sums."""
    engine = Engine(seed=4, id_seed=4)
    engine.create_campaign(spec("harm", HARM, holdout=0.5))
    rng = np.random.default_rng(4)
    for k in range(40):
        send(engine, k, rng)
        if engine.is_paused("harm"):
            break
    follower = Engine(seed=5)
    follower.sync_campaign(engine.campaign_record("harm"))
    assert follower.is_paused("harm")
    assert follower.report("harm").paused_by == engine.report("harm").paused_by
    batch = follower.decide_batch("harm", LIST[:100])
    assert all((s.arms == s.arm_ids.index(d)).all() for s, d in zip(
        batch.slots, ("plain", "h09"), strict=True))
    copy, _ = Engine.from_bytes(engine.to_bytes())
    assert copy.campaign_record("harm") == engine.campaign_record("harm")
    engine.pause("harm", False)
    record = engine.campaign_record("harm")
    assert record["paused_by"] is None and record["baseline"] is not None
    assert sum(record["baseline"]["holdout"]["n"]) == engine.report("harm").groups[
        "holdout"].decisions
    follower.sync_campaign(record)
    assert not follower.is_paused("harm")
    assert follower.campaign_record("harm") == record
    copy, _ = Engine.from_bytes(engine.to_bytes())
    assert copy.campaign_record("harm") == record
    engine.pause("harm")  # by hand: no reason, and resuming it keeps the test's sums
    engine.pause("harm", False)
    assert engine.campaign_record("harm") == record


def test_the_stream_service_evaluates_the_merged_model():
    """The service decides; partition engines each learn part of the sends; the service's
    model is their sum (``absorb``) and ``guard`` trips on it, as the state follower calls it
    after each absorb. Campaigns already paused are left alone."""
    service = Engine(seed=6, id_seed=6)
    service.create_campaign(spec("harm", HARM, holdout=0.5))
    parts = [Engine(seed=7 + p) for p in range(2)]
    rng = np.random.default_rng(6)
    for part in parts:
        part.create_campaign(spec("harm", HARM, holdout=0.5))
    for k in range(40):
        send(service, k, rng, learner=parts[k % 2])
        service.absorb(parts)
        if service.guard():
            break
    assert service.is_paused("harm"), "not tripped in 40 sends"
    reason = service.report("harm").paused_by
    assert reason is not None and reason.interval.low > 0.001
    assert service.report("harm").guardrails[0].personalized + service.report(
        "harm").guardrails[0].holdout == 5000 * (k + 1)
    assert service.breaches == {("harm", "unsubscribe"): 1}
    assert service.guard() == [] and service.breaches == {("harm", "unsubscribe"): 1}
