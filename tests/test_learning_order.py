"""Learning order is canonical: closed decisions are learned in deadline order (decision id
breaking ties), each added to the sums in turn, so real-valued features (whose sums round)
give the same bits however the events were batched, polled, or re-processed after a kill."""

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.models import Click, Impression
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB
from streams.memory import MemoryTransport
from streams.worker import PartitionJoin, Worker
from tests import streamdata
from tests.test_worker import _fill, _log

POLICIES = {
    "lin_ucb": lambda: LinUCB(n_arms=4, dim=3, rng=0),
    "lin_ts": lambda: LinTS(n_arms=4, dim=3, rng=0),
    "epsilon_greedy": lambda: EpsilonGreedy(n_arms=4, dim=3, rng=0),
    "beta_ts": lambda: BetaTS(n_arms=4, dim=3, rng=0),
    "hybrid_lin_ucb": lambda: HybridLinUCB(dim=3, arm_features=np.arange(8.0).reshape(4, 2) / 3,
                                           rng=0),
    "bart": lambda: Bart(dim=3, arm_features=np.arange(8.0).reshape(4, 2) / 3, rng=0),
}


def _arrays(policy):
    return {name: np.asarray(value).tobytes() for name, value in policy.state()["arrays"].items()}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(POLICIES)), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(0, 300), max_size=12))
def test_learn_many_sums_do_not_depend_on_the_batching(kind, seed, cuts):
    rng = np.random.default_rng(seed)
    n = 300
    arms, X, rewards = rng.integers(4, size=n), rng.normal(size=(n, 3)), rng.random(n)
    whole, split = POLICIES[kind](), POLICIES[kind]()
    whole.learn_many(arms, X, rewards)
    bounds = [0, *sorted(cuts), n]
    for lo, hi in zip(bounds, bounds[1:]):
        split.learn_many(arms[lo:hi], X[lo:hi], rewards[lo:hi])
    assert _arrays(split) == _arrays(whole)


def assert_same_learning(actual: Engine, expected: Engine) -> None:
    """Bit-equal policy sums and bit-equal report tallies (per arm, per segment value, the
    campaign's totals)."""
    streamdata.assert_same_model(actual, expected)
    for sa, se in zip(actual._campaigns["news"].slots, expected._campaigns["news"].slots):
        assert {k: vars(t) for k, t in sa.segment_tally.items()} == {
            k: vars(t) for k, t in se.segment_tally.items()}
        assert sa.segment_counts == se.segment_counts


@cache
def _events() -> tuple:
    """A real-valued stream in event time order, and a last impression far ahead that closes
    every window."""
    s = streamdata.make(200, seed=11, real=True)
    events = sorted([Impression.model_validate(i) for i in s.impressions] +
                    [Click.model_validate(c) for c in s.clicks], key=lambda e: e.ts)
    end = Impression.model_validate(streamdata.sentinels(0, s.end_ts + 10**6)[0])
    return (*events, end)


def _ingest(cuts: list[int]) -> Engine:
    events = _events()
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    bounds = [0, *sorted(cuts), len(events)]
    for lo, hi in zip(bounds, bounds[1:]):
        engine.ingest(events[lo:hi])
    return engine


@cache
def _in_one_batch() -> Engine:
    return _ingest([])


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_batching_of_real_valued_events_learns_the_same_bits(data):
    n = len(_events())
    cuts = data.draw(st.lists(st.integers(0, n), max_size=40) | st.just(list(range(0, n, 7))))
    assert_same_learning(_ingest(cuts), _in_one_batch())


def _checkpointed(log) -> list[Engine]:
    transport = MemoryTransport(log)
    return [PartitionJoin.restore(transport.latest_checkpoint(p)).engine
            for p in range(log.partitions)]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _run(s: streamdata.Streams, seed: int | None) -> list[Engine]:
    """The worker over the streams; ``seed``: killed at random steps (what came after its
    last checkpoint is lost and re-processed), with random poll sizes and checkpoint intervals;
    None: one uninterrupted run."""
    log = _log(partitions=2)
    _fill(log, s)
    rng = np.random.default_rng(seed)

    def start() -> Worker:
        transport = MemoryTransport(log, max_records=int(rng.integers(2, 12)) if seed else 500)
        worker = Worker(transport, clock=_Clock(),
                        checkpoint_interval_ms=int(rng.integers(0, 4)) * 1000 if seed else 0)
        transport.attach(worker)
        return worker

    worker = start()
    kills = 0
    while worker.step():
        if seed is not None and rng.random() < 0.3:
            worker, kills = start(), kills + 1
    assert seed is None or kills > 3
    return _checkpointed(log)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_worker_killed_at_random_steps_learns_the_bits_of_an_uninterrupted_run(seed):
    s = streamdata.make(300, seed=5, real=True)
    for killed, whole in zip(_run(s, seed), _run(s, None), strict=True):
        assert_same_learning(killed, whole)
