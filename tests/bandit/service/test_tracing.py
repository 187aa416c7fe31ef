"""Tracing (bandit.tracing): a decision's span, single (fast path and route), batch (JSON and
NDJSON) with its attributes and its traceparent in the answer; the events request's span links
to the decisions' spans its outcomes name; an optional OTLP exporter that is not installed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bandit.cli import main
from bandit.engine import Engine
from bandit.service import create_app
from bandit.settings import Settings
from bandit.tracing import configure_export, span_context
from tests.bandit.service.test_service import NDJSON, subscriber
from tests.servers import live
from tests.spans import EXPORTER, spans


@pytest.fixture(scope="module")
def traced(newsletter_spec) -> Iterator[httpx.Client]:
    spans()
    with live(create_app(Engine(seed=0), Settings())) as c:
        assert c.post("/v1/campaigns", json=newsletter_spec("t")).status_code == 201
        yield c


def _only(name: str) -> Any:
    [span] = [s for s in EXPORTER.get_finished_spans() if s.name == name]
    return span


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json; charset=utf-8"}],
                         ids=["fast path", "route"])
def test_a_single_decision_has_a_span_and_answers_its_traceparent(traced, headers):
    spans()
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    body = json.dumps(subscriber("t", 1)).encode()
    response = traced.post("/v1/decisions", content=body,
                           headers={"content-type": "application/json", **headers,
                                    "traceparent": caller})
    assert response.status_code == 200, response.text
    span = _only("cmab.decide")
    # The service's span only: FastAPI's own telemetry is off (it would add the request's).
    assert [s.name for s in EXPORTER.get_finished_spans()] == ["cmab.decide"]
    assert dict(span.attributes) == {"cmab.campaign": "t", "cmab.decisions": 1,
                                     "cmab.model_version": response.json()["model_version"]}
    # The child of the caller's span; the answer names the decision's own span.
    assert span.parent.span_id == int("cd" * 8, 16)
    assert span.context.trace_id == int("ab" * 16, 16)
    context = span_context(response.headers["traceresponse"])
    assert (context.trace_id, context.span_id) == (span.context.trace_id, span.context.span_id)


@pytest.mark.parametrize("ndjson", [False, True], ids=["JSON", "NDJSON"])
def test_a_batch_decision_has_one_span_with_its_count(traced, ndjson):
    spans()
    requests = [subscriber("t", i) for i in range(5)]
    if ndjson:
        body, headers = "".join(json.dumps(r) + "\n" for r in requests), NDJSON
    else:
        body = json.dumps({"campaign": "t", "requests": requests})
        headers = {"content-type": "application/json"}
    response = traced.post("/v1/decisions/batch", content=body, headers=headers)
    assert response.status_code == 200, response.text
    span = _only("cmab.decide_batch")
    assert span.attributes["cmab.campaign"] == "t"
    assert span.attributes["cmab.decisions"] == 5
    assert span.attributes["cmab.model_version"] >= 0
    assert span_context(response.headers["traceresponse"]).span_id == span.context.span_id


def test_outcomes_that_pass_the_decision_s_traceparent_link_the_events_span(traced):
    spans()
    decided = traced.post("/v1/decisions", json=subscriber("t", 7))
    parent = decided.headers["traceresponse"]
    decision_id = decided.json()["decision_id"]
    events = [{"type": "send", "event_id": "s7", "decision_id": decision_id, "ts": 1,
               "traceparent": parent},
              {"type": "click", "event_id": "c7", "decision_id": decision_id, "ts": 2,
               "traceparent": parent},
              {"type": "open", "event_id": "o7", "decision_id": decision_id, "ts": 2}]
    response = traced.post("/v1/events", json=events)
    assert response.status_code == 200, response.text
    span = _only("cmab.events")
    decide = _only("cmab.decide")
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
        (decide.context.trace_id, decide.context.span_id)] * 2


@pytest.mark.parametrize("value", ["00-" + "ab" * 16 + "-" + "cd" * 8,  # no flags
                                   "01-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
                                   "00-" + "AB" * 16 + "-" + "cd" * 8 + "-01", 7])
def test_a_malformed_traceparent_is_refused_by_name(traced, value):
    event = {"type": "click", "event_id": "c", "decision_id": "0" * 32, "ts": 1,
             "traceparent": value}
    response = traced.post("/v1/events", json=[event])
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "[0].traceparent"


def test_without_a_tracer_provider_the_hooks_add_nothing():
    """A process with no provider set: the API's tracer records nothing, no header."""
    import subprocess
    import sys

    script = (
        "from bandit.engine import Engine\nfrom bandit.service import create_app\n"
        "from bandit.settings import Settings\nfrom tests.servers import live\n"
        "with live(create_app(Engine(seed=0), Settings())) as c:\n"
        "    spec = {'name': 't', 'slots': [{'name': 's', 'arms': [{'id': 'a'}, {'id': 'b'}],"
        " 'default_arm': 'a'}]}\n"
        "    assert c.post('/v1/campaigns', json=spec).status_code == 201\n"
        "    for h in ({}, {'content-type': 'application/json; charset=utf-8'}):\n"
        "        r = c.post('/v1/decisions', json={'campaign': 't', 'user_id': 'u'}, headers=h)\n"
        "        print(r.status_code, 'traceresponse' in r.headers)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["200", "False"] * 2, out.stderr


def test_an_otlp_endpoint_without_the_exporter_package_is_one_line(monkeypatch, capsys,
                                                                  tmp_path):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert configure_export(None, "cmab-test") is False  # nothing configured: tracing off
    monkeypatch.setenv("CMAB_OTLP_ENDPOINT", "http://collector:4318")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ("otlp_endpoint http://collector:4318: the OTLP exporter is not installed (pip "
            "install opentelemetry-exporter-otlp-proto-http)") in err
    monkeypatch.delenv("CMAB_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert main(["worker", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "the OTLP exporter is not installed" in capsys.readouterr().err
