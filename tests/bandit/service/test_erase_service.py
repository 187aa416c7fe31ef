"""Erasure from the model over HTTP (a real uvicorn server, in process): ``DELETE
/v1/subjects/{id}`` subtracts the subscriber's learned decisions from the service's model, also
after the service restarted from its snapshot, and says when its erasure ledger was bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from bandit.engine import Engine
from bandit.engine.ledger import key_words
from bandit.engine.randomness import subject_key
from bandit.models import JoinedEvent
from bandit.service import create_app
from bandit.settings import Settings
from tests.bandit.engine.test_erase_model import HOUR_MS, KINDS, assert_same_policies, spec, stream
from tests.servers import live

USERS = 7
GONE = "user-2"


def _events(seed: int) -> list[JoinedEvent]:
    """Closed decisions over some eleven hours that ended two days ago (so before an erasure
    now), in time order."""
    events = stream(seed, 150, USERS)
    shift = time.time_ns() // 10**6 - 2 * 24 * HOUR_MS - int(max(e.ts for e in events))
    return sorted((e.model_copy(update={"ts": int(e.ts + shift)}) for e in events),
                  key=lambda e: e.ts)


def _posted(events: list[JoinedEvent]) -> list[dict]:
    """What a sender posts for the decisions, in time order: per decision its impression (of a
    decision made elsewhere) and a click per slot carrying that slot's reward; last an
    impression a day later, which closes every window before it."""
    body: list[dict] = []
    for e in events:
        user = next(f"user-{u}" for u in range(USERS) if subject_key(f"user-{u}").hex()
                    == e.subject)
        body.append({"type": "impression", "event_id": f"i{e.decision_id}",
                     "decision_id": e.decision_id, "campaign": e.campaign, "user_id": user,
                     "ts": e.ts, "holdout": e.holdout, "context": e.context,
                     "segments": e.segments,
                     "slots": {k: {"arm": c.arm, "propensity": c.propensity}
                               for k, c in e.slots.items()}})
        body += [{"type": "click", "event_id": f"c{e.decision_id}{k}",
                  "decision_id": e.decision_id, "campaign": e.campaign, "ts": e.ts, "slot": k,
                  "reward": r} for k, r in e.rewards.items() if r]
    closer = events[-1]
    body.append({**body[0], "event_id": "closer", "decision_id": "c" * 32, "user_id": "closer",
                 "ts": closer.ts + 24 * HOUR_MS})
    return body


@contextmanager
def _service(half_life_ms: float | None, **settings) -> Iterator[tuple[httpx.Client, Engine]]:
    """A service with the campaign (created unless its snapshot holds it) and its engine."""
    app = create_app(None, Settings(**settings))
    with live(app) as client:
        if not app.state.engine.campaigns():
            created = client.post("/v1/campaigns",
                                  json=spec(half_life_ms).model_dump(mode="json"))
            assert created.status_code == 201, created.text
        yield client, app.state.engine


def _learned(client: httpx.Client, events: list[JoinedEvent]) -> None:
    body = _posted(events)
    assert client.post("/v1/events", json=body).json() == {"accepted": len(body)}


def _without(events: list[JoinedEvent], user: str) -> list[JoinedEvent]:
    return [e for e in events if e.subject != subject_key(user).hex()]


@pytest.mark.parametrize("half_life_ms", [None, 2 * HOUR_MS])
def test_an_erased_subscriber_leaves_the_services_model(half_life_ms):
    events = _events(0)
    n_gone = len(events) - len(_without(events, GONE))
    with _service(half_life_ms) as (client, forgot), _service(half_life_ms) as (other, never):
        _learned(client, events)
        _learned(other, _without(events, GONE))
        assert client.delete(f"/v1/subjects/{GONE}").json() == {
            "erased": 0, "forgotten": n_gone, "retrain": {}, "complete": True,
            "forwarded": False}
        assert_same_policies(forgot, never)
        sums = _sums(forgot)
        assert client.delete("/v1/subjects/nobody").json() == {
            "erased": 0, "forgotten": 0, "retrain": {}, "complete": True, "forwarded": False}
        assert client.delete(f"/v1/subjects/{GONE}").json()["forgotten"] == 0
        after = _sums(forgot)
        assert sums.keys() == after.keys()
        for name, value in sums.items():
            np.testing.assert_array_equal(value, after[name], err_msg=name)


def _sums(engine: Engine) -> dict[str, np.ndarray]:
    out = {}
    for kind in KINDS:
        policy = engine.slot_policy("weekly", kind)[0]
        for name, value in policy.sums_at(policy.state()["t_ref_ms"]).items():
            out[f"{kind}/{name}"] = value
    return out


def test_a_restarted_service_still_erases_and_its_snapshot_drops_the_erased(tmp_path: Path):
    events = _events(1)
    path = tmp_path / "engine.npz"
    with _service(2 * HOUR_MS, snapshot_path=path) as (client, _):
        _learned(client, events)
    with _service(2 * HOUR_MS, snapshot_path=path) as (client, restored), \
            _service(2 * HOUR_MS) as (other, never):
        erased = client.delete(f"/v1/subjects/{GONE}").json()
        assert erased["forgotten"] == len(events) - len(_without(events, GONE))
        assert erased["complete"] is True
        _learned(other, _without(events, GONE))
        assert_same_policies(restored, never)
    saved = Engine.load(path)
    hi, lo = key_words(subject_key(GONE))
    _, arrays = saved._ledger.state()
    his = [k for k in arrays if k.endswith("subject_hi")]
    assert his and not any(np.any((arrays[k] == hi) & (arrays[k[:-2] + "lo"] == lo))
                           for k in his)
    assert saved._ledger.size == len(_without(events, GONE))


def test_a_bounded_ledger_says_the_erasure_may_be_incomplete():
    events = _events(2)
    with _service(None, erasure_ledger=32) as (client, engine):
        _learned(client, events)
        ledger = engine._ledger
        kept = ledger.size  # the newest decisions, in chunks of two
        assert 30 <= kept <= 32 and ledger.dropped == len(events) - kept
        erased = client.delete(f"/v1/subjects/{GONE}").json()
        assert erased["complete"] is False
        assert erased["forgotten"] == sum(e.subject == subject_key(GONE).hex()
                                          for e in events[-kept:])
