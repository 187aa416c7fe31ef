"""Errors as the service answers them: ``ServiceError``, the status of each error code, the
error body, and the exception handlers, the only place where errors become statuses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from bandit.errors import BanditError
from bandit.models import Strict

_STATUS = {
    "invalid_input": 422,
    "unknown_arm": 422,
    "incompatible_state": 422,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
    "over_capacity": 503,
}
_HTTP_CODES = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_input", 503: "unavailable"}
_DESCRIPTIONS = {
    400: "The body is not JSON: a syntax error (with its line and column), not UTF-8 (UTF-16, "
         "a byte order mark), or a repeated key.",
    401: "Missing or malformed `Authorization: Bearer <token>` (only when a token is configured).",
    403: "Wrong token.",
    404: "No such campaign, slot or arm.",
    409: "Conflicts with the current state.",
    413: "The body exceeds the configured maximum size (bytes, or rows of a batch).",
    415: "The body is not `application/json` (or `application/x-ndjson` where accepted).",
    422: "Valid JSON that breaks the schema, or a context the campaign does not accept.",
    503: "Not ready yet (kernels compiling, state loading), or too many decisions waiting for "
         "their attribution windows (`over_capacity`): retry after `Retry-After` seconds.",
}


class ErrorDetail(Strict):
    field: str | None = Field(None, description="Location of the value, e.g. `slots[0].arms`.")
    message: str


class ErrorInfo(Strict):
    code: str = Field(description="Stable code: malformed_body, unauthorized, forbidden, "
                      "not_found, method_not_allowed, conflict, request_timeout, "
                      "payload_too_large, unsupported_media_type, invalid_input, unknown_arm, "
                      "incompatible_state, unavailable, over_capacity.")
    message: str
    field: str | None = Field(None, description="The (first) offending field, when known.")
    errors: list[ErrorDetail] | None = Field(None, description="Every validation error.")


class ErrorResponse(Strict):
    error: ErrorInfo


class ServiceError(Exception):
    """An HTTP-level refusal (bad body, auth, size) in the service's error shape."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 errors: list[ErrorDetail] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.errors, self.headers = field, errors, headers


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's declared error answers (OpenAPI ``responses``)."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


def error_body(code: str, message: str, field: str | None = None,
               errors: list[ErrorDetail] | None = None) -> bytes:
    info = ErrorInfo(code=code, message=message, field=field, errors=errors)
    return ErrorResponse(error=info).model_dump_json(exclude_none=True).encode()


# -- errors named as the caller knows the value -----------------------------------------------

# pydantic names the member of a union it tried (`context.x.float`); users named none of them.
_UNION_MEMBER = re.compile(
    r"^(float|int|str|bool|none|constrained-\w+|function-\w+\[.*\]|(list|dict|set|union|"
    r"tagged-union|nullable|json-or-python|lax-or-strict)\[.*\])$"
)


# Event types: pydantic puts the tag of a tagged union in the location (`[0].impression.ts`).
EVENT_TAGS = frozenset({"impression", "click"})


def _path(loc: Sequence[int | str], tags: frozenset[str] = frozenset()) -> str | None:
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in tags and (i == 0 or isinstance(loc[i - 1], int)):
            continue  # the item's type, not a field of it
        elif not _UNION_MEMBER.match(part):
            path += f".{part}" if path else part
    return path or None


# The engine names a context value it refuses as "context row <i>: ... '<feature>' ...".
_ENGINE_CONTEXT = re.compile(r"^context row \d+: (?P<reason>[^']*'(?P<feature>[^']+)'.*)$", re.S)


def refused(where: str, error: BanditError, *, ndjson: bool, prefix: str = "") -> ServiceError:
    """The engine's refusal of one item of a batch, named as the caller knows it: ``where`` is
    ``requests[6]`` / ``[6]`` (JSON) or ``line 7`` (NDJSON); a context value it refuses becomes
    the field ``requests[6].context.age`` (in NDJSON: ``line 7: context.age``)."""
    reason, inner = str(error), None
    if match := _ENGINE_CONTEXT.match(reason):
        reason, inner = match["reason"], f"context.{match['feature']}"
    if ndjson:
        field, message = inner, f"{where}: " + (f"{inner}: " if inner else "")
    else:
        field = f"{where}.{inner}" if inner else where
        message = f"{field}: "
    return ServiceError(422, "invalid_input", message + prefix + reason, field=field)


def invalid(errors: Iterable[Mapping[str, Any]], *, line: int | None = None,
            tags: frozenset[str] = frozenset()) -> ServiceError:
    """One 400 (not JSON) or 422 (breaks the schema) from pydantic's error list."""
    where = f"line {line}: " if line is not None else ""
    errors = list(errors)
    for error in errors:
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error") or error["msg"]
            what = f"line {line}" if line is not None else "body"
            return ServiceError(400, "malformed_body", f"{what} is not valid JSON: {reason}")
    details: dict[str | None, list[str]] = {}
    for error in errors:
        # Members of one union fail together at one place: one entry, their reasons joined.
        details.setdefault(_path(error["loc"], tags), []).append(error["msg"])
    listed = [ErrorDetail(field=f, message=" or ".join(dict.fromkeys(m)))
              for f, m in details.items()]
    message = "; ".join(f"{d.field or 'body'}: {d.message}" for d in listed)
    return ServiceError(422, "invalid_input", where + message, field=listed[0].field,
                        errors=listed)


# -- the handlers ------------------------------------------------------------------------------


def _answer(request: Request, status: int, code: str, message: str, *,
            field: str | None = None, errors: list[ErrorDetail] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
    """The error answer, counted by code in the app's metrics."""
    request.app.state.metrics.errors.labels(code).inc()
    return Response(error_body(code, message, field, errors), status, headers=headers,
                    media_type="application/json")


async def bandit_error(request: Request, error: BanditError) -> Response:
    status = _STATUS.get(error.code, 500)  # an unmapped code is our bug, not the caller's
    if error.code == "unknown_arm" and "arm" in request.path_params:
        status = 404  # the path names the arm: the resource does not exist
    headers = {"Retry-After": "1"} if error.retriable else None
    return _answer(request, status, error.code, str(error), headers=headers)


async def service_error(request: Request, error: ServiceError) -> Response:
    return _answer(request, error.status, error.code, error.message, field=error.field,
                   errors=error.errors, headers=error.headers)


async def validation_error(request: Request, error: RequestValidationError) -> Response:
    # FastAPI's locations start with where the value was (body, path, query, header).
    problem = invalid({**e, "loc": tuple(e["loc"])[1:]} for e in error.errors())
    return await service_error(request, problem)


async def http_error(request: Request, error: HTTPException) -> Response:
    message, headers = str(error.detail), error.headers
    if error.status_code == 400:  # FastAPI's words for a body that is not UTF-8
        message = f"body is not valid JSON: {message}"
    if error.status_code == 405:  # Starlette's Allow names the first route of the path only
        headers = {**(headers or {}), "Allow": _allowed(request.app.routes, request.scope)}
    return _answer(request, error.status_code, _HTTP_CODES.get(error.status_code, "http_error"),
                   message, headers=headers)


def _allowed(routes: Iterable[Any], scope: Scope) -> str:
    """The Allow header of a 405: the methods of every route whose path matches."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def add_handlers(app: FastAPI) -> None:
    """Install the handlers that answer every error in the service's shape."""
    app.add_exception_handler(BanditError, bandit_error)  # type: ignore[arg-type]
    app.add_exception_handler(ServiceError, service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
