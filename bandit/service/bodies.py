"""The answers of the routes that are not decisions, written as JSON; their models live with
the contract (:mod:`bandit.models.answers`), where ``bandit.client`` reads them too."""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import BaseModel

from bandit.models.answers import Accepted as Accepted
from bandit.models.answers import AddArmRequest as AddArmRequest
from bandit.models.answers import Erased as Erased
from bandit.models.answers import Health as Health
from bandit.models.answers import PauseRequest as PauseRequest
from bandit.models.answers import PauseState as PauseState
from bandit.models.answers import Readiness as Readiness


def as_json(model: BaseModel, status: int = 200) -> Response:
    """A JSON answer whose bytes pydantic writes: no dict round trip."""
    return Response(model.model_dump_json(), status, media_type="application/json")
