"""The in-process decision log (``bandit.service.link.JoinLog``) over a real server: decisions
are queued and joined in batches, yet always before an event, erasure, report, snapshot or
metric reads the join; decisions over ``max_pending`` are counted; concurrent deciders and
senders lose nothing."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from bandit.engine import Engine
from bandit.service import create_app
from bandit.service.link import JoinLog
from bandit.settings import Settings
from tests.servers import live

NDJSON = {"content-type": "application/x-ndjson"}
Served = tuple[httpx.Client, Engine, JoinLog]


@contextmanager
def serve(spec: dict[str, Any], settings: Settings | None = None, *, batch: int = 10**9,
          delay_s: float = 3600.0) -> Iterator[Served]:
    """A service with the campaign ``spec``, its engine and its decision log, whose thread
    joins ``batch`` decisions or those that waited ``delay_s``. By default it never does, so
    only the engine's flush points join the queued decisions."""
    engine = Engine(seed=0)
    app = create_app(engine, settings or Settings())
    join_log: JoinLog = app.state.join_log
    join_log.batch, join_log.delay_s = batch, delay_s
    with live(app) as client:
        assert client.post("/v1/campaigns", json=spec).status_code == 201
        yield client, engine, join_log


@pytest.fixture
def held(newsletter_spec: Callable[[str], dict[str, Any]]) -> Iterator[Served]:
    with serve(newsletter_spec("held")) as served:
        yield served


def subscriber(i: int) -> dict[str, Any]:
    return {"campaign": "held", "user_id": f"user-{i}",
            "context": {"engagement": (i % 10) / 10, "plan": ["free", "pro", "team"][i % 3]},
            "segments": {"region": ["eu", "us"][i % 2]}}


def decide(client: httpx.Client, n: int, single: bool, start: int = 0) -> list[dict]:
    """n decisions: one POST /v1/decisions each, or one NDJSON batch."""
    requests = [subscriber(i) for i in range(start, start + n)]
    if single:
        responses = [client.post("/v1/decisions", json=r) for r in requests]
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    response = client.post("/v1/decisions/batch", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def sent_and_clicked(decisions: list[dict], now: int) -> list[dict]:
    return [event for d in decisions for event in (
        {"type": "send", "event_id": f"s-{d['decision_id']}", "decision_id": d["decision_id"],
         "ts": now},
        {"type": "click", "event_id": f"c-{d['decision_id']}", "decision_id": d["decision_id"],
         "ts": now + 10})]


def counts(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    found = {"logged": r"^cmab_decisions_logged_total (\S+)$",
             "over_capacity": r'^cmab_decisions_unlogged_total\{reason="over_capacity"\} (\S+)$',
             "queued": r"^cmab_decision_log_queued (\S+)$"}
    return {name: float(re.search(pattern, text, re.M)[1])  # type: ignore[index]
            for name, pattern in found.items()}


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_an_outcome_posted_right_after_its_decision_is_joined_and_learned(held, single):
    client, engine, join_log = held
    decisions = decide(client, 6, single)
    assert join_log.queued == 6  # the timer is held: nothing joined them yet
    now = time.time_ns() // 10**6  # the decisions were logged at the service's clock
    assert client.post("/v1/events", json=sent_and_clicked(decisions, now)).json() == {
        "accepted": 12}
    assert join_log.queued == 0
    # An event far ahead in event time closes the windows (1 s): the clicks are learned.
    far = {"type": "open", "event_id": "far", "decision_id": "f" * 32, "ts": now + 60_000}
    assert client.post("/v1/events", json=[far]).json() == {"accepted": 1}
    report = client.get("/v1/campaigns/held/report").json()
    for slot in report["slots"]:
        assert sum(a["impressions"] for a in slot["arms"]) == 6
        assert sum(a["reward"] for a in slot["arms"]) == 6.0
    assert engine.rejected_events == 0


def test_a_report_snapshot_or_metric_right_after_decisions_sees_them(held):
    client, engine, join_log = held
    decide(client, 3, single=False)
    assert client.get("/v1/campaigns/held/report").status_code == 200
    assert (join_log.queued, join_log.logged) == (0, 3)
    decide(client, 2, single=True, start=3)
    assert Engine.from_bytes(engine.to_bytes())[0].open_windows() == 5
    decide(client, 4, single=False, start=5)
    assert counts(client) == {"logged": 9.0, "over_capacity": 0.0, "queued": 0.0}
    decide(client, 1, single=True, start=9)
    assert engine.open_windows() == 10


@pytest.mark.parametrize("single", [True, False], ids=["single", "batch"])
def test_an_erasure_right_after_a_decision_removes_it(held, single):
    client, engine, _ = held
    decide(client, 2, single)
    erased = client.delete("/v1/subjects/user-1").json()
    assert (erased["erased"], erased["forwarded"], erased["forgotten"]) == (1, False, 0)
    assert engine.open_windows() == 1


def test_decisions_over_max_pending_are_counted_unlogged_when_joined(newsletter_spec):
    with serve(newsletter_spec("held"), Settings(max_pending=4)) as (client, engine, join_log):
        decide(client, 3, single=True)
        decide(client, 3, single=False, start=3)
        assert join_log.queued == 6
        assert counts(client) == {"logged": 4.0, "over_capacity": 2.0, "queued": 0.0}
        assert engine.open_windows() == 4


def test_the_timer_joins_decisions_nobody_asks_for(newsletter_spec):
    with serve(newsletter_spec("held"), delay_s=0.001) as (client, engine, join_log):
        decide(client, 2, single=True)
        deadline = time.monotonic() + 30
        while join_log.queued:
            assert time.monotonic() < deadline, "the queue was never joined"
            time.sleep(0.01)
        assert (join_log.logged, engine._joiner.open_count) == (2, 2)


def decide_and_post(base_url: httpx.URL, t: int, posted: list[int],
                    errors: list[BaseException]) -> None:
    """Thread t: 12 rounds of a few decisions (single or batch), each round's impressions
    and clicks posted right after the answer; ``posted[t]`` counts the decisions."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        try:
            for k in range(12):
                decisions = decide(client, 1 + k % 4, single=t % 2 == 0, start=1000 * t + 10 * k)
                now = time.time_ns() // 10**6
                events = [{"type": "impression", "event_id": f"i-{d['decision_id']}",
                           "decision_id": d["decision_id"], "campaign": "held",
                           "user_id": d["user_id"], "ts": now,
                           "slots": {s["slot"]: {"arm": s["arm"], "propensity": s["propensity"]}
                                     for s in d["slots"]}} for d in decisions]
                events += sent_and_clicked(decisions, now)[1::2]  # the clicks
                answer = client.post("/v1/events", json=events).json()
                assert answer == {"accepted": len(events)}, answer
                posted[t] += len(decisions)
        except BaseException as error:  # reported by the main thread
            errors.append(error)


def test_concurrent_deciders_and_senders_lose_nothing(newsletter_spec):
    """Threads decide (single and batch) and post each decision's legacy impression and click
    right after its answer, while the log's thread joins batches of 7 decisions (and the
    engine the rest): every decision is in the join once, before its impression (an
    impression first would open a decision of its own and the logged one would then be
    refused as a second decision)."""
    spec = {**newsletter_spec("held"), "attribution_window_ms": 3_600_000}
    with serve(spec, batch=7) as (client, engine, _):
        posted: list[int] = [0] * 8
        errors: list[BaseException] = []
        threads = [threading.Thread(target=decide_and_post,
                                    args=(client.base_url, t, posted, errors))
                   for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        decided = sum(posted)
        assert decided == 8 * sum(1 + k % 4 for k in range(12))
        assert engine.open_windows() == decided
        assert counts(client) == {"logged": decided, "over_capacity": 0.0, "queued": 0.0}
        assert engine.rejected_events == 0


def test_decisions_queued_at_shutdown_are_in_the_saved_snapshot(newsletter_spec, tmp_path):
    snapshot = tmp_path / "engine.snap"
    with serve(newsletter_spec("held"), Settings(snapshot_path=snapshot)) as (client, _, log):
        decide(client, 2, single=True)
        decide(client, 3, single=False, start=2)
        assert log.queued == 5
    assert (log.queued, log.logged) == (0, 5)
    assert Engine.load(snapshot).open_windows() == 5


def test_queued_logs_of_several_campaigns_and_arm_sets_join_as_runs(newsletter_spec):
    """One flush of single decisions and batches of two campaigns, interleaved, one of them
    gaining an arm between calls: every decision is joined (as runs of its campaign, in
    order) and the decisions over ``max_pending`` are counted exactly."""
    from bandit.models import Arm, CampaignSpec, DecisionRequest

    engine = Engine(seed=0, id_seed=1)
    engine.limit_pending(25)
    for name in ("a", "b"):
        engine.create_campaign(CampaignSpec.model_validate(newsletter_spec(name)))
    join_log = JoinLog(engine, batch=10**9, delay_s=3600.0)
    engine.decision_sink = join_log
    made = {"a": 0, "b": 0}
    for i in range(60):
        name = "ab"[i % 2]
        request = DecisionRequest.model_validate({**subscriber(i), "campaign": name})
        if i % 7:
            engine.decide_one(request)
            made[name] += 1
        else:
            engine.decide_batch(name, [request] * 3)
            made[name] += 3
        if i == 30:
            engine.add_arm("a", "subject_line", Arm(id="teaser"))
    assert join_log.queued == sum(made.values()) and join_log.logged == 0
    status = join_log.decision_log_status()
    assert status.unlogged == {"over_capacity": sum(n - 25 for n in made.values())}
    assert (status.logged, status.queued) == (50, 0) and engine.open_windows() == 50
