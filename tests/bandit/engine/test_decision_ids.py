"""Decision ids: unique across engines, restarts, snapshots, service instances and forked
processes whatever the seed (they come from the operating system), seeded only on request
(``Engine(id_seed=...)``), and carrying the consent bit on every decision path."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from bandit.engine import Engine, decided_with_consent
from bandit.models import CampaignSpec, DecisionRequest
from bandit.service import create_app
from bandit.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SPEC = {"name": "ids", "holdout": 0.0,
        "context": {"features": [{"kind": "numeric", "name": "x"}]},
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
                   "policy": {"kind": "lin_ucb"}}]}


def engine(**seeds: int) -> Engine:
    e = Engine(**seeds)
    e.create_campaign(CampaignSpec.model_validate(SPEC))
    return e


def requests(n: int) -> list[DecisionRequest]:
    return [DecisionRequest(campaign="ids", user_id=f"u{i}", context={"x": i / n},
                            consent=i % 3 != 0) for i in range(n)]


def issued(e: Engine, n: int = 300) -> list[str]:
    """Ids of n decisions by each in-process path (decide, decide_one, decide_batch); each
    id's consent bit is its request's consent."""
    sent = requests(n)
    ids = [e.decide(r).decision_id for r in sent[:n // 3]]
    ids += [orjson.loads(e.decide_one(r).json)["decision_id"] for r in sent[n // 3:2 * n // 3]]
    ids += e.decide_batch("ids", sent[2 * n // 3:]).decision_ids
    assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in ids)
    assert [decided_with_consent(d) for d in ids] == [r.consent for r in sent]
    assert len(set(ids)) == n
    return ids


def test_two_engines_with_the_same_seed_never_share_an_id():
    assert not set(issued(engine(seed=0))) & set(issued(engine(seed=0)))


def test_engines_from_one_snapshot_never_reissue_an_id():
    """A restart from a snapshot, or two replicas loaded from the same one."""
    saved = engine(seed=0)
    before = issued(saved)
    data = saved.to_bytes()
    first, second = (issued(Engine.from_bytes(data, seed=0)[0]) for _ in range(2))
    after = issued(saved)
    assert not set(first) & set(second)
    assert not (set(first) | set(second)) & (set(before) | set(after))


def test_seeded_ids_are_an_opt_in_that_repeats():
    """For reproducible runs only: the same id seed, the same ids (the policies' seed is
    another matter)."""
    assert issued(engine(seed=0, id_seed=7)) == issued(engine(seed=5, id_seed=7))
    assert Settings().id_seed is None


def _served(settings: Settings) -> list[str]:
    """Ids from a fresh app over ``settings`` (a start of ``cmab serve``): single decisions
    (the fast path), a JSON batch and an NDJSON batch (decide_columns)."""

    async def run() -> list[str]:
        transport = httpx.ASGITransport(create_app(settings=settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            assert (await c.post("/v1/campaigns", json=SPEC)).status_code == 201
            sent = [r.model_dump() for r in requests(90)]
            decisions = []
            for r in sent[:30]:
                decisions.append((await c.post("/v1/decisions", json=r)).json())
            batch = await c.post("/v1/decisions/batch",
                                 json={"campaign": "ids", "requests": sent[30:60]})
            decisions += batch.json()["decisions"]
            ndjson = await c.post("/v1/decisions/batch",
                                  content=b"\n".join(map(orjson.dumps, sent[60:])),
                                  headers={"content-type": "application/x-ndjson"})
            decisions += [orjson.loads(line) for line in ndjson.content.splitlines()]
        ids = [d["decision_id"] for d in decisions]
        assert [decided_with_consent(d) for d in ids] == [r["consent"] for r in sent]
        return ids

    return asyncio.run(run())


def test_two_services_or_a_restart_without_snapshot_never_share_an_id():
    first, second = _served(Settings(seed=0)), _served(Settings(seed=0))
    assert len(set(first)) == len(first) == 90
    assert not set(first) & set(second)


def test_a_service_with_an_id_seed_repeats_its_ids():
    assert _served(Settings(seed=0, id_seed=3)) == _served(Settings(seed=1, id_seed=3))


_FORK = """
import os
from bandit.engine import Engine
from bandit.models import CampaignSpec, DecisionRequest
e = Engine(seed=0)
e.create_campaign(CampaignSpec.model_validate({"name": "f", "slots": [
    {"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]}))
sent = [DecisionRequest(campaign="f", user_id=f"u{i}") for i in range(50)]
e.decide_batch("f", sent)  # the parent has decided before the fork
r, w = os.pipe()
pid = os.fork()
ids = e.decide_batch("f", sent).decision_ids + [e.decide(x).decision_id for x in sent]
if pid == 0:
    os.write(w, " ".join(ids).encode())
    os._exit(0)
os.close(w)
child = b"".join(iter(lambda: os.read(r, 1 << 16), b"")).decode().split()
os.waitpid(pid, 0)
print(len(child), len(ids), len(set(child) & set(ids)))
"""


def test_a_forked_child_does_not_repeat_the_parent_s_ids():
    # In a fresh interpreter: forking this (threaded) test process is not safe.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _FORK], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    assert out.split() == ["100", "100", "0"]
