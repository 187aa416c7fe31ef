"""Bodies read strictly: JSON as the service reads it (UTF-8, no repeated key, errors named by
line and column), the media types a route takes, NDJSON lines."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pydantic_core
from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from bandit import wire
from bandit.service.errors import ServiceError, invalid

NDJSON = "application/x-ndjson"

_T = TypeVar("_T")
_Model = TypeVar("_Model", bound=BaseModel)  # or a union of models


def strict_json(body: bytes, what: str) -> None:
    """ServiceError 400 unless ``body`` is JSON as the service reads it: UTF-8 without a byte
    order mark, valid (the reason with its line and column, as pydantic gives it on the other
    routes), no duplicate key."""
    problem = wire.encoding_problem(body)
    if problem is None:
        try:
            pydantic_core.from_json(body)
        except ValueError as error:
            problem = str(error)
        else:
            key = wire.duplicate_key(body)
            problem = None if key is None else f"duplicate key {key!r}"
    if problem is not None:
        raise ServiceError(400, "malformed_body", f"{what} is not valid JSON: {problem}")


def read_body(body: bytes, validate: Callable[[bytes], _T], written: Callable[[_T], bytes],
              line: int | None = None, tags: frozenset[str] = frozenset()) -> _T:
    """``validate(body)`` (a pydantic reader of JSON) with its errors in the service's shape,
    and a repeated key refused as on the routes FastAPI reads (``strict_json``): after syntax
    errors, before schema errors. ``written(item)`` writes the item back with only the fields
    the body gave (``wire.keys_unique``); ``line`` names an NDJSON line."""
    what = "body" if line is None else f"line {line}"
    try:
        item = validate(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if errors[0]["type"] != "json_invalid":
            unique(body, b"", what)  # no item to compare with: the exact check
        raise invalid(errors, line=line, tags=tags) from None
    unique(body, written(item), what)
    return item


def unique(body: bytes, again: bytes, what: str) -> None:
    """ServiceError 400 if the JSON ``body`` repeats a key (``again``: see wire.keys_unique)."""
    if not wire.keys_unique(body, again) and (key := wire.duplicate_key(body)) is not None:
        raise ServiceError(400, "malformed_body",
                           f"{what} is not valid JSON: duplicate key {key!r}")


def encoded(body: bytes) -> None:
    """ServiceError 400 if ``body`` is not UTF-8 (a byte order mark, UTF-16 or UTF-32)."""
    if (problem := wire.encoding_problem(body)) is not None:
        raise ServiceError(400, "malformed_body", f"body is not valid JSON: {problem}")


class StrictRoute(APIRoute):
    """A route whose JSON body FastAPI reads is read strictly first (``strict_json``): Python's
    JSON reader, FastAPI's, takes UTF-16 and duplicate keys silently and names no position for
    a body too deep or not UTF-8. Routes that read their bodies themselves check them there."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await request.body()
            if body and (kind in ("", "application/json") or kind.endswith("+json")):
                strict_json(body, "body")
            return await handler(request)

        return strict


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_ndjson(request: Request) -> bool:
    return media_type(request) == NDJSON


def body_of(*media_types: str) -> Callable[[Request], None]:
    """A dependency refusing (415) a body of any other Content-Type, a missing one included."""
    def check(request: Request) -> None:
        if media_type(request) not in media_types:
            got = request.headers.get("content-type")
            raise ServiceError(415, "unsupported_media_type", f"expected Content-Type "
                               f"{' or '.join(media_types)}, got {got or 'none'}")
    return check


JSON_BODY = Depends(body_of("application/json"))
JSON_OR_NDJSON_BODY = Depends(body_of("application/json", NDJSON))


def lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of an NDJSON body, numbered from 1."""
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            yield number, line


def ndjson_items(body: bytes, adapter: Callable[[bytes], _Model],
                 tags: frozenset[str] = frozenset()) -> Iterator[tuple[int, _Model]]:
    """(line number, validated item) per non-blank line; a bad line is an error naming it."""
    empty = True
    for number, line in lines(body):
        item = read_body(line, adapter,
                         lambda item: item.model_dump_json(exclude_unset=True).encode(), number,
                         tags)
        yield number, item
        empty = False
    if empty:
        raise ServiceError(422, "invalid_input", "expected at least one line")
