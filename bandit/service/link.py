"""What the service needs of its link to the stream (stream mode): the service receives the
link from its caller (``cmab serve`` builds ``streams.link.StreamLink``), so that ``bandit/``
never imports ``streams/``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLog, DecisionLogStatus
from bandit.engine.join import OVER_CAPACITY, Joinable
from bandit.models import Impression, Outcome, Send

logger = logging.getLogger("bandit.service")


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
    """The in-process decision log (no stream): the decide calls' decisions go to the
    engine's own attribution join, as the stream worker's join reads them from
    ``<prefix>.decisions``, in batches.

    The sink (``__call__``, the engine's ``decision_sink``) only queues the call's log, under
    a lock of its own: deciding never waits on the join. ``flush`` ingests the queue in one
    call, each campaign's queued logs concatenated into one run of columns (``Joiner.add``
    takes a ``DecisionLog`` as its decisions: no object per decision): a
    background thread calls it once ``batch`` decisions wait or the oldest has waited
    ``delay_s``, and the engine calls it (``Engine.before_join``, which this log sets) before
    anything that reads or changes the join or what it learned: events, erasure, report,
    snapshot, open windows. A decision is thus in the join before any event that names it,
    whenever that event comes after the decision's answer. The thread ends after ``idle_s``
    without decisions and the next decision starts another.

    Never an error for the decision already made: a decision the join cannot hold (its
    campaign has ``max_pending`` decisions open when the queue is ingested) is counted as
    unlogged ("over_capacity") and will not be learned. Counts (``decision_log_status``):
    ``logged``, the decisions the join took; ``queued``, those decided and not ingested yet;
    every decision is in exactly one of logged, over_capacity and queued."""

    # The join reads no probability vector: the engine need not compute them.
    probabilities = False

    def __init__(self, engine: Engine, *, batch: int = 4096, delay_s: float = 0.05,
                 idle_s: float = 1.0) -> None:
        self._engine = engine
        self.batch, self.delay_s, self.idle_s = batch, delay_s, idle_s
        self._ready = threading.Condition(threading.Lock())  # guards the queue and counts
        self._logs: list[DecisionLog] = []
        self._waiting = 0  # decisions in _logs
        self._since = 0.0  # when the oldest of _logs came (time.monotonic)
        self._thread: threading.Thread | None = None
        self._flushing = False  # read and set with the engine's lock held
        self.queued = 0  # decided, not counted yet: _logs and the ingest under way
        self.logged = 0
        self.over_capacity = 0
        engine.before_join = self.flush

    def __call__(self, log: DecisionLog) -> None:
        n = len(log)
        with self._ready:
            if not self._logs:
                self._since = time.monotonic()
            self._logs.append(log)
            self._waiting += n
            self.queued += n
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="join-log", daemon=True)
                self._thread.start()
            elif len(self._logs) == 1 or self._waiting - n < self.batch <= self._waiting:
                self._ready.notify()  # the thread waits for a first log, or for a batch

    def flush(self) -> None:
        """Ingest the queued decisions into the join, in one call, holding the engine's lock:
        whoever takes the lock next finds them in the join."""
        with self._engine.lock:
            if self._flushing:  # the ingest below: the engine asks before it joins
                return
            with self._ready:
                logs, self._logs, self._waiting = self._logs, [], 0
            if not logs:
                return
            # The engine's own decisions: known campaigns and arms, consent applied by the
            # join (it reads a decision's context and segments only with consent).
            n = sum(map(len, logs))
            self._flushing = True
            try:
                # Runs: the join takes a DecisionLog as its decisions (``Joiner.add``).
                result = self._engine.ingest(cast("list[Joinable]", _runs(logs)), checked=True)
            finally:
                self._flushing = False
        over = sum(r.reason.startswith(OVER_CAPACITY) for r in result.rejected)
        with self._ready:
            self.queued -= n
            self.logged += n - over
            self.over_capacity += over

    def _run(self) -> None:
        """The background thread: flush a batch, or what waited ``delay_s``."""
        while True:
            with self._ready:
                if not self._logs and not self._ready.wait_for(lambda: self._logs,
                                                               self.idle_s):
                    self._thread = None
                    return
                while (self._waiting < self.batch
                       and (left := self._since + self.delay_s - time.monotonic()) > 0):
                    self._ready.wait(left)
            try:
                self.flush()
            except Exception:  # a bug of ours: the decisions stay counted as queued
                logger.exception("the in-process decision log could not join decisions")

    def decision_log_status(self) -> DecisionLogStatus:
        """The counts once the queue is ingested (the metrics')."""
        self.flush()
        with self._ready:
            return DecisionLogStatus(self.logged, {"over_capacity": self.over_capacity},
                                     self.queued, None)


def _runs(logs: list[DecisionLog]) -> list[DecisionLog]:
    """The queued logs as the join's runs: one per campaign and slot arms (the logs of a
    campaign whose arms did not change, concatenated in order), campaigns in the order they
    first came. No probability vectors: the engine computed none for the join, which reads
    none. A campaign's decisions keep their order, so its admission under ``max_pending``
    is the same as one by one."""
    groups: dict[str, list[DecisionLog]] = {}
    for log in logs:
        groups.setdefault(log.campaign, []).append(log)
    runs = []
    for group in groups.values():
        try:
            runs.append(DecisionLog.concat(group, probabilities=False))
            continue
        except ValueError:  # an arm was added since a call: a run per arm set
            pass
        split = [[group[0]]]
        for log in group[1:]:
            if DecisionLog.joinable(split[-1][-1], log):
                split[-1].append(log)
            else:
                split.append([log])
        runs += [DecisionLog.concat(logs, probabilities=False) for logs in split]
    return runs
