"""The batch path column by column: the same decisions and bytes as the row-at-a-time engine
(tests/reference.py), from decoded columns, in chunks and over the service's batch route."""

import asyncio
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandit.engine import Engine, holdout_mask
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent, LoggedChoice
from bandit.service import BATCH_CHUNK, NDJSON, create_app
from bandit.settings import Settings
from bandit.wire.batch import json_columns, ndjson_columns
from tests import reference

KINDS = ["lin_ucb", "epsilon_greedy", "bart", "beta_ts", "hybrid_lin_ucb", "lin_ts"]
STYLES = ["deal", "busy", "calm"]


def spec(holdout: float) -> CampaignSpec:
    """Every policy kind; a defaulted numeric, a categorical; conditioning; eligibility on a
    context feature, a segment and a numeric threshold."""
    arms = [{"id": f"a{j}", "features": {"tone": STYLES[j % 3], "size": j / 4}} for j in range(4)]
    slots = [{"name": kind, "arms": arms, "default_arm": "a0", "policy": {"kind": kind},
              "arm_features": [{"kind": "categorical", "name": "tone", "values": STYLES},
                               {"kind": "numeric", "name": "size"}]} for kind in KINDS]
    slots[1]["condition_on"] = ["lin_ucb"]
    slots[2]["condition_on"] = ["lin_ucb", "epsilon_greedy"]
    slots[0]["eligibility"] = [{"arm": "a1", "feature": "style", "op": "in",
                                "value": ["deal", "busy"]},
                               {"arm": "a2", "feature": "region", "op": "eq", "value": "eu"}]
    slots[3]["eligibility"] = [{"arm": "a3", "feature": "engagement", "op": "gt", "value": 0.0}]
    return CampaignSpec.model_validate({
        "name": "mix", "holdout": holdout,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "numeric", "name": "recency", "default": 0.5},
                                 {"kind": "categorical", "name": "style", "values": STYLES[:2]}],
                    "segments": ["region"]},
        "slots": slots})


def engine(holdout: float = 0.2, paused: bool = False) -> Engine:
    """A campaign in progress: 200 logged decisions learned (the same for every call)."""
    e = Engine(seed=11, id_seed=11)  # twins: the same ids
    e.create_campaign(spec(holdout))
    rng = np.random.default_rng(5)
    e.learn([JoinedEvent(
        decision_id=f"{i:032x}", campaign="mix", subject=f"{i:032x}", ts=i,
        context={"engagement": float(rng.normal()), "style": STYLES[i % 3]},
        slots={k: LoggedChoice(arm=f"a{rng.integers(4)}", propensity=0.25) for k in KINDS},
        rewards={k: float(rng.random() < 0.3) for k in KINDS}) for i in range(200)])
    e.pause("mix", paused)
    return e


request = st.builds(
    dict,
    campaign=st.just("mix"),
    user_id=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                    max_size=12),
    context=st.fixed_dictionaries({}, optional={
        "engagement": st.floats(-5, 5, allow_nan=False) | st.integers(-3, 3),
        "recency": st.floats(-2, 2, allow_nan=False),
        "style": st.sampled_from(STYLES)}),
    segments=st.fixed_dictionaries({}, optional={"region": st.sampled_from(["eu", "us"])}),
    consent=st.booleans(),
    explain=st.booleans())


def fits(r: dict[str, Any]) -> bool:
    """A request the engine decides: consenting ones give the feature without a default."""
    return not r["consent"] or "engagement" in r["context"]


def ndjson(requests: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in requests)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request, min_size=1, max_size=40).filter(lambda rs: all(map(fits, rs))),
       st.sampled_from([0.0, 0.3, 0.5]), st.booleans())
def test_batch_decisions_are_the_row_at_a_time_engine_s_bytes(requests, holdout, paused):
    models = [DecisionRequest.model_validate(r) for r in requests]
    expected = reference.decide_batch_ndjson(engine(holdout, paused), "mix", models)
    batch = engine(holdout, paused).decide_batch("mix", models)
    assert batch.ndjson() == expected
    assert b"".join(line + b"," for line in batch.lines()) == batch.ndjson(b",")
    # The service's fast path: the body decoded into columns, decided in chunks (a policy's
    # floats may differ in the last bit with the batch's size (BLAS): the reference is chunked
    # alike, as the service chunked before).
    cut = max(1, len(models) // 3)
    ref = engine(holdout, paused)
    expected = b"".join(reference.decide_batch_ndjson(ref, "mix", models[s:s + cut])
                        for s in range(0, len(models), cut))
    for body, parse in ((ndjson(requests), ndjson_columns),
                        (orjson.dumps({"campaign": "mix", "requests": requests}), json_columns)):
        columns = parse(body, e := engine(holdout, paused))
        assert columns is not None
        assert b"".join(e.decide_columns(columns.rows(s, s + cut)).ndjson()
                        for s in range(0, len(columns), cut)) == expected


def test_a_large_batch_in_chunks_matches_the_reference():
    rng = np.random.default_rng(2)
    requests = [DecisionRequest(campaign="mix", user_id=f"u{i}", context={
        "engagement": float(rng.normal()), "style": STYLES[i % 3]}, segments={
        "region": ["eu", "us"][i % 2]}, consent=i % 7 != 0, explain=i % 5 == 0)
        for i in range(BATCH_CHUNK + 500)]
    ref, e = engine(), engine()
    expected = b"".join(reference.decide_batch_ndjson(ref, "mix", requests[s:s + BATCH_CHUNK])
                        for s in range(0, len(requests), BATCH_CHUNK))
    columns = ndjson_columns(b"\n".join(r.model_dump_json().encode() for r in requests), e)
    out = b"".join(e.decide_columns(columns.rows(s, s + BATCH_CHUNK)).ndjson()
                   for s in range(0, len(columns), BATCH_CHUNK))
    assert out == expected


def test_holdout_mask_is_the_per_user_hash():
    from bandit.engine import _in_holdout

    users = [f"user-{i}" for i in range(2000)] + ["é", "😀", "a\x1fb"]
    mask = holdout_mask("mix", users, 0.3)
    assert mask.tolist() == [_in_holdout("mix", u, 0.3) for u in users]
    assert 0.25 < mask.mean() < 0.35


@pytest.mark.parametrize("blank", [b"", b"\x0c\n"], ids=["msgspec", "pydantic"])
def test_the_route_answers_what_the_row_at_a_time_engine_decides(blank):
    """Over the app, NDJSON and JSON: the answer is the reference's bytes, chunk by chunk,
    whether the body took the msgspec path or (a line pydantic calls blank and msgspec does
    not) the pydantic one."""
    rng = np.random.default_rng(3)
    requests = [{"campaign": "mix", "user_id": f"u{i}", "context": {
        "engagement": float(rng.normal()), "style": STYLES[i % 3]}, "segments": {
        "region": ["eu", "us"][i % 2]}, "consent": i % 7 != 0, "explain": i % 5 == 0}
        for i in range(BATCH_CHUNK + 300)]
    models = [DecisionRequest.model_validate(r) for r in requests]

    def expected() -> list[bytes]:
        ref = engine()
        return [reference.decide_batch_ndjson(ref, "mix", models[s:s + BATCH_CHUNK])
                for s in range(0, len(models), BATCH_CHUNK)]

    async def post(body: bytes, content_type: str) -> bytes:
        transport = httpx.ASGITransport(create_app(engine(), Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            response = await client.post("/v1/decisions/batch", content=body,
                                         headers={"content-type": content_type})
        assert response.status_code == 200, response.text
        return response.content

    body = blank + ndjson(requests)
    assert asyncio.run(post(body, NDJSON)) == b"".join(expected())
    if not blank:
        lines = b"".join(expected()).split(b"\n")[:-1]
        answer = asyncio.run(post(orjson.dumps({"campaign": "mix", "requests": requests}),
                                  "application/json"))
        assert answer == b'{"decisions":[' + b",".join(lines) + b"]}"


@settings(max_examples=100, deadline=None)
@given(st.permutations(["engagement", "recency", "style"]).map(lambda p: p[:2]),
       st.lists(st.floats(-3, 3) | st.sampled_from(["deal", "1.5", 2, True]), min_size=2,
                max_size=40))
def test_encode_of_many_rows_is_encode_of_each(keys, values):
    """``encode``'s one-pass path (rows alike, floats only) agrees with the row by row one,
    which it leaves anything else to (a string or int among the numbers, a categorical)."""
    encoder = engine()._get("mix").context
    rows = [dict(zip(keys, values[i:i + 2], strict=True)) for i in range(0, len(values) - 1, 2)]
    try:
        each = np.vstack([encoder.encode([row]) for row in rows])
    except InvalidInputError:
        with pytest.raises(InvalidInputError):
            encoder.encode(rows)
    else:
        np.testing.assert_array_equal(encoder.encode(rows), each)
