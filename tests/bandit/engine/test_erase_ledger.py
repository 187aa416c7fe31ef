"""The erasure ledger (``bandit.engine.ledger``) behind ``Engine.erase``: an engine that learned
a stream (as joined events, or through its own join) and then erased a subscriber holds the
policies of one that learned the stream without the subscriber's decisions up to the erasure;
the ledger is bounded, travels in snapshots, and changes nothing that is learned."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandit.engine import Engine
from bandit.engine.intervals import clusters_of, key_clusters
from bandit.engine.ledger import EXPIRY_HALF_LIVES, key_words, subject_words
from bandit.engine.randomness import subject_key
from bandit.models import Click, Impression, JoinedEvent
from tests.bandit.engine.test_erase_model import (
    HALF_LIVES,
    HOUR_MS,
    KINDS,
    assert_same_policies,
    spec,
    stream,
)

USERS = 7
T0 = int(1.8e12)


def _engine(half_life_ms, kinds=KINDS, ledger=10**6):
    engine = Engine(seed=3)
    engine.create_campaign(spec(half_life_ms, kinds))
    engine.keep_ledger(ledger)
    return engine


def _by_join(engine: Engine, events: list[JoinedEvent]) -> None:
    """The stream through the engine's own join: per closed decision its legacy impression and
    a click per slot carrying that slot's reward, in time order (so that no event is late,
    with or without another subscriber's); every window closed at the end."""
    users = {subject_key(f"user-{u}").hex(): f"user-{u}" for u in range(USERS)}
    joinable: list = []
    for e in events:
        joinable.append(Impression(
            event_id=f"i{e.decision_id}", decision_id=e.decision_id, campaign=e.campaign,
            user_id=users[e.subject], ts=e.ts, holdout=e.holdout, context=e.context,
            segments=e.segments,
            slots={k: {"arm": c.arm, "propensity": c.propensity} for k, c in e.slots.items()}))
        joinable += [Click(event_id=f"c{e.decision_id}{k}", decision_id=e.decision_id,
                           campaign=e.campaign, ts=e.ts, slot=k, reward=r)
                     for k, r in e.rewards.items() if r]
    joinable.sort(key=lambda e: e.ts)
    for part in (joinable[:len(joinable) // 2], joinable[len(joinable) // 2:]):
        engine.ingest(part)
    engine.ingest([], watermark=T0 + 100 * HOUR_MS)
    assert engine.open_windows() == 0


def _learn(engine: Engine, events: list[JoinedEvent], path: str) -> None:
    if path == "events":
        engine.learn(events)
    else:
        _by_join(engine, events)


@pytest.mark.parametrize("path", ["events", "join"])
@pytest.mark.parametrize("half_life_ms", HALF_LIVES)
@pytest.mark.parametrize("seed", [0, 1])
def test_an_erased_subscriber_leaves_the_model(path, half_life_ms, seed):
    events = stream(seed, 200, USERS)
    at_ms = T0 + 6 * HOUR_MS  # later decisions of the subscriber stay
    gone = subject_key("user-2").hex()
    forgot, never = _engine(half_life_ms), _engine(half_life_ms)
    _learn(forgot, events, path)
    _learn(never, [e for e in events if e.subject != gone or e.ts > at_ms], path)
    erased = [e for e in events if e.subject == gone and e.ts <= at_ms]
    version = forgot.model_version("weekly")
    result = forgot.erase("user-2", at_ms)
    assert (result.dropped, result.forgotten, result.retrain, result.complete) == (
        0, len(erased), {}, True)
    assert forgot.model_version("weekly") == version + 1
    assert_same_policies(forgot, never)
    again = forgot.erase("user-2", at_ms)
    assert (again.forgotten, again.changed) == (0, False)


def test_erasing_several_subscribers_at_once_over_sealed_chunks():
    events = stream(4, 300, USERS)
    gone = {subject_key(f"user-{u}"): math.inf for u in (1, 5)}
    forgot = _engine(2 * HOUR_MS, ledger=1600)  # chunks of 100 decisions
    never = _engine(2 * HOUR_MS)
    forgot.learn(events)
    never.learn([e for e in events if bytes.fromhex(e.subject) not in gone])
    assert forgot.erase_subjects(gone) == (0, True)
    assert_same_policies(forgot, never)


def test_a_vw_slot_is_named_for_retraining():
    kinds = ["lin_ucb", "vw"]
    events = stream(7, 60, 4, kinds)
    engine = _engine(None, kinds)
    engine.learn(events)
    vw = engine.slot_policy("weekly", "vw")[0].model_bytes()
    result = engine.erase("user-1", math.inf)
    assert result.retrain == {"weekly": ["vw"]} and result.forgotten > 0
    assert engine.slot_policy("weekly", "vw")[0].model_bytes() == vw


def test_an_unknown_subscriber_changes_nothing():
    engine = _engine(2 * HOUR_MS)
    engine.learn(stream(2, 100, USERS))
    unerased = Engine.from_bytes(engine.to_bytes(), seed=3)[0]
    version = engine.model_version("weekly")
    result = engine.erase("nobody", math.inf)
    assert (result.dropped, result.forgotten, result.retrain, result.changed) == (
        0, 0, {}, True)  # the join notes the erasure, for decisions that may still come
    assert engine.model_version("weekly") == version
    unerased.erase_subjects({subject_key("nobody"): math.inf})  # the same note, nothing else
    assert engine.to_bytes() == unerased.to_bytes()


def test_a_refused_forgetting_changes_nothing():
    """Sums that no longer hold the ledger's decisions (here: replaced by an untrained
    model's) refuse the erasure: neither the model, the ledger nor the join change."""
    engine = _engine(None)
    events = stream(3, 80, USERS)
    engine.learn(events)
    pending = events[0].model_copy(update={"decision_id": "f" * 32, "ts": T0 + 200 * HOUR_MS})
    _by_join(engine, [])
    engine.ingest([Impression(event_id="late", decision_id=pending.decision_id,
                              campaign="weekly", user_id="user-2", ts=pending.ts,
                              slots={"lin_ucb": {"arm": "lin_ucb-0", "propensity": 0.5}})])
    assert engine.open_windows() == 1
    fresh = _engine(None)
    c, blank = engine._get("weekly"), fresh._get("weekly")
    for s, b in zip(c.slots, blank.slots, strict=True):
        s.policy, s.fallback = b.policy, b.fallback
    before = engine.to_bytes()
    with pytest.raises(Exception, match="were not all learned|nothing was learned"):
        engine.erase("user-2", math.inf)
    assert engine.to_bytes() == before and engine.open_windows() == 1


def test_the_bound_drops_the_oldest_decisions_and_says_the_ledger_is_incomplete():
    events = stream(5, 200, USERS)
    engine = _engine(None, ledger=80)
    engine.learn(events[:100])
    engine.learn(events[100:])
    ledger = engine._ledger
    assert ledger.size <= 80 and ledger.dropped == 200 - ledger.size
    assert ledger.dropped >= 120 and not ledger.complete
    kept = ledger.size
    result = engine.erase("user-3", math.inf)
    assert not result.complete
    assert result.forgotten == sum(e.subject == subject_key("user-3").hex()
                                   for e in events[200 - kept:])
    engine.keep_ledger(0)  # off: everything is dropped, and counted
    assert (ledger.size, ledger.dropped) == (0, 200 - result.forgotten)


def test_a_ledger_turned_on_late_is_incomplete():
    engine = _engine(None, ledger=0)
    engine.learn(stream(5, 20, USERS))
    engine.keep_ledger(1000)
    engine.learn(stream(6, 20, USERS))
    assert not engine.erase("user-1", math.inf).complete


def test_decisions_decayed_past_the_horizon_expire_without_making_the_ledger_incomplete():
    half_life = HOUR_MS / 8
    old = stream(8, 100, USERS)  # over some eleven hours
    new = [e.model_copy(update={"decision_id": "a" + e.decision_id[1:],
                                "ts": e.ts + EXPIRY_HALF_LIVES * half_life + 12 * HOUR_MS})
           for e in stream(9, 100, USERS)]
    forgot, never = _engine(half_life, ledger=64), _engine(half_life)
    forgot.learn(old)
    forgot.learn(new)
    assert forgot._ledger.expired > 0 and forgot._ledger.complete
    gone = subject_key("user-4").hex()
    never.learn([e for e in old + new if e.subject != gone])
    result = forgot.erase("user-4", math.inf)
    assert result.complete
    assert_same_policies(forgot, never)  # what expired weighs below 1e-12


@pytest.mark.parametrize("half_life_ms", [None, 2 * HOUR_MS])
def test_the_ledger_travels_in_snapshots_without_the_erased(half_life_ms):
    events = stream(11, 200, USERS)
    gone = subject_key("user-6")
    saved = _engine(half_life_ms, ledger=1600)  # chunks of 100 decisions
    saved.learn(events)
    saved.erase("user-0", math.inf)
    restored = Engine.from_bytes(saved.to_bytes(), seed=3)[0]
    restored.keep_ledger(1600)
    assert restored.to_bytes() == saved.to_bytes()
    never = _engine(half_life_ms)
    never.learn([e for e in events if e.subject not in (gone.hex(),
                                                       subject_key("user-0").hex())])
    result = restored.erase("user-6", math.inf)
    assert result.forgotten > 0 and result.complete
    assert_same_policies(restored, never)
    hi, lo = key_words(gone)
    meta, arrays = restored._ledger.state()
    assert not any(np.any((arrays[k] == hi) & (arrays[k.replace("_hi", "_lo")] == lo))
                   for k in arrays if k.endswith("subject_hi"))
    assert len(meta["chunks"]) > 1
    model_only = Engine.from_bytes(restored.to_bytes(), model_only=True)[0]
    assert not model_only._ledger.complete and model_only._ledger.size == 0


@pytest.mark.parametrize("path", ["events", "join"])
def test_the_ledger_changes_nothing_that_is_learned(path):
    events = stream(12, 150, USERS)
    kept, off = _engine(2 * HOUR_MS), _engine(2 * HOUR_MS, ledger=0)
    _learn(kept, events, path)
    _learn(off, events, path)
    assert kept._ledger.size == len(events)
    kept.keep_ledger(0)  # everything dropped and counted: as learned while off
    assert kept.to_bytes() == off.to_bytes()


def test_subject_words_read_the_keys_bytes():
    keys = [subject_key(f"u{i}") for i in range(5)]
    words = subject_words([k.hex() for k in keys])
    assert [tuple(map(int, w)) for w in words] == [key_words(k) for k in keys]
    for bad in (["g" * 32], [" " + "a" * 31], ["a" * 31], ["\u00e9" * 32]):
        with pytest.raises(ValueError, match="32 hex digits"):
            subject_words(bad)
    assert subject_words([]).shape == (0, 2)


def test_the_ledgers_subject_words_give_the_subjects_buckets():
    keys = [subject_key(f"u{i}").hex() for i in range(500)]
    words = subject_words(keys)
    assert np.array_equal(key_clusters(words.view(np.uint8)), clusters_of(keys))
