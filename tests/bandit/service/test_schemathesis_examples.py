"""What schemathesis replays for POST /v1/events (its examples phase; the fuzzing draws from the
same schema): the document's examples hold every event shape (a send, every outcome type, a
conversion's value, a machine flag, the legacy impression and click), its schema names each,
and the service takes every example, JSON or NDJSON."""

from __future__ import annotations

from typing import get_args

import orjson

from bandit.engine import Engine
from bandit.models import OUTCOME_TYPES, CampaignSpec, Event
from bandit.service import EXAMPLE_CAMPAIGN, NDJSON, create_app
from bandit.settings import Settings
from tests.servers import live


def test_the_events_examples_hold_every_event_shape_and_are_accepted():
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(EXAMPLE_CAMPAIGN))
    with live(create_app(engine, Settings())) as client:
        body = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["requestBody"]
        for content_type in ("application/json", NDJSON):
            content = body["content"][content_type]
            kinds = {m.model_fields["type"].default for m in get_args(get_args(Event)[0])}
            assert kinds == {"impression", "send", *OUTCOME_TYPES}
            assert set(content["schema"]["items"]["discriminator"]["mapping"]) == kinds
            events = [e for example in content["examples"].values() for e in example["value"]]
            assert {e["type"] for e in events} == kinds
            assert any(e.get("machine") for e in events)
            assert any("value" in e for e in events if e["type"] == "conversion")
            assert any("slot" in e for e in events)
            for example in content["examples"].values():
                lines = example["value"]
                answer = client.post("/v1/events", json=lines) if content_type != NDJSON else (
                    client.post("/v1/events", content=b"\n".join(map(orjson.dumps, lines)),
                                headers={"content-type": NDJSON}))
                assert answer.status_code == 200, answer.text
