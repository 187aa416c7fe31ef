"""The base of every contract model: strict and closed (``extra="forbid"``), so a typo or a
wrong type is refused at the edge with the field's name, never half-understood inside."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


def _as_enforced(schema: dict[str, Any]) -> None:
    """State in a model's JSON Schema what validation enforces, where pydantic's schema is
    laxer (a schema-valid body would get a 422). The key pattern of ``dict[Name, X]``: pydantic
    writes ``patternProperties``, under which a key that misses the pattern may hold anything;
    here every key must match (``propertyNames``) and every value is an X
    (``additionalProperties``). A tag (``type``, ``kind``: a constant with a default) is
    required: the tagged unions that read these models need it."""
    for value in schema.values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, dict):
                _as_enforced(inner)
    patterns = schema.pop("patternProperties", None)
    if patterns:
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values
    tags = [name for name, p in schema.get("properties", {}).items()
            if isinstance(p, dict) and "const" in p and "default" in p]
    if tags:
        schema["required"] = [*tags, *schema.get("required", [])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              json_schema_extra=_as_enforced)
