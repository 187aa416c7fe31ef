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
    """Ready to decide at full speed: kernels compiled or loaded from the cache. In stream
    mode a failing decision log is reported (``decision_log``) but keeps the answer 200:
    deciding goes on without the broker, so taking the replicas out of service would turn a
    logging outage into a decision outage; the lost decisions are counted in /metrics."""
    if not engine.ready:
        raise ServiceError(503, "unavailable", "warming up: kernels are compiling",
                           headers={"Retry-After": "1"})
    if link is None:
        return Readiness(status="ready")
    return Readiness(status="ready", state_age_s=link.state_age_s(),
                     decision_log=link.decision_log_status().failing)


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"description": "Prometheus text exposition format 0.0.4.",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus(metrics: MetricsDep) -> Response:
    """Decisions by campaign, slot and arm; decision latency; errors by code; in stream
    mode, stale checkpoints ignored and the decision log's counts (logged, unlogged by
    reason, queued)."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
