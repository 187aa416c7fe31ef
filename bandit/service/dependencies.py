"""What the routes receive through ``Depends``: the app's engine, settings, metrics, coalesced
single decisions and stream link, which ``create_app`` keeps in ``app.state``; the token
checks of the management and events routes."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from bandit.engine import Engine
from bandit.service.errors import ServiceError
from bandit.service.link import Link
from bandit.service.metrics import Metrics
from bandit.service.singles import Singles
from bandit.settings import Settings

_T = TypeVar("_T")


# Coroutines: FastAPI runs a plain function dependency in a thread.
async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_singles(request: Request) -> Singles:
    return request.app.state.singles


async def get_link(request: Request) -> Link | None:
    """The link to the stream, made at start-up (stream mode), else None."""
    return request.app.state.link


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SinglesDep = Annotated[Singles, Depends(get_singles)]
LinkDep = Annotated[Link | None, Depends(get_link)]


async def off_loop(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` in a thread: engine calls hold its lock and may take a while, and
    meanwhile /healthz and the other requests keep being answered."""
    return await run_in_threadpool(function, *args)


async def published(link: Link | None, campaign: str) -> None:
    """Publish the campaign's record to the stream after a change (stream mode)."""
    if link is not None:
        await off_loop(link.campaign_changed, campaign)


# -- tokens --------------------------------------------------------------------------------------

# The security scheme is named after its setting (tests send each scheme its setting's token).
# Declared on every route that takes it; the OpenAPI document keeps only the configured ones.
API_TOKEN, INGEST_TOKEN = "api_token", "ingest_token"
_bearer = HTTPBearer(auto_error=False, scheme_name=API_TOKEN,
                     description="The configured API token (setting api_token).")
_ingest_bearer = HTTPBearer(auto_error=False, scheme_name=INGEST_TOKEN,
                            description="The configured ingest token (setting ingest_token).")


def _authorize(credentials: HTTPAuthorizationCredentials | None, expected: bytes | None,
               which: str) -> None:
    if expected is None:
        return
    if credentials is None:
        raise ServiceError(401, "unauthorized", "expected an 'Authorization: Bearer <token>' "
                           "header", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise ServiceError(403, "forbidden", f"the bearer token is not the configured "
                           f"{which} token")


async def management(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Require the bearer token on management routes, when one is configured."""
    _authorize(credentials, request.app.state.api_token, "management")


async def ingest(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_ingest_bearer)],
) -> None:
    """Require the ingest token on the events route, when one is configured."""
    _authorize(credentials, request.app.state.ingest_token, "ingest")


MANAGED = Security(management)
INGESTED = Security(ingest)
