"""Single decisions decided together: requests that wait for the engine share one call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from bandit.engine import Engine
from bandit.errors import BanditError, InvalidInputError
from bandit.service.metrics import Metrics
from bandit.wire.decisions import DecisionRequestLike


def answer_all(group: list[tuple[Any, asyncio.Future]], answers: list[Any]) -> None:
    """Hand each waiting request (request, future) its answer, or its error."""
    for (_, future), answer in zip(group, answers, strict=True):
        if future.done():  # the client went away
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


class Singles:
    """Single decisions, coalesced: requests that arrive while the engine is deciding earlier
    ones wait for that call to end and are then decided together, one ``decide_batch`` per
    campaign. The policies' per-call cost is then shared by every waiting request, so under
    concurrent load throughput grows instead of queueing; a request that arrives alone is
    decided at once. A decision's draws come from its own id, so a
    coalesced decision is distributed exactly as one decided alone."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine, self._metrics = engine, metrics
        self._waiting: list[tuple[DecisionRequestLike, asyncio.Future[bytes]]] = []
        self._drain_task: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    async def decide(self, request: DecisionRequestLike) -> bytes:
        """The decision's JSON; a BanditError (unknown campaign, bad context) is raised."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                answers = await run_in_threadpool(self.decide_all, [r for r, _ in group])
            except Exception as error:  # a bug of ours: fail these requests, never hang them
                answers = [error] * len(group)
            answer_all(group, answers)

    def decide_all(self, requests: Sequence[DecisionRequestLike]) -> list[bytes | BaseException]:
        """Each request's JSON, or its BanditError, in order; in the calling thread."""
        by_campaign: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_campaign.setdefault(r.campaign, []).append(i)
        answers: list[bytes | BaseException] = [b""] * len(requests)
        for campaign, rows in by_campaign.items():
            try:
                batch = self._engine.decide_batch(campaign, [requests[i] for i in rows])
            except InvalidInputError as error:
                if len(rows) == 1:
                    answers[rows[0]] = error
                else:  # one bad context must not fail the others: decide them apart
                    for i in rows:
                        answers[i] = self.decide_all([requests[i]])[0]
                continue
            except BanditError as error:  # the campaign's: unknown, ...
                for i in rows:
                    answers[i] = error
                continue
            self._metrics.count(batch)
            for i, line in zip(rows, batch.lines(), strict=True):
                answers[i] = line
        return answers
