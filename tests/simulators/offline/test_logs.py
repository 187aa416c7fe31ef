"""LoggedBandit checks, the joined-log reader and the DSJSON round trip."""

import io

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent, SlotChoice
from simulators.offline.logs import LoggedBandit, read_dsjson, read_joined, write_dsjson


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


def _log(rng, n=20, k=3, d=4, position=True):
    return LoggedBandit(
        rng.normal(size=(n, d)), rng.integers(k, size=n), rng.random(n), rng.uniform(0.1, 1, n),
        k, action_features=rng.normal(size=(k, 2)),
        position=rng.integers(1, 4, size=n) if position else None,
        action_names=tuple(f"arm{a}" for a in range(k)),
        context_names=tuple(f"u{j}" for j in range(d)), name="sim")


def _same(a, b):
    for name in ("X", "actions", "rewards", "propensities", "position"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_actions, a.action_names, a.context_names) == (b.n_actions, b.action_names,
                                                               b.context_names)


def test_dsjson_fields_and_round_trip(rng, tmp_path):
    log = _log(rng)
    path = tmp_path / "log.dsjson"
    assert write_dsjson(log, path) == log.n
    first = orjson.loads(path.read_text().splitlines()[0])
    a = int(log.actions[0])
    assert first["_label_Action"] == a + 1 and first["_labelIndex"] == a
    assert first["_label_cost"] == -log.rewards[0]
    assert first["_label_probability"] == first["p"][0] == log.propensities[0]
    assert first["a"][0] == a + 1 and sorted(first["a"]) == [1, 2, 3]
    assert sum(first["p"]) == pytest.approx(1.0)
    assert len(first["c"]["_multi"]) == 3 and first["c"]["_multi"][1]["Action"]["id"] == "arm1"
    _same(read_dsjson(path, name="sim"), log)


@settings(max_examples=40, deadline=None)
@given(
    X=arrays(np.float64, (5, 3), elements=st.floats(-1e6, 1e6, allow_subnormal=False)),
    actions=arrays(np.int64, 5, elements=st.integers(0, 3)),
    rewards=arrays(np.float64, 5, elements=st.floats(-10, 10, allow_subnormal=False)),
    propensities=arrays(np.float64, 5, elements=st.floats(1e-6, 1.0)),
)
def test_dsjson_round_trip_is_exact(X, actions, rewards, propensities):
    log = LoggedBandit(X, actions, rewards, propensities, 4)
    buffer = io.StringIO()
    write_dsjson(log, buffer)
    _same(read_dsjson(buffer.getvalue().splitlines()), log)


def test_dsjson_reader_skips_unlabelled_and_names_bad_lines(rng):
    lines = io.StringIO()
    write_dsjson(_log(rng, n=2, position=False), lines)
    good = lines.getvalue().splitlines()
    unlabelled = orjson.dumps({k: v for k, v in orjson.loads(good[0]).items()
                               if not k.startswith("_label")}).decode()
    log = read_dsjson([good[0], unlabelled, good[1]])
    assert log.n == 2 and log.skipped == {"unlabelled": 1} and log.position is None
    bad_p = good[1].replace('"_label_probability":', '"_label_probability":7,"x":')
    for lines_, message in (
        ([good[0], "{not json"], "line 2: not JSON"),
        ([bad_p], r"line 1: _label_probability: expected a number in \(0, 1\], got 7"),
        ([good[0].replace('"_label_Action":', '"_label_Action":9,"y":')], "expected 1..3, got 9"),
        (['{"c": {}}'], "no labelled event"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            read_dsjson(lines_)


def test_vowpal_wabbit_learns_from_the_written_dsjson(rng):
    # VW's own DSJSON parser reads the labels: on a log where action == the context bit is
    # rewarded, cb_explore_adf learns to pick it.
    from vowpalwabbit import Workspace

    n = 2000
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n)])
    actions = rng.integers(3, size=n)
    log = LoggedBandit(X, actions, (actions == X[:, 1]).astype(float), np.full(n, 1 / 3), 3,
                       context_names=("bias", "bit"))
    buffer = io.StringIO()
    write_dsjson(log, buffer)
    lines = buffer.getvalue().splitlines()
    vw = Workspace("--cb_explore_adf --dsjson --quiet -q UA --epsilon 0.0")
    for line in lines:
        example = vw.parse(line)
        vw.learn(example)
        vw.finish_example(example)
    for bit in (0, 1):
        example = vw.parse(lines[int(np.flatnonzero(X[:, 1] == bit)[0])])
        assert int(np.argmax(vw.predict(example))) == bit
        vw.finish_example(example)


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


def test_cmab_export_dsjson_writes_a_log_vw_trains_on(spec, rng, tmp_path, capsys):
    # The engine's own joined log, exported and trained on by VW's DSJSON parser: VW learns
    # the slot's rewarded arm per plan (the context column the export encodes one-hot).
    from vowpalwabbit import Workspace

    from bandit.cli import main

    events = _joined(spec, 600, rng)
    for e in events:  # "pro" subscribers click "urgent", the others "plain"
        best = "urgent" if e.context["plan"] == "pro" else "plain"
        e.rewards["subject_line"] = float(e.slots["subject_line"].arm == best)
    joined = tmp_path / "joined.jsonl"
    joined.write_text("".join(e.model_dump_json() + "\n" for e in events))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    out = tmp_path / "subject.dsjson"
    code = main(["export-dsjson", "--joined", str(joined), "--spec", str(spec_file), "--slot",
                 "subject_line", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    live = [e for e in events if not e.holdout]
    assert f"{len(live):,} events (left out: holdout" in capsys.readouterr().out
    _same(read_dsjson(out), read_joined(joined, spec, "subject_line"))
    lines = out.read_text().splitlines()
    vw = Workspace("--cb_explore_adf --dsjson --quiet -q UA --epsilon 0.0")
    for _ in range(3):
        for line in lines:
            example = vw.parse(line)
            vw.learn(example)
            vw.finish_example(example)
    arms = ("plain", "urgent", "question")
    for plan, best in (("pro", "urgent"), ("free", "plain")):
        i = next(i for i, e in enumerate(live) if e.context["plan"] == plan)
        example = vw.parse(lines[i])
        assert arms[int(np.argmax(vw.predict(example)))] == best
        vw.finish_example(example)
    code = main(["export-dsjson", "--joined", str(joined), "--spec", str(spec_file), "--slot",
                 "offer", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no slot 'offer'" in err
