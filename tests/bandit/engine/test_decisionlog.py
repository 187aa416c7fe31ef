"""The decision log: every decide path hands the sink one DecisionLog per call; each line is the
JSON of a LoggedDecision in the one canonical form; consent-less decisions log no context and
no segments; each slot's probability vector sums to 1 over its eligible arms and gives the
chosen arm its logged propensity, for every policy kind."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from bandit import wire
from bandit.engine import Engine, subject_key
from bandit.engine.decisionlog import DecisionLog
from bandit.models import Arm, CampaignSpec, DecisionRequest, LoggedDecision
from bandit.wire import columns
from bandit.wire.batch import ndjson_columns
from bandit.wire.decisions import DecisionRequest as WireRequest

POLICIES: list[dict[str, Any]] = [
    {"kind": "lin_ucb", "alpha": 0.5}, {"kind": "lin_ucb", "alpha": 0.5, "epsilon": 0.0},
    {"kind": "epsilon_greedy"}, {"kind": "lin_ts"}, {"kind": "beta_ts"},
    {"kind": "hybrid_lin_ucb", "epsilon": 0.2}, {"kind": "bart"},
    {"kind": "vw", "exploration": "epsilon"}, {"kind": "vw"},
]


def spec(policy: dict[str, Any], holdout: float = 0.2) -> CampaignSpec:
    """Two slots: one of ``policy`` with an eligibility rule on the plan, one Beta TS."""
    features = policy["kind"] in ("hybrid_lin_ucb", "bart")
    return CampaignSpec.model_validate({
        "name": "weekly", "holdout": holdout,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "categorical", "name": "plan",
                                  "values": ["free", "pro"]}],
                    "segments": ["region"]},
        "slots": [
            {"name": "offer", "default_arm": "a", "policy": policy,
             "arms": [{"id": arm, **({"features": {"price": price}} if features else {})}
                      for arm, price in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0))],
             **({"arm_features": [{"kind": "numeric", "name": "price"}]} if features else {}),
             "eligibility": [{"arm": "d", "feature": "plan", "op": "eq", "value": "pro"}]},
            {"name": "send_hour", "default_arm": "h09", "policy": {"kind": "beta_ts"},
             "arms": [{"id": "h09"}, {"id": "h18"}]}]})


def learned(policy: dict[str, Any], rng: np.random.Generator, holdout: float = 0.2) -> Engine:
    """An engine whose offer slot learned some rewards (straight into its policies), so that
    arms differ."""
    engine = Engine(seed=3, id_seed=4)
    engine.create_campaign(spec(policy, holdout))
    for slot in ("offer", "send_hour"):
        model, columns, arms = engine.slot_policy("weekly", slot)
        n = 300
        chosen = rng.integers(len(arms), size=n)
        X = rng.normal(size=(n, model.dim))
        model.learn_many(chosen, X, (rng.random(n) < 0.2 + 0.15 * chosen).astype(float))
    return engine


def requests_of(rng: np.random.Generator, n: int) -> list[DecisionRequest]:
    return [DecisionRequest(
        campaign="weekly", user_id=f"user-{i}-\u00e9\"", consent=bool(rng.random() < 0.7),
        context={"engagement": float(rng.normal()), **(
            {"plan": str(rng.choice(["free", "pro"]))} if rng.random() < 0.8 else {})},
        segments={"region": str(rng.choice(["eu", "us"]))} if rng.random() < 0.5 else {})
        for i in range(n)]


class Sink:
    def __init__(self) -> None:
        self.logs: list[DecisionLog] = []
        self.probabilities = True

    def __call__(self, log: DecisionLog) -> None:
        self.logs.append(log)


def canonical(line: bytes) -> bytes:
    """The one form of a line: orjson over the model's Python dump without None (times and
    versions stay integers, as their JSON Schema says; the JSON dump writes them as floats)."""
    return orjson.dumps(LoggedDecision.model_validate_json(line).model_dump(exclude_none=True))


def check_lines(log: DecisionLog, requests: list[Any], answers: list[dict[str, Any]],
                engine: Engine) -> None:
    """Every line is canonical, and says what was decided for its request; its subject is the
    subscriber's pseudonym (the engine's keyed hash), not the unkeyed hash of the user id."""
    lines = log.lines()
    assert len(lines) == len(requests) == len(answers)
    for line, r, answer in zip(lines, requests, answers, strict=True):
        assert line == canonical(line)
        got = orjson.loads(line)
        assert got["decision_id"] == answer["decision_id"]
        assert got["subject"] == engine.subjects.pseudonym(r.user_id)
        assert got["subject"] != subject_key(r.user_id).hex()
        assert got["holdout"] == answer["holdout"]
        assert got["model_version"] == answer["model_version"]
        assert got["ts"] == log.ts
        assert {slot: (c["arm"], c["propensity"]) for slot, c in got["slots"].items()} == {
            s["slot"]: (s["arm"], s["propensity"]) for s in answer["slots"]}
        if r.consent:
            context = r.context if isinstance(r.context, dict) else msgspec.to_builtins(
                r.context)
            assert got["context"] == context and got["segments"] == dict(r.segments or {})
        else:
            assert "context" not in got and got["segments"] == {}
            assert int(answer["decision_id"][-1], 16) % 2 == 0
        for slot, choice in got["slots"].items():
            assert sum(choice["probabilities"].values()) == pytest.approx(1.0, abs=1e-12)
            assert choice["probabilities"][choice["arm"]] == choice["propensity"]
            if answer["holdout"]:
                assert choice["probabilities"] == {choice["arm"]: 1.0}
            if slot == "offer" and "d" in choice["probabilities"]:
                assert r.context.get("plan") == "pro"
    assert [d.decision_id for d in log.decisions()] == [a["decision_id"] for a in answers]
    assert log.decisions() == [wire.DECISIONS.decode(line) for line in lines]
    # The binary block (cmab.decisions/3) holds the same decisions: read back, its lines and
    # the join's decisions are those of the text, and no consent-less context is in it.
    assert log.logged() == log.decisions()
    block = log.block()
    back = DecisionLog.of_block(columns.read(block))
    assert back.lines() == lines and back.logged() == log.decisions()
    two = DecisionLog.of_block(columns.read(DecisionLog.concat([log, back]).block()))
    assert two.lines() == lines + lines and two.logged() == log.decisions() * 2
    for r, d in zip(requests, log.decisions(), strict=True):
        if not r.consent:
            assert d.context is None and d.segments == {}
    # What the in-process join takes: the same decisions without their probability vectors.
    bare = msgspec.Raw(b"{}")
    assert DecisionLog.concat([log], probabilities=False).logged() == [
        msgspec.structs.replace(d, slots={slot: msgspec.structs.replace(c, probabilities=bare)
                                          for slot, c in d.slots.items()})
        for d in log.decisions()]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "-".join(map(str, p.values())))
def test_every_decide_path_logs_each_decision_once_in_the_canonical_form(policy, rng):
    engine = learned(policy, rng)
    sink = Sink()
    engine.decision_sink = sink
    engine.clock = lambda: 1_700_000_000_123
    requests = requests_of(rng, 200)
    batch = engine.decide_batch("weekly", requests)
    check_lines(sink.logs[-1], requests, [orjson.loads(x) for x in batch.lines()], engine)
    one = engine.decide_one(requests[0])
    check_lines(sink.logs[-1], requests[:1], [orjson.loads(one.json)], engine)
    decision = engine.decide(requests[1])
    check_lines(sink.logs[-1], requests[1:2], [decision.model_dump()], engine)
    many = engine.decide_many("weekly", requests[:5])
    check_lines(sink.logs[-1], requests[:5], [d.model_dump() for d in many], engine)
    body = b"\n".join(r.model_dump_json().encode() for r in requests)
    columns = ndjson_columns(body, engine)
    assert columns is not None
    decoded = msgspec.json.Decoder(WireRequest).decode_lines(body)
    batch = engine.decide_columns(columns)
    check_lines(sink.logs[-1], decoded, [orjson.loads(x) for x in batch.lines()], engine)
    assert [len(log) for log in sink.logs] == [200, 1, 1, 5, 200]
    engine.pause("weekly")
    batch = engine.decide_batch("weekly", requests[:20])
    check_lines(sink.logs[-1], requests[:20], [orjson.loads(x) for x in batch.lines()], engine)
    assert all(len(orjson.loads(line)["slots"]["offer"]["probabilities"]) == 1
               for line in sink.logs[-1].lines())


def test_without_a_sink_nothing_is_logged_nor_computed(rng):
    engine = learned({"kind": "lin_ts"}, rng)
    requests = requests_of(rng, 10)
    batch = engine.decide_batch("weekly", requests)
    assert batch.log is None and all(s.probabilities is None for s in batch.slots)
    assert engine.decide_one(requests[0]).log is None
    engine.decision_sink = Sink()
    assert engine.decide_batch("weekly", requests).log is not None


def test_the_log_of_a_batch_is_the_log_of_its_decisions_one_by_one(rng):
    """The same decision (same id words, same state) logs the same line on either path."""
    requests = requests_of(rng, 40)
    logs = []
    for single in (False, True):
        engine = learned({"kind": "lin_ts"}, np.random.default_rng(1))
        sink = Sink()
        engine.decision_sink, engine.clock = sink, lambda: 5
        if single:
            for r in requests:
                engine.decide_one(r)
        else:
            engine.decide_batch("weekly", requests)
        logs.append([line for log in sink.logs for line in log.lines()])
    assert logs[0] == logs[1]


def test_an_empty_call_logs_no_line(rng):
    engine = learned({"kind": "beta_ts"}, rng)
    sink = Sink()
    engine.decision_sink = sink
    engine.decide_batch("weekly", [])
    assert sink.logs[-1].lines() == [] and sink.logs[-1].decisions() == []


def test_a_sink_that_reads_no_vector_gets_the_same_decisions_without_them(rng):
    """The in-process join reads no probability vector (``probabilities = False`` on the
    sink): none is computed, and the decisions and what the join takes are the same."""
    requests = requests_of(rng, 30)
    logs = []
    for vectors in (True, False):
        engine = learned({"kind": "lin_ts"}, np.random.default_rng(1))
        sink = Sink()
        sink.probabilities = vectors
        engine.decision_sink, engine.clock = sink, lambda: 5
        engine.decide_batch("weekly", requests)
        for r in requests[:5]:
            engine.decide_one(r)
        logs.append(sink.logs)
    for full, bare in zip(*logs, strict=True):
        assert all(s.probabilities is None and s.eligible is None for s in bare.slots)
        assert (DecisionLog.concat([full], probabilities=False).logged()
                == DecisionLog.concat([bare], probabilities=False).logged())
        with pytest.raises(ValueError, match="needs every arm's probability"):
            bare.lines()


@pytest.mark.parametrize("vectors", [True, False], ids=["vectors", "no-vectors"])
def test_many_logs_concatenated_are_their_decisions_in_order(rng, vectors):
    """``concat`` of many calls (single decisions and batches, with and without probability
    vectors computed) holds their decisions in order; without vectors each is ``{}``; logs
    of another campaign or another arm set are refused."""
    requests = requests_of(rng, 40)
    engine = learned({"kind": "lin_ts"}, np.random.default_rng(1))
    sink = Sink()
    sink.probabilities = vectors
    engine.decision_sink, engine.clock = sink, iter(range(1000)).__next__
    for r in requests[:30]:
        engine.decide_one(r)
    engine.decide_batch("weekly", requests[30:])
    for r in requests[:3]:
        engine.decide_one(r)
    bare = msgspec.Raw(b"{}")
    expected = [msgspec.structs.replace(d, slots={
        slot: msgspec.structs.replace(c, probabilities=bare) for slot, c in d.slots.items()})
        for log in sink.logs for d in DecisionLog.concat([log], probabilities=False).logged()]
    joined = DecisionLog.concat(sink.logs, probabilities=False)
    assert joined.logged() == expected and len({d.ts for d in expected}) == len(sink.logs)
    if vectors:
        assert DecisionLog.concat(sink.logs).lines() == [
            line for log in sink.logs for line in log.lines()]
    other = learned({"kind": "lin_ts"}, np.random.default_rng(1))
    other.decision_sink = sink
    other.add_arm("weekly", "send_hour", Arm(id="h12"))
    other.decide_one(requests[0])
    with pytest.raises(ValueError, match="one campaign with the same slots and arms"):
        DecisionLog.concat(sink.logs, probabilities=False)
