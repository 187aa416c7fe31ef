"""The HTTP decision service over a real server (uvicorn on 127.0.0.1, in a thread) and the
`cmab serve` command: campaigns, single and batch decisions (JSON and NDJSON), arms added and
retired, the kill switch, events, report, erasure, auth, body limits, and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.cli import main
from bandit.engine import DecisionBatch, Engine, SlotColumns
from bandit.engine.decisionlog import DecisionLogStatus
from bandit.errors import InvalidInputError, NotFoundError
from bandit.models import CampaignSpec, Contribution, Decision, DecisionRequest
from bandit.service import create_app
from bandit.service.metrics import Metrics
from bandit.service.singles import Singles
from bandit.settings import Settings
from tests.servers import live

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "s3cret-token"
NDJSON = {"content-type": "application/x-ndjson"}
DECLARED = {"subject_line": {"plain", "urgent", "question"}, "artwork": {"action", "calm"},
            "send_hour": {"h09", "h18"}}
DEFAULTS = {"subject_line": "plain", "artwork": "calm", "send_hour": "h09"}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with live(create_app(Engine(seed=0), Settings())) as c:
        yield c


@pytest.fixture(scope="module")
def guarded() -> Iterator[httpx.Client]:
    """A second service with a token and a 4 KiB body limit."""
    with live(create_app(Engine(seed=1), Settings(api_token=TOKEN, max_body_bytes=4096))) as c:
        yield c


@pytest.fixture
def own(newsletter_spec: Callable[[str], dict[str, Any]]) -> Iterator[tuple[httpx.Client, str]]:
    """A service of its own and a campaign on it, for a test that moves event time: the
    service logs every decision it makes in its join, whose watermark all campaigns share."""
    with live(create_app(Engine(seed=0), Settings())) as c:
        assert c.post("/v1/campaigns", json=newsletter_spec("own")).status_code == 201
        yield c, "own"


@pytest.fixture
def campaign(client: httpx.Client, newsletter_spec: Callable[[str], dict[str, Any]],
             request: pytest.FixtureRequest) -> str:
    """A fresh newsletter campaign per test, named after it."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", request.node.name)[:64]
    response = client.post("/v1/campaigns", json=newsletter_spec(name))
    assert response.status_code == 201, response.text
    return name


def subscriber(campaign: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"campaign": campaign, "user_id": f"user-{i}",
            "context": {"engagement": (i % 10) / 10,
                        "plan": ["free", "pro", "team", "other"][i % 4]},
            "segments": {"region": ["eu", "us"][i % 2]}, **extra}


def decide_many(client: httpx.Client, campaign: str, n: int, start: int = 0) -> list[dict]:
    requests = [subscriber(campaign, i) for i in range(start, start + n)]
    response = client.post("/v1/decisions/batch", json={"campaign": campaign,
                                                         "requests": requests})
    assert response.status_code == 200, response.text
    return response.json()["decisions"]


def chosen(decisions: list[dict], slot: str) -> list[str]:
    return [s["arm"] for d in decisions for s in d["slots"] if s["slot"] == slot]


def check_decision(d: dict, campaign: str, user_id: str, declared=DECLARED) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", d["decision_id"])
    assert (d["campaign"], d["user_id"]) == (campaign, user_id)
    assert isinstance(d["holdout"], bool) and d["model_version"] >= 0
    assert [s["slot"] for s in d["slots"]] == list(declared)  # the campaign's order
    for s in d["slots"]:
        assert s["arm"] in declared[s["slot"]]
        assert 0 < s["propensity"] <= 1
        if d["holdout"]:
            assert (s["arm"], s["propensity"]) == (DEFAULTS[s["slot"]], 1.0)


def assert_error(response: httpx.Response, status: int, code: str, needle: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and needle in error["message"], error
    return error


# -- the JSON of decisions ------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def decision_batches(draw: st.DrawFn) -> DecisionBatch:
    """Columns of any size with awkward text (quotes, %, newlines, non-ASCII) and floats."""
    n = draw(st.integers(0, 6))
    text = st.text(min_size=1, max_size=12)
    slots = []
    for name in draw(st.lists(text, min_size=1, max_size=3, unique=True)):
        arm_ids = draw(st.lists(text, min_size=1, max_size=4, unique=True))
        column = st.lists(finite, min_size=n, max_size=n).map(np.array)
        explain = st.none() | st.lists(st.builds(Contribution, feature=text, value=finite),
                                       max_size=3)
        slots.append(SlotColumns(
            name, arm_ids, np.array(draw(st.lists(st.integers(0, len(arm_ids) - 1),
                                                  min_size=n, max_size=n)), dtype=np.int64),
            draw(column), draw(column), draw(column),
            draw(st.none() | st.lists(explain, min_size=n, max_size=n))))
    return DecisionBatch(
        campaign=draw(text),
        decision_ids=[f"{i:032x}" for i in draw(st.lists(st.integers(0, 2**128 - 1),
                                                         min_size=n, max_size=n))],
        user_ids=draw(st.lists(text, min_size=n, max_size=n)),
        holdout=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        model_version=draw(st.integers(0, 2**40)), slots=slots)


@settings(max_examples=200, deadline=None)
@given(batch=decision_batches())
def test_each_line_is_one_decision_s_json(batch):
    lines = batch.lines()
    assert len(lines) == len(batch)  # NDJSON-safe: no decision's text holds a newline
    for line in lines:
        Decision.model_validate_json(line)


# -- health, campaigns, decisions -----------------------------------------------------------


def test_health_readiness_openapi_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/v1/campaigns", "/v1/campaigns/{campaign}", "/v1/campaigns/{campaign}/arms",
        "/v1/campaigns/{campaign}/slots/{slot}/arms/{arm}", "/v1/campaigns/{campaign}/pause",
        "/v1/campaigns/{campaign}/report", "/v1/decisions", "/v1/decisions/batch",
        "/v1/events", "/v1/subjects/{user_id}", "/healthz", "/readyz", "/metrics"}
    assert client.get("/docs").status_code == 200


@pytest.mark.anyio
async def test_readyz_is_503_until_the_engine_is_warm():
    engine = Engine(seed=0)
    # No lifespan here, so nobody warms the engine up but the test.
    transport = httpx.ASGITransport(create_app(engine, Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
        assert_error(await c.get("/readyz"), 503, "unavailable", "warming up")
        engine.warm_up()
        assert (await c.get("/readyz")).json() == {"status": "ready"}


def test_create_list_and_get_campaign(client, newsletter_spec):
    spec = newsletter_spec("listed")
    created = client.post("/v1/campaigns", json=spec)
    assert created.status_code == 201
    assert created.json()["slots"][1]["arm_features"][0]["values"] == ["action", "calm", "comedy"]
    assert "listed" in [c["name"] for c in client.get("/v1/campaigns").json()]
    assert client.get("/v1/campaigns/listed").json() == created.json()


def test_single_decision(client, campaign):
    response = client.post("/v1/decisions", json=subscriber(campaign, 3, explain=True))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    d = response.json()
    check_decision(d, campaign, "user-3")
    if not d["holdout"]:
        # A linear slot explains itself with the features that weighed most.
        assert d["slots"][0]["explanation"] is not None


def test_batch_json_keeps_order(client, campaign):
    decisions = decide_many(client, campaign, 300)
    assert len(decisions) == 300
    for i, d in enumerate(decisions):
        check_decision(d, campaign, f"user-{i}")
    assert len({d["decision_id"] for d in decisions}) == 300
    # Holdout is a stable hash of (campaign, user): about 10% here, and not decided again.
    holdout = [d["holdout"] for d in decisions]
    assert 10 <= sum(holdout) <= 60
    assert [d["holdout"] for d in decide_many(client, campaign, 300)] == holdout


def test_batch_ndjson_streams_one_decision_per_line(client, campaign):
    n = 20_000
    body = b"\n".join(json.dumps(subscriber(campaign, i)).encode() for i in range(n)) + b"\n"
    with client.stream("POST", "/v1/decisions/batch", content=body, headers=NDJSON) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == n
    for i in (0, 1, 4095, 4096, n - 1):  # across the engine-call chunks
        check_decision(lines[i], campaign, f"user-{i}")
    assert [d["user_id"] for d in lines] == [f"user-{i}" for i in range(n)]


def test_health_answers_during_a_large_batch(client, campaign):
    body = b"\n".join(json.dumps(subscriber(campaign, i)).encode() for i in range(40_000))
    done = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
            assert other.post("/v1/decisions/batch", content=body, headers=NDJSON).is_success
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    # Behaviour, not a stopwatch: if the batch blocked the event loop, health checks would queue
    # behind it and at most one would be answered before the batch is done.
    answered = 0
    while not done.is_set():
        assert client.get("/healthz").status_code == 200
        answered += 1
    sender.join()
    assert answered >= 3


def test_added_arm_can_be_chosen(client, campaign):
    arm = {"id": "comedy", "features": {"scene": "comedy", "brightness": 0.5}}
    response = client.post(f"/v1/campaigns/{campaign}/arms", json={"slot": "artwork", "arm": arm})
    assert response.status_code == 201
    assert [a["id"] for a in response.json()["slots"][1]["arms"]] == ["action", "calm", "comedy"]
    decisions = decide_many(client, campaign, 500)
    declared = {**DECLARED, "artwork": {"action", "calm", "comedy"}}
    for i, d in enumerate(decisions):
        check_decision(d, campaign, f"user-{i}", declared)
    # Hybrid LinUCB with epsilon 0.2 gives every arm at least 0.2 / 3 of the traffic.
    assert chosen(decisions, "artwork").count("comedy") > 10


def test_retired_arm_is_never_chosen(client, campaign):
    assert "urgent" in chosen(decide_many(client, campaign, 300), "subject_line")
    response = client.delete(f"/v1/campaigns/{campaign}/slots/subject_line/arms/urgent")
    assert response.status_code == 200
    # Retiring twice changes nothing.
    assert client.delete(f"/v1/campaigns/{campaign}/slots/subject_line/arms/urgent").json() == \
        response.json()
    assert "urgent" not in chosen(decide_many(client, campaign, 1000, start=300), "subject_line")
    arms = client.get(f"/v1/campaigns/{campaign}/report").json()["slots"][0]["arms"]
    assert {a["arm"]: a["active"] for a in arms} == {"plain": True, "urgent": False,
                                                     "question": True}
    # Still listed, marked: in the answer to the retirement, GET campaign and the list.
    for spec in (response.json(), client.get(f"/v1/campaigns/{campaign}").json(),
                 *[c for c in client.get("/v1/campaigns").json() if c["name"] == campaign]):
        assert {a["id"]: a["retired"] for a in spec["slots"][0]["arms"]} == {
            "plain": False, "urgent": True, "question": False}


def test_arms_created_or_added_retired_are_never_chosen(client, newsletter_spec):
    spec = newsletter_spec("born-retired")
    spec["slots"][0]["arms"][1]["retired"] = True  # urgent
    assert client.post("/v1/campaigns", json=spec).status_code == 201
    response = client.post("/v1/campaigns/born-retired/arms",
                           json={"slot": "send_hour", "arm": {"id": "h12", "retired": True}})
    assert response.status_code == 201
    decisions = decide_many(client, "born-retired", 400)
    assert "urgent" not in chosen(decisions, "subject_line")
    assert "h12" not in chosen(decisions, "send_hour")
    assert {"question", "h18"} <= set(chosen(decisions, "subject_line") + chosen(decisions,
                                                                                 "send_hour"))


def test_kill_switch(client, campaign):
    response = client.post(f"/v1/campaigns/{campaign}/pause")  # no body: pause
    assert response.json() == {"campaign": campaign, "paused": True}
    for d in decide_many(client, campaign, 200):
        assert {s["slot"]: (s["arm"], s["propensity"]) for s in d["slots"]} == {
            slot: (arm, 1.0) for slot, arm in DEFAULTS.items()}
    assert client.get(f"/v1/campaigns/{campaign}/report").json()["paused"] is True
    response = client.post(f"/v1/campaigns/{campaign}/pause", json={"paused": False})
    assert response.json() == {"campaign": campaign, "paused": False}
    assert set(chosen(decide_many(client, campaign, 200), "subject_line")) > {"plain"}


def impressions(decisions: list[dict], ts: int) -> list[dict]:
    return [{"type": "impression", "event_id": f"imp-{d['decision_id']}",
             "decision_id": d["decision_id"], "campaign": d["campaign"],
             "user_id": d["user_id"], "ts": ts,
             "slots": {s["slot"]: {"arm": s["arm"], "propensity": s["propensity"]}
                       for s in d["slots"]},
             "context": subscriber(d["campaign"], int(d["user_id"][5:]))["context"],
             "segments": {"region": ["eu", "us"][int(d["user_id"][5:]) % 2]},
             "holdout": d["holdout"], "model_version": d["model_version"]}
            for d in decisions]


def test_events_are_learned_and_reported(own):
    client, campaign = own
    decisions = decide_many(client, campaign, 200)
    now = time.time_ns() // 10**6  # the service logs its decisions at its clock's time
    clicks = [{"type": "click", "event_id": f"click-{d['decision_id']}",
               "decision_id": d["decision_id"], "campaign": campaign, "ts": now + 500}
              for d in decisions[::4]]
    response = client.post("/v1/events", json=impressions(decisions, now) + clicks)
    assert response.json() == {"accepted": 250}
    # An impression far in event time closes the earlier attribution windows (1 s): as NDJSON.
    late = decide_many(client, campaign, 1, start=999)
    body = b"\n".join(json.dumps(e).encode() for e in impressions(late, now + 60_000))
    assert client.post("/v1/events", content=body, headers=NDJSON).json() == {"accepted": 1}

    report = client.get(f"/v1/campaigns/{campaign}/report").json()
    # the late decision too: its window opened when it was made, a minute before its send
    assert report["campaign"] == campaign and report["impressions"] == 201
    assert report["model_version"] >= 1 and report["paused"] is False
    for key in ("personalized_ctr", "holdout_ctr", "lift"):
        assert report[key] is None or report[key]["low"] <= report[key]["estimate"] <= \
            report[key]["high"]
    assert [s["slot"] for s in report["slots"]] == list(DECLARED)
    for slot in report["slots"]:
        assert {a["arm"] for a in slot["arms"]} == DECLARED[slot["slot"]]
        assert sum(a["impressions"] for a in slot["arms"]) == 201
        assert sum(a["reward"] for a in slot["arms"]) == 50.0
        assert {(s["segment"], s["value"]) for s in slot["segments"]} == {("region", "eu"),
                                                                         ("region", "us")}
        for segment in slot["segments"]:
            assert isinstance(segment["flagged"], bool)
            assert sum(segment["allocation"].values()) == pytest.approx(1.0)
    assert client.post("/v1/decisions", json=subscriber(campaign, 1)).json()[
        "model_version"] == report["model_version"]


def test_erasure_drops_pending_decisions(own):
    client, campaign = own
    decisions = decide_many(client, campaign, 3)
    now = time.time_ns() // 10**6
    assert client.post("/v1/events", json=impressions(decisions, now)).json() == {
        "accepted": 3}
    nothing_learned = {"forgotten": 0, "retrain": {}, "complete": True, "forwarded": False}
    assert client.delete("/v1/subjects/user-1").json() == {"erased": 1, **nothing_learned}
    assert client.delete("/v1/subjects/user-1").json() == {"erased": 0, **nothing_learned}
    assert client.delete("/v1/subjects/nobody").json() == {"erased": 0, **nothing_learned}


def test_metrics(client, campaign):
    decide_many(client, campaign, 50)
    client.post("/v1/decisions", json=subscriber("no-such-campaign", 1))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    text = response.text
    served = re.findall(
        rf'cmab_decisions_total{{arm="(\w+)",campaign="{campaign}",slot="send_hour"}} (\S+)',
        text)
    assert sum(float(n) for _, n in served) == 50.0
    assert 'cmab_decision_latency_seconds_count{route="batch"}' in text
    assert re.search(r'cmab_errors_total\{code="not_found"\} [1-9]', text)


# -- auth and limits ------------------------------------------------------------------------


def test_management_routes_need_the_token(guarded, newsletter_spec):
    spec = newsletter_spec("guarded")
    for headers in ({}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": "Bearer"},
                    {"Authorization": TOKEN}):
        response = guarded.post("/v1/campaigns", json=spec, headers=headers)
        assert_error(response, 401, "unauthorized", "Bearer")
        assert response.headers["www-authenticate"] == "Bearer"
    response = guarded.post("/v1/campaigns", json=spec, headers={"Authorization": "Bearer nope"})
    assert_error(response, 403, "forbidden", "token")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/v1/campaigns", json=spec, headers=auth).status_code == 201
    routes = [("POST", "/v1/campaigns/guarded/arms", {"slot": "send_hour", "arm": {"id": "h12"}}),
              ("POST", "/v1/campaigns/guarded/pause", {"paused": False}),
              ("DELETE", "/v1/campaigns/guarded/slots/send_hour/arms/h18", None),
              ("DELETE", "/v1/subjects/user-1", None)]
    for method, path, body in routes:
        assert_error(guarded.request(method, path, json=body), 401, "unauthorized", "Bearer")
        assert_error(guarded.request(method, path, json=body,
                                     headers={"Authorization": "bearer wrong"}),
                     403, "forbidden", "token")
        assert guarded.request(method, path, json=body, headers=auth).is_success
    # Deciding, reading, sending events and health need no token.
    assert guarded.post("/v1/decisions", json=subscriber("guarded", 1)).status_code == 200
    assert guarded.get("/v1/campaigns/guarded").status_code == 200
    assert guarded.get("/v1/campaigns/guarded/report").status_code == 200
    assert guarded.post("/v1/events", json=[]).status_code == 422  # the list's error, not auth
    assert guarded.get("/readyz").status_code == 200


def test_body_too_large(guarded):
    big = {"campaign": "x", "user_id": "u", "context": {f"f{i}": float(i) for i in range(400)}}
    assert len(json.dumps(big)) > 4096
    needle = "larger than 4096 bytes"
    assert_error(guarded.post("/v1/decisions", json=big), 413, "payload_too_large", needle)
    # Without a Content-Length (chunked), the limit is enforced while reading.
    chunks = iter([b'{"campaign": "x", "user_id": "u", "context": {'] + [b" " * 1000] * 5)
    response = guarded.post("/v1/decisions", content=chunks,
                            headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large", needle)
    chunks = iter([b'{"campaign": "x", "user_id": "u"}\n'] * 200)
    response = guarded.post("/v1/decisions/batch", content=chunks, headers=NDJSON)
    assert_error(response, 413, "payload_too_large", needle)
    assert guarded.get("/healthz").status_code == 200


# -- bad input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(client, newsletter_spec) -> str:
    """The campaign that the bad-input table refers to."""
    assert client.post("/v1/campaigns", json=newsletter_spec("table")).status_code == 201
    return "table"


def _lines(*items: Any) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else json.dumps(i).encode() for i in items)


GOOD = {"campaign": "table", "user_id": "u1", "context": {"engagement": 0.5}}
# Its id ends in an odd digit (a decision made with consent), so its context is checked.
IMPRESSION = {"type": "impression", "event_id": "e1", "decision_id": "a" * 31 + "b",
              "campaign": "table", "user_id": "u1", "ts": 5,
              "slots": {"send_hour": {"arm": "h09", "propensity": 0.5}}}
BAD_INPUT = [
    # (method, path, body: JSON value, or (content-type, bytes)), status, code, message part
    ("POST", "/v1/decisions", {**GOOD, "campaign": "nope"}, 404, "not_found", "'nope'"),
    ("POST", "/v1/decisions", {**GOOD, "user_id": 5}, 422, "invalid_input", "user_id:"),
    ("POST", "/v1/decisions", {**GOOD, "context": {"engagement": "high"}}, 422, "invalid_input",
     "'engagement' expects a number"),
    ("POST", "/v1/decisions", {**GOOD, "context": {"engagement": False}}, 422, "invalid_input",
     "context.engagement:"),
    ("POST", "/v1/decisions", {**GOOD, "context": {"engagment": 0.5}}, 422, "invalid_input",
     "unknown feature 'engagment'"),
    ("POST", "/v1/decisions", {**GOOD, "context": {}}, 422, "invalid_input",
     "missing numeric feature 'engagement'"),
    ("POST", "/v1/decisions", {**GOOD, "consent": "yes"}, 422, "invalid_input", "consent:"),
    ("POST", "/v1/decisions", {**GOOD, "extra": 1}, 422, "invalid_input",
     "extra: Extra inputs are not permitted"),
    ("POST", "/v1/decisions", {"campaign": "table"}, 422, "invalid_input",
     "user_id: Field required"),
    ("POST", "/v1/decisions", ("application/json", b'{"campaign": "table", "user_id": "u1", '
                               b'"context": {"engagement": NaN}}'),
     422, "invalid_input", "context.engagement: Input should be a finite number"),
    ("POST", "/v1/decisions", ("application/json", b'{"campaign": "table", "user_id": "u1", '
                               b'"context": {"engagement": 1e999}}'),
     422, "invalid_input", "finite number"),
    ("POST", "/v1/decisions", {**GOOD, "context": {"engagement": 1e200}}, 422, "invalid_input",
     "'engagement' is 1e+200, beyond +-1e+09"),
    ("POST", "/v1/decisions", ("application/json", b'{"campaign": "tab'), 400, "malformed_body",
     "not valid JSON"),
    ("POST", "/v1/decisions", ("application/json", b'\xff\xfe{}'), 400, "malformed_body",
     "not valid JSON"),
    ("POST", "/v1/decisions", [GOOD], 422, "invalid_input", "body: Input should be a valid dict"),
    ("POST", "/v1/decisions/batch",
     {"campaign": "nope", "requests": [{**GOOD, "campaign": "nope"}]}, 404, "not_found", "'nope'"),
    ("POST", "/v1/decisions/batch", {"campaign": "table", "requests": []}, 422, "invalid_input",
     "requests: List should have at least 1 item"),
    ("POST", "/v1/decisions/batch",
     {"campaign": "table", "requests": [GOOD, {**GOOD, "user_id": ""}]}, 422, "invalid_input",
     "requests[1].user_id:"),
    ("POST", "/v1/decisions/batch",
     {"campaign": "table", "requests": [GOOD, {**GOOD, "campaign": "b"}]}, 422, "invalid_input",
     "requests[1]: campaign 'b' is not the batch's 'table'"),
    ("POST", "/v1/decisions/batch",
     {"campaign": "table", "requests": [GOOD, GOOD, {**GOOD, "context": {"x": 1.0}}]},
     422, "invalid_input", "requests[2].context.x: unknown feature 'x'; expected"),
    ("POST", "/v1/decisions/batch",
     {"campaign": "table", "requests": [GOOD, GOOD, {**GOOD, "context": {"engagement": -5e9}}]},
     422, "invalid_input",
     "requests[2].context.engagement: feature 'engagement' is -5000000000.0, beyond +-1e+09"),
    ("POST", "/v1/decisions/batch", ("application/json", b'{"campaign": "table", "requests": ['
                                     + b", ".join([json.dumps(GOOD).encode()] * 12)
                                     + b', {"campaign": "table", "user_id": "u", '
                                     b'"context": {"engagement": NaN}}]}'),
     422, "invalid_input", "requests[12].context.engagement: Input should be a finite number"),
    ("POST", "/v1/decisions/batch", ("application/json", b"[1, 2"), 400, "malformed_body",
     "not valid JSON"),
    ("POST", "/v1/decisions/batch",
     ("application/x-ndjson", _lines(GOOD, GOOD, {**GOOD, "user_id": 7})), 422, "invalid_input",
     "line 3: user_id:"),
    ("POST", "/v1/decisions/batch", ("application/x-ndjson", _lines(GOOD, b"", b"{oops", GOOD)),
     400, "malformed_body", "line 3 is not valid JSON"),
    ("POST", "/v1/decisions/batch",
     ("application/x-ndjson", _lines(GOOD, {**GOOD, "context": {"engagement": 1, "plan": 3}})),
     422, "invalid_input", "line 2: context.plan: feature 'plan' expects a string"),
    ("POST", "/v1/decisions/batch",
     ("application/x-ndjson", _lines(GOOD, b"", b'{"campaign": "table", "user_id": "u", '
                                                b'"context": {"engagement": Infinity}}')),
     422, "invalid_input", "line 3: context.engagement: Input should be a finite number"),
    ("POST", "/v1/decisions/batch",
     ("application/x-ndjson", _lines(GOOD, {**GOOD, "campaign": "b"})), 422, "invalid_input",
     "line 2: campaign 'b' is not the batch's 'table'"),
    ("POST", "/v1/decisions/batch", ("application/x-ndjson", b"\n\n"), 422, "invalid_input",
     "at least one line"),
    ("POST", "/v1/campaigns", "newsletter:table", 409, "conflict", "'table' already exists"),
    ("POST", "/v1/campaigns", {"name": "x", "slots": [{"name": "s", "arms": [{"id": "a"}],
                                                        "default_arm": "b"}]},
     422, "invalid_input", "default_arm 'b' is not an arm"),
    ("POST", "/v1/campaigns", {"name": "x", "slots": [{"name": "s", "default_arm": "a", "arms": [
        {"id": "a", "retired": True}, {"id": "b"}]}]}, 422, "invalid_input",
     "slot 's': default_arm 'a' is retired"),
    ("POST", "/v1/campaigns", {"name": "x", "holdout": 0.9, "slots": []}, 422, "invalid_input",
     "holdout: Input should be less than or equal to 0.5"),
    ("POST", "/v1/campaigns", {"name": "bad name!", "slots": []}, 422, "invalid_input", "name:"),
    ("GET", "/v1/campaigns/nope", None, 404, "not_found", "no campaign 'nope'"),
    ("GET", "/v1/campaigns/nope/report", None, 404, "not_found", "no campaign 'nope'"),
    ("POST", "/v1/campaigns/nope/arms", {"slot": "send_hour", "arm": {"id": "h12"}}, 404,
     "not_found", "no campaign 'nope'"),
    ("POST", "/v1/campaigns/table/arms", {"slot": "nope", "arm": {"id": "h12"}}, 404,
     "not_found", "no slot 'nope'"),
    ("POST", "/v1/campaigns/table/arms", {"slot": "send_hour", "arm": {"id": "h18"}}, 409,
     "conflict", "'h18' exists"),
    ("POST", "/v1/campaigns/table/arms", {"slot": "artwork", "arm": {"id": "dark"}}, 422,
     "invalid_input", "missing arm feature 'brightness'"),
    ("POST", "/v1/campaigns/table/arms", {"slot": "artwork", "arm": {"id": 3}}, 422,
     "invalid_input", "arm.id:"),
    ("DELETE", "/v1/campaigns/table/slots/artwork/arms/calm", None, 409, "conflict",
     "default arm"),
    ("DELETE", "/v1/campaigns/table/slots/artwork/arms/nope", None, 404, "unknown_arm",
     "no arm 'nope'"),
    ("DELETE", "/v1/campaigns/table/slots/nope/arms/calm", None, 404, "not_found",
     "no slot 'nope'"),
    ("DELETE", "/v1/campaigns/nope/slots/artwork/arms/calm", None, 404, "not_found",
     "no campaign 'nope'"),
    ("POST", "/v1/campaigns/nope/pause", {"paused": True}, 404, "not_found", "no campaign"),
    ("POST", "/v1/campaigns/table/pause", {"paused": "yes"}, 422, "invalid_input", "paused:"),
    ("POST", "/v1/events", [IMPRESSION, {**IMPRESSION, "campaign": "nope"}], 404, "not_found",
     "[1]: event 'e1': no campaign 'nope'"),
    ("POST", "/v1/events", ("application/x-ndjson", _lines(IMPRESSION, {**IMPRESSION,
                                                                       "campaign": "nope"})),
     404, "not_found", "line 2: event 'e1': no campaign 'nope'"),
    ("POST", "/v1/events", [IMPRESSION, {**IMPRESSION, "event_id": "e2",
                                         "context": {"engagement": 1.0, "x": 2.0}}],
     422, "invalid_input", "[1].context.x: event 'e2': unknown feature 'x'"),
    ("POST", "/v1/events", [IMPRESSION, {**IMPRESSION, "event_id": "e2",
                                         "context": {"engagement": 3e9}}],
     422, "invalid_input",
     "[1].context.engagement: event 'e2': feature 'engagement' is 3000000000.0"),
    ("POST", "/v1/events", ("application/x-ndjson", _lines(
        IMPRESSION, b"",
        {**IMPRESSION, "slots": {"send_hour": {"arm": "h00", "propensity": 0.5}}})),
     422, "invalid_input", "line 3: event 'e1': slot 'send_hour': no arm 'h00'"),
    ("POST", "/v1/events", ("application/x-ndjson", _lines(
        {**IMPRESSION, "context": {"engagement": "high"}})),
     422, "invalid_input", "line 1: context.engagement: event 'e1': feature 'engagement' "
     "expects a number"),
    ("POST", "/v1/events", [{**IMPRESSION, "slots": {"send_hour": {"arm": "h00",
                                                                  "propensity": 0.5}}}],
     422, "invalid_input", "no arm 'h00'"),
    ("POST", "/v1/events", [{**IMPRESSION, "ts": -1}], 422, "invalid_input",
     "[0].ts: Input should be greater"),
    ("POST", "/v1/events", [{**IMPRESSION, "type": "opened"}], 422, "invalid_input", "[0]:"),
    ("POST", "/v1/events", [{**IMPRESSION, "ts": 2**53 + 1}], 422, "invalid_input",
     "[0].ts: Input should be less than or equal to 9007199254740991"),
    ("POST", "/v1/events", [], 422, "invalid_input", "body: List should have at least 1 item"),
    ("POST", "/v1/events", IMPRESSION, 422, "invalid_input",
     "body: Input should be a valid array"),
    ("POST", "/v1/events", ("application/x-ndjson", _lines(IMPRESSION, {"type": "click"})), 422,
     "invalid_input", "line 2: event_id: Field required"),
    # Bodies Python's JSON reader took silently or refused without a position, on every route.
    *[("POST", path, ("application/json", body), 400, "malformed_body", needle)
      for path in ("/v1/decisions", "/v1/decisions/batch", "/v1/events", "/v1/campaigns",
                   "/v1/campaigns/table/arms", "/v1/campaigns/table/pause")
      for body, needle in [
          (b"[" * 300 + b"]" * 300, "body is not valid JSON: recursion limit exceeded at line 1 "
                                    "column 202"),
          (b'{"campaign": "t\xffble"}', "body is not valid JSON: invalid unicode code point at "
                                        "line 1 column 16"),
          (json.dumps(GOOD).encode("utf-16"), "body is not valid JSON: it starts with a byte "
                                              "order mark"),
          (json.dumps(GOOD).encode("utf-16-le"), "body is not valid JSON: NUL byte at byte 1 "
                                                 "(UTF-16 or UTF-32?)"),
          (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "a byte order mark"),
          (b'{"user_id": "a", "campaign": "table", "user_id": "b"}',
           "body is not valid JSON: duplicate key 'user_id'")]],
    ("POST", "/v1/decisions", ("application/json", b'{"campaign": "table", "user_id": "u", '
                               b'"context": {"engagement": 1, "engagement": 2}}'),
     400, "malformed_body", "duplicate key 'engagement'"),
    ("POST", "/v1/decisions/batch", ("application/json", b'{"campaign": "table", "requests": ['
                                     b'{"campaign": "table", "user_id": "u", "context": '
                                     b'{"engagement": 1, "engagement": 2}}]}'),
     400, "malformed_body", "body is not valid JSON: duplicate key 'engagement'"),
    ("POST", "/v1/decisions/batch", ("application/x-ndjson", _lines(
        GOOD, b'{"campaign": "table", "user_id": "u", "consent": true, "consent": false}')),
     400, "malformed_body", "line 2 is not valid JSON: duplicate key 'consent'"),
    ("POST", "/v1/decisions/batch", ("application/x-ndjson", json.dumps(GOOD).encode("utf-16")),
     400, "malformed_body", "body is not valid JSON: it starts with a byte order mark"),
    ("POST", "/v1/events", ("application/json", b"[" + json.dumps(IMPRESSION).encode()[:-1]
                            + b', "ts": 6}]'),
     400, "malformed_body", "body is not valid JSON: duplicate key 'ts'"),
    ("POST", "/v1/events", ("application/x-ndjson", _lines(
        IMPRESSION, json.dumps(IMPRESSION).encode()[:-1] + b', "user_id": "u2"}')),
     400, "malformed_body", "line 2 is not valid JSON: duplicate key 'user_id'"),
    ("GET", "/v1/nowhere", None, 404, "not_found", "Not Found"),
    ("PUT", "/v1/decisions", GOOD, 405, "method_not_allowed", "Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "needle"), BAD_INPUT,
                         ids=[f"{m} {p} {s} {n}" for m, p, _, s, _, n in BAD_INPUT])
def test_bad_input(client, table, newsletter_spec, method, path, body, status, code, needle):
    if body == "newsletter:table":
        body = newsletter_spec("table")
    if isinstance(body, tuple):
        response = client.request(method, path, content=body[1],
                                  headers={"content-type": body[0]})
    else:
        response = client.request(method, path, json=body)
    error = assert_error(response, status, code, needle)
    if status == 422 and "errors" in error:  # pydantic's: every error with its location
        assert error.get("field") == error["errors"][0].get("field")
        assert all(e["message"] for e in error["errors"])


def test_openapi_states_the_key_pattern_the_server_enforces(client, table):
    """Keys of name-keyed objects must match the name pattern (``propertyNames``), which the
    server enforces: no ``patternProperties``, under which any other key would be valid."""
    document = client.get("/openapi.json").json()
    assert "patternProperties" not in json.dumps(document)
    context = document["components"]["schemas"]["DecisionRequest"]["properties"]["context"]
    assert context["propertyNames"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    assert context["additionalProperties"]["anyOf"][0] == {"type": "number"}
    response = client.post("/v1/decisions", json={**GOOD, "context": {"bad key": 1.0}})
    assert_error(response, 422, "invalid_input", "context.bad key.[key]: String should match")


def test_405_allows_every_method_of_the_path(client):
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        methods = {m.upper() for m in operations}
        other = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in methods)
        response = client.request(other, re.sub(r"\{\w+\}", "x", path))
        assert_error(response, 405, "method_not_allowed", "Method Not Allowed")
        assert set(response.headers["allow"].split(", ")) == methods, path


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/decisions/batch", {"campaign": "table", "requests": [GOOD, GOOD, {**GOOD, "context": {
        "engagement": 1, "plan": 3}}]}, "requests[2].context.plan"),
    ("/v1/decisions/batch", {"campaign": "table", "requests": [GOOD, {**GOOD, "context": {
        "engagement": float("nan")}}]}, "requests[1].context.engagement"),
    ("/v1/events", [IMPRESSION, IMPRESSION, {**IMPRESSION, "context": {"engagement": 1,
                                                                     "plan": 1}}],
     "[2].context.plan"),
    ("/v1/events", [IMPRESSION, {**IMPRESSION, "ts": "soon"}], "[1].ts"),
])
def test_batch_errors_name_the_row_and_field(client, table, path, body, field):
    content = json.dumps(body).encode()  # NaN as the token Python's JSON writes
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    error = assert_error(response, 422, "invalid_input", f"{field}: ")
    assert error["field"] == field


@pytest.mark.anyio
async def test_concurrent_single_decisions_are_answered_each_its_own():
    """Single decisions that wait together are decided in one engine call: each still gets its
    own answer, and a bad one refuses only itself."""
    engine = Engine(seed=0)
    engine.warm_up()
    spec = {"name": "c", "holdout": 0.0, "context": {"features": [
        {"kind": "numeric", "name": "x"}]}, "slots": [
        {"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}
    engine.create_campaign(CampaignSpec.model_validate(spec))
    engine.create_campaign(CampaignSpec.model_validate({**spec, "name": "d"}))
    calls = []
    decide_batch = engine.decide_batch
    engine.decide_batch = lambda c, r: calls.append(len(r)) or decide_batch(c, r)
    singles = Singles(engine, Metrics())
    requests = [DecisionRequest(campaign="c", user_id="u0", context={"x": 1.0}),
                DecisionRequest(campaign="c", user_id="u1", context={"y": 1.0}),
                DecisionRequest(campaign="d", user_id="u2", context={"x": 2.0}),
                DecisionRequest(campaign="nope", user_id="u3"),
                DecisionRequest(campaign="c", user_id="u4", context={"x": 3.0})]
    answers = await asyncio.gather(*(singles.decide(r) for r in requests),
                                   return_exceptions=True)
    assert isinstance(answers[1], InvalidInputError) and "'y'" in str(answers[1])
    assert isinstance(answers[3], NotFoundError)
    for i in (0, 2, 4):
        d = Decision.model_validate_json(answers[i])
        assert (d.user_id, d.campaign) == (f"u{i}", requests[i].campaign)
    # Coalesced: campaign c's three requests in one call (then apart, for the bad one), d's
    # in one, the unknown campaign's in one.
    assert calls == [3, 1, 1, 1, 1, 1]


# -- cmab serve -----------------------------------------------------------------------------


def test_serve_refuses_bad_options_in_one_line(capsys, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    busy.close()
    monkeypatch.setenv("CMAB_PROT", "8080")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == "cmab: error: unknown setting CMAB_PROT\n"
    monkeypatch.delenv("CMAB_PROT")
    monkeypatch.setenv("CMAB_MAX_BODY_BYTES", "lots")
    assert main(["serve"]) == 2
    assert "setting max_body_bytes: Input should be a valid integer" in capsys.readouterr().err


def test_serve_refuses_a_bad_snapshot_at_start_up_in_one_line(tmp_path, capsys, monkeypatch):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["serve", "--port", "0", "--snapshot", str(corrupt)], "not an engine snapshot"),
        (["serve", "--port", "0", "--snapshot", str(tmp_path / "no" / "dir.npz")],
         "setting snapshot_path: Value error, directory"),
        (["serve", "--port", "0", "--snapshot", str(tmp_path)], "is a directory"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    monkeypatch.setenv("CMAB_SNAPSHOT_PATH", str(corrupt))  # the setting, not the option
    assert main(["serve", "--port", "0"]) == 2
    assert "corrupt.npz: not an engine snapshot" in capsys.readouterr().err


class FakeLink:
    """A stream link (bandit.service.Link) that records what the service hands it."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.calls = engine, []

    def campaign_changed(self, name: str) -> None:
        self.calls.append(("campaign", name))

    def events(self, events: list[Any]) -> int:
        self.calls.append(("events", [e.event_id for e in events]))
        return len(events)

    def erase(self, user_id: str, at_ms: int) -> None:
        self.calls.append(("erase", user_id))

    def state_age_s(self) -> float | None:
        return 2.5

    def stale_checkpoints(self) -> int:
        return 3

    def decision_log_status(self) -> DecisionLogStatus:
        return DecisionLogStatus(logged=7, unlogged={"queue_full": 2}, queued=1, failing=None)

    def close(self) -> None:
        self.calls.append(("close",))


def test_create_app_in_stream_mode_needs_the_link():
    with pytest.raises(ValueError, match="no stream link"):
        create_app(Engine(seed=0), Settings(bootstrap_servers="127.0.0.1:9092"))


@pytest.mark.anyio
async def test_the_stream_link_is_made_at_start_up_and_gets_campaigns_events_and_erasures(
        newsletter_spec):
    links: list[FakeLink] = []

    def connect(engine: Engine) -> FakeLink:
        links.append(FakeLink(engine))
        return links[-1]

    engine = Engine(seed=0)
    engine.warm_up()
    app = create_app(engine, Settings(), link=connect)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
        async with app.router.lifespan_context(app):
            assert [link.engine for link in links] == [engine]
            assert (await c.post("/v1/campaigns", json=newsletter_spec("s"))).status_code == 201
            decision = (await c.post("/v1/decisions", json=subscriber("s", 1))).json()
            posted = await c.post("/v1/events", json=impressions([decision], 0))
            assert posted.json() == {"accepted": 1}
            erased = (await c.delete("/v1/subjects/user-1")).json()
            # The workers erase; the model here follows theirs, which this process cannot vouch for.
            assert erased == {"erased": 0, "forgotten": 0, "retrain": {}, "complete": False,
                              "forwarded": True}
            assert (await c.get("/readyz")).json() == {"status": "ready", "state_age_s": 2.5}
            metrics = (await c.get("/metrics")).text
            assert "cmab_stale_checkpoints_total 3.0" in metrics
            assert "cmab_decisions_logged_total 7.0" in metrics
            assert 'cmab_decisions_unlogged_total{reason="queue_full"} 2.0' in metrics
            assert 'cmab_decisions_unlogged_total{reason="delivery_failed"} 0.0' in metrics
            assert "cmab_decision_log_queued 1.0" in metrics
        event_id = f"imp-{decision['decision_id']}"
        assert links[0].calls == [("campaign", "s"), ("events", [event_id]),
                                  ("erase", "user-1"), ("close",)]
        assert engine.report("s").impressions == 0  # sent to the stream, not learned here


@pytest.mark.anyio
async def test_readyz_waits_for_the_snapshot_and_the_warm_up(tmp_path, newsletter_spec):
    saved = Engine(seed=0)
    saved.create_campaign(CampaignSpec.model_validate(newsletter_spec("snap")))
    saved.save(tmp_path / "engine.npz")
    app = create_app(settings=Settings(snapshot_path=tmp_path / "engine.npz"))
    transport = httpx.ASGITransport(app)  # no lifespan: the test plays the start-up
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
        assert (await c.get("/readyz")).status_code == 503
        assert (await c.get("/v1/campaigns/snap")).json()["name"] == "snap"  # loaded before
        async with app.router.lifespan_context(app):
            for _ in range(600):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await c.get("/readyz")).json() == {"status": "ready"}


def _start_cli(snapshot: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CMAB_API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "bandit.cli", "serve", "--port", "0", "--snapshot", str(snapshot)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    url = ""
    for line in process.stderr:
        if match := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
            url = match.group(1)
        if "Application startup complete" in line:
            return process, url
    raise AssertionError(f"cmab serve exited with {process.wait()} before starting")


def test_cmab_serve_runs_stops_on_ctrl_c_and_keeps_its_snapshot(tmp_path, newsletter_spec):
    snapshot = tmp_path / "engine.npz"
    process, url = _start_cli(snapshot)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(f"{url}/v1/campaigns", json=newsletter_spec("kept"), headers=auth)
        assert created.status_code == 201
        assert httpx.post(f"{url}/v1/decisions", json=subscriber("kept", 1)).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err and snapshot.exists()

    process, url = _start_cli(snapshot)
    try:
        assert httpx.get(f"{url}/v1/campaigns/kept").json() == created.json()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_a_refused_batch_logs_no_decision(client, campaign):
    """A batch refused for one bad request answers no decision, so it logs none: not the
    chunks decided before the bad one, nor the probes that name it."""
    def logged() -> float:
        found = re.search(r"^cmab_decisions_logged_total (\S+)$",
                          client.get("/metrics").text, re.M)
        assert found is not None
        return float(found[1])

    before = logged()
    requests = [subscriber(campaign, i) for i in range(5)]
    requests[3]["context"] = {"no_such_feature": 1.0}
    response = client.post("/v1/decisions/batch", json={"campaign": campaign,
                                                         "requests": requests})
    assert response.status_code == 422, response.text
    assert logged() == before
    decide_many(client, campaign, 5)
    assert logged() == before + 5


def test_machine_and_scanner_events_are_counted_apart_in_process(own):
    """A machine-flagged open is accepted, never learned and counted by reason; a click at
    the send is learned, since this campaign sets no scanner time."""
    client, campaign = own
    (decision,) = decide_many(client, campaign, 1)
    now = time.time_ns() // 10**6
    base = {"decision_id": decision["decision_id"]}
    body = [{**base, "type": "send", "event_id": "s", "ts": now},
            {**base, "type": "open", "event_id": "o", "ts": now + 5, "machine": True},
            {**base, "type": "click", "event_id": "c0", "ts": now}]
    assert client.post("/v1/events", json=body).json() == {"accepted": 3}
    metrics = client.get("/metrics").text
    for reason, n in (("machine", 1), ("scanner", 0), ("unsent", 0)):
        assert f'cmab_events_excluded_total{{reason="{reason}"}} {n}.0' in metrics, metrics
