"""The fast path of ``POST /v1/decisions`` (msgspec body, decided on the event loop): it takes
only bodies pydantic takes, reads them as pydantic does, and answers byte for byte what the
FastAPI route answers, errors included; a busy engine does not stall the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bandit.engine import Engine
from bandit.models import CampaignSpec, Decision, DecisionRequest
from bandit.service import create_app
from bandit.service.fast_path import fast_request
from bandit.settings import Settings

SPEC = {
    "name": "weekly", "holdout": 0.3,
    "context": {"features": [{"kind": "numeric", "name": "engagement"},
                             {"kind": "categorical", "name": "plan", "values": ["free", "pro"]}],
                "segments": ["region"]},
    "slots": [
        {"name": "subject", "arms": [{"id": "plain"}, {"id": "urgent"}, {"id": "ask"}],
         "default_arm": "plain", "policy": {"kind": "lin_ucb", "alpha": 0.5}},
        {"name": "artwork", "default_arm": "calm", "policy": {"kind": "bart"},
         "condition_on": ["subject"],
         "arms": [{"id": "action", "features": {"scene": "action"}},
                  {"id": "calm", "features": {"scene": "calm"}}],
         "arm_features": [{"kind": "categorical", "name": "scene",
                           "values": ["action", "calm"]}],
         "eligibility": [{"arm": "action", "feature": "region", "op": "eq", "value": "eu"}]},
        {"name": "hour", "arms": [{"id": "h9"}, {"id": "h18"}], "default_arm": "h9",
         "policy": {"kind": "beta_ts"}},
    ],
}
FAST = {"content-type": "application/json"}
ROUTE = {"content-type": "application/json; charset=utf-8"}  # not the fast path's: the route's


def app_over(engine: Engine, **settings: Any) -> Any:
    engine.create_campaign(CampaignSpec.model_validate(SPEC))
    return create_app(engine, Settings(**settings))


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


# -- what the fast path takes ----------------------------------------------------------------

names = st.sampled_from(["weekly", "plan", "a.b:c-d_e", "x" * 64, "x" * 65, "", "-x", "a b",
                         "ok\n", "é"])
texts = st.sampled_from(["u", "", "x" * 128, "x" * 129, "pro", "\u00e9t\u00e9", "a\nb"])
numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**70, 2**70)
           | st.sampled_from([10**400, 1e308, -0.0]))
values = numbers | texts | st.booleans() | st.none() | st.lists(st.integers(), max_size=1)
contexts = st.dictionaries(names | st.sampled_from(["engagement", "region"]), values,
                           max_size=3)
near = st.fixed_dictionaries(  # mostly valid: the fast path takes many of them
    {"campaign": names, "user_id": texts},
    optional={"context": contexts, "segments": st.dictionaries(names, texts | values, max_size=2),
              "consent": st.booleans() | values, "explain": st.booleans(), "other": values})
bodies = near | st.dictionaries(
    st.sampled_from(["campaign", "user_id", "context", "segments", "consent", "explain",
                     "other"]),
    names | texts | values | st.dictionaries(names | texts, values, max_size=3)
    | st.dictionaries(st.sampled_from(["engagement", "region"]), values, max_size=2),
    max_size=6)


def pydantic_reads(body: bytes) -> DecisionRequest | None:
    """What the FastAPI route does with a JSON body: Python's JSON reader, then the model."""
    try:
        return DecisionRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return None


@settings(max_examples=400, deadline=None)
@given(body=bodies)
@example(body={"campaign": "weekly", "user_id": "u", "context": {"engagement": 10**400}})
@example(body={"campaign": "weekly", "user_id": "u", "context": {"engagement": float("nan")}})
@example(body={"campaign": "weekly", "user_id": "u", "consent": 1})
@example(body={"campaign": "weekly", "user_id": "u", "context": {"ok\n": 1.0}})
def test_fast_path_takes_only_what_pydantic_takes_and_reads_it_alike(body):
    raw = json.dumps(body).encode()  # NaN and Infinity as Python's tokens
    fast = fast_request(raw)
    if fast is None:
        return  # the route decides: pydantic's verdict, whatever it is
    expected = pydantic_reads(raw)
    assert expected is not None, raw
    assert msgspec.structs.asdict(fast) == expected.model_dump()
    for key, value in fast.context.items():  # numbers as floats, labels as strings, alike
        assert isinstance(value, str) == isinstance(expected.context[key], str)


@given(body=bodies)
@settings(max_examples=100, deadline=None)
def test_fast_path_takes_every_valid_request_it_is_sent(body):
    """Not a correctness property but the point of it: valid requests do not fall back."""
    raw = json.dumps(body).encode()
    expected = pydantic_reads(raw)
    if expected is not None and b"NaN" not in raw and b"Infinity" not in raw:
        assert fast_request(expected.model_dump_json().encode()) is not None


def _text(value: Any, escape: bool) -> str:
    text = json.dumps(value)
    return text.replace(":", "\\u003a") if escape else text


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from(["a", "a:b", "b"]), st.booleans(),
                                st.sampled_from([1.5, "x", "x:y", "::"])), max_size=5),
       user=st.sampled_from(["u", "u:1"]), top=st.lists(st.sampled_from(
           ['"consent": true', '"consent": false', '"explain": false', '"segments": {}',
            '"user_id": "v"']), max_size=3))
def test_the_fast_path_takes_no_body_with_a_repeated_key(pairs, user, top):
    """msgspec keeps the last of repeated keys; the fast path leaves such bodies to the route
    (which refuses them), whatever colons and escaped colons the strings hold."""
    context = ", ".join(f"{_text(k, escape)}: {json.dumps(v)}" for k, escape, v in pairs)
    raw = ", ".join(['{"campaign": "weekly"', f'"user_id": {json.dumps(user)}',
                     f'"context": {{{context}}}', *top]).encode() + b"}"
    keys = [k for k, _, _ in pairs]
    tops = [t.split(":")[0] for t in top] + ['"user_id"']
    repeated = len(set(keys)) < len(keys) or len(set(tops)) < len(tops)
    if repeated:
        assert fast_request(raw) is None, raw
    else:
        assert (fast_request(raw) is not None) == (pydantic_reads(raw) is not None), raw


# -- the same answers as the route -----------------------------------------------------------

SENT = [
    {"campaign": "weekly", "user_id": "u1", "context": {"engagement": 0.5, "plan": "pro"},
     "segments": {"region": "eu"}},
    {"campaign": "weekly", "user_id": "u2", "context": {"engagement": 1, "plan": "team"},
     "explain": True},
    {"campaign": "weekly", "user_id": "u3", "consent": False},
    {"campaign": "weekly", "user_id": "u4", "context": {"engagement": 0.5, "age": 3}},
    {"campaign": "weekly", "user_id": "u5", "context": {"plan": "pro"}},
    {"campaign": "nope", "user_id": "u6"},
    {"campaign": "weekly", "user_id": ""},
    {"campaign": "a b", "user_id": "u7"},
    {"campaign": "weekly", "user_id": "u8", "colour": "red"},
    {"campaign": "weekly", "user_id": "u9", "context": {"engagement": float("nan")}},
    {"campaign": "weekly", "user_id": "u10", "explain": "yes"},
    *[{"campaign": "weekly", "user_id": f"user-{i}", "explain": i % 3 == 0,
       "context": {"engagement": i / 10, "plan": ("free", "pro")[i % 2]},
       "segments": {"region": ("eu", "us")[i % 2]}} for i in range(40)],
]
RAW = [b"{", b"[]", b"", b'{"campaign": "weekly", "user_id": "u"', b"\xff\xfe",
       b'{"campaign": "weekly", "user_id": "u", "user_id": "v"}',
       b'{"campaign": "weekly", "user_id": "u", "context": {"plan": "pro", "plan": "free"}}',
       json.dumps(SENT[0]).encode("utf-16"), json.dumps(SENT[0]).encode("utf-16-le"),
       b"\xef\xbb\xbf" + json.dumps(SENT[0]).encode(), b"[" * 300 + b"]" * 300]


@pytest.mark.anyio
async def test_fast_path_answers_what_the_route_answers():
    """Twin engines: one app is sent plain ``application/json`` (the fast path), the other a
    content type the fast path leaves to the FastAPI route; every answer is the same bytes."""
    engine = Engine(seed=3, id_seed=3)  # twins: the same ids
    batches: list[int] = []  # the fast path decides by decide_one, never by decide_batch
    decide_batch = engine.decide_batch
    engine.decide_batch = lambda c, r: batches.append(len(r)) or decide_batch(c, r)  # type: ignore[method-assign]
    twin = Engine(seed=3, id_seed=3)
    apps = app_over(engine), app_over(twin)
    for app in apps:  # the decision log's timer would take the engine's lock now and then,
        app.state.join_log.delay_s = 3600.0  # and the fast path then decides in a thread
    async with client(apps[0]) as fast, client(apps[1]) as route:
        bodies = [json.dumps(b).encode() for b in SENT] + RAW
        decided = []
        for body in bodies:
            a = await fast.post("/v1/decisions", content=body, headers=FAST)
            b = await route.post("/v1/decisions", content=body, headers=ROUTE)
            assert (a.status_code, a.headers["content-type"], a.content) == (
                b.status_code, b.headers["content-type"], b.content), body
            if a.status_code == 200:
                decided.append(Decision.model_validate_json(a.content).decision_id)
        assert len(set(decided)) == len(decided) >= 43
        assert batches == []
        metrics = (await fast.get("/metrics")).text.splitlines()
    count = next(line for line in metrics
                 if line.startswith('cmab_decision_latency_seconds_count{route="decision"}'))
    assert float(count.split()[-1]) == len(decided)


@pytest.mark.anyio
async def test_fast_path_counts_each_arm_it_chose():
    async with client(app_over(Engine(seed=4))) as fast:
        chosen: dict[tuple[str, str], int] = {}
        for body in SENT[11:]:
            answer = await fast.post("/v1/decisions", json=body)
            for s in Decision.model_validate_json(answer.content).slots:
                chosen[s.slot, s.arm] = chosen.get((s.slot, s.arm), 0) + 1
        metrics = (await fast.get("/metrics")).text
    for (slot, arm), n in chosen.items():
        line = f'cmab_decisions_total{{arm="{arm}",campaign="weekly",slot="{slot}"}} {float(n)}'
        assert line in metrics.splitlines(), (line, metrics)


@pytest.mark.anyio
async def test_body_limit_still_applies():
    async with client(app_over(Engine(seed=5), max_body_bytes=1024)) as fast:
        body = {"campaign": "weekly", "user_id": "u" * 2000}
        answer = await fast.post("/v1/decisions", json=body)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


@pytest.mark.anyio
async def test_a_busy_engine_does_not_stall_the_event_loop():
    """While another thread holds the engine's lock, a decision waits in a thread, /healthz
    answers meanwhile, and the decision comes once the lock is free."""
    engine = Engine(seed=6)
    app = app_over(engine)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine._lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(60)
    try:
        async with client(app) as fast:
            pending = asyncio.create_task(fast.post("/v1/decisions", json=SENT[0]))
            assert (await fast.get("/healthz")).status_code == 200
            assert not pending.done()
            release.set()
            answer = await pending
    finally:
        release.set()
        holder.join(60)
    assert answer.status_code == 200
    assert Decision.model_validate_json(answer.content).user_id == "u1"


@pytest.mark.anyio
async def test_requests_that_arrive_together_are_decided_together_each_its_own():
    """Many at once share one decide_batch (a bad one refuses only itself); each request gets
    its own answer either way."""
    engine = Engine(seed=7)
    batches: list[int] = []
    decide_batch = engine.decide_batch
    engine.decide_batch = lambda c, r: batches.append(len(r)) or decide_batch(c, r)  # type: ignore[method-assign]
    sent = [*SENT[11:23], SENT[3], SENT[5]]  # 12 good, a bad context, an unknown campaign
    async with client(app_over(engine)) as fast:
        answers = await asyncio.gather(*(fast.post("/v1/decisions", json=b) for b in sent))
    assert [a.status_code for a in answers] == [200] * 12 + [422, 404]
    for body, answer in zip(sent[:12], answers, strict=False):
        assert Decision.model_validate_json(answer.content).user_id == body["user_id"]
    assert batches and max(batches) > 3, batches
