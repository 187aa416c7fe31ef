"""What the OpenAPI document adds to FastAPI's: examples (/docs; schemathesis replays them),
the bodies of the routes that read their own (JSON or NDJSON), and ``openapi``, the document
of an app."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path
from fastapi.openapi.utils import get_openapi

from bandit.models import BatchDecisionRequest, Click, Decision, DecisionRequest, Impression
from bandit.service.reading import NDJSON

EXAMPLE_CAMPAIGN: dict[str, Any] = {
    "name": "weekly-newsletter",
    "holdout": 0.05,
    "attribution_window_ms": 3 * 24 * 3600 * 1000,
    "context": {
        "features": [{"kind": "numeric", "name": "engagement", "default": 0.0},
                     {"kind": "categorical", "name": "plan", "values": ["free", "pro"]}],
        "segments": ["region"],
    },
    "slots": [
        {"name": "subject_line", "arms": [{"id": "plain"}, {"id": "urgent"}, {"id": "question"}],
         "default_arm": "plain", "policy": {"kind": "lin_ucb", "alpha": 0.5}},
        {"name": "artwork", "default_arm": "calm", "policy": {"kind": "hybrid_lin_ucb"},
         "arms": [{"id": "action", "features": {"scene": "action"}},
                  {"id": "calm", "features": {"scene": "calm"}}],
         "arm_features": [{"kind": "categorical", "name": "scene",
                           "values": ["action", "calm", "comedy"]}]},
    ],
}
EXAMPLE_REQUESTS = [
    {"campaign": "weekly-newsletter", "user_id": "subscriber-42",
     "context": {"engagement": 0.7, "plan": "pro"}, "segments": {"region": "eu"}},
    {"campaign": "weekly-newsletter", "user_id": "subscriber-43", "consent": False},
]
_EXAMPLE_EVENTS = [
    {"type": "impression", "event_id": "imp-1", "decision_id": "5" * 32,
     "campaign": "weekly-newsletter", "user_id": "subscriber-42", "ts": 1_700_000_000_000,
     "slots": {"subject_line": {"arm": "urgent", "propensity": 0.4},
               "artwork": {"arm": "calm", "propensity": 0.6}},
     "context": {"engagement": 0.7, "plan": "pro"}, "segments": {"region": "eu"}},
    {"type": "click", "event_id": "click-1", "decision_id": "5" * 32,
     "campaign": "weekly-newsletter", "ts": 1_700_000_060_000},
]


def example(value: Any, summary: str) -> dict[str, Any]:
    return {"newsletter": {"summary": summary, "value": value}}


CampaignName = Annotated[str, Path(
    description="Campaign name.",
    openapi_examples=example("weekly-newsletter", "The example campaign"))]
SlotName = Annotated[str, Path(description="Slot name.",
                               openapi_examples=example("subject_line", "A slot"))]
ArmId = Annotated[str, Path(description="Arm id.",
                            openapi_examples=example("question", "A non-default arm"))]
UserIdPath = Annotated[str, Path(description="Subscriber id.",
                                 openapi_examples=example("subscriber-42", "A subscriber"))]


# -- bodies of the routes that read their own ---------------------------------------------------

BATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/BatchDecisionRequest"},
            "examples": example({"campaign": "weekly-newsletter",
                                 "requests": EXAMPLE_REQUESTS}, "Two subscribers")},
        NDJSON: {"schema": {"type": "array", "minItems": 1,
                            "items": {"$ref": "#/components/schemas/DecisionRequest"}},
                 "examples": example(EXAMPLE_REQUESTS, "Two lines"),
                 "x-description": "One DecisionRequest per line, all for one campaign."},
    },
}
BATCH_OK: dict[int | str, dict[str, Any]] = {200: {
    "description": "Decisions in request order: a BatchDecisionResponse, or one Decision "
                   "per line when the request was NDJSON.",
    "content": {NDJSON: {"schema": {
        "type": "array", "items": {"$ref": "#/components/schemas/Decision"}}}}}}

_EVENT_LIST = {"type": "array", "minItems": 1, "items": {"oneOf": [
    {"$ref": "#/components/schemas/Impression"}, {"$ref": "#/components/schemas/Click"}],
    "discriminator": {"propertyName": "type", "mapping": {
        "impression": "#/components/schemas/Impression",
        "click": "#/components/schemas/Click"}}}}
EVENTS_BODY = {"required": True, "content": {
    "application/json": {"schema": _EVENT_LIST,
                         "examples": example(_EXAMPLE_EVENTS, "An impression, a click")},
    NDJSON: {"schema": _EVENT_LIST, "x-description": "One event per line.",
             "examples": example(_EXAMPLE_EVENTS, "An impression, a click")}}}


# -- the document --------------------------------------------------------------------------------


def openapi(app: FastAPI, schemes: set[str]) -> dict[str, Any]:
    """The app's OpenAPI document, made once: FastAPI's, with the security schemes of
    ``schemes`` only (the tokens configured), ErrorResponse as the only 422 shape, and the
    models of the bodies the NDJSON-capable routes read themselves (FastAPI does not know
    them) in the components."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _configured_only(schema, schemes)
        # FastAPI declares its own 422 shape on routes with parameters; ours is ErrorResponse,
        # declared where a 422 can happen (plain path strings cannot fail).
        for operations in schema["paths"].values():
            for operation in operations.values():
                if "HTTPValidationError" in str(operation["responses"].get("422")):
                    del operation["responses"]["422"]
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for model in (BatchDecisionRequest, DecisionRequest, Decision, Impression, Click):
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in extra.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, extra)
        app.openapi_schema = schema
    return app.openapi_schema


def _configured_only(schema: dict[str, Any], schemes: set[str]) -> None:
    """Drop the security schemes not in ``schemes``: without its token, a route is open and
    the document says so (no security)."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            kept = [s for s in operation.get("security", []) if set(s) <= schemes]
            if kept:
                operation["security"] = kept
            else:
                operation.pop("security", None)
    components = schema["components"]
    declared = components.get("securitySchemes", {})
    if kept_schemes := {k: v for k, v in declared.items() if k in schemes}:
        components["securitySchemes"] = kept_schemes
    else:
        components.pop("securitySchemes", None)
