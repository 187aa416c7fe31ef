"""Limits at the service's edge: the ingest token, content types, the join's cap on waiting
decisions (service, engine, worker), batch row limits counted while the body arrives, and
header and body deadlines against slow clients, over a real server on 127.0.0.1."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.engine.join import OVER_CAPACITY, Joiner, subject_key
from bandit.errors import OverCapacityError
from bandit.models import CampaignSpec, Click, Impression
from bandit.service import create_app
from bandit.service.deadlines import deadline_protocol
from bandit.service.limits import JsonItems
from bandit.settings import Settings
from streams.memory import MemoryLog, MemoryTransport
from streams.topics import Topics
from streams.worker import Worker
from tests import streamdata

ROOT = Path(__file__).resolve().parents[3]
INGEST, MANAGE = "ingest-s3cret", "manage-s3cret"
NDJSON = {"content-type": "application/x-ndjson"}
SPEC = {"name": "w", "attribution_window_ms": 1000,
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}


@contextmanager
def served(settings: Settings, engine: Engine | None = None) -> Iterator[httpx.Client]:
    """The app on a free 127.0.0.1 port with the deadline protocol, as ``cmab serve`` runs it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(engine or Engine(seed=0), settings)
    protocol = deadline_protocol(settings.header_timeout_s, settings.body_timeout_s)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=protocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60)
    try:
        deadline = time.monotonic() + 60
        while not server.started or client.get("/readyz").status_code != 200:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        auth = {"Authorization": f"Bearer {MANAGE}"}
        assert client.post("/v1/campaigns", json=SPEC, headers=auth).status_code == 201
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)


def impression(i: int, ts: int = 0, campaign: str = "w") -> dict[str, Any]:
    return {"type": "impression", "event_id": f"i{i}", "decision_id": f"{i:032x}",
            "campaign": campaign, "user_id": f"u{i}", "ts": ts,
            "slots": {"s": {"arm": "a", "propensity": 0.5}}}


def assert_error(response: httpx.Response, status: int, code: str, needle: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and needle in error["message"], error
    return error


# -- the ingest token and content types -------------------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> Iterator[httpx.Client]:
    with served(Settings(api_token=MANAGE, ingest_token=INGEST, max_pending=3,
                         max_batch_rows=1000)) as client:
        yield client


def test_events_need_the_ingest_token_and_decisions_stay_open(guarded):
    body = [impression(1)]
    for headers in ({}, {"Authorization": INGEST}, {"Authorization": "Basic aW5nZXN0"}):
        response = guarded.post("/v1/events", json=body, headers=headers)
        assert_error(response, 401, "unauthorized", "Bearer")
        assert response.headers["www-authenticate"] == "Bearer"
    for wrong in ("nope", MANAGE):  # the management token is not the ingest token
        response = guarded.post("/v1/events", json=body,
                                headers={"Authorization": f"Bearer {wrong}"})
        assert_error(response, 403, "forbidden", "ingest token")
    auth = {"Authorization": f"Bearer {INGEST}"}
    assert guarded.post("/v1/events", json=body, headers=auth).json() == {"accepted": 1}
    assert guarded.post("/v1/decisions", json={"campaign": "w", "user_id": "u"}).is_success
    # The ingest token does not manage.
    assert_error(guarded.post("/v1/campaigns/w/pause", headers=auth), 403, "forbidden",
                 "management token")
    schema = guarded.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ingest_token"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/events"]["post"]["security"] == [{"ingest_token": []}]
    assert {"401", "403", "415"} <= set(schema["paths"]["/v1/events"]["post"]["responses"])


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/decisions", "/v1/decisions/batch"])
def test_bodies_that_are_not_json_are_refused_with_415(guarded, path, content_type):
    """A web page can post these content types to another site without asking first."""
    body = {"/v1/events": b'[{"type": "click", "event_id": "c", "decision_id": "' + b"0" * 32
                          + b'", "campaign": "w", "ts": 0}]',
            "/v1/decisions": b'{"campaign": "w", "user_id": "u"}',
            "/v1/decisions/batch": b'{"campaign": "w", "requests": [{"campaign": "w", '
                                   b'"user_id": "u"}]}'}[path]
    headers = {"Authorization": f"Bearer {INGEST}"}
    if content_type is not None:
        headers["content-type"] = content_type
    assert_error(guarded.post(path, content=body, headers=headers), 415,
                 "unsupported_media_type", "expected Content-Type application/json")
    headers["content-type"] = "Application/JSON; charset=utf-8"
    assert guarded.post(path, content=body, headers=headers).is_success


# -- the cap on decisions waiting for their windows ----------------------------------------------


def test_the_join_keeps_at_most_max_pending_decisions_of_a_campaign_open():
    spec = CampaignSpec.model_validate(SPEC)
    other = CampaignSpec.model_validate({**SPEC, "name": "v"})
    joiner = Joiner(lambda name: {"w": spec, "v": other}[name], max_pending=3)
    first = [Impression.model_validate(impression(i)) for i in range(5)]
    assert joiner.over_cap(first) == [3, 4] and joiner.open_count == 0  # nothing changed
    result = joiner.add(first)
    assert [r.event.event_id for r in result.rejected] == ["i3", "i4"]
    assert all(r.reason.startswith(OVER_CAPACITY) and "'w'" in r.reason and "max_pending" in
               r.reason for r in result.rejected)
    assert joiner.open_count == 3
    # Another campaign has its own count; a refused impression may come again.
    assert not joiner.add([Impression.model_validate(impression(9, campaign="v"))]).rejected
    assert joiner.add([Impression.model_validate(impression(4))]).rejected[0].reason.startswith(
        OVER_CAPACITY)
    # A batch whose watermark closes the open windows has room for new ones.
    later = [Impression.model_validate(impression(i, ts=5000)) for i in range(10, 13)]
    assert joiner.over_cap(later) == []
    result = joiner.add(later)
    assert not result.rejected and len(result.joined) == 4 and joiner.open_count == 3
    # An erased decision frees its place.
    joiner.erase({subject_key("u10"): math.inf})
    assert not joiner.add([Impression.model_validate(impression(20, ts=5000))]).rejected


def test_the_cap_survives_a_checkpoint():
    spec = CampaignSpec.model_validate(SPEC)
    joiner = Joiner(lambda name: spec, max_pending=2)
    joiner.add([Impression.model_validate(impression(i)) for i in range(2)])
    restored = Joiner.from_state(*joiner.state(), lambda name: spec, max_pending=2)
    assert restored.over_cap([Impression.model_validate(impression(5))]) == [0]


def test_engine_record_refuses_the_whole_batch_over_the_cap():
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(SPEC))
    engine.limit_pending(2)
    batch = [Impression.model_validate(impression(i)) for i in range(3)]
    click = Click(event_id="c", decision_id=f"{0:032x}", campaign="w", ts=1)
    with pytest.raises(OverCapacityError, match="more than 2 decisions") as raised:
        engine.record([*batch, click])
    assert raised.value.refused == {"w": 1} and raised.value.retriable
    assert engine.open_windows() == 0 and engine.rejected_events == 0
    assert engine.record(batch[:2]) == 2  # nothing of the refused batch was remembered


def test_events_over_the_cap_are_refused_whole_and_counted(guarded):
    auth = {"Authorization": f"Bearer {INGEST}"}
    ts = time.time_ns() // 10**6 + 10**9  # after every other event: their windows close
    assert guarded.post("/v1/events", json=[impression(100, ts)], headers=auth).is_success
    body = [impression(i, ts) for i in range(101, 104)]
    response = guarded.post("/v1/events", json=body, headers=auth)
    assert_error(response, 503, "over_capacity", "nothing was recorded")
    assert int(response.headers["retry-after"]) > 0
    metrics = guarded.get("/metrics").text
    assert re.search(r'cmab_pending_refused_total\{campaign="w"\} 1\.0', metrics), metrics
    # Nothing was recorded: the first two fit as they are.
    assert guarded.post("/v1/events", json=body[:2], headers=auth).json() == {"accepted": 2}
    assert guarded.post("/v1/events", json=body[2:], headers=auth).status_code == 503


def test_the_worker_dead_letters_decisions_over_the_cap():
    s = streamdata.make(300, seed=5)
    log = MemoryLog(Topics("t"), 1)
    service = Engine()
    service.create_campaign(streamdata.spec())
    log.publish_campaign(service.campaign_record("news"))
    for _, value in streamdata.blocks_of(s.decisions, 1, size=10)[0]:
        log.append(log.topics.decisions, value, partition=0)
    transport = MemoryTransport(log)
    worker = Worker(transport, max_pending=20)
    transport.attach(worker)
    while worker.step():
        pass
    reasons = [dict(h)["reason"].decode() for _, _, h in log.read(log.topics.deadletter, 0)]
    over = [r for r in reasons if r.split(": ", 1)[1].startswith(OVER_CAPACITY)]  # "line k of"
    assert over and "'news'" in over[0] and "max_pending" in over[0]
    assert worker.counters.over_capacity == len(over)
    assert worker.partitions[0].engine.open_windows() <= 20


# -- batch rows, counted as the body arrives -----------------------------------------------


def _rows(n: int) -> list[bytes]:
    return [orjson.dumps({"campaign": "w", "user_id": f"u{i}"}) for i in range(n)]


def test_a_json_batch_over_100000_requests_is_refused_before_it_is_parsed():
    """Rows after the 100,001st are not JSON: the answer is still "too many requests", so the
    body was not parsed."""
    with served(Settings(api_token=MANAGE)) as client:
        body = (b'{"campaign": "w", "requests": [' + b",".join(_rows(100_001))
                + b", {\"user_id\": \\x00 garbage, not JSON" + b" ]]]} , , ," * 100_000)
        response = client.post("/v1/decisions/batch", content=body,
                               headers={"content-type": "application/json"})
        error = assert_error(response, 413, "payload_too_large", "more than 100,000 requests")
        assert error["field"] == "requests"
        body = b'{"campaign": "w", "requests": [' + b",".join(_rows(100_000)) + b"]}"
        response = client.post("/v1/decisions/batch", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code == 200 and len(response.json()["decisions"]) == 100_000


tricky = st.text(alphabet='ab",[]{}\\\n\u00e9', max_size=8)


@settings(max_examples=200, deadline=None)
@given(users=st.lists(tricky, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 2000)))
def test_json_requests_are_counted_wherever_the_body_is_cut(users, cuts):
    """Strings with quotes, backslashes, commas and brackets, cut anywhere (an escape across
    two chunks included): the count is the number of requests (the fields' comma included)."""
    body = orjson.dumps({"campaign": "w", "requests": [
        {"campaign": "w", "user_id": u, "context": {"x": [1, {"y": u}]}} for u in users]})
    counter = JsonItems()
    at = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    for start, end in zip(at, at[1:], strict=False):
        counter.feed(body[start:end])
    assert counter.count == len(users)


def test_an_ndjson_batch_over_max_batch_rows_is_refused(guarded):
    rows = _rows(1001)
    body = b"\n".join(rows[:1000]) + b"\n\n  \n"  # blank lines are not requests
    response = guarded.post("/v1/decisions/batch", content=body, headers=NDJSON)
    assert response.status_code == 200 and len(response.content.splitlines()) == 1000
    body = b"\n".join(rows) + b"\n" + b"garbage, not JSON\n" * 1000
    assert_error(guarded.post("/v1/decisions/batch", content=body, headers=NDJSON), 413,
                 "payload_too_large", "more than 1,000 lines in one batch (setting "
                 "max_batch_rows")
    # Sent in pieces that cut lines anywhere.
    body = b"\n".join(rows)
    chunks = iter([body[i:i + 777] for i in range(0, len(body), 777)])
    assert_error(guarded.post("/v1/decisions/batch", content=chunks, headers=NDJSON), 413,
                 "payload_too_large", "more than 1,000 lines")


# -- slow clients -------------------------------------------------------------------------


def _closed_by_server(port: int, sent: bytes) -> bytes:
    """Send ``sent`` and never more; what the server answers until it closes (bounded wait)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)
        sock.sendall(sent)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


@pytest.mark.parametrize("sent", [
    b"",  # connects and says nothing
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: appl",  # headers never end
    b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{\"campaign\"",  # the body never ends
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\n[{}\r\n",
], ids=["silent", "headers", "body", "chunked body"])
def test_slow_requests_are_answered_408_and_closed(sent):
    with served(Settings(api_token=MANAGE, header_timeout_s=0.5, body_timeout_s=0.5)) as client:
        answer = _closed_by_server(client.base_url.port, sent)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b'"code":"request_timeout"' in answer
        assert client.get("/healthz").is_success


def test_a_keep_alive_connection_serves_requests_within_the_deadlines():
    with served(Settings(api_token=MANAGE, header_timeout_s=5, body_timeout_s=5)) as client:
        for _ in range(3):
            assert client.post("/v1/decisions", json={"campaign": "w", "user_id": "u"}).is_success


def test_cmab_serve_warns_without_tokens_and_closes_slow_connections():
    env = {key: value for key, value in os.environ.items() if not key.startswith("CMAB_")}
    env.update(PYTHONPATH=str(ROOT), CMAB_HEADER_TIMEOUT_S="0.5")
    process = subprocess.Popen([sys.executable, "-m", "bandit.cli", "serve", "--port", "0"],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines, port = [], 0
    try:
        for line in process.stderr:
            lines.append(line)
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
            if "Application startup complete" in line:
                break
        assert port, "".join(lines)
        deadline = time.monotonic() + 30  # the socket listens just after the start-up line
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cmab serve did not listen"
                time.sleep(0.05)
        answer = _closed_by_server(port, b"GET /healthz HTTP/1.1\r\nHost")
        assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        process.terminate()
        process.communicate(timeout=30)
    text = "".join(lines)
    assert "WARNING" in text and "NO MANAGEMENT TOKEN (CMAB_API_TOKEN)" in text
    assert "NO INGEST TOKEN (CMAB_INGEST_TOKEN)" in text


def test_settings_refuse_nonsense_limits():
    for bad in ({"max_pending": 0}, {"max_batch_rows": 0}, {"header_timeout_s": 0},
                {"body_timeout_s": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(**bad)
