"""The service's routes, one module-level ``APIRouter`` per resource, in the order the app
includes them (the order of the OpenAPI document's paths)."""

from __future__ import annotations

from bandit.service.routes import campaigns, decisions, events, operations

ROUTERS = (campaigns.router, decisions.router, events.router, operations.router)

__all__ = ["ROUTERS"]
