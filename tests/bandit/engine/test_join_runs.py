"""A binary block's decisions joined as one run (columns: ``Joiner.add`` of a ``DecisionLog``)
give exactly what the same decisions give one by one: per batch the closed decisions (their
joined JSON), the rejections (reason and event, in order) and what was excluded, and at the
end the same state, whatever the batching, repeats (within a run too), early outcomes,
erasures and the cap (runs far from it, at it and over it)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import numpy as np
import orjson
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from bandit import wire
from bandit.engine.decisionlog import DecisionLog
from bandit.engine.join import MAX_PENDING, Joiner
from bandit.wire import columns
from tests import streamdata

STREAMS = {a: streamdata.make(150, seed=21, activation=a) for a in ("decision", "send")}
_EVENT = msgspec.json.Decoder(wire.Event)


def _items(s: streamdata.Streams) -> list[tuple[float, int, object]]:
    """Each call's decisions as a run read back from its binary block, and every event, in
    event time order (a run at its call's time)."""
    runs = [(float(log.ts), 0, DecisionLog.of_block(columns.read(log.block())))
            for log in s.logs]
    events = [(float(e["ts"]), 1, _EVENT.decode(orjson.dumps(e))) for e in s.events]
    return sorted(runs + events, key=lambda item: item[:2])


def _expanded(batch: list[object]) -> list[object]:
    return [d for item in batch
            for d in (item.logged() if isinstance(item, DecisionLog) else [item])]


def _seen(result) -> tuple:
    closed = result.closed.json() if result.closed is not None else []
    return (closed, [(r.reason, msgspec.json.encode(r.event)) for r in result.rejected],
            dict(result.excluded))


def _same_state(a: Joiner, b: Joiner) -> None:
    meta_a, arrays_a = a.state()
    meta_b, arrays_b = b.state()
    assert orjson.dumps(meta_a) == orjson.dumps(meta_b)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


@settings(max_examples=80, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(st.data())
def test_a_run_joins_as_its_decisions_one_by_one(data):
    activation = data.draw(st.sampled_from(sorted(STREAMS)))
    s = STREAMS[activation]
    items = [item for _, _, item in _items(s)]
    # Some events move ahead of their decisions (they wait for them), some runs come twice.
    for _ in range(data.draw(st.integers(0, 5))):
        i = data.draw(st.integers(0, len(items) - 1))
        items.insert(data.draw(st.integers(0, i)), items.pop(i))
    runs = [i for i, item in enumerate(items) if isinstance(item, DecisionLog)]
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.sampled_from(runs))
        items.insert(data.draw(st.integers(at, len(items))), items[at])
    # Some runs hold a decision twice (a run and a copy of it, or of a neighbour, joined).
    runs = [i for i, item in enumerate(items) if isinstance(item, DecisionLog)]
    for _ in range(data.draw(st.integers(0, 2))):
        at = data.draw(st.sampled_from(runs))
        other = items[data.draw(st.sampled_from(runs))]
        items[at] = DecisionLog.concat([items[at], other])
    # Caps far above, at, just under and well under a run's size and the batches' totals: a
    # run is admitted at once or decision by decision, with the same outcome.
    cap = data.draw(st.sampled_from([MAX_PENDING, 40, 12]) | st.integers(1, 45))
    cuts = sorted(data.draw(st.lists(st.integers(1, len(items) - 1), max_size=12, unique=True)))
    erase_at = data.draw(st.sampled_from([None, *cuts]))
    subjects = sorted({d.subject for log in s.logs for d in log.logged()})
    erased = data.draw(st.lists(st.sampled_from(subjects), max_size=6, unique=True))
    spec = streamdata.spec(activation=activation)
    one, run = Joiner(lambda _: spec, cap), Joiner(lambda _: spec, cap)
    for start, stop in zip([0, *cuts], [*cuts, len(items)], strict=True):
        if start == erase_at and erased:
            at = float(items[start - 1].ts if not isinstance(items[start - 1], DecisionLog)
                       else np.max(items[start - 1].ts))
            forget = {bytes.fromhex(key): at for key in erased}
            assert one.erase(forget) == run.erase(forget)
        batch = items[start:stop]
        assert _seen(run.add(batch)) == _seen(one.add(_expanded(batch)))
    end = float(s.end_ts * 10)
    assert _seen(run.add([], end)) == _seen(one.add([], end))
    _same_state(one, run)


def test_a_run_of_decisions_from_the_service_joins_and_closes():
    """The plain case: every call's run, then a watermark: every decision closes once."""
    s = STREAMS["decision"]
    spec = streamdata.spec()
    join = Joiner(lambda _: spec)
    result = join.add([item for _, _, item in _items(s)])
    assert not result.rejected or {r.reason for r in result.rejected} <= {
        "late: outside the attribution window", "duplicate event_id"}
    closed = join.add([], float(s.end_ts * 10))
    ids = [d for d, _ in (result.closed.json() if result.closed is not None else [])]
    ids += [d for d, _ in closed.closed.json()]
    assert sorted(ids) == sorted(d for d, _ in s.decisions)


def test_a_run_with_known_strings_numbers_its_new_shapes_as_its_decisions_bring_them():
    """A run whose strings the join knows but whose shapes are new (written without a step per
    decision): the shapes are numbered in the order its decisions bring them, a
    consent-less decision's first when it comes first, as one by one."""
    s = STREAMS["decision"]
    first, second = (DecisionLog.of_block(columns.read(log.block())) for log in s.logs[:2])
    n = len(first)
    first = replace(first, consent=np.ones(n, dtype=bool), contexts=[{"plan": "x"}] * n,
                    segments=[{"region": "eu"}] * n, private=None)
    consent = np.ones(n, dtype=bool)
    consent[0] = False
    second = replace(second, consent=consent, contexts=[{"tier": "x"}] * n,
                     segments=[{"zone": "eu"}] * n, slots=first.slots, vectors=first.vectors,
                     private=None)
    spec = streamdata.spec()
    one, run = Joiner(lambda _: spec), Joiner(lambda _: spec)
    for batch in ([first], [second]):
        assert _seen(run.add(batch)) == _seen(one.add(_expanded(batch)))
    assert [shape[2:] for shape in run._shapes] == [
        ((("plan", True),), ("region",)), (None, ()), ((("tier", True),), ("zone",))]
    end = float(s.end_ts * 10)  # a float watermark: one by one, int decision times keep ints
    assert _seen(run.add([], end)) == _seen(one.add([], end))
    _same_state(one, run)


_KEYS = st.sampled_from(["plan", "tier", "tenure", "zone"])
_VALUES = st.sampled_from([0.5, -2.0, 1e6, "x", "pro"])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_block_s_context_columns_join_as_its_contexts_as_dicts(data):
    """Runs read from ``cmab.decisions/3`` blocks whose consenting decisions have mixed
    shapes (no context, keys in any order, a key holding a number in one decision and a label
    in another), their labels new to the join or known: joined from the block's context
    columns, they give the same results and state as the same runs given as dicts."""
    s = STREAMS["decision"]
    logs = []
    for log in s.logs[:data.draw(st.integers(1, 4))]:
        given = log.consent.tolist()
        logs.append(replace(log, contexts=[
            data.draw(st.none() | st.dictionaries(_KEYS, _VALUES, max_size=3)) if c else None
            for c in given], segments=[
            data.draw(st.dictionaries(_KEYS, st.sampled_from(["eu", "us"]), max_size=2))
            if c else {} for c in given]))
    runs = [DecisionLog.of_block(columns.read(log.block())) for log in logs]
    assert all(run.private is not None for run in runs if run.consent.any())
    spec = streamdata.spec()
    as_columns, as_dicts = Joiner(lambda _: spec), Joiner(lambda _: spec)
    for run in runs:
        assert _seen(as_columns.add([run])) == _seen(as_dicts.add([replace(
            run, contexts=list(run.contexts), segments=list(run.segments), private=None)]))
    _same_state(as_columns, as_dicts)
