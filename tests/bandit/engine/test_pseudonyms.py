"""Subscribers' pseudonyms (bandit.engine.pseudonyms): the decision log names a subscriber by a
keyed hash of the user id under the subscriber's secret, the same in every decision and never
the unkeyed ``subject_key``; erasure erases the decisions under every pseudonym, then destroys
the secret: the engine and its next snapshot can no longer derive the logged pseudonym from the
user id, and the next decision gets a new one. The race rules of the shared topic: the first
secret heard is the one in use, the others are kept for erasure, a tombstone drops one."""

from __future__ import annotations

import numpy as np

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLog
from bandit.engine.pseudonyms import SubjectKeys, fingerprint, keyed
from bandit.engine.randomness import subject_key
from bandit.models import CampaignSpec, Click, DecisionRequest, Send
from bandit.service.link import JoinLog

CAMPAIGN = CampaignSpec.model_validate({
    "name": "weekly", "holdout": 0.0, "attribution_window_ms": 1000, "activation": "send",
    "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
               "policy": {"kind": "beta_ts"}}]})


class Sink:
    def __init__(self) -> None:
        self.logs: list[DecisionLog] = []

    def __call__(self, log: DecisionLog) -> None:
        self.logs.append(log)


def _engine(sink: Sink | None) -> Engine:
    engine = Engine(seed=1, id_seed=2)
    engine.create_campaign(CAMPAIGN)
    engine.decision_sink = sink
    return engine


def _requests(users: list[str]) -> list[DecisionRequest]:
    return [DecisionRequest(campaign="weekly", user_id=u) for u in users]


def _logged(sink: Sink) -> list[tuple[str, str]]:
    """(decision id, subject) of every decision logged."""
    return [(d, s) for log in sink.logs for d, s in zip(log.decision_ids, log.subjects,
                                                         strict=True)]


def test_a_subscribers_decisions_share_a_pseudonym_that_is_not_the_unkeyed_hash():
    sink = Sink()
    engine = _engine(sink)
    users = ["alice", "bob", "alice", "carol", "bob", "alice"]
    engine.decide_batch("weekly", _requests(users))
    for r in _requests(users):
        engine.decide_one(r)
    engine.decide(_requests(["alice"])[0])
    subjects = [s for _, s in _logged(sink)]
    by_user: dict[str, set[str]] = {}
    for user, subject in zip(users + users + ["alice"], subjects, strict=True):
        by_user.setdefault(user, set()).add(subject)
    assert all(len(s) == 1 for s in by_user.values())
    assert len({next(iter(s)) for s in by_user.values()}) == 3
    for user, (subject,) in by_user.items():
        assert subject != subject_key(user).hex()
        assert subject == engine.subjects.pseudonym(user)
        assert [k.hex() for k in engine.subjects.all_of(user)] == [subject]


def test_erasure_drops_pending_decisions_forgets_learned_ones_and_destroys_the_secret():
    engine = _engine(None)
    engine.keep_ledger(1000)
    join_log = JoinLog(engine)
    engine.decision_sink = join_log
    engine.clock = lambda: 1_000
    users = ["alice", "bob"] * 3
    learned = engine.decide_batch("weekly", _requests(users))
    engine.record([Send(event_id=f"s{i}", decision_id=d, ts=1_000)
                   for i, d in enumerate(learned.decision_ids)]
                  + [Click(event_id=f"c{i}", decision_id=d, ts=1_100)
                     for i, d in enumerate(learned.decision_ids)])
    engine.clock = lambda: 5_000
    pending = engine.decide_batch("weekly", _requests(users))  # closes the first windows
    engine.record([Send(event_id=f"t{i}", decision_id=d, ts=5_000)
                   for i, d in enumerate(pending.decision_ids)])
    pseudonym = engine.subjects.pseudonym("alice")
    secrets = engine.subjects.secrets_of("alice")
    assert engine.open_windows() == 6
    erasure = engine.erase("alice", 6_000)
    assert (erasure.dropped, erasure.forgotten) == (3, 3)
    assert engine.open_windows() == 3
    # The logged pseudonym is no longer derivable: no secret held gives it, in the engine or
    # in its next snapshot, whose bytes hold the old secret nowhere.
    assert engine.subjects.all_of("alice") == [] and engine.subjects.secrets_of("alice") == []
    snapshot = engine.to_bytes()
    restored = Engine.from_bytes(snapshot)[0]
    assert restored.subjects.all_of("alice") == [] and len(restored.subjects) == 1
    assert restored.subjects.pseudonym("bob") == engine.subjects.pseudonym("bob")
    assert secrets and not any(s in snapshot for s in secrets)
    # A new decision gets a new secret, hence a new pseudonym.
    again = Sink()
    engine.decision_sink = again
    engine.decide_one(_requests(["alice"])[0])
    assert again.logs[0].subjects[0] not in (pseudonym, subject_key("alice").hex())
    assert engine.erase("alice", 7_000).dropped == 0  # nothing pending under the old one


def test_a_snapshot_keeps_the_pseudonyms_and_seeded_engines_agree():
    engine = _engine(Sink())
    engine.decide_batch("weekly", _requests(["u1", "u2"]))
    restored = Engine.from_bytes(engine.to_bytes())[0]
    twin = _engine(Sink())
    twin.decide_batch("weekly", _requests(["u1", "u2"]))
    for user in ("u1", "u2"):
        assert (restored.subjects.pseudonym(user) == engine.subjects.pseudonym(user)
                == twin.subjects.pseudonym(user))
    assert Engine(seed=1).subjects.pseudonym("u1") != engine.subjects.pseudonym("u1")


def test_the_first_secret_heard_is_used_and_the_others_are_kept_for_erasure():
    mine, theirs, late = (bytes([b]) * 16 for b in (1, 2, 3))
    keys = SubjectKeys(np.random.default_rng(0))
    created: list[tuple[bytes, bytes]] = []
    keys.created = lambda index, secret: created.append((index, secret))
    index = subject_key("alice")
    local = keys.pseudonym("alice")  # created here, not heard yet
    assert created == [(index, keys.secrets_of("alice")[0])]
    keys.heard(index, theirs)  # another replica's was on the topic first
    assert keys.pseudonym("alice") == keyed("alice", theirs).hex()
    keys.heard(index, created[0][1])  # ours, after it
    keys.heard(index, late)
    assert keys.all_of("alice") == [keyed("alice", s) for s in (theirs, created[0][1], late)]
    assert bytes.fromhex(local) in keys.all_of("alice")
    keys.forget(index, fingerprint(theirs))
    assert keys.pseudonym("alice") == keyed("alice", created[0][1]).hex()
    for secret in (created[0][1], late):
        keys.forget(index, fingerprint(secret))
    assert keys.all_of("alice") == [] and len(keys) == 0
    keys.heard(index, mine)  # the first heard after the erasure
    assert keys.all_of("alice") == [keyed("alice", mine)] and len(created) == 1
