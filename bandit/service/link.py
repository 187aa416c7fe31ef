"""What the service needs of its link to the stream (stream mode): the service receives the
link from its caller (``cmab serve`` builds ``streams.link.StreamLink``), so that ``bandit/``
never imports ``streams/``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLog, DecisionLogStatus
from bandit.engine.join import OVER_CAPACITY
from bandit.models import Impression, Outcome, Send


class Link(Protocol):
    """The service's side of the stream: campaign changes and events go out, the model
    follows the state the workers write."""

    def campaign_changed(self, name: str) -> None:
        """Publish the campaign's record after a create, add or retire arm, or pause."""

    def events(self, events: Sequence[Impression | Send | Outcome]) -> int:
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


class DecisionLogged(Protocol):
    """What reports a decision log's counts: the link, or the in-process ``JoinLog``."""

    def decision_log_status(self) -> DecisionLogStatus: ...


class JoinLog:
    """The in-process decision log (no stream): each decide call's decisions go to the
    engine's own attribution join, as the stream worker's join reads them from
    ``<prefix>.decisions``. Never an error for the decision already made: a decision the join
    cannot hold (its campaign has ``max_pending`` decisions open) is counted as unlogged
    ("over_capacity") and will not be learned."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.logged = 0
        self.over_capacity = 0

    def __call__(self, log: DecisionLog) -> None:
        # The engine's own decisions: known campaigns and arms, consent applied by the log.
        result = self._engine.ingest(log.for_join(), checked=True)
        over = sum(r.reason.startswith(OVER_CAPACITY) for r in result.rejected)
        with self._lock:
            self.logged += len(log) - over
            self.over_capacity += over

    def decision_log_status(self) -> DecisionLogStatus:
        with self._lock:
            return DecisionLogStatus(self.logged, {"over_capacity": self.over_capacity}, 0,
                                     None)
