"""``bandit.client`` against the real service (uvicorn on 127.0.0.1), sync and async: decisions
one, batch and streamed, events in batches, pause and resume, typed refusals naming the field,
retries on a real 503 (the join's ``over_capacity``) and on a refused connection (the server
starts after the first attempt failed), the tokens from the service's settings."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from bandit import client as client_module
from bandit.client import (
    AsyncClient,
    Client,
    Forbidden,
    Invalid,
    NotFound,
    Retry,
    RetryEvent,
    Unavailable,
    Unreachable,
)
from bandit.engine import Engine
from bandit.models import CampaignSpec, Decision, Send
from bandit.service import create_app
from bandit.settings import ENV_PREFIX, Settings
from tests.servers import live

MANAGE, INGEST = "manage-s3cret", "ingest-s3cret"
QUICK = Retry(attempts=3, backoff_s=0.01)
WINDOWED = {"name": "w", "attribution_window_ms": 10**6,
            "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}


def row(i: int) -> dict[str, Any]:
    return {"user_id": f"u{i}", "context": {"engagement": i / 100, "plan": "pro"},
            "segments": {"region": "eu"}}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = create_app(Engine(seed=0), Settings(api_token=MANAGE, ingest_token=INGEST))
    with live(app) as http:
        yield str(http.base_url).rstrip("/")


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokens as the service reads them: from its settings' environment variables."""
    monkeypatch.setenv("CMAB_API_TOKEN", MANAGE)
    monkeypatch.setenv("CMAB_INGEST_TOKEN", INGEST)


def test_the_token_and_address_variables_are_the_services_settings(monkeypatch):
    names = {f"{ENV_PREFIX}{name}".upper(): f for name, f in Settings.model_fields.items()}
    for env in (client_module.API_TOKEN_ENV, client_module.INGEST_TOKEN_ENV,
                client_module.HOST_ENV, client_module.PORT_ENV):
        assert env in names
    assert names["CMAB_PORT"].default == 8000 and names["CMAB_HOST"].default == "127.0.0.1"
    monkeypatch.delenv("CMAB_HOST", raising=False)
    monkeypatch.delenv("CMAB_PORT", raising=False)
    with Client(retry=QUICK) as default:
        assert default.url == "http://127.0.0.1:8000"
    monkeypatch.setenv("CMAB_HOST", "0.0.0.0")  # the service listens everywhere: ask here
    monkeypatch.setenv("CMAB_PORT", "9000")
    with Client(retry=QUICK) as everywhere:
        assert everywhere.url == "http://127.0.0.1:9000"


def test_sync_client_decides_records_and_pauses(url, newsletter_spec, tokens):
    with Client(url, retry=QUICK) as client:
        spec = client.create_campaign(CampaignSpec.model_validate(newsletter_spec("sync")))
        assert spec.name == "sync" and client.campaign("sync") == spec
        assert "sync" in [c.name for c in client.campaigns()]
        one = client.decide({"campaign": "sync", **row(0)})
        assert isinstance(one, Decision) and [s.slot for s in one.slots] == [
            "subject_line", "artwork", "send_hour"]
        batch = client.decide_batch("sync", [row(i) for i in range(3)])
        assert [d.user_id for d in batch] == ["u0", "u1", "u2"]
        taken = []

        def rows() -> Iterator[dict[str, Any]]:  # a generator: read as the body goes out
            for i in range(250):
                taken.append(i)
                yield row(i)

        streamed = client.decide_stream("sync", rows(), rows_per_request=100)
        first = next(streamed)
        # The first request's rows only: the second request has not started.
        assert first.user_id == "u0" and len(taken) == 100
        rest = list(streamed)
        assert [d.user_id for d in [first, *rest]] == [f"u{i}" for i in range(250)]
        assert len({d.decision_id for d in [first, *rest]}) == 250
        now = time.time_ns() // 10**6
        sends = [Send(event_id=f"s{d.decision_id}", decision_id=d.decision_id, ts=now)
                 for d in batch]
        assert client.record(sends, batch_size=2) == 3
        assert client.record(sends, batch_size=2) == 0  # the same event ids: duplicates
        assert client.pause("sync").paused
        paused = client.decide_stream("sync", [row(i) for i in range(20)])
        assert {(s.slot, s.arm) for d in paused for s in d.slots} == {
            ("subject_line", "plain"), ("artwork", "calm"), ("send_hour", "h09")}
        assert not client.resume("sync").paused
        assert client.report("sync").campaign == "sync"
        retired = client.retire_arm("sync", "subject_line", "question")
        assert [a.retired for a in retired.slots[0].arms] == [False, False, True]
        assert client.erase("u0").erased >= 0
        assert client.readiness().status == "ready" and client.health().status == "ok"


def test_refusals_are_typed_name_the_field_and_are_never_retried(url, newsletter_spec, tokens):
    retried: list[RetryEvent] = []
    retry = Retry(attempts=4, backoff_s=0.01, on_retry=retried.append)
    with Client(url, retry=retry) as client:
        client.create_campaign(newsletter_spec("refused"))
        with pytest.raises(Invalid) as bad:
            client.decide({"campaign": "refused", "user_id": "", "context": {"plan": "pro"}})
        assert bad.value.status == 422 and bad.value.field == "user_id"
        with pytest.raises(Invalid, match="'engagement' expects a number, got 'high'"):
            client.decide({"campaign": "refused", "user_id": "u",
                           "context": {"engagement": "high"}})
        rows = [row(1), row(2), {"user_id": "u3", "context": {"plan": "pro"}}]
        with pytest.raises(Invalid, match="line 3") as bad_line:
            list(client.decide_stream("refused", rows))
        assert "engagement" in bad_line.value.message
        with pytest.raises(NotFound) as missing:
            client.decide({"campaign": "nope", "user_id": "u"})
        assert missing.value.code == "not_found"
    with Client(url, api_token="wrong", retry=retry) as client, pytest.raises(Forbidden):
        client.pause("refused")
    assert retried == []


def test_a_503_is_retried_until_the_service_takes_the_events(newsletter_spec):
    """The join's cap (``max_pending`` 1) answers 503 over_capacity to a second open decision;
    erasing the first subject between the attempts makes room, and the retry is taken."""
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(WINDOWED))
    now = time.time_ns() // 10**6

    def impression(i: int) -> dict[str, Any]:
        return {"type": "impression", "event_id": f"i{i}", "decision_id": f"{i:032x}",
                "campaign": "w", "user_id": f"u{i}", "ts": now,
                "slots": {"s": {"arm": "a", "propensity": 0.5}}}

    retried: list[RetryEvent] = []
    with live(create_app(engine, Settings(max_pending=1))) as http:
        url = str(http.base_url)

        def make_room(event: RetryEvent) -> None:
            retried.append(event)
            with Client(url, retry=QUICK) as other:
                other.erase("u1")

        with Client(url, retry=Retry(attempts=3, backoff_s=0.01, on_retry=make_room)) as client:
            assert client.record([impression(1)]) == 1
            assert client.record([impression(2)]) == 1
        assert len(retried) == 1 and "503 over_capacity" in retried[0].reason
        assert retried[0].delay_s >= 1  # the answer's Retry-After
        with Client(url, retry=Retry(attempts=2, backoff_s=0.01)) as client, \
                pytest.raises(Unavailable, match="over_capacity") as refused:
            client.record([impression(3)])
        assert refused.value.retriable


def _refusing_socket() -> socket.socket:
    """Bound, not listening: a connection to it is refused until a server listens on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def test_a_refused_connection_is_retried_until_the_server_is_up():
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(WINDOWED))
    sock = _refusing_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    retried: list[RetryEvent] = []
    with ExitStack() as stack:
        def start(event: RetryEvent) -> None:
            retried.append(event)
            stack.enter_context(live(create_app(engine, Settings()), sock))

        with Client(url, retry=Retry(attempts=3, backoff_s=0.01, on_retry=start)) as client:
            # A decision is retried: the connection failed before anything was sent.
            assert client.decide({"campaign": "w", "user_id": "u"}).campaign == "w"
    assert len(retried) == 1 and "ConnectError" in retried[0].reason
    with Client(url, retry=Retry(attempts=2, backoff_s=0.01)) as client, \
            pytest.raises(Unreachable, match="ConnectError"):
        client.health()


@pytest.mark.anyio
async def test_async_client_decides_records_pauses_and_refuses(url, newsletter_spec, tokens):
    async with AsyncClient(url, retry=QUICK) as client:
        await client.create_campaign(newsletter_spec("async"))
        one = await client.decide({"campaign": "async", **row(0)})
        assert one.user_id == "u0"
        batch = await client.decide_batch("async", [row(i) for i in range(3)])

        async def rows() -> Any:
            for i in range(120):
                yield row(i)

        streamed = [d async for d in client.decide_stream("async", rows(),
                                                          rows_per_request=50)]
        assert [d.user_id for d in streamed] == [f"u{i}" for i in range(120)]
        now = time.time_ns() // 10**6
        sends = [{"type": "send", "event_id": f"s{d.decision_id}",
                  "decision_id": d.decision_id, "ts": now} for d in batch]
        assert await client.record(sends, batch_size=2) == 3
        assert (await client.pause("async")).paused
        assert not (await client.resume("async")).paused
        assert (await client.report("async")).campaign == "async"
        with pytest.raises(Invalid, match="line 2") as bad:
            [d async for d in client.decide_stream("async", [row(1), {"user_id": ""}])]
        assert bad.value.field == "user_id"


@pytest.mark.anyio
async def test_async_client_retries_a_503_and_a_refused_connection():
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(WINDOWED))
    now = time.time_ns() // 10**6
    impressions = [{"type": "impression", "event_id": f"i{i}", "decision_id": f"{i:032x}",
                    "campaign": "w", "user_id": f"u{i}", "ts": now,
                    "slots": {"s": {"arm": "a", "propensity": 0.5}}} for i in (1, 2)]
    sock = _refusing_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    retried: list[RetryEvent] = []
    with ExitStack() as stack:
        def on_retry(event: RetryEvent) -> None:
            retried.append(event)
            if len(retried) == 1:  # connection refused: start the server
                stack.enter_context(live(create_app(engine, Settings(max_pending=1)), sock))
            else:  # over capacity: make room
                with Client(url, retry=QUICK) as other:
                    other.erase("u1")

        async with AsyncClient(url, retry=Retry(attempts=3, backoff_s=0.01,
                                                on_retry=on_retry)) as client:
            assert await client.record(impressions[:1]) == 1
            assert await client.record(impressions[1:]) == 1
    assert ["ConnectError" in retried[0].reason, "503 over_capacity" in retried[1].reason] == [
        True, True]
