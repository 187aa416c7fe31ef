"""The operator's pages, outside the OpenAPI document: the web console at ``/console`` and
the API reference at ``/docs`` (Swagger UI), both offline: their files come from this
package (``bandit.service.console.ASSETS``) and from ``fastapi-offline`` (Swagger UI 5, which
reads the OpenAPI 3.1 document FastAPI writes), never a CDN.

The console polls ``GET /console/state`` (every campaign's report, the decisions this
replica served per slot and arm, the age of the state it follows) and keeps the history
of the allocation over time in the page: it starts when the page opens. Pause, resume,
add and retire arm call the campaign routes with the management token the page asks for.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import fastapi_offline
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from bandit.engine import Engine
from bandit.models import OUTCOME_TYPES
from bandit.service.console import ASSETS, allocation_heatmap
from bandit.service.dependencies import EngineDep, LinkDep, MetricsDep, off_loop
from bandit.service.link import Link
from bandit.service.metrics import Metrics
from bandit.service.reading import StrictRoute

router = APIRouter(route_class=StrictRoute, include_in_schema=False)
_PAGE = (ASSETS / "index.html").read_text()
_SWAGGER = Path(fastapi_offline.__file__).parent / "static"


def add_pages(app: FastAPI) -> None:
    """Serve the console and /docs with their files (the app is made with ``docs_url=None``
    and ``redoc_url=None``: FastAPI's own pages load Swagger UI and ReDoc from a CDN)."""
    app.router.routes.extend(router.routes)
    app.mount("/console/assets", StaticFiles(directory=ASSETS), name="console-assets")
    app.mount("/docs/assets", StaticFiles(directory=_SWAGGER),
              name="docs-assets")


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/console", response_class=HTMLResponse)
async def console(request: Request) -> HTMLResponse:
    """The console page; its relative links resolve under ``<root>/console/``."""
    return HTMLResponse(_PAGE.replace("__BASE__", html.escape(f"{_root(request)}/console/")))


@router.get("/console/state")
async def console_state(engine: EngineDep, metrics: MetricsDep, link: LinkDep,
                        request: Request) -> Response:
    """What the console shows, read at once: every campaign's report and heatmaps, the
    decisions served by this replica, the state's age, whether a token is needed."""
    state = await off_loop(_state, engine, metrics, link)
    state["token_required"] = request.app.state.api_token is not None
    return Response(orjson.dumps(state), media_type="application/json")


def _state(engine: Engine, metrics: Metrics, link: Link | None) -> dict[str, Any]:
    served: dict[str, dict[str, dict[str, int]]] = {}
    for metric in metrics.decisions.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                slots = served.setdefault(labels["campaign"], {})
                slots.setdefault(labels["slot"], {})[labels["arm"]] = int(sample.value)
    campaigns = []
    for spec in engine.campaigns():
        report = engine.report(spec.name).model_dump(mode="json")
        counts = served.get(spec.name, {})
        campaigns.append({
            "name": spec.name, "served": counts,
            "decisions": max((sum(arms.values()) for arms in counts.values()), default=0),
            # Per slot, the arm features a new arm must bring (empty: none).
            "arm_features": {s.name: [f.name for f in s.arm_features] for s in spec.slots},
            "heatmaps": [allocation_heatmap(slot) for slot in report["slots"]],
            "report": report})
    return {"mode": "in process" if link is None else "stream", "outcome_types": OUTCOME_TYPES,
            "state_age_s": None if link is None else link.state_age_s(),
            "campaigns": campaigns}


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI over the app's OpenAPI document, its script and style from the package;
    no favicon and no validator badge, so that the page asks no other host for anything."""
    app, root = request.app, _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}", title=f"{app.title}: API reference",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url="data:,", swagger_ui_parameters={"validatorUrl": None})
