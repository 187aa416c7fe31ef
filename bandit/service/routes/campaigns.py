"""Campaign management: create, read, add and retire arms, pause, report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import Response
from pydantic import TypeAdapter

from bandit.errors import NotFoundError
from bandit.models import CampaignReport, CampaignSpec
from bandit.service.bodies import AddArmRequest, PauseRequest, PauseState, as_json
from bandit.service.dependencies import MANAGED, EngineDep, LinkDep, off_loop, published
from bandit.service.errors import ServiceError, responses
from bandit.service.openapi import EXAMPLE_CAMPAIGN, ArmId, CampaignName, SlotName, example
from bandit.service.reading import StrictRoute

router = APIRouter(route_class=StrictRoute)
_SPECS = TypeAdapter(list[CampaignSpec])


@router.post("/v1/campaigns", status_code=201, response_model=CampaignSpec, tags=["campaigns"],
             dependencies=[MANAGED], responses=responses(400, 401, 403, 409, 413, 422, 503))
async def create_campaign(
    spec: Annotated[CampaignSpec, Body(openapi_examples=example(
        EXAMPLE_CAMPAIGN, "Subject line (LinUCB) and artwork (hybrid LinUCB)"))],
    engine: EngineDep, link: LinkDep,
) -> Response:
    """Create a campaign: context schema, holdout, attribution window, ordered slots."""
    created = await off_loop(engine.create_campaign, spec)
    await published(link, spec.name)
    return as_json(created, 201)


@router.get("/v1/campaigns", response_model=list[CampaignSpec], tags=["campaigns"])
async def list_campaigns(engine: EngineDep) -> Response:
    """Every campaign's spec, with the arms added since it was created."""
    specs = await off_loop(engine.campaigns)
    return Response(_SPECS.dump_json(specs), media_type="application/json")


@router.get("/v1/campaigns/{campaign}", response_model=CampaignSpec, tags=["campaigns"],
            responses=responses(404))
async def get_campaign(campaign: CampaignName, engine: EngineDep) -> Response:
    """One campaign's spec, with the arms added since it was created."""
    return as_json(await off_loop(engine.campaign, campaign))


@router.post("/v1/campaigns/{campaign}/arms", status_code=201, response_model=CampaignSpec,
             tags=["campaigns"], dependencies=[MANAGED],
             responses=responses(400, 401, 403, 404, 409, 413, 422, 503))
async def add_arm(
    campaign: CampaignName,
    body: Annotated[AddArmRequest, Body(openapi_examples=example(
        {"slot": "artwork", "arm": {"id": "comedy", "features": {"scene": "comedy"}}},
        "A new artwork, scored from its features"))],
    engine: EngineDep, link: LinkDep,
) -> Response:
    """Add an arm to a slot; hybrid policies score it from its features at once."""
    try:
        changed = await off_loop(engine.add_arm, campaign, body.slot, body.arm)
    except NotFoundError as error:
        if not any(spec.name == campaign for spec in engine.campaigns()):
            raise
        # The campaign exists: what is missing is the slot the body names.
        raise ServiceError(404, "not_found", str(error), field="slot") from None
    await published(link, campaign)
    return as_json(changed, 201)


@router.delete("/v1/campaigns/{campaign}/slots/{slot}/arms/{arm}", response_model=CampaignSpec,
               tags=["campaigns"], dependencies=[MANAGED],
               responses=responses(401, 403, 404, 409, 503))
async def retire_arm(campaign: CampaignName, slot: SlotName, arm: ArmId, engine: EngineDep,
                     link: LinkDep) -> Response:
    """Retire an arm: never chosen again. Its statistics stay; retiring twice is a no-op."""
    changed = await off_loop(engine.retire_arm, campaign, slot, arm)
    await published(link, campaign)
    return as_json(changed)


@router.post("/v1/campaigns/{campaign}/pause", response_model=PauseState, tags=["campaigns"],
             dependencies=[MANAGED], responses=responses(400, 401, 403, 404, 413, 422, 503))
async def pause(
    campaign: CampaignName,
    engine: EngineDep, link: LinkDep,
    body: Annotated[PauseRequest | None, Body(
        openapi_examples=example({"paused": False}, "Resume"))] = None,
) -> PauseState:
    """Kill switch: while paused everyone gets the default arms. Without a body: pause.
    Resuming a campaign that a guardrail paused (the report's ``paused_by`` says why) clears
    the reason and restarts its guardrails' test from the decisions since the resume."""
    paused = True if body is None else body.paused
    await off_loop(engine.pause, campaign, paused)
    await published(link, campaign)
    return PauseState(campaign=campaign, paused=paused)


@router.get("/v1/campaigns/{campaign}/report", response_model=CampaignReport,
            tags=["campaigns"], responses=responses(404, 503))
async def report(campaign: CampaignName, engine: EngineDep) -> Response:
    """Per-arm statistics, holdout lift with its interval, bias audit by segment."""
    return as_json(await off_loop(engine.report, campaign))
