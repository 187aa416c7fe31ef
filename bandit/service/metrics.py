"""The service's Prometheus metrics: one registry per app."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bandit.engine import DecisionBatch, Engine
from bandit.engine.decisionlog import DecisionLogStatus
from bandit.service.link import DecisionLogged, Link


class Metrics:
    """Per-app registry, so several apps (tests, one process) never share or clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "cmab_decisions", "Slot decisions served, by campaign, slot and arm.",
            ["campaign", "slot", "arm"], registry=self.registry)
        self.latency = Histogram(
            "cmab_decision_latency_seconds", "Time to answer a decision request (whole batch "
            "for batches).", ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10, 60))
        self.errors = Counter("cmab_errors", "Error answers, by code.", ["code"],
                              registry=self.registry)
        self.stripped = Counter(
            "cmab_impressions_stripped", "Impressions posted with context or segments for a "
            "decision made without consent: accepted without them.", registry=self.registry)
        self.pending_refused = Counter(
            "cmab_pending_refused", "Impressions refused because their campaign had "
            "max_pending decisions waiting for their attribution windows (each in a request "
            "refused whole), by campaign.", ["campaign"], registry=self.registry)

    def count(self, batch: DecisionBatch) -> None:
        for slot in batch.slots:
            counts = np.bincount(slot.arms, minlength=len(slot.arm_ids))
            for arm, n in zip(slot.arm_ids, counts.tolist(), strict=True):
                if n:  # one labelled increment per arm, not per decision
                    self.decisions.labels(batch.campaign, slot.slot, arm).inc(n)


EXCLUDED_REASONS = ("machine", "scanner", "unsent")


class ExcludedCounts:
    """What the in-process join counted and never learned (``Engine.excluded``), read at each
    scrape: machine-made outcomes, link scanners' clicks, decisions never sent. In stream mode
    the workers count them (``cmab worker``'s counters, in their checkpoints)."""

    def __init__(self, excluded: Callable[[], Mapping[str, int]]) -> None:
        self._excluded = excluded

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family({})]

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield self._family(self._excluded())

    @staticmethod
    def _family(excluded: Mapping[str, int]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "cmab_events_excluded", "Counted, never learned (in process): machine (outcomes "
            "flagged as a proxy's or scanner's), scanner (clicks within the campaign's "
            "scanner_ms of the send), unsent (decisions not sent within their activation "
            "window).", labels=["reason"])
        for reason in sorted({*EXCLUDED_REASONS, *excluded}):
            family.add_metric([reason], excluded.get(reason, 0))
        return family


class StreamCounts:
    """What the stream link counts, read at each scrape (stream mode only): the checkpoints
    its follower ignored because it had absorbed a newer one of the same partition."""

    def __init__(self, link: Callable[[], Link | None]) -> None:
        self._link = link

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family(0)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        link = self._link()
        if link is not None:
            yield self._family(link.stale_checkpoints())

    @staticmethod
    def _family(value: int) -> CounterMetricFamily:
        return CounterMetricFamily(
            "cmab_stale_checkpoints", "State-topic checkpoints the model did not step back "
            "to: behind the one absorbed for their partition (written by a worker that "
            "stalled past its session timeout).", value=value)


class GuardrailCounts:
    """Guardrail breaches per campaign and outcome type (``Engine.breaches``), read at each
    scrape: each paused its campaign (in stream mode, the breaches this replica found on the
    merged model)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family({})]

    def collect(self) -> Iterator[CounterMetricFamily]:
        with self._engine.lock:  # learning counts them under it
            breaches = dict(self._engine.breaches)
        yield self._family(breaches)

    @staticmethod
    def _family(breaches: Mapping[tuple[str, str], int]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "cmab_guardrail_breaches", "Guardrail breaches, by campaign and outcome type: "
            "each paused its campaign until a person resumed it.",
            labels=["campaign", "outcome"])
        for (campaign, outcome), n in sorted(breaches.items()):
            family.add_metric([campaign, outcome], n)
        return family


UNLOGGED_REASONS = ("queue_full", "delivery_failed", "shutdown", "over_capacity")


class DecisionLogCounts:
    """The decision log's counts, read from the stream link at each scrape (stream mode
    only): decisions logged to ``<prefix>.decisions``, decisions decided but not logged by
    reason, and the writer's queue."""

    def __init__(self, link: Callable[[], DecisionLogged | None]) -> None:
        self._link = link

    def describe(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        return self._families(DecisionLogStatus(0, {}, 0, None))

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        link = self._link()
        if link is not None:
            yield from self._families(link.decision_log_status())

    @staticmethod
    def _families(status: DecisionLogStatus) -> list[CounterMetricFamily | GaugeMetricFamily]:
        logged = CounterMetricFamily(
            "cmab_decisions_logged", "Decisions written to the decisions topic (acknowledged "
            "by the broker), or in process taken by the engine's join.", value=status.logged)
        unlogged = CounterMetricFamily(
            "cmab_decisions_unlogged", "Decisions made but not logged, by reason: queue_full "
            "(the writer's queue was full), delivery_failed (the broker did not take them "
            "in time), shutdown (still queued when the service stopped), over_capacity (in "
            "process: the join held max_pending decisions of the campaign).",
            labels=["reason"])
        for reason in sorted({*UNLOGGED_REASONS, *status.unlogged}):
            unlogged.add_metric([reason], status.unlogged.get(reason, 0))
        queued = GaugeMetricFamily(
            "cmab_decision_log_queued", "Decisions waiting in the decision log's queue.",
            value=status.queued)
        return [logged, unlogged, queued]
