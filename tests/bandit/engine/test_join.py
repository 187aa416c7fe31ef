"""The attribution join: event time only, so batching never changes what is learned."""

import gc

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine.join import _TEXTS_SLACK, ERASED, Joiner, subject_key
from bandit.engine.windows import _distinct_rows
from bandit.models import CampaignSpec, Click, Impression, LoggedDecision, Open

WINDOW = 100


def spec(rule="sum", default=0.0):
    return CampaignSpec.model_validate({
        "name": "w", "attribution_window_ms": WINDOW, "reward_aggregation": rule,
        "default_reward": default,
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"},
                  {"name": "t", "arms": [{"id": "x"}], "default_arm": "x"}]})


def imp(i, ts):
    return Impression(event_id=f"i{i}", decision_id=f"{i:032x}", campaign="w", user_id=f"u{i % 3}",
                      ts=ts, slots={"s": {"arm": "ab"[i % 2], "propensity": 0.5},
                                    "t": {"arm": "x", "propensity": 1.0}})


def click(i, j, ts, reward=1.0, slot=None):
    return Click(event_id=f"c{i}-{j}", decision_id=f"{i:032x}", campaign="w", ts=ts,
                 reward=reward, slot=slot)


def varied_imp(i, ts):
    """Impressions of several shapes: a slot or both in either order, no context, numbers and
    strings in the context, segments or none (the open windows store each shape once)."""
    slots = [{"s": {"arm": "ab"[i % 2], "propensity": 0.25 + i % 3 / 4}},
             {"t": {"arm": "x", "propensity": 1.0}, "s": {"arm": "b", "propensity": 0.5}},
             {"s": {"arm": "a", "propensity": 0.5}, "t": {"arm": "x", "propensity": 1.0}}][i % 3]
    context = [None, {"x": i / 4, "tier": f"t{i % 2}"}, {"tier": "t0"}, {}][i % 4]
    return Impression(event_id=f"i{i}", decision_id=f"{i:032x}", campaign="w",
                      user_id=f"u{i % 3}", ts=ts, slots=slots, context=context,
                      segments={"region": f"r{i % 2}"} if i % 2 else {}, holdout=i % 5 == 0)


@st.composite
def streams(draw, make=imp):
    """A time-ordered stream: impressions, clicks inside or after their windows, duplicates."""
    events = []
    for i in range(draw(st.integers(1, 12))):
        t0 = draw(st.integers(0, 400))
        events.append((t0, make(i, t0)))
        for j in range(draw(st.integers(0, 3))):
            dt = draw(st.integers(0, WINDOW + 50))
            slot = draw(st.sampled_from([None, "s", "t"]))
            reward = draw(st.sampled_from([0.5, 1.0, 2.0]))
            events.append((t0 + dt, click(i, j, t0 + dt, reward, slot)))
    if draw(st.booleans()):
        events.append(events[0])  # a duplicate delivery
    events.sort(key=lambda e: e[0])
    return [e for _, e in events] + [imp(999, 10_000)]  # flush every window


def _run(events, cuts, rule):
    j = Joiner(lambda name: spec(rule))
    joined, rejected = [], []
    bounds = [0, *sorted(cuts), len(events)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out = j.add(events[lo:hi])
        joined += out.joined
        rejected += [(r.event.event_id, r.reason) for r in out.rejected]
    return joined, sorted(rejected)


@settings(max_examples=60, deadline=None)
@given(events=streams(), data=st.data(), rule=st.sampled_from(["sum", "max", "earliest"]))
def test_any_batching_of_a_stream_gives_the_same_joins(events, data, rule):
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=6))
    whole = _run(events, [], rule)
    assert _run(events, cuts, rule) == whole
    assert len({e.decision_id for e in whole[0]}) == len(whole[0])  # each decision once


@pytest.mark.parametrize(("rule", "want"), [("sum", 3.5), ("max", 2.0), ("earliest", 0.5)])
def test_aggregation_rules(rule, want):
    j = Joiner(lambda name: spec(rule))
    j.add([imp(1, 0), click(1, 2, 30, 2.0), click(1, 1, 10, 0.5), click(1, 3, 50, 1.0, slot="s")])
    (joined,) = j.add([imp(2, 500)]).joined
    assert joined.rewards["s"] == pytest.approx(want)
    assert joined.rewards["t"] == {"sum": 2.5, "max": 2.0, "earliest": 0.5}[rule]


def test_no_click_learns_the_default_reward_and_late_clicks_are_rejected():
    j = Joiner(lambda name: spec(default=-0.1))
    out = j.add([imp(1, 0), click(1, 1, WINDOW + 1), imp(2, 150)])
    assert [e.rewards for e in out.joined] == [{"s": -0.1, "t": -0.1}]
    assert [r.reason for r in out.rejected] == ["late: outside the attribution window"]
    out = j.add([click(1, 2, 160)])  # after its window closed, within the retention
    assert [r.reason for r in out.rejected] == ["late: outside the attribution window"]


def test_a_click_before_its_impression_waits_for_it():
    j = Joiner(lambda name: spec())
    assert j.add([click(1, 1, 5)]).rejected == []
    j.add([imp(1, 0)])
    (joined,) = j.add([imp(2, 1000)]).joined
    assert joined.rewards == {"s": 1.0, "t": 1.0}


def test_an_orphan_click_is_rejected_once_its_window_could_not_open():
    j = Joiner(lambda name: spec())
    j.add([click(7, 1, 0)])
    out = j.add([imp(2, 10 * WINDOW)])
    assert [r.reason for r in out.rejected] == ["orphan: no decision within the window"]


def test_state_round_trip_resumes_the_same_join():
    events = [imp(1, 0), click(1, 1, 10), imp(2, 50), click(2, 1, 60, 2.0), click(3, 1, 70)]
    a = Joiner(lambda name: spec())
    a.add(events)
    b = Joiner.from_state(*a.state(), lambda name: spec())
    tail = [click(1, 1, 20), click(2, 2, 90), imp(3, 65), imp(4, 1000)]  # a duplicate, then more
    out_a, out_b = a.add(tail), b.add(tail)
    assert out_a.joined == out_b.joined and len(out_a.joined) == 3
    assert [r.reason for r in out_a.rejected] == [r.reason for r in out_b.rejected]


@settings(max_examples=60, deadline=None)
@given(events=streams(make=varied_imp), data=st.data(),
       rule=st.sampled_from(["sum", "max", "earliest"]))
def test_a_join_restored_at_any_point_ends_like_an_uninterrupted_one(events, data, rule):
    """Checkpoint and restore between any batches, with erasures: the same joins, the same
    rejections (the restored windows, their clicks and the dedup memory are all there); the
    other subjects' joins are those of a run without the erasure (it renumbers strings)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    erase = data.draw(st.sampled_from([None, "u0", "u1"]))
    erase_at = data.draw(st.integers(0, len(events)))
    erased_until = data.draw(st.integers(-1, 500))  # event time: later impressions are new

    def run(restore, erase=erase):
        j = Joiner(lambda name: spec(rule))
        joined, rejected = [], []
        bounds = sorted({0, *cuts, erase_at, len(events)})
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            if lo == erase_at and erase is not None:
                j.erase({subject_key(erase): erased_until})
            out = j.add(events[lo:hi])
            joined += [e.model_dump() for e in out.joined]
            rejected += [(r.event.event_id, r.reason) for r in out.rejected]
            if restore:
                j = Joiner.from_state(*j.state(), lambda name: spec(rule))
        return joined, sorted(rejected), j.open_count

    assert run(restore=True) == run(restore=False)
    key = None if erase is None else subject_key(erase).hex()
    others = [[e for e in joined if e["subject"] != key]
              for joined in (run(restore=True)[0], run(restore=False, erase=None)[0])]
    assert others[0] == others[1]


def test_rows_of_closed_windows_are_reused():
    j = Joiner(lambda name: spec())
    for week in range(3):
        j.add([varied_imp(i, week * 1000) for i in range(week * 50, week * 50 + 50)])
        assert j.open_count == 50
    assert j._size == 100  # the second week's rows were taken again by the third's


@pytest.mark.parametrize(("name", "damage"), [
    ("reward_row", lambda a: a + 99), ("reward_slot", lambda a: a + 5),
    ("reward_kind", lambda a: a + 9), ("count_row", lambda a: a + 99), ("arm", lambda a: a + 99),
    ("shape", lambda a: a + 7), ("ts", lambda a: a[:-1]), ("sent", lambda a: a + 5),
    ("subjects", lambda a: a[:-16]), ("vectors", lambda a: a[:0]),
    ("vector_of", lambda a: a + 99), ("vector_of", lambda a: a[:-1]),
    ("vectors", lambda a: np.frombuffer(a.tobytes().replace(b"\n", b"\x1e{}\n") + b"\x1e{}",
                                        dtype=np.uint8))])
def test_a_damaged_join_state_is_refused(name, damage):
    j = Joiner(lambda name: spec())
    j.add([varied_imp(i, 0) for i in range(6)] + [click(1, 1, 5)])
    meta, arrays = j.state()
    arrays[name] = damage(arrays[name])
    with pytest.raises(ValueError, match="open windows"):
        Joiner.from_state(meta, arrays, lambda name: spec())


def _vectors_of(j: Joiner, rows: np.ndarray) -> list[tuple[bytes, ...]]:
    """Per open row of ``rows`` its slots' probability texts."""
    return [tuple(j._texts[i] for i in row if i >= 0) for row in j._vector_cells(rows).tolist()]


def test_the_open_windows_store_each_distinct_row_of_vectors_once():
    j = Joiner(lambda name: spec())
    j.add([varied_imp(i, 0) for i in range(40)])
    meta, arrays = j.state()
    rows = _vectors_of(j, np.flatnonzero(j._live[:j._size]))
    assert len(arrays["vector_of"]) == 40 and len(set(rows)) < 40  # rows repeat: stored once
    assert arrays["vectors"].tobytes().count(b"\n") == len(set(rows)) - 1
    assert _vectors_of(Joiner.from_state(meta, arrays, lambda name: spec()), np.arange(40)) == rows


def test_the_open_windows_keep_only_the_vector_texts_open_decisions_use():
    """Texts of closed decisions leave the table once they outnumber the used ones."""
    def decision(i, ts):  # each with its own vector
        return LoggedDecision.model_validate({
            "decision_id": f"{i:032x}", "campaign": "w", "subject": "5e" * 16, "ts": ts,
            "model_version": 1, "slots": {"s": {"arm": "a", "propensity": 1.0, "probabilities": {
                "a": 1.0, f"x{i}": 0.0}}}})

    j, n = Joiner(lambda name: spec()), _TEXTS_SLACK
    for k in range(4):
        j.add([decision(k * n + i, k * WINDOW * 2) for i in range(n)])
    assert len(j._texts) <= 3 * n and set(j._texts) >= {
        f'{{"a":1.0,"x{3 * n + i}":0.0}}'.encode() for i in range(n)}
    closed = j.add([], 10 * WINDOW).closed
    assert closed.probabilities()[7] == (f'{{"a":1.0,"x{3 * n + 7}":0.0}}'.encode(),)


def _tracked(join):
    """How many objects the garbage collector tracks among those a join's state reaches (not
    through its campaign lookup: a function reaches its module)."""
    gc.collect()  # untracks the tuples that hold only untracked values
    root = {k: v for k, v in vars(join).items() if k != "_campaign"}
    seen, todo, count = {id(root)}, [root], 0
    while todo:
        for child in gc.get_referents(todo.pop()):
            if gc.is_tracked(child) and not isinstance(child, type) and id(child) not in seen:
                seen.add(id(child))
                todo.append(child)
                count += 1
    return count


def test_the_open_windows_hold_no_collected_object_per_decision():
    """Open decisions and their outcome counts are columns: the garbage collector's work
    does not grow with them."""
    def tracked(n):
        j = Joiner(lambda name: spec())
        j.add([imp(i, 0) for i in range(n)] + [Open(event_id=f"o{i}", decision_id=f"{i:032x}",
                                                      campaign="w", ts=1) for i in range(n)])
        assert j.open_count == n and j.state()[1]["counts"].sum() == n
        return _tracked(j)
    assert tracked(2000) < tracked(20) + 20  # a few, whatever the garbage collector untracked


def test_a_join_state_with_every_rows_vectors_is_still_read():
    """A checkpoint written before the open windows stored each distinct row once: every
    live row's vectors, rows by newlines."""
    j = Joiner(lambda name: spec())
    j.add([varied_imp(i, 0) for i in range(12)] + [click(1, 1, 5)])
    meta, arrays = j.state()
    old = dict(arrays)
    table = arrays["vectors"].tobytes().split(b"\n")
    old["probabilities"] = np.frombuffer(b"\n".join(
        table[i] for i in arrays["vector_of"].tolist()), dtype=np.uint8)
    del old["vectors"], old["vector_of"]
    restored = Joiner.from_state(meta, old, lambda name: spec())
    assert _state_bytes(restored) == _state_bytes(Joiner.from_state(
        meta, arrays, lambda name: spec()))


def _state_bytes(j):
    meta, arrays = j.state()
    return repr(meta), {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()}


@settings(max_examples=60, deadline=None)
@given(events=streams(make=varied_imp), data=st.data())
def test_the_open_windows_do_not_depend_on_the_batching(events, data):
    """Rows, interned strings, shapes and column widths as a one-event-at-a-time insert makes
    them (a batch's impressions are written together), with a watermark that closes nothing
    until the end; then the same closed output."""
    # Strings new to the join in impressions of different shapes, batched together.
    renamed = [e.model_copy(update={"segments": {"region": f"n{e.event_id}"}})
               if isinstance(e, Impression) and e.event_id[-1] in "13" else
               e.model_copy(update={"context": {"tier": f"m{e.event_id}", "x": 1}})
               if isinstance(e, Impression) and e.event_id[-1] in "26" else e for e in events]
    seconds = [e.model_copy(update={"event_id": f"again-{e.event_id}"})
               for e in renamed[:3] if isinstance(e, Impression)]
    stream = renamed + seconds
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    one, cut = Joiner(lambda name: spec()), Joiner(lambda name: spec())
    for e in stream:
        one.add([e], watermark=0)
    bounds = [0, *sorted(cuts), len(stream)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        cut.add(stream[lo:hi], watermark=0)
    assert _state_bytes(cut) == _state_bytes(one)
    assert cut.add([], 10**6).closed.json() == one.add([], 10**6).closed.json()


_awkward_floats = st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308,
                                   123456789.125, -2.5, 1 / 3]) | st.floats(
    allow_nan=False, allow_infinity=False)
_labels = st.sampled_from(['a"b', "c,d", "\\", "\u00e9\u4e2d", "\x00\x1f", "x" * 40, ",", "]"]) | (
    st.text(min_size=1, max_size=8))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({
    "slots": st.sampled_from([("s",), ("t", "s"), ("s", "t")]),
    "arms": st.lists(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,6}\Z"), min_size=2,
                     max_size=2),
    "propensity": st.floats(1e-300, 1.0),
    "context": st.none() | st.dictionaries(st.sampled_from(["x", "tier", "y"]),
                                           _awkward_floats | _labels, max_size=3),
    "segments": st.dictionaries(st.sampled_from(["region", "age"]), _labels, max_size=2),
    "user": _labels, "holdout": st.booleans(), "ts": st.integers(0, 2**53 - WINDOW - 1),
    # Click rewards lie within models.REWARD_LIMIT (1e9).
    "reward": st.none() | _awkward_floats.filter(lambda r: abs(r) <= 1e9)}), min_size=1,
    max_size=12))
def test_closed_json_is_the_bytes_of_the_joined_event_for_any_values(rows):
    j = Joiner(lambda name: spec(default=-0.0))
    events = []
    for i, row in enumerate(rows):
        events.append(Impression(
            event_id=f"i{i}", decision_id=f"{i:032x}", campaign="w", user_id=row["user"],
            ts=row["ts"], holdout=row["holdout"], context=row["context"],
            segments=row["segments"], slots={
                slot: {"arm": arm, "propensity": row["propensity"]}
                for slot, arm in zip(row["slots"], row["arms"], strict=False)}))
        if row["reward"] is not None:
            events.append(Click(event_id=f"c{i}", decision_id=f"{i:032x}", campaign="w",
                                ts=row["ts"], reward=row["reward"], slot=row["slots"][0]))
    j.add(events, watermark=0)
    closed = j.add([], watermark=2**53 + 1).closed
    assert len(closed) == len(rows)
    assert closed.json() == [(e.decision_id, orjson.dumps(e.model_dump(
        mode="json", exclude_none=True))) for e in closed.events()]


def test_an_erased_subject_leaves_the_state_and_only_a_later_decision_comes_back():
    """Erasure at t: the subject's open decisions leave with their strings (the state holds
    neither the user id nor their string values), an impression at or before t is refused
    however often it comes (a replay, a restored join), one after t is a new decision."""
    j = Joiner(lambda name: spec())
    mine = Impression(event_id="i-mine", decision_id="a" * 32, campaign="w", user_id="alice",
                      ts=10, slots={"s": {"arm": "a", "propensity": 0.5}},
                      context={"x": 1.0, "tier": "alice-tier"}, segments={"city": "alice-city"})
    j.add([imp(0, 0), mine, varied_imp(1, 20)])
    secrets = [subject_key("alice").hex().encode(), b"alice-tier", b"alice-city"]

    def saved(join):
        meta, arrays = join.state()
        blob = orjson.dumps(meta) + b"".join(a.tobytes() for a in arrays.values())
        # subject keys are kept as bytes: look for their hex
        return blob + arrays["subjects"].tobytes().hex().encode()

    assert all(s in saved(j) for s in secrets)
    assert j.erase({subject_key("alice"): 50}) == (1, True)
    assert j.erase({subject_key("alice"): 50}) == (0, False)  # applied already
    assert not any(s in saved(j) for s in secrets)
    restored = Joiner.from_state(*j.state(), lambda name: spec())
    again = mine.model_copy(update={"event_id": "i-mine-again", "ts": 50})
    for join in (j, restored):
        out = join.add([again])
        assert [r.reason for r in out.rejected] == [ERASED] and join.open_count == 2
    later = mine.model_copy(update={"event_id": "i-back", "decision_id": "b" * 32, "ts": 51})
    assert restored.add([later]).rejected == [] and restored.open_count == 3
    closed = restored.add([imp(9, 10_000)]).joined
    assert sorted(e.subject for e in closed) == sorted(  # only the later one
        subject_key(u).hex() for u in ["alice", "u0", "u1"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), max_size=40))
def test_closed_json_finds_the_distinct_outcome_rows_numpy_finds(rows):
    counts = np.array(rows, dtype=np.int32).reshape(len(rows), 6)
    distinct, which = _distinct_rows(counts)
    if rows:
        expected, inverse = np.unique(counts, axis=0, return_inverse=True)
        np.testing.assert_array_equal(distinct, expected)
        np.testing.assert_array_equal(which, inverse.reshape(-1))
    np.testing.assert_array_equal(distinct[which], counts)


def test_windows_closing_together_close_in_decision_id_order():
    """Decisions whose windows close at the same time leave in decision-id order, whatever
    order they came in: ids that differ only in their last digits, or only in their first."""
    ids = [(1 << 64) + 2, 1, (1 << 64) + 1, 2 << 120, 2, 1 << 124]
    decisions = [imp(i, 0).model_copy(update={"decision_id": f"{i:032x}"}) for i in ids]
    out = Joiner(lambda name: spec()).add([*decisions, imp(999, WINDOW + 1)])
    assert [e.decision_id for e in out.joined] == [f"{i:032x}" for i in sorted(ids)]
    assert [decision_id for decision_id, _ in out.closed.json()] == [
        f"{i:032x}" for i in sorted(ids)]
