"""The management requests and the answers of the routes that are not decisions, campaigns or
reports: what the service writes and ``bandit.client`` reads, so they live with the contract
(not in ``bandit.service``, which a client should not have to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bandit.models.base import Strict
from bandit.models.names import Name
from bandit.models.specs import Arm


class AddArmRequest(Strict):
    slot: Name
    arm: Arm


class PauseRequest(Strict):
    paused: bool = Field(True, description="True pauses (default arms for everyone); False "
                         "resumes.")


class PauseState(Strict):
    campaign: str
    paused: bool


class Accepted(Strict):
    accepted: int = Field(description="Events the engine took in.")


class Erased(Strict):
    erased: int = Field(description="Pending decisions of the subject this process dropped "
                        "(0 in stream mode: the workers hold them).")
    forgotten: int = Field(description="Learned decisions of the subject taken out of this "
                           "process's model (every policy with sums) and its erasure ledger.")
    retrain: dict[str, list[str]] = Field(
        description="Per campaign, the VW slots that learned some of those decisions: VW cannot "
        "subtract them; retrain these slots from the log without the subject.")
    complete: bool = Field(
        description="The erasure ledger holds every decision this model learned (none dropped "
        "by its bound, CMAB_ERASURE_LEDGER): the subject's contributions are all gone. False: "
        "older contributions of the subject may remain in the model; always in stream mode, "
        "where the model follows the workers' state and the workers keep no ledger yet.")
    forwarded: bool = Field(description="The erasure was written to the stream (stream mode) "
                            "before this answer: every worker applies it, also after a "
                            "restart.")


class Health(Strict):
    status: Literal["ok", "ready"]


class Readiness(Health):
    state_age_s: float | None = Field(
        None, description="Seconds since the model last followed the stream's state topic "
        "(stream mode only; null before the first state).")
    decision_log: str | None = Field(
        None, description="Stream mode, when the decision log is failing: why (the broker "
        "does not take decisions, its queue is full). Decisions are still made (the service "
        "stays ready: a 503 would take every replica out at once when the broker is down), "
        "but those the log loses are counted in cmab_decisions_unlogged_total.")
