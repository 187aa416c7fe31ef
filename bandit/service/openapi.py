"""What the OpenAPI document adds to FastAPI's: examples (/docs; schemathesis replays them),
the bodies of the routes that read their own (JSON or NDJSON), and ``openapi``, the document
of an app."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path
from fastapi.openapi.utils import get_openapi

from bandit.models import (
    BatchDecisionRequest,
    Bounce,
    Click,
    Complaint,
    Conversion,
    Decision,
    DecisionRequest,
    Impression,
    Open,
    Send,
    Unsubscribe,
)
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
_DECISION = "5" * 32
_T0 = 1_700_000_000_000
# What a sender and a tracker post about one email: its send, then every outcome type (a
# proxy's open flagged as a machine's, a click on one slot, a conversion with its value).
_EXAMPLE_EVENTS = [
    {"type": "send", "event_id": "send-1", "decision_id": _DECISION, "ts": _T0},
    {"type": "open", "event_id": "open-0", "decision_id": _DECISION, "ts": _T0 + 1_000,
     "machine": True},
    {"type": "open", "event_id": "open-1", "decision_id": _DECISION, "ts": _T0 + 60_000},
    {"type": "click", "event_id": "click-1", "decision_id": _DECISION,
     "campaign": "weekly-newsletter", "slot": "artwork", "ts": _T0 + 90_000},
    {"type": "conversion", "event_id": "conversion-1", "decision_id": _DECISION,
     "ts": _T0 + 600_000, "value": 49.9},
    {"type": "unsubscribe", "event_id": "unsubscribe-1", "decision_id": _DECISION,
     "ts": _T0 + 700_000},
    {"type": "complaint", "event_id": "complaint-1", "decision_id": _DECISION,
     "ts": _T0 + 800_000},
    {"type": "bounce", "event_id": "bounce-1", "decision_id": "6" * 32, "ts": _T0},
]
# The old shapes, still read: an impression (decision and send of one made elsewhere) and a
# click with a reward.
_LEGACY_EVENTS = [
    {"type": "impression", "event_id": "imp-1", "decision_id": _DECISION,
     "campaign": "weekly-newsletter", "user_id": "subscriber-42", "ts": _T0,
     "slots": {"subject_line": {"arm": "urgent", "propensity": 0.4},
               "artwork": {"arm": "calm", "propensity": 0.6}},
     "context": {"engagement": 0.7, "plan": "pro"}, "segments": {"region": "eu"}},
    {"type": "click", "event_id": "click-1", "decision_id": _DECISION,
     "campaign": "weekly-newsletter", "ts": _T0 + 60_000, "reward": 1.0},
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

_EVENT_MODELS = (Impression, Send, Open, Click, Conversion, Unsubscribe, Complaint, Bounce)
_EVENT_NAMES = {m.model_fields["type"].default: m.__name__ for m in _EVENT_MODELS}
_EVENT_LIST = {"type": "array", "minItems": 1, "items": {
    "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in _EVENT_NAMES.values()],
    "discriminator": {"propertyName": "type", "mapping": {
        kind: f"#/components/schemas/{name}" for kind, name in _EVENT_NAMES.items()}}}}
_EVENT_EXAMPLES = {
    "email": {"summary": "A send and every outcome type", "value": _EXAMPLE_EVENTS},
    "legacy": {"summary": "An impression and a click (the old shapes)",
               "value": _LEGACY_EVENTS}}
EVENTS_BODY = {"required": True, "content": {
    "application/json": {"schema": _EVENT_LIST, "examples": _EVENT_EXAMPLES},
    NDJSON: {"schema": _EVENT_LIST, "x-description": "One event per line.",
             "examples": _EVENT_EXAMPLES}}}


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
        for model in (BatchDecisionRequest, DecisionRequest, Decision, *_EVENT_MODELS):
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
