"""Consent at ingestion: an impression of a decision made without consent (its id's consent
bit clear) loses its context and segments before the join, in process (Engine.record/ingest),
over HTTP (POST /v1/events) and in the stream worker; it is still learned, like any impression
without context, and each one stripped is counted. With consent nothing changes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from bandit.engine import Engine
from bandit.models import CampaignSpec, Click, DecisionRequest, Impression
from bandit.service import create_app
from bandit.settings import Settings
from streams.codec import encode
from streams.joined import examples
from streams.memory import MemoryLog, MemoryTransport
from streams.topics import Topics
from streams.worker import PartitionJoin, Worker

SPEC = {"name": "c", "holdout": 0.0, "attribution_window_ms": 1000,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "categorical", "name": "plan",
                                  "values": ["free", "pro"]}],
                    "segments": ["region"]},
        "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                   "policy": {"kind": "lin_ucb"}}]}
# What a sender wrongly logs for the consent-less decision: none of it may be kept.
SECRET = {"context": {"engagement": 0.75, "plan": "plan-of-u0"},
          "segments": {"region": "home-of-u0"}}
SHARED = {"context": {"engagement": 0.5, "plan": "plan-of-u1"},
          "segments": {"region": "home-of-u1"}}


def engine() -> Engine:
    e = Engine()
    e.create_campaign(CampaignSpec.model_validate(SPEC))
    return e


def decision_ids() -> tuple[str, str]:
    """The ids of two decisions: u0 without consent, u1 with it."""
    batch = engine().decide_batch("c", [DecisionRequest(
        campaign="c", user_id=u, consent=c, context={"engagement": 0.5})
        for u, c in (("u0", False), ("u1", True))])
    return batch.decision_ids[0], batch.decision_ids[1]


def impression(decision_id: str, user_id: str, logged: dict[str, Any], ts: int = 0) -> dict:
    return {"type": "impression", "event_id": f"imp-{decision_id}", "decision_id": decision_id,
            "campaign": "c", "user_id": user_id, "ts": ts,
            "slots": {"subject": {"arm": "b", "propensity": 0.5}}, **logged}


def far_click(ts: int = 10_000) -> dict:
    """A click in an unknown decision far in event time: it closes every window."""
    return {"type": "click", "event_id": f"far-{ts}", "decision_id": "f" * 32, "campaign": "c",
            "ts": ts}


def secrets_in(data: bytes, who: str) -> bool:
    return f"plan-of-{who}".encode() in data or f"home-of-{who}".encode() in data


def test_the_engine_strips_a_consentless_impression_and_learns_it_without_context():
    no, yes = decision_ids()
    stripped, bare = engine(), engine()
    imp = impression(no, "u0", SECRET)
    stripped.record([Impression.model_validate(imp)])
    bare.record([Impression.model_validate(impression(no, "u0", {}))])
    assert stripped.stripped_impressions == 1
    assert not secrets_in(stripped.to_bytes(), "u0")  # the open window (join state, snapshot)
    closed = [e.ingest([Click.model_validate(far_click())]).closed for e in (stripped, bare)]
    assert closed[0].json() == closed[1].json()
    assert orjson.loads(closed[0].json()[0][1])["segments"] == {}
    assert "context" not in orjson.loads(closed[0].json()[0][1])
    # Learned as the same impression sent without context: the same model and reports.
    assert stripped.to_bytes() == bare.to_bytes()
    assert stripped.report("c").impressions == 1

    kept = engine()
    kept.record([Impression.model_validate(impression(yes, "u1", SHARED))])
    assert kept.stripped_impressions == 0 and secrets_in(kept.to_bytes(), "u1")
    joined = orjson.loads(kept.ingest([Click.model_validate(far_click())]).closed.json()[0][1])
    assert (joined["context"], joined["segments"]) == (SHARED["context"], SHARED["segments"])


def test_post_events_strips_and_counts():
    e = engine()

    async def run() -> tuple[list[str], str]:
        transport = httpx.ASGITransport(create_app(e, Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            ids = []
            # The service logs each decision with its request's context (consent only); an
            # impression is the send of a logged decision: its own context is not read.
            for user, consent, logged in (("u0", False, SECRET), ("u1", True, SHARED)):
                answer = await c.post("/v1/decisions", json={
                    "campaign": "c", "user_id": user, "consent": consent, **logged})
                ids.append(answer.json()["decision_id"])
            body = [impression(ids[0], "u0", SECRET), impression(ids[1], "u1", SHARED)]
            assert (await c.post("/v1/events", json=body)).json() == {"accepted": 2}
            return ids, (await c.get("/metrics")).text

    (no, yes), metrics = asyncio.run(run())
    assert "cmab_impressions_stripped_total 1.0" in metrics
    data = e.to_bytes()
    assert not secrets_in(data, "u0") and secrets_in(data, "u1")
    closed = e.ingest([Click.model_validate(far_click(time.time_ns() // 10**6 + 10**10))]).closed
    joined = {d: orjson.loads(text) for d, text in closed.json()}
    assert "context" not in joined[no] and joined[no]["segments"] == {}
    assert joined[yes]["context"] == SHARED["context"]
    assert e.report("c").impressions == 2


def test_the_worker_strips_counts_and_writes_no_context_to_joined():
    no, yes = decision_ids()
    log = MemoryLog(Topics("t"), 1)
    log.publish_campaign(engine().campaign_record("c"))
    for event in (impression(no, "u0", SECRET), impression(yes, "u1", SHARED)):
        log.append(log.topics.events, encode(event), key=event["decision_id"].encode())
    transport = MemoryTransport(log)
    worker = Worker(transport, checkpoint_interval_ms=0)
    transport.attach(worker)
    while worker.step():
        pass
    assert worker.counters.stripped == 1
    checkpoint = transport.latest_checkpoint(0)
    assert not secrets_in(checkpoint, "u0") and secrets_in(checkpoint, "u1")

    log.append(log.topics.events, encode(impression("e" * 31 + "1", "x", {}, ts=10_000)))
    log.append(log.topics.events, encode(far_click()))
    while worker.step():
        pass
    joined = {j["decision_id"]: j for _, value, _ in log.read(log.topics.joined, 0)
              for j in map(orjson.loads, examples(value))}
    assert "context" not in joined[no] and joined[no]["segments"] == {}
    assert (joined[yes]["context"], joined[yes]["segments"]) == (
        SHARED["context"], SHARED["segments"])
    restored = PartitionJoin.restore(transport.latest_checkpoint(0))
    assert restored.counters.stripped == 1  # carried in the checkpoint
    assert restored.engine.report("c").impressions == 2
