"""The msgspec decoding of batch bodies (bandit.wire.batch) is never laxer than pydantic: what it
decodes, pydantic accepts and the engine decides as the row-at-a-time reference does; anything
else it leaves to pydantic."""

import json

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bandit.models import DecisionRequest
from bandit.wire.batch import _decoders, ndjson_columns
from tests import reference
from tests.bandit.engine.test_batch import engine, spec


def pydantic_accepts(line: bytes) -> bool:
    try:
        DecisionRequest.model_validate_json(line)
    except ValueError:
        return False
    return True


GOOD = {"campaign": "mix", "user_id": "u1", "context": {"engagement": 0.5, "style": "deal"},
        "segments": {"region": "eu"}}
TOKENS = [b"null", b"true", b"1", b"-0.0", b"1e400", b'""', b'"x"', b"{}", b"[]", b'"a b"',
          b'"\\ud800"', b"\xff", b"NaN", b"Infinity", b"2e308", b'"' + b"x" * 130 + b'"']


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(json.dumps(GOOD).encode().split(b'"'))[1:]),
       st.sampled_from(TOKENS), st.booleans())
@example(b"user_id", b'"u1","user_id":"u2"', False)  # a key twice: the last value, both ways
@example(b"mix", b'mix"}{"campaign":"mix', False)  # two objects on one line
def test_the_fast_path_takes_only_what_pydantic_takes(part, token, wrap):
    """A good line with one part replaced: whenever the msgspec path decodes the body, pydantic
    accepts the line, the engine accepts it, and the decisions are the same."""
    line = json.dumps(GOOD).encode().replace(b'"' + part + b'"', token if not wrap else
                                             b'"' + token + b'"', 1)
    body = line + b"\n" + json.dumps(GOOD).encode() + b"\n\n"
    columns = ndjson_columns(body, e := engine())
    if columns is None:
        return
    assert pydantic_accepts(line)
    models = [DecisionRequest.model_validate_json(x) for x in body.split(b"\n") if x.strip()]
    assert e.decide_columns(columns).ndjson() == reference.decide_batch_ndjson(
        engine(), "mix", models)


@pytest.mark.parametrize("body", [
    b"", b"\n \n", b'{"campaign":"nope","user_id":"u"}\n',
    b'{"campaign":"mix","user_id":"u","consent":false}\n{"campaign":"other","user_id":"v"}',
    b'{"campaign":"mix","user_id":"u","context":{"engagement":1,"extra":2}}',
    b'{"campaign":"mix","user_id":"u","context":{"style":"deal"}}',  # engagement: no default
    b'{"campaign":"mix","user_id":"u","context":{"engagement":1},"segments":{"bad key":"x"}}',
    b'{"campaign":"mix","user_id":"u","context":{"engagement":1}}{"campaign":"mix","user_id":"v",'
    b'"context":{"engagement":1}}\n\n',
])
def test_bodies_the_fast_path_leaves_to_pydantic(body):
    assert ndjson_columns(body, engine()) is None


def test_the_batch_mirror_has_the_request_model_s_fields_in_order():
    campaign = spec(0.2)
    request = msgspec.inspect.type_info(_decoders(campaign).ndjson.type).fields
    assert [f.name for f in request] == list(DecisionRequest.model_fields)
    context = request[2].type.fields  # Context | UNSET
    assert [f.name for f in context] == [f.name for f in campaign.context.features]
