"""LoggedBandit checks and the joined-log reader (DSJSON: test_dsjson.py)."""


import numpy as np
import orjson
import pytest

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent, SlotChoice
from simulators.offline.logs import LoggedBandit, read_joined, write_dsjson


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"X": np.array([[1.0], [np.nan], [1.0]])}, r"X: row 1: contains NaN or inf"),
        ({"actions": np.array([0, 2, 1])}, r"actions: row 1: expected an action in 0..1"),
        ({"actions": np.array([0.0, 1.0, 1.0])}, r"actions: expected \(3,\) integers"),
        ({"rewards": np.array([0.0, 1.0, np.inf])}, r"rewards: row 2: expected a finite number"),
        ({"propensities": np.array([0.5, 0.0, 0.5])}, r"propensities: row 1: expected a number in"),
        ({"propensities": np.array([0.5, 0.5, 1.5])}, r"propensities: row 2: .* got 1.5"),
        ({"X": np.ones((0, 1)), "actions": np.zeros(0, dtype=int), "rewards": np.zeros(0),
          "propensities": np.zeros(0)}, "no events"),
        ({"action_names": ("a",)}, r"action_names: expected 2"),
    ],
)
def test_bad_columns_name_the_row(change, message):
    columns = {"X": np.ones((3, 1)), "actions": np.array([0, 1, 1]), "rewards": np.zeros(3),
               "propensities": np.full(3, 0.5)} | change
    with pytest.raises(InvalidInputError, match=message):
        LoggedBandit(**columns, n_actions=2)


@pytest.fixture
def spec(newsletter_spec):
    return CampaignSpec.model_validate(newsletter_spec("weekly"))


def _joined(spec, n, rng):
    """Decisions of a real engine on random subscribers, with random clicks, as joined events."""
    engine = Engine(seed=3)
    engine.create_campaign(spec)
    requests = [DecisionRequest(campaign=spec.name, user_id=f"u{i}", context={
        "engagement": float(rng.random()), "plan": str(rng.choice(["free", "pro", "gold"]))},
        segments={"region": "north"}) for i in range(n)]
    events = []
    for request, decision in zip(requests, engine.decide_many(spec.name, requests), strict=True):
        slots = {s.slot: SlotChoice(arm=s.arm, propensity=s.propensity) for s in decision.slots}
        events.append(JoinedEvent(
            decision_id=decision.decision_id, campaign=spec.name,
            subject=subject_key(request.user_id).hex(),
            ts=1000, slots=slots, context=request.context, segments=request.segments,
            holdout=decision.holdout,
            rewards={s: float(rng.random() < 0.3) for s in slots}))
    return events


def test_joined_log_is_encoded_as_the_engine_learns_it(spec, rng, tmp_path):
    events = _joined(spec, 60, rng)
    path = tmp_path / "joined.jsonl"
    path.write_text("".join(e.model_dump_json() + "\n" for e in events))
    log = read_joined(path, spec, "artwork")
    live = [e for e in events if not e.holdout]
    assert log.n == len(live) and log.skipped.get("holdout", 0) == len(events) - len(live)
    assert log.action_names == ("action", "calm") and log.n_actions == 2
    # The engine's columns: intercept, engagement, recency, plan one-hot + unknown, then the
    # one-hot of the subject line it conditions on.
    assert log.context_names[:3] == ("(intercept)", "engagement", "recency")
    assert log.context_names[-4:] == ("subject_line=plain", "subject_line=urgent",
                                      "subject_line=question", "subject_line=(added later)")
    e = live[0]
    row = dict(zip(log.context_names, log.X[0], strict=True))
    assert row["engagement"] == e.context["engagement"]
    plan = f"plan={e.context['plan']}" if e.context["plan"] != "gold" else "plan=(unknown)"
    assert row[plan] == 1
    assert row[f"subject_line={e.slots['subject_line'].arm}"] == 1
    np.testing.assert_array_equal(log.propensities, [e.slots["artwork"].propensity for e in live])
    np.testing.assert_array_equal(log.rewards, [e.rewards["artwork"] for e in live])


def test_joined_log_errors_name_the_line(spec):
    good = _joined(spec, 3, np.random.default_rng(0))[0].model_dump_json()
    with pytest.raises(InvalidInputError, match=r"line 2: ts: "):
        read_joined([good, good.replace('"ts":1000', '"ts":-1')], spec, "artwork")
    with pytest.raises(InvalidInputError, match="no slot 'offer'"):
        read_joined([good], spec, "offer")
    other = good.replace('"weekly"', '"daily"')
    with pytest.raises(InvalidInputError, match="no usable event .*'other campaign': 1}"):
        read_joined([other], spec, "artwork")


def test_cmab_replay_reads_joined_and_dsjson_logs(spec, rng, tmp_path, capsys):
    from bandit.cli import main

    joined = tmp_path / "joined.jsonl"
    joined.write_text("".join(e.model_dump_json() + "\n" for e in _joined(spec, 200, rng)))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    common = ["--policy", "lin_ucb,uniform", "--estimators", "ips,snips,dr", "--n-boot", "50",
              "--no-progress"]
    code = main(["replay", "--log", str(joined), "--spec", str(spec_file), "--slot",
                 "subject_line", "--out", str(tmp_path / "a"), *common])
    assert code == 0, capsys.readouterr().err
    log = read_joined(joined, spec, "subject_line")
    dsjson = tmp_path / "log.dsjson"
    write_dsjson(log, dsjson)
    code = main(["replay", "--log", str(dsjson), "--format", "dsjson", "--out",
                 str(tmp_path / "b"), *common])
    assert code == 0, capsys.readouterr().err
    # The same events either way: the same estimates.
    a = orjson.loads((tmp_path / "a" / "results.json").read_bytes())["estimates"]
    b = orjson.loads((tmp_path / "b" / "results.json").read_bytes())["estimates"]
    assert a["uniform"] == b["uniform"]
    code = main(["replay", "--log", str(joined), "--out", str(tmp_path / "c"), *common])
    assert code == 2 and "needs --spec FILE and --slot NAME" in capsys.readouterr().err
