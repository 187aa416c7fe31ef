"""Schemathesis against the service's own OpenAPI document, in process (ASGI): on every route,
the document's examples and generated requests (valid ones, and invalid ones in its coverage
phase) get a documented status, content type and body schema, never a 5xx."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bandit.engine import Engine
from bandit.models import CampaignSpec
from bandit.service import EXAMPLE_CAMPAIGN, NDJSON, create_app
from bandit.settings import Settings

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]


@schemathesis.serializer(NDJSON)
def _ndjson(_: Any, value: Any) -> bytes | None:
    # The schema describes an NDJSON body as the array of its lines.
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


# Built at import: schemathesis.pytest.from_fixture (the lazy loader) breaks on pytest 9.
ENGINE = Engine(seed=0)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ENGINE, Settings()))


@pytest.fixture(scope="module", autouse=True)
def example_campaign() -> None:
    """The campaign of the document's examples, so example decisions do real work."""
    ENGINE.warm_up()
    ENGINE.create_campaign(CampaignSpec.model_validate(EXAMPLE_CAMPAIGN))


def _aim(body: Any) -> Any:
    """Point half of the generated decision bodies at the existing campaign, so the engine's
    own checks of generated contexts are exercised too, not only its 404."""
    if not isinstance(body, dict | list) or zlib.crc32(
            json.dumps(body, sort_keys=True).encode()) % 2:
        return body
    name = EXAMPLE_CAMPAIGN["name"]
    if isinstance(body, list):  # NDJSON lines
        return [_aim_one(r, name) for r in body]
    if isinstance(body, dict) and isinstance(body.get("requests"), list):
        return {**body, "campaign": name, "requests": [_aim_one(r, name) for r in body["requests"]]}
    return _aim_one(body, name)


def _aim_one(request: Any, name: str) -> Any:
    return {**request, "campaign": name} if isinstance(request, dict) else request


@schema.parametrize()
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_conforms_to_its_openapi(case: Any) -> None:
    if case.operation.path.startswith("/v1/decisions"):
        case.body = _aim(case.body)
    case.call_and_validate(checks=CHECKS)
