"""A binary block's decisions joined as one run (columns: ``Joiner.add`` of a ``DecisionLog``)
give exactly what the same decisions give one by one: per batch the closed decisions (their
joined JSON), the rejections (reason and event, in order) and what was excluded, and at the
end the same state, whatever the batching, repeats, early outcomes, erasures and the cap."""

from __future__ import annotations

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


@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate])
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
    cap = data.draw(st.sampled_from([MAX_PENDING, 40, 12]))
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
