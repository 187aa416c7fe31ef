"""The app factory: ``create_app`` wires an engine, its settings, metrics and stream link into
the routes (through ``app.state``), the middleware and the error handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from bandit.engine import Engine
from bandit.service.dependencies import API_TOKEN, INGEST_TOKEN
from bandit.service.errors import add_handlers
from bandit.service.fast_path import SingleFastPath
from bandit.service.limits import BodyLimit
from bandit.service.link import JoinLog, LinkFactory
from bandit.service.metrics import (
    DecisionLogCounts,
    ExcludedCounts,
    GuardrailCounts,
    Metrics,
    StreamCounts,
)
from bandit.service.openapi import openapi
from bandit.service.reading import StrictRoute
from bandit.service.routes import ROUTERS, console
from bandit.service.singles import Singles
from bandit.settings import Settings

log = logging.getLogger("bandit.service")


def tune_gc() -> None:
    """For a process that serves, once the app is built (``cmab serve`` calls it): what is alive
    then (modules, the engine, compiled kernels) leaves the cyclic collector's view, and young
    collections come every 50,000 allocations instead of 700, since parsing and deciding a large
    NDJSON batch otherwise spends much of its time in collections that free nothing.
    Process-wide, hence not done by ``create_app``."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def create_app(engine: Engine | None = None, settings: Settings | None = None,
               link: LinkFactory | None = None) -> FastAPI:
    """The decision service over ``engine``.

    Without an engine the app makes one: loaded from ``settings.snapshot_path`` when that file
    exists, else ``Engine(seed=settings.seed)``; either issues decision ids from the operating
    system's randomness unless ``settings.id_seed`` is set (reproducible runs only).

    Every decision is logged (``Engine.decision_sink``): without a link to the engine's own
    attribution join, in batches (``JoinLog``: queued, and joined before any event, erasure,
    report, snapshot or metric reads the join), in stream mode to ``<prefix>.decisions`` by
    the link.

    ``link`` makes the stream link (stream mode; ``cmab serve`` passes
    ``streams.link.stream_link(...)`` when ``settings.bootstrap_servers`` is set, which then
    requires one). At start-up the link is made by ``link(engine)`` and an engine that is not
    ready is warmed up in the background (``/readyz`` answers 503 until it is done); at
    shutdown the link is closed and the engine saved to ``settings.snapshot_path`` when one is
    set.
    """
    settings = settings if settings is not None else Settings()
    if settings.bootstrap_servers and link is None:
        raise ValueError("settings.bootstrap_servers is set but no stream link was given: pass "
                         "link= (streams.link.stream_link), as cmab serve does")
    snapshot = settings.snapshot_path
    if engine is None:
        seed, id_seed = settings.seed, settings.id_seed
        engine = (Engine.load(snapshot, seed=seed, id_seed=id_seed)
                  if snapshot is not None and snapshot.exists()
                  else Engine(seed=seed, id_seed=id_seed))
    engine.limit_pending(settings.max_pending)
    engine.keep_ledger(settings.erasure_ledger)
    app = FastAPI(
        title="bandit-engine decision service",
        version="1",
        summary="Contextual bandit decisions with propensities, campaign management, events.",
        lifespan=_lifespan,
        docs_url=None, redoc_url=None,  # /docs offline: console.add_pages serves it
        # The service's spans are bandit.tracing's and its metrics prometheus_client's;
        # FastAPI's own telemetry, on, would look for OpenTelemetry providers every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    metrics = Metrics()
    _keep(app, engine, settings, metrics, link)
    metrics.registry.register(StreamCounts(lambda: app.state.link))
    metrics.registry.register(GuardrailCounts(engine))
    if link is None:  # the decision log feeds the engine's own join (the link sets its own)
        join_log = app.state.join_log = JoinLog(engine)
        engine.decision_sink = join_log
        metrics.registry.register(ExcludedCounts(partial(_excluded, engine, join_log)))
    metrics.registry.register(DecisionLogCounts(
        lambda: app.state.link if link is not None else join_log))
    app.router.route_class = StrictRoute
    # The routes themselves, shared by every app (they read it from the request): FastAPI's
    # include_router would wrap each router in one it resolves again on every request.
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    console.add_pages(app)  # /console and /docs, outside the OpenAPI document
    add_handlers(app)
    app.add_middleware(SingleFastPath, engine=engine, singles=app.state.singles,
                       metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       refused=metrics.errors.labels("payload_too_large").inc)
    schemes = {name for name, token in ((API_TOKEN, settings.api_token),
                                        (INGEST_TOKEN, settings.ingest_token)) if token}
    app.openapi = partial(openapi, app, schemes)  # type: ignore[method-assign]
    return app


def _excluded(engine: Engine, join_log: JoinLog) -> dict[str, int]:
    with engine.lock:  # the join updates them under it, after the queued decisions
        join_log.flush()
        return dict(engine.excluded)


def _keep(app: FastAPI, engine: Engine, settings: Settings, metrics: Metrics,
          link: LinkFactory | None) -> None:
    """What the routes, the handlers and the lifespan read from ``app.state``."""
    state = app.state
    state.engine, state.settings, state.metrics = engine, settings, metrics
    state.singles = Singles(engine, metrics)  # concurrent single decisions, decided together
    state.api_token = (settings.api_token.get_secret_value().encode()
                       if settings.api_token else None)
    state.ingest_token = (settings.ingest_token.get_secret_value().encode()
                          if settings.ingest_token else None)
    state.link_factory = link
    state.link = None  # made at start-up
    state.join_log = None  # in process: the decision log (set by create_app)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    engine: Engine = state.engine
    warm_up = None  # referenced until shutdown: the event loop holds tasks only weakly
    if state.link_factory is not None:
        state.link = await run_in_threadpool(state.link_factory, engine)
    if not engine.ready:
        # In the background, so /healthz answers while the kernels compile or load.
        warm_up = asyncio.create_task(run_in_threadpool(engine.warm_up))
        warm_up.add_done_callback(_log_failure)
    yield
    if state.join_log is not None:  # the decisions still queued, into the join
        await run_in_threadpool(state.join_log.flush)
    if state.link is not None:
        link, state.link = state.link, None
        await run_in_threadpool(link.close)
    snapshot = state.settings.snapshot_path
    if snapshot is not None:
        await run_in_threadpool(engine.save, snapshot)
        log.info("engine saved to %s", snapshot)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine warm-up failed; /readyz stays 503", exc_info=task.exception())
