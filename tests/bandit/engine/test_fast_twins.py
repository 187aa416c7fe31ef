"""The engine's vectorized paths against their one-at-a-time twins: report tallies grouped by
arm and segment, and the context check against ``encode``'s verdict and message."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine, _add_grouped, _Tally
from bandit.errors import InvalidInputError
from tests import streamdata

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(start=st.dictionaries(st.sampled_from("abc"), st.tuples(st.integers(0, 9), finite),
                             max_size=3),
       adds=st.lists(st.tuples(st.integers(0, 3), finite), max_size=30))
def test_grouped_tallies_equal_one_event_at_a_time(start, adds):
    names = ["a", "b", "c", "d"]
    fast = {k: _Tally(n, t, t * t) for k, (n, t) in start.items()}
    slow = {k: _Tally(n, t, t * t) for k, (n, t) in start.items()}
    for code, reward in adds:
        slow.setdefault(names[code], _Tally()).add(reward)
    _add_grouped(fast, names, np.array([c for c, _ in adds], dtype=np.int64),
                 np.array([r for _, r in adds], dtype=np.float64))
    assert list(fast) == list(slow)  # same keys, created in the same order
    for k in slow:  # bit-equal sums (NaN-safe comparison of overflowed squares)
        assert (fast[k].n, repr(fast[k].total), repr(fast[k].squares)) == (
            slow[k].n, repr(slow[k].total), repr(slow[k].squares))


def test_learned_report_tallies_equal_one_event_at_a_time():
    s = streamdata.make(300, seed=7)
    batch, one = streamdata.reference(s), Engine()
    one.create_campaign(streamdata.spec())
    for e in s.joined:
        one.learn([e])
    for sb, so in zip(batch._campaigns["news"].slots, one._campaigns["news"].slots, strict=True):
        assert {k: vars(t) for k, t in sb.arm_tally.items()} == {
            k: vars(t) for k, t in so.arm_tally.items()}
        assert sb.segment_counts == so.segment_counts
        assert list(sb.segment_counts) == list(so.segment_counts)
        assert {k: vars(t) for k, t in sb.segment_tally.items()} == {
            k: vars(t) for k, t in so.segment_tally.items()}


@pytest.mark.parametrize("row", [{"engagement": 0.5, "plan": "pro"}, {"plan": "free"},
                                 {"engagement": "high"}, {"engagement": 1.0, "plan": 2.0},
                                 {"engagement": 1.0, "zone": "x"}, {}])
def test_context_check_refuses_what_encode_refuses_with_its_message(row):
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    encoder = engine._campaigns["news"].context
    for _ in range(2):  # the second time through the cache of passed shapes
        try:
            encoder.encode([row])
        except InvalidInputError as exc:
            with pytest.raises(InvalidInputError, match=None) as check:
                encoder.check(row)
            assert str(check.value) == str(exc)
        else:
            encoder.check(row)


_row = st.dictionaries(st.sampled_from(["engagement", "plan", "zone"]), st.one_of(
    st.floats(), st.floats(-2e9, 2e9), st.integers(-3, 3), st.booleans(),
    st.sampled_from(["free", "pro", "gold", "x"]), st.none()), max_size=3)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=3).flatmap(
    lambda pool: st.lists(st.sampled_from(pool), max_size=12)))
def test_the_context_check_of_a_run_is_the_check_of_each_row(rows):
    """``contexts`` (the worker's check of a run of decisions, rows with one shape checked as
    columns) refuses the rows ``check`` refuses, with its messages."""
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    encoder = engine._campaigns["news"].context
    expected = []
    for i, row in enumerate(rows):
        try:
            encoder.check(row)
        except InvalidInputError as exc:
            expected.append((i, str(exc)))
    assert engine.event_checker().contexts("news", rows) == expected
    assert engine.event_checker().contexts("gone", rows) == [
        (i, "no campaign 'gone'") for i in range(len(rows))]
