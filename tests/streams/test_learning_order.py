"""Learning order is canonical: closed decisions are learned in deadline order (decision id
breaking ties), each added to the sums in turn, so real-valued features (whose sums round)
give the same bits however the events were batched, polled, or re-processed after a kill.
With decay (``half_life_ms``) too: the sums' reference time moves by whole half-lives at the
row that crosses one, so it and the rows' weights depend on the rows so far alone."""

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bandit.engine import Engine
from bandit.models import Event, LoggedDecision
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB
from streams import blocks
from streams.memory import MemoryLog, MemoryTransport
from streams.topics import Topics
from streams.worker import PartitionJoin, Worker
from tests import streamdata

POLICIES = {
    "lin_ucb": lambda **kw: LinUCB(n_arms=4, dim=3, rng=0, **kw),
    "lin_ts": lambda **kw: LinTS(n_arms=4, dim=3, rng=0, **kw),
    "epsilon_greedy": lambda **kw: EpsilonGreedy(n_arms=4, dim=3, rng=0, **kw),
    "beta_ts": lambda **kw: BetaTS(n_arms=4, dim=3, rng=0, **kw),
    "hybrid_lin_ucb": lambda **kw: HybridLinUCB(
        dim=3, arm_features=np.arange(8.0).reshape(4, 2) / 3, rng=0, **kw),
    "bart": lambda **kw: Bart(dim=3, arm_features=np.arange(8.0).reshape(4, 2) / 3, rng=0, **kw),
}


def _learned(policy) -> dict:
    """The state's bytes: every array's, and the reference and newest event times."""
    state = policy.state()
    return {**{k: v for k, v in state.items() if k != "arrays"},
            **{name: np.asarray(value).tobytes() for name, value in state["arrays"].items()}}


# Half-lives below, near and above the gaps between events, one not a whole number.
HALF_LIVES = [None, 0.75, 1000 / 3, 5_000.0]


@pytest.mark.parametrize("half_life_ms", HALF_LIVES)
@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(POLICIES)), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(0, 300), max_size=12))
def test_learn_many_sums_do_not_depend_on_the_batching(half_life_ms, kind, seed, cuts):
    rng = np.random.default_rng(seed)
    n = 300
    arms, X, rewards = rng.integers(4, size=n), rng.normal(size=(n, 3)), rng.random(n)
    # Epoch times a few ms apart, some rows late by up to a few half-lives of the longest.
    ts = 1.8e12 + np.cumsum(rng.exponential(7.0, n))
    ts[rng.random(n) < 0.1] -= rng.exponential(3_000.0)
    whole, split = (POLICIES[kind](half_life_ms=half_life_ms) for _ in range(2))
    whole.learn_many(arms, X, rewards, ts_ms=ts)
    bounds = [0, *sorted(cuts), n]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        split.learn_many(arms[lo:hi], X[lo:hi], rewards[lo:hi], ts_ms=ts[lo:hi])
    assert _learned(split) == _learned(whole)


def assert_same_learning(actual: Engine, expected: Engine) -> None:
    """Bit-equal policy sums and bit-equal report tallies (per arm, per segment value, the
    campaign's totals)."""
    streamdata.assert_same_model(actual, expected)
    for sa, se in zip(actual._campaigns["news"].slots, expected._campaigns["news"].slots,
                      strict=True):
        for pa, pe in ((sa.policy, se.policy), (sa.fallback, se.fallback)):
            assert _learned(pa) == _learned(pe)
        assert {k: vars(t) for k, t in sa.segment_tally.items()} == {
            k: vars(t) for k, t in se.segment_tally.items()}
        assert sa.segment_counts == se.segment_counts


@cache
def _events() -> tuple:
    """A real-valued stream in event time order (a decision before its events), and a last
    decision far ahead that closes every window."""
    s = streamdata.make(200, seed=11, real=True)
    events = sorted([LoggedDecision.model_validate_json(line) for _, line in s.decisions] +
                    [EVENT.validate_python(e) for e in s.events], key=lambda e: e.ts)
    [end] = blocks.DECISIONS.lines(streamdata.sentinels(0, s.end_ts + 10**6)[0])
    return (*events, LoggedDecision.model_validate_json(end))


EVENT: TypeAdapter[Event] = TypeAdapter(Event)
# The streams span a few seconds of event time: a third of a second is several half-lives.
DECAY = [None, 1000 / 3]


def _ingest(cuts: list[int], half_life_ms: float | None) -> Engine:
    events = _events()
    engine = Engine()
    engine.create_campaign(streamdata.spec(half_life_ms=half_life_ms))
    bounds = [0, *sorted(cuts), len(events)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        engine.ingest(events[lo:hi])
    return engine


@cache
def _in_one_batch(half_life_ms: float | None) -> Engine:
    return _ingest([], half_life_ms)


@pytest.mark.parametrize("half_life_ms", DECAY)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_batching_of_real_valued_events_learns_the_same_bits(half_life_ms, data):
    n = len(_events())
    cuts = data.draw(st.lists(st.integers(0, n), max_size=40) | st.just(list(range(0, n, 7))))
    assert_same_learning(_ingest(cuts, half_life_ms), _in_one_batch(half_life_ms))


def _checkpointed(log) -> list[Engine]:
    transport = MemoryTransport(log)
    return [PartitionJoin.restore(transport.latest_checkpoint(p)).engine
            for p in range(log.partitions)]


def _run(s: streamdata.Streams, seed: int | None, half_life_ms: float | None) -> list[Engine]:
    """The worker over the streams; ``seed``: killed at random steps (what came after its
    last checkpoint is lost and re-processed), with random poll sizes and checkpoint intervals;
    None: one uninterrupted run."""
    log = MemoryLog(Topics("t"), 2)
    service = Engine()
    service.create_campaign(streamdata.spec(half_life_ms=half_life_ms))
    log.publish_campaign(service.campaign_record("news"))
    streamdata.fill(log, s, size=1)  # a decision per record: many polls, so many kills
    rng = np.random.default_rng(seed)

    def start() -> Worker:
        transport = MemoryTransport(log, max_records=int(rng.integers(2, 12)) if seed else 500)
        worker = Worker(transport, clock=streamdata.Clock(),
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


@pytest.mark.parametrize("half_life_ms", DECAY)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_worker_killed_at_random_steps_learns_the_bits_of_an_uninterrupted_run(seed,
                                                                                 half_life_ms):
    s = streamdata.make(300, seed=5, real=True)
    for killed, whole in zip(_run(s, seed, half_life_ms), _run(s, None, half_life_ms),
                             strict=True):
        assert_same_learning(killed, whole)
