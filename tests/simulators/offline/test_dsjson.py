"""Vowpal Wabbit's DSJSON both ways: VW's own logs read (checked against VW's parser), every
line that cannot be mapped refused with its number and reason, the export of a joined log (the
logged distributions, decision ids, times and arm features) read back exactly, and VW learning
from what the export writes."""

import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from vowpalwabbit import LabelType, Workspace

from bandit.engine import Engine
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest, JoinedEvent, LoggedDecision
from simulators.offline.logs import LoggedBandit, read_dsjson, read_joined, write_dsjson

# Unmodified copies of VW's test/train-sets DSJSON files (provenance and licence beside them).
VW_DSJSON = Path(__file__).parents[2] / "data" / "vw-dsjson"
VW_FILES = ("cb_simple.json", "decisionservice.json", "dsjson_cb.json",
            "dsjson_cb_default_ns.json", "no_shared_features.json")


def _vw_lines(name):
    return [line for line in (VW_DSJSON / name).read_text().splitlines() if line.strip()]


def _learn(vw, lines, passes=1):
    for _ in range(passes):
        for line in lines:
            examples = vw.parse(line)
            vw.learn(examples)
            vw.finish_example(examples)


# -- reading VW's own logs ----------------------------------------------------------------


@pytest.mark.parametrize("name", VW_FILES)
def test_vw_files_read_as_vw_parses_them(name):
    # VW's parser is the reference: per line the same number of actions, the label on the same
    # action with the same cost and probability, and as many features per example as VW makes
    # (VW adds its constant feature to each).
    log = read_dsjson(VW_DSJSON / name)
    vw = Workspace("--cb_explore_adf --dsjson --quiet")
    lines = _vw_lines(name)
    assert log.n == len(lines) and not log.skipped
    F = log.action_features
    assert F is not None and F.shape[0] == log.n_actions
    for i, line in enumerate(lines):
        shared, *actions = vw.parse(line)
        assert len(actions) == log.n_actions
        labelled = [a for a, ex in enumerate(actions)
                    if ex.get_label(LabelType.CONTEXTUAL_BANDIT).costs]
        assert labelled == [log.actions[i]]
        (cost,) = actions[log.actions[i]].get_label(LabelType.CONTEXTUAL_BANDIT).costs
        assert -log.rewards[i] == pytest.approx(cost.cost, abs=1e-7)
        assert log.propensities[i] == pytest.approx(cost.probability, rel=1e-6)
        context = 0 if log.context_names == ("(constant)",) else np.count_nonzero(log.X[i])
        assert shared.get_feature_number() == context + 1
        assert [ex.get_feature_number() for ex in actions] == [
            np.count_nonzero(F[a]) + 1 for a in range(log.n_actions)]
        vw.finish_example([shared, *actions])
    np.testing.assert_allclose(log.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_dsjson_cb_fields():
    # The Personalizer-style file: the context namespace given as a list, string features
    # one-hot, the action features of the namespaces i and j, "p" in the order of "a".
    log = read_dsjson(VW_DSJSON / "dsjson_cb.json")
    first = orjson.loads(_vw_lines("dsjson_cb.json")[0])
    assert log.action_names == ("Cappucino", "Cold brew", "Iced mocha", "Latte")
    assert log.context_names[:3] == ("FromUrl.timeofday=Afternoon", "FromUrl.weather=Sunny",
                                     "FromUrl.name=Cathy")
    np.testing.assert_array_equal(log.X[0, :3], 1.0)
    assert log.X[0].sum() == 3
    names = log.action_feature_names
    assert names[:6] == ("i.constant", "i.id=Cappucino", "j.type=hot", "j.origin=kenya",
                         "j.organic=yes", "j.roast=dark")
    assert log.action_features[1, names.index("j.type=cold")] == 1
    assert log.action_features[1, names.index("j.type=hot")] == 0
    # a = [4, 2, 1, 3], p = [0.05, 0.05, 0.05, 0.85]: action 3 (Iced mocha) had 0.85; the
    # logged one (_labelIndex 3, Latte) 0.05.
    assert first["a"] == [4, 2, 1, 3] and log.actions[0] == 3
    np.testing.assert_allclose(log.probabilities[0], [0.05, 0.05, 0.85, 0.05], rtol=1e-6)
    assert log.event_ids[0] == first["EventId"] == "13118d9b4c114f8485d9dec417e3aefe"
    assert log.timestamps[0] == 1612456289246  # 2021-02-04T16:31:29.2460000Z
    assert log.rewards[1] == 1.0 and log.rewards[0] == 0.0  # _label_cost -1 and -0


def test_decision_service_nested_namespaces_and_ignored_fields():
    log = read_dsjson(VW_DSJSON / "decisionservice.json")
    assert log.n_actions == 12 and log.actions.tolist() == [9, 9, 9]
    assert "Geo.city=New Orleans" in log.context_names
    assert "OUserAgent.DeviceType=Desktop" in log.context_names
    # "_"-prefixed fields are no features for VW, nor here; false adds none.
    assert not any("_" in name.split(".")[-1][:1] for name in log.context_names)
    assert not any("_ua" in name or "_synthetic" in name for name in log.context_names)
    assert "j.RVisionTags.person" in log.action_feature_names
    assert "j.SVisionAdult.adultScore" in log.action_feature_names
    assert "j.XSentiment" in log.action_feature_names


def test_a_log_without_shared_features_has_vw_constant():
    log = read_dsjson(VW_DSJSON / "no_shared_features.json")
    assert log.context_names == ("(constant)",) and log.X.tolist() == [[1.0]]
    assert log.action_feature_names == ("name3.name4", "name3.name2", "name3.name",
                                        "name3.name5")


# -- refusals -----------------------------------------------------------------------------


def _edit(record, change):
    out = orjson.loads(orjson.dumps(record))
    change(out)
    return orjson.dumps(out).decode()


def _drop(*keys):
    def change(r):
        for key in keys:
            r.pop(key)
    return change


def _set(path, value):
    def change(r):
        target = r
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(("c", "_multi"), []), r"c._multi: no actions"),
        (lambda r: r["c"].pop("_multi"), r"c._multi: no actions"),
        (_set(("_labelIndex",), 4), r"_labelIndex: expected 0..3 \(the 4 actions of c._multi\), "
                                    "got 4"),
        (_set(("_label_Action",), 2), r"_label_Action: 2 is not _labelIndex 3 \+ 1"),
        (_drop("_labelIndex", "_label_Action"), r"_labelIndex: missing"),
        (_drop("_label_probability"), r"_label_probability: missing"),
        (_set(("_label_probability",), 0), r"_label_probability: expected a number in \(0, 1\]"),
        (_set(("_label_cost",), "high"), r"_label_cost: expected a finite number, got 'high'"),
        (_set(("c", "FromUrl"), [["nested"]]), r"c.FromUrl\[0\]: \['nested'\]: VW reads a list "
                                               "of numbers or of objects only"),
        (_set(("c", "FromUrl"), ["a", "b"]), r"c.FromUrl\[0\]: 'a': VW reads a list"),
        (_set(("c", "_multi", 1, "j"), [{"x": [True]}]), r"c._multi\[1\].j\[0\].x\[0\]: True"),
        (_set(("c", "_slots"), [{}]), r"c._slots: not read here"),
        (_set(("c", "_multi", 0, "_label"), "0:1:0.5"), r"c._multi\[0\]._label: not read here"),
        (_set(("c", "_multi", 2), "Latte"), r"c._multi\[2\]: expected an object"),
        (_drop("a"), r"a: missing: VW skips an event without its action order"),
        (lambda r: r.update(_a=r.pop("a")), r"a: missing: .* \(VW ignores a top-level '_a'\)"),
        (_set(("a",), [4, 2, 2, 3]), r"a: expected distinct action ids in 1..4"),
        (_set(("a",), [1, 2, 3]), r"a: the logged action 4 is not in \[1, 2, 3\]"),
        (_set(("p",), [0.05, 0.05, 0.85]), r"p: expected 4 probabilities"),
        (_set(("p",), [0.85, 0.05, 0.05, 0.05]), r"p: the logged action's probability 0.85 "
                                                  "differs from _label_probability"),
        (_set(("p",), [0.05, 0.05, 0.05, 0.05]), r"p: the probabilities sum to 0.2"),
        (_set(("pdrop",), 0.5), r"pdrop: 0.5: .* weighted events are not supported"),
        (_set(("_outcomes",), []), r"_outcomes: a conditional contextual bandit"),
        (_set(("Timestamp",), "yesterday"), r"Timestamp: expected an ISO 8601 time"),
        (_set(("_label_ca_action",), 1.0), r"_label_ca_action: not a contextual bandit label"),
    ],
)
def test_lines_that_cannot_be_mapped_are_refused_with_their_number(change, message):
    good = _vw_lines("dsjson_cb.json")[:2]
    with pytest.raises(InvalidInputError, match=f"line 3: {message}"):
        read_dsjson([*good, _edit(orjson.loads(good[0]), change)])


def test_actions_must_be_the_same_on_every_line():
    good = _vw_lines("dsjson_cb.json")[:2]
    second = orjson.loads(good[1])  # Cappucino taken; a = [1, 3, 2, 4]

    def three_actions(r):
        r["c"]["_multi"].pop()
        r["a"], r["p"] = [1, 3, 2], [0.85, 0.1, 0.05]

    for change, reason in (
        (_set(("c", "_multi", 1, "j", 0, "type"), "warm"), r"action 1 \('Cold brew'\) has other "
                                                          "features than 'Cold brew'"),
        (three_actions, r"3 actions, not 4"),
    ):
        with pytest.raises(InvalidInputError, match=f"line 3: c._multi: {reason} \\(line 1\\): "
                                                    "a log whose actions change"):
            read_dsjson([*good, _edit(second, change)])


def test_unlabelled_and_skip_learn_events_are_left_out_as_vw_does():
    lines = _vw_lines("dsjson_cb.json")[:3]
    first = orjson.loads(lines[0])
    unlabelled = _edit(first, lambda r: [r.pop(k) for k in list(r) if k.startswith("_label")])
    skipped = _edit(first, _set(("_skipLearn",), True))
    log = read_dsjson([lines[0], unlabelled, skipped, lines[1], "", lines[2]])
    assert log.n == 3 and log.skipped == {"unlabelled": 1, "skip learn": 1}
    for lines_, message in (([lines[0], "{not json"], "line 2: not JSON"),
                            (['{"c": {}}'], "no labelled event"),
                            (["[1]"], "line 1: expected an object with a 'c' context")):
        with pytest.raises(InvalidInputError, match=message):
            read_dsjson(lines_)


# -- writing, and reading back ------------------------------------------------------------


def _log(rng, n=20, k=3, d=4, position=True, unknown=()):
    actions = rng.integers(k, size=n)
    P = rng.dirichlet(np.ones(k), size=n)
    P[list(unknown)] = np.nan
    propensities = np.where(np.isnan(P[:, 0]), rng.uniform(0.1, 1, n), P[np.arange(n), actions])
    return LoggedBandit(
        rng.normal(size=(n, d)), actions, rng.random(n), propensities, k,
        action_features=rng.normal(size=(k, 2)),
        position=rng.integers(1, 4, size=n) if position else None,
        action_names=tuple(f"arm{a}" for a in range(k)),
        context_names=tuple(f"u{j}" for j in range(d)), name="sim", probabilities=P,
        event_ids=tuple(f"{i:032x}" for i in range(n)),
        timestamps=rng.integers(1_600_000_000_000, 1_700_000_000_000, size=n),
        action_feature_names=("tone", "length"))


def _same(read, log):
    """read_dsjson(write_dsjson(log)) is log: every column and name, the context's in the
    namespace User, the action features after the arms' id features."""
    for name in ("X", "actions", "rewards", "propensities", "position", "probabilities",
                 "timestamps"):
        np.testing.assert_array_equal(getattr(read, name), getattr(log, name), err_msg=name)
    assert (read.n_actions, read.action_names, read.event_ids) == (
        log.n_actions, log.action_names, log.event_ids)
    assert read.context_names == tuple(f"User.{c}" for c in log.context_names)
    ids = [f"Action.id={a}" for a in log.action_names]
    names = list(read.action_feature_names)
    np.testing.assert_array_equal(read.action_features[:, [names.index(i) for i in ids]],
                                  np.eye(log.n_actions))
    if log.action_features is None:
        assert sorted(names) == sorted(ids)
    else:
        columns = [names.index(f"Action.{f}") for f in log.action_feature_names]
        np.testing.assert_array_equal(read.action_features[:, columns], log.action_features)


def test_dsjson_fields_and_round_trip(rng, tmp_path):
    log = _log(rng, unknown=(2, 5))
    path = tmp_path / "log.dsjson"
    assert write_dsjson(log, path) == log.n
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    first = lines[0]
    a = int(log.actions[0])
    assert first["_label_Action"] == a + 1 and first["_labelIndex"] == a
    assert first["_label_cost"] == -log.rewards[0]
    assert first["EventId"] == log.event_ids[0]
    # VW's order: the logged action first, "p" the logging policy's distribution in that order.
    assert first["a"][0] == a + 1 and sorted(first["a"]) == [1, 2, 3]
    assert first["_label_probability"] == first["p"][0] == log.propensities[0]
    assert first["p"] == [log.probabilities[0, b - 1] for b in first["a"]]
    assert first["c"]["_multi"][1] == {"_tag": "arm1", "Action": {
        "id": "arm1", "tone": log.action_features[1, 0], "length": log.action_features[1, 1]}}
    # Events whose distribution was not logged get no "p", not a made-up one.
    assert "p" not in lines[2] and "p" not in lines[5] and "p" in lines[3]
    _same(read_dsjson(path, name="sim"), log)


@settings(max_examples=40, deadline=None)
@given(
    X=arrays(np.float64, (5, 3), elements=st.floats(-1e6, 1e6, allow_subnormal=False)),
    actions=arrays(np.int64, 5, elements=st.integers(0, 3)),
    rewards=arrays(np.float64, 5, elements=st.floats(-10, 10, allow_subnormal=False)),
    weights=arrays(np.float64, (5, 4), elements=st.floats(1e-3, 1.0)),
    ts=arrays(np.int64, 5, elements=st.integers(0, 4_000_000_000_000)),
)
def test_dsjson_round_trip_is_exact(X, actions, rewards, weights, ts):
    P = weights / weights.sum(axis=1, keepdims=True)
    log = LoggedBandit(X, actions, rewards, P[np.arange(5), actions], 4, probabilities=P,
                       timestamps=ts)
    buffer = io.StringIO()
    write_dsjson(log, buffer)
    _same(read_dsjson(buffer.getvalue().splitlines()), log)


def test_vowpal_wabbit_reads_the_written_labels_and_learns(rng):
    # VW's own DSJSON parser reads the labels as written, and on a log where action == the
    # context bit is rewarded, cb_explore_adf learns to pick it.
    n = 2000
    X = np.column_stack([np.ones(n), rng.integers(0, 2, n)])
    actions = rng.integers(3, size=n)
    log = LoggedBandit(X, actions, (actions == X[:, 1]).astype(float), np.full(n, 1 / 3), 3,
                       context_names=("bias", "bit"), probabilities=np.full((n, 3), 1 / 3))
    buffer = io.StringIO()
    write_dsjson(log, buffer)
    lines = buffer.getvalue().splitlines()
    vw = Workspace("--cb_explore_adf --dsjson --quiet -q UA --epsilon 0.0")
    shared, *examples = vw.parse(lines[0])
    (cost,) = examples[actions[0]].get_label(LabelType.CONTEXTUAL_BANDIT).costs
    assert (cost.cost, cost.probability) == pytest.approx((-log.rewards[0], 1 / 3))
    vw.finish_example([shared, *examples])
    _learn(vw, lines)
    for bit in (0, 1):
        example = vw.parse(lines[int(np.flatnonzero(X[:, 1] == bit)[0])])
        assert int(np.argmax(vw.predict(example))) == bit
        vw.finish_example(example)


# -- cmab export-dsjson -------------------------------------------------------------------


@pytest.fixture
def spec(newsletter_spec):
    return CampaignSpec.model_validate(newsletter_spec("weekly"))


def _files(tmp_path, spec, events):
    """The joined log and the spec as ``cmab export-dsjson`` reads them: (joined, spec) paths."""
    joined = tmp_path / "joined.jsonl"
    joined.write_text("".join(e.model_dump_json() + "\n" for e in events))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    return joined, spec_file


def _joined(spec, n, rng, best):
    """A real engine's logged decisions (with every arm's probability) on random subscribers,
    joined with a click on ``best(context)``'s artwork arm."""
    engine = Engine(seed=3)
    engine.create_campaign(spec)
    logs = []
    engine.decision_sink = logs.append
    requests = [DecisionRequest(campaign=spec.name, user_id=f"u{i}", context={
        "engagement": float(rng.random()), "plan": str(rng.choice(["free", "pro", "team"]))},
        segments={"region": "north"}) for i in range(n)]
    engine.decide_many(spec.name, requests)
    events = []
    for line in (line for log in logs for line in log.lines()):
        logged = LoggedDecision.model_validate_json(line)
        rewards = {s: float(c.arm == best(logged.context)) if s == "artwork" else 0.0
                   for s, c in logged.slots.items()}
        events.append(JoinedEvent(**logged.model_dump(), rewards=rewards))
    return events


def test_cmab_export_dsjson_writes_what_was_logged_and_vw_learns_from_it(spec, rng, tmp_path,
                                                                         capsys):
    from bandit.cli import main

    def best(context):  # "pro" subscribers click the calm artwork, the others the action one
        return "calm" if context["plan"] == "pro" else "action"

    events = _joined(spec, 800, rng, best)
    joined, spec_file = _files(tmp_path, spec, events)
    out = tmp_path / "artwork.dsjson"
    code = main(["export-dsjson", "--joined", str(joined), "--spec", str(spec_file), "--slot",
                 "artwork", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.err == ""  # every decision logged its distribution: no warning
    live = [e for e in events if not e.holdout]
    assert f"{len(live):,} events (left out: holdout" in printed.out
    lines = out.read_text().splitlines()
    first, e = orjson.loads(lines[0]), live[0]
    assert first["EventId"] == e.decision_id and first["_label_cost"] == -e.rewards["artwork"]
    assert first["Timestamp"].endswith("Z")
    arms = [a.id for a in spec.slots[1].arms]
    assert [arms[b - 1] for b in first["a"]][0] == e.slots["artwork"].arm
    assert first["p"] == [e.slots["artwork"].probabilities[arms[b - 1]] for b in first["a"]]
    assert first["c"]["_multi"][0] == {"_tag": "action", "Action": {
        "id": "action", "scene=action": 1.0, "scene=calm": 0.0, "scene=comedy": 0.0,
        "scene=(unknown)": 0.0, "brightness": 0.8}}
    # Read back: the slot's content as the joined log holds it, arm features from the spec.
    read, log = read_dsjson(out), read_joined(joined, spec, "artwork")
    for name in ("X", "actions", "rewards", "propensities", "probabilities", "timestamps"):
        np.testing.assert_array_equal(getattr(read, name), getattr(log, name), err_msg=name)
    assert read.event_ids == tuple(e.decision_id for e in live)
    assert read.action_features[:, read.action_feature_names.index("Action.brightness")
                                ].tolist() == [0.8, 0.2]
    # VW trains on it: per plan it ranks the clicked artwork first.
    vw = Workspace("--cb_explore_adf --dsjson --quiet -q UA --epsilon 0.0")
    _learn(vw, lines, passes=3)
    for plan in ("pro", "free"):
        i = next(i for i, e in enumerate(live) if e.context["plan"] == plan)
        example = vw.parse(lines[i])
        assert arms[int(np.argmax(vw.predict(example)))] == best({"plan": plan})
        vw.finish_example(example)


def test_cmab_export_dsjson_warns_once_about_decisions_without_a_distribution(spec, rng,
                                                                              tmp_path, capsys):
    from bandit.cli import main

    events = _joined(spec, 40, rng, lambda context: "calm")
    legacy = [i for i, e in enumerate(events) if not e.holdout][:5]
    for i in legacy:  # joined from an impression: only the chosen arm's propensity is known
        e = events[i]
        slots = {s: c.model_copy(update={"probabilities": {}}) for s, c in e.slots.items()}
        events[i] = e.model_copy(update={"slots": slots})
    joined, spec_file = _files(tmp_path, spec, events)
    out = tmp_path / "subject.dsjson"
    code = main(["export-dsjson", "--joined", str(joined), "--spec", str(spec_file), "--slot",
                 "subject_line", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and err.count("\n") == 1
    live = sum(not e.holdout for e in events)
    assert f"warning: 5 of {live} decisions were joined without the probability" in err
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert sum("p" not in line for line in lines) == 5
    assert all("_label_probability" in line and "a" in line for line in lines)
    read = read_dsjson(out)
    assert np.isnan(read.probabilities).all(axis=1).sum() == 5
    assert read.action_feature_names == ("Action.id=plain", "Action.id=urgent",
                                         "Action.id=question")
    code = main(["export-dsjson", "--joined", str(joined), "--spec", str(spec_file), "--slot",
                 "offer", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no slot 'offer'" in err


def test_decision_columns_are_checked_and_kept_by_take(rng):
    log = _log(rng, n=6, unknown=(1,))
    part = log.take(np.array([0, 1, 4]))
    np.testing.assert_array_equal(part.probabilities, log.probabilities[[0, 1, 4]])
    np.testing.assert_array_equal(part.timestamps, log.timestamps[[0, 1, 4]])
    assert part.event_ids == tuple(log.event_ids[i] for i in (0, 1, 4))
    assert log.take(log.actions == log.actions[0]).event_ids[0] == log.event_ids[0]
    columns = {"X": np.ones((2, 1)), "actions": np.array([0, 1]), "rewards": np.zeros(2),
               "propensities": np.array([0.25, 0.5]), "n_actions": 2}
    for change, message in (
        ({"probabilities": np.ones((2, 3))}, r"probabilities: expected shape \(2, 2\)"),
        ({"probabilities": np.array([[0.25, 0.75], [0.5, 1.5]])},
         r"probabilities: row 1: expected every probability in \[0, 1\]"),
        ({"probabilities": np.array([[0.25, 0.75], [0.75, 0.25]])},
         r"probabilities: row 1: the logged action's probability differs from its propensity, "
         "got 0.25"),
        ({"event_ids": ("a",)}, "event_ids: expected 2, got 1"),
        ({"timestamps": np.array([1.5, 2.0])}, r"timestamps: expected \(2,\) integers"),
        ({"action_features": np.ones((2, 1)), "action_feature_names": ("a", "b")},
         "action_feature_names: expected 1, got 2"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            LoggedBandit(**columns | change)
