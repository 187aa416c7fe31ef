"""Schemathesis over the whole API, in process (ASGI), as its command line runs it: every phase
(the document's examples, coverage, fuzzing, stateful sequences of linked operations) and every
check, once over a service without tokens (its document declares no security) and once with the
tokens configured and sent. Every answer must have a documented status, content type and body
schema, never a 5xx; valid requests are accepted and invalid ones refused; secured routes refuse
requests without their token.

One exception to "valid requests are accepted": a schema-valid body may still name a context
feature the campaign does not have, or break a rule across fields (distinct slot names, a default
arm that is an arm), which no JSON Schema states; those 422s are allowed, as long as the models'
field constraints took the body (``schema_valid_bodies_pass_the_models``), which is where the
document and the server could disagree.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from bandit.engine import Engine
from bandit.models import CampaignSpec
from bandit.service import EXAMPLE_CAMPAIGN, NDJSON, create_app
from bandit.settings import Settings

pytestmark = pytest.mark.slow  # every phase of schemathesis over the whole API, twice

# A setting per token, with the token sent: the service names each security scheme after its
# setting, so another token is one more line here.
TOKENS = {"api_token": "management-s3cret", "ingest_token": "ingest-s3cret"}
MAX_EXAMPLES = 40  # fuzzing cases per operation; the other phases derive theirs from the schema
STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


@schemathesis.serializer(NDJSON)
def _ndjson(_: Any, value: Any) -> bytes | None:
    # The schema describes an NDJSON body as the array of its lines.
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


@schemathesis.check
def schema_valid_bodies_pass_the_models(ctx: Any, response: Any, case: Any) -> None:
    """A schema-valid request refused with 422 was refused by a rule beyond the schema (the
    engine's, or a model's cross-field check, a ``Value error``), never by a field constraint
    the document does not state."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if response.status_code == 422:
        errors = json.loads(response.content)["error"].get("errors", [])
        stated = [e for e in errors if not e["message"].startswith("Value error, ")]
        assert not stated, f"a schema-valid request broke the models' constraints: {stated}"


def _aim(body: Any) -> Any:
    """Point half of the valid decision bodies at the existing campaign, so the engine's own
    checks of generated contexts are exercised too, not only its 404."""
    if not isinstance(body, dict | list) or zlib.crc32(
            json.dumps(body, sort_keys=True).encode()) % 2:
        return body
    name = EXAMPLE_CAMPAIGN["name"]
    if isinstance(body, list):  # NDJSON lines
        return [_aim_one(r, name) for r in body]
    if isinstance(body.get("requests"), list):
        return {**body, "campaign": name, "requests": [_aim_one(r, name) for r in body["requests"]]}
    return _aim_one(body, name)


def _aim_one(request: Any, name: str) -> Any:
    return {**request, "campaign": name} if isinstance(request, dict) else request


def _run(tokens: dict[str, str]) -> tuple[Counter[str], list[str]]:
    """One schemathesis run over a fresh service: requests by phase, and the failures."""
    engine = Engine(seed=0)
    engine.warm_up()
    engine.create_campaign(CampaignSpec.model_validate(EXAMPLE_CAMPAIGN))
    app = create_app(engine, Settings(**tokens))
    sent: Counter[str] = Counter()

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/openapi.json":
            sent["requests"] += 1
        await app(scope, receive, send)

    auth = {"openapi": {scheme: {"bearer": token} for scheme, token in tokens.items()}}
    config = SchemathesisConfig.from_dict({
        "seed": 14,
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": {"positive_data_acceptance": {"expected-statuses": STATUSES}},
        **({"auth": auth} if tokens else {}),
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", counted, config=config)

    @schema.hook
    def map_case(context: Any, case: Any) -> Any:
        # Valid bodies only: an invalid one aimed at the campaign could become valid.
        if (case.operation.path.startswith("/v1/decisions") and case.meta is not None
                and case.meta.generation.mode.is_positive):
            case.body = _aim(case.body)
        return case

    failures = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent[event.phase.value] += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.name == "ensure_resource_availability" and _names_a_body_field(
                            event.recorder.find_response(case_id=case_id)):
                        continue
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(f"{event.phase.value} {event.label} {check.name}: "
                                        f"{failure.title}: {failure.message}\n"
                                        f"{check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"error: {event!r}")
    return sent, failures


def _names_a_body_field(response: Any) -> bool:
    """A 404 about what the body names (adding an arm to a slot the created campaign does not
    have), not about the resource the stateful phase created and linked (the path's campaign)."""
    if response is None or response.status_code != 404:
        return False
    return json.loads(response.content)["error"].get("field") in {"slot"}


@pytest.mark.parametrize("tokens", [{}, TOKENS], ids=["without tokens", "with tokens"])
def test_the_whole_api_conforms_to_its_openapi(tokens):
    sent, failures = _run(tokens)
    assert not failures, "\n\n".join(dict.fromkeys(failures))
    assert {"examples", "coverage", "fuzzing", "stateful"} <= set(sent), sent
    assert sent["requests"] >= 1000, sent
