"""Environments by name, as ``cmab simulate --env`` names them."""

from __future__ import annotations

from bandit.errors import InvalidInputError
from simulators.email_campaign import EmailCampaign
from simulators.environments.base import Environment
from simulators.environments.supervised import SupervisedBandit, gaussian_blobs
from simulators.environments.synthetic import Artwork, Email, LinearLogistic

ENVIRONMENT_NAMES = ("artwork", "email", "email4", "linear", "supervised")


def make_environment(
    name: str,
    *,
    seed: int = 0,
    drift_steps: int | None = None,
    new_arm_at: int | None = None,
) -> Environment | EmailCampaign:
    """Build an environment by name with default sizes; seed draws the hidden truth of
    ``linear`` and the dataset of ``supervised`` (the email and artwork truths are documented
    tables, so they need none). ``email`` is the single subject-line slot, ``email4`` the
    four-slot campaign, ``supervised`` a small generated classification set as bandit
    feedback."""
    if name == "email":
        return Email(drift_steps=drift_steps, new_arm_at=new_arm_at)
    if name == "email4":
        return EmailCampaign(drift_steps=drift_steps, new_arm_at=new_arm_at)
    if name == "linear":
        return LinearLogistic(seed=seed, drift_steps=drift_steps, new_arm_at=new_arm_at)
    if name == "artwork":
        return Artwork(drift_steps=drift_steps, new_arm_at=new_arm_at)
    if name == "supervised":
        X, y = gaussian_blobs(seed=seed)
        return SupervisedBandit(X, y, drift_steps=drift_steps, new_arm_at=new_arm_at)
    raise InvalidInputError(
        f"unknown environment {name!r}; expected one of {', '.join(ENVIRONMENT_NAMES)}"
    )
