"""The subscribers' secrets shared by the service's replicas (``<prefix>.subjects``, on a real
broker): two replicas name a subscriber by the same pseudonym in the decision log; when both
created a secret for one subscriber, both use the first on the topic and keep both for erasure;
an erasure publishes an erase record per pseudonym and a tombstone per secret, after which no
replica (nor one started later) maps the decisions logged to the user id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import orjson

from bandit.engine import Engine
from bandit.engine.pseudonyms import keyed
from bandit.engine.randomness import subject_key
from bandit.models import CampaignSpec, DecisionRequest
from streams.broker import LocalBroker
from streams.link import StreamLink
from streams.topics import Topics
from tests.streams.test_decisionlog import logged_lines
from tests.streams.test_worker_kafka import campaign_records

CAMPAIGN = CampaignSpec.model_validate({
    "name": "weekly", "holdout": 0.0,
    "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
               "policy": {"kind": "beta_ts"}}]})


def _replica(kafka: LocalBroker, topics: Topics) -> StreamLink:
    engine = Engine(seed=0)
    engine.create_campaign(CAMPAIGN)
    return StreamLink(engine, kafka.bootstrap_servers, topics, partitions=2)


def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the replicas did not converge"
        time.sleep(0.02)


def _decide(link: StreamLink, *users: str) -> None:
    link.engine.decide_batch("weekly", [DecisionRequest(campaign="weekly", user_id=u)
                                        for u in users])


def test_replicas_share_pseudonyms_keep_raced_secrets_and_drop_erased_ones(kafka):
    topics = Topics(f"s{uuid.uuid4().hex[:10]}")
    a, b = _replica(kafka, topics), _replica(kafka, topics)
    try:
        _decide(a, "alice")
        _until(lambda: b.engine.subjects.all_of("alice") == a.engine.subjects.all_of("alice"))
        _decide(b, "alice", "bob")
        # A race: both create a secret for carol before either hears the other's (a's
        # reaches the topic late, after b's).
        publish, deferred = a.engine.subjects.created, []
        a.engine.subjects.created = lambda index, secret: deferred.append((index, secret))
        _decide(a, "carol")
        _decide(b, "carol")
        _until(lambda: len(a.engine.subjects.all_of("carol")) == 2)
        assert publish is not None and len(deferred) == 1
        a.engine.subjects.created = publish
        publish(*deferred[0])
        _until(lambda: len(a.engine.subjects.all_of("carol"))
               == len(b.engine.subjects.all_of("carol")) == 2)
        assert a.engine.subjects.all_of("carol") == b.engine.subjects.all_of("carol")
        raced = {k.hex() for k in a.engine.subjects.all_of("carol")}
        in_use = b.engine.subjects.pseudonym("carol")  # the first on the topic
        assert a.engine.subjects.pseudonym("carol") == in_use
        assert in_use == keyed("carol", b.engine.subjects.secrets_of("carol")[0]).hex()
        assert in_use != keyed("carol", deferred[0][1]).hex()
        _decide(a, "carol")
        _decide(b, "carol")

        at = 1_900_000_000_000
        a.erase("carol", at)
        a.engine.erase("carol", at)
        _until(lambda: b.engine.subjects.all_of("carol") == [])
        assert a.engine.subjects.all_of("carol") == []
        late = _replica(kafka, topics)  # reads the topic from its start
        try:
            assert late.engine.subjects.all_of("carol") == []
            assert late.engine.subjects.all_of("alice") == a.engine.subjects.all_of("alice")
        finally:
            late.close()
        a.decision_log.flush()
        b.decision_log.flush()
        subjects = [orjson.loads(line)["subject"]
                    for line in logged_lines(kafka.bootstrap_servers, topics, 2)]
        alice = a.engine.subjects.pseudonym("alice")
        assert subjects.count(alice) == 2 and alice != subject_key("alice").hex()
        assert subjects.count(b.engine.subjects.pseudonym("bob")) == 1
        carol = [s for s in subjects if s not in {alice, b.engine.subjects.pseudonym("bob")}]
        assert len(carol) == 4 and set(carol) == raced
        assert carol.count(in_use) == 3  # one decision each before the race was seen
        # The erase records name every pseudonym carol had, and the legacy key.
        records = campaign_records(kafka, topics)
        assert {r["erase"] for r in records if "erase" in r} == raced | {
            subject_key("carol").hex()}
        # No replica maps the logged decisions of carol to her user id any more.
        for replica in (a, b):
            keys = replica.engine.subjects
            assert not {k.hex() for k in keys.all_of("carol")} & set(carol)
            assert {keyed("carol", s).hex() for s in keys.secrets_of("carol")} == set()
    finally:
        a.close()
        b.close()
