"""Guardrails across replicas, on a real broker: a breach found by one decision service
(its engine pauses the campaign, with the reason) is published on ``<prefix>.campaigns`` by
its link, and a second replica that follows the topic pauses too, with the same reason and
default arms; the resume published by the first replica resumes the second from the same
baseline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np

from bandit.engine import Engine
from streams.follower import StateFollower
from streams.link import StreamLink
from streams.topics import Topics
from tests.bandit.engine.test_guardrails import HARM, LIST, send, spec


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_breach_and_the_resume_are_followed_by_another_replica(kafka):
    topics = Topics(f"g{uuid.uuid4().hex[:10]}")
    first = Engine(seed=8, id_seed=8)
    link = StreamLink(first, kafka.bootstrap_servers, topics, partitions=2)
    second = Engine(seed=9)
    follower = StateFollower(second, kafka.bootstrap_servers, topics).start()
    try:
        first.create_campaign(spec("harm", HARM, holdout=0.5))
        link.campaign_changed("harm")
        _until(lambda: "harm" in {s.name for s in second.campaigns()}, "the campaign")
        assert not second.is_paused("harm")
        rng = np.random.default_rng(8)
        for k in range(40):  # the first replica's model learns (in stream mode: absorbs)
            send(first, k, rng)
            if first.is_paused("harm"):
                break
        reason = first.report("harm").paused_by
        assert reason is not None, "not tripped in 40 sends"
        link.campaign_changed("harm")  # what its follower's on_breach does
        _until(lambda: second.is_paused("harm"), "the pause")
        assert second.report("harm").paused_by == reason
        assert follower.errors == 0
        batch = second.decide_batch("harm", LIST[:200])
        assert all((s.arms == s.arm_ids.index(d)).all() for s, d in zip(
            batch.slots, ("plain", "h09"), strict=True))
        first.pause("harm", False)  # a person resumes it on the first replica
        link.campaign_changed("harm")
        _until(lambda: not second.is_paused("harm"), "the resume")
        assert second.report("harm").paused_by is None
        assert second.campaign_record("harm") == first.campaign_record("harm")
        assert first.campaign_record("harm")["baseline"] is not None
    finally:
        follower.close()
        link.close()
