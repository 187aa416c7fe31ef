"""Pseudonyms over HTTP (a real uvicorn server, in process): the decisions the service logs
into its own join name the subscriber by one pseudonym, not the unkeyed hash of the user id;
``DELETE /v1/subjects/{id}`` drops them and destroys the secret, so the logged pseudonym can no
longer be derived from the user id (not from the engine, not from a new snapshot), and the
next decision of the same user id gets a new pseudonym."""

from __future__ import annotations

from pathlib import Path

from bandit.engine import Engine
from bandit.engine.pseudonyms import keyed
from bandit.engine.randomness import subject_key
from bandit.service import create_app
from bandit.settings import Settings
from tests.servers import live

CAMPAIGN = {"name": "weekly", "holdout": 0.0, "activation": "send",
            "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}],
                       "default_arm": "a", "policy": {"kind": "beta_ts"}}]}


def _open_subjects(engine: Engine) -> dict[str, str]:
    """Decision id -> subject of every decision waiting in the engine's join."""
    engine.open_windows()  # the in-process decision log hands its queue to the join
    join = engine._joiner
    return {d: s for d, s in zip(join._ids[:join._size], join._subjects[:join._size],
                                 strict=True) if d is not None and s is not None}


def test_an_erased_subscribers_logged_pseudonym_no_longer_maps_to_the_user_id(tmp_path: Path
                                                                            ) -> None:
    path = tmp_path / "engine.npz"
    app = create_app(None, Settings(snapshot_path=path))
    with live(app) as client:
        engine: Engine = app.state.engine
        assert client.post("/v1/campaigns", json=CAMPAIGN).status_code == 201
        ids = [client.post("/v1/decisions", json={"campaign": "weekly", "user_id": user})
               .json()["decision_id"] for user in ("alice", "bob", "alice")]
        batch = client.post("/v1/decisions/batch", json={"campaign": "weekly", "requests": [
            {"campaign": "weekly", "user_id": u} for u in ("alice", "bob")]})
        ids += [d["decision_id"] for d in batch.json()["decisions"]]
        logged = _open_subjects(engine)
        users = ["alice", "bob", "alice", "alice", "bob"]
        alice = {logged[i] for i, u in zip(ids, users, strict=True) if u == "alice"}
        bob = {logged[i] for i, u in zip(ids, users, strict=True) if u == "bob"}
        assert len(alice) == len(bob) == 1 and alice != bob
        (pseudonym,) = alice
        assert pseudonym != subject_key("alice").hex()
        secrets = engine.subjects.secrets_of("alice")
        assert [keyed("alice", s).hex() for s in secrets] == [pseudonym]

        erased = client.delete("/v1/subjects/alice").json()
        assert erased["erased"] == 3
        assert set(_open_subjects(engine).values()) == bob
        assert engine.subjects.all_of("alice") == []
        snapshot = engine.to_bytes()
        assert not any(s in snapshot for s in secrets)
        assert Engine.from_bytes(snapshot)[0].subjects.all_of("alice") == []

        again = client.post("/v1/decisions", json={"campaign": "weekly", "user_id": "alice"})
        fresh = _open_subjects(engine)[again.json()["decision_id"]]
        assert fresh not in (pseudonym, subject_key("alice").hex())
    # The snapshot written at shutdown holds the new secret only.
    saved = Engine.load(path)
    assert [k.hex() for k in saved.subjects.all_of("alice")] == [fresh]
    assert not any(s in path.read_bytes() for s in secrets)
