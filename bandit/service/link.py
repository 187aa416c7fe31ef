"""What the service needs of its link to the stream (stream mode): the service receives the
link from its caller (``cmab serve`` builds ``streams.link.StreamLink``), so that ``bandit/``
never imports ``streams/``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLogStatus
from bandit.models import Click, Impression


class Link(Protocol):
    """The service's side of the stream: campaign changes and events go out, the model
    follows the state the workers write."""

    def campaign_changed(self, name: str) -> None:
        """Publish the campaign's record after a create, add or retire arm, or pause."""

    def events(self, events: Sequence[Impression | Click]) -> int:
        """Check every event, then send them all (nothing is sent if one is bad): the number
        sent. An event the engine refuses is an InvalidInputError ``event <i> (<event id>):
        <reason>``."""

    def erase(self, user_id: str, at_ms: int) -> None:
        """Erase the subject's decisions up to ``at_ms`` in every worker, durably."""

    def state_age_s(self) -> float | None:
        """Seconds since the model last followed the state topic (None before the first)."""

    def stale_checkpoints(self) -> int:
        """State checkpoints ignored: behind the one absorbed for their partition."""

    def decision_log_status(self) -> DecisionLogStatus:
        """The decision log's counts: decisions logged, lost by reason, queued; why it is
        failing (None when it is not)."""

    def close(self) -> None:
        """Stop following and publishing."""


# Called at start-up, off the event loop, with the app's engine.
LinkFactory = Callable[[Engine], Link]
