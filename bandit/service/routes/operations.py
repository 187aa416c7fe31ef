"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bandit.service.bodies import Health, Readiness
from bandit.service.dependencies import EngineDep, LinkDep, MetricsDep
from bandit.service.errors import ServiceError, responses
from bandit.service.reading import StrictRoute

router = APIRouter(route_class=StrictRoute)


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            tags=["operations"], responses=responses(503))
async def readyz(engine: EngineDep, link: LinkDep) -> Readiness:
    """Ready to decide at full speed: kernels compiled or loaded from the cache."""
    if not engine.ready:
        raise ServiceError(503, "unavailable", "warming up: kernels are compiling",
                           headers={"Retry-After": "1"})
    age = link.state_age_s() if link is not None else None
    return Readiness(status="ready", state_age_s=age)


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"description": "Prometheus text exposition format 0.0.4.",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus(metrics: MetricsDep) -> Response:
    """Decisions by campaign, slot and arm; decision latency; errors by code; in stream
    mode, stale checkpoints ignored."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
