"""The stream worker in embedded mode (in-process log): join, learning, checkpoints,
dead letters, restarts. The same code runs over Kafka in test_worker_kafka.py."""

import dataclasses
import math

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.engine.decisionlog import DecisionLog
from bandit.errors import IncompatibleStateError, InvalidInputError
from bandit.wire import columns
from streams import blocks
from streams.codec import encode
from streams.joined import examples
from streams.memory import MemoryLog, MemoryTransport
from streams.records import DECISIONS, EVENTS, Batch
from streams.topics import Topics
from streams.worker import CHECKPOINT_SHARE, PartitionJoin, Stages, Worker, erase_record
from tests import streamdata


def _fill(log: MemoryLog, s: streamdata.Streams) -> None:
    streamdata.fill(log, s)


def _log(partitions: int = 3) -> MemoryLog:
    log = MemoryLog(Topics("t"), partitions)
    service = Engine()
    service.create_campaign(streamdata.spec())
    log.publish_campaign(service.campaign_record("news"))
    return log


def _drain(worker: Worker) -> None:
    while worker.step():
        pass


def _model(log: MemoryLog) -> Engine:
    """What a decision service sees: the sum of every partition's newest checkpoint."""
    service = Engine()
    service.create_campaign(streamdata.spec())
    transport = MemoryTransport(log)
    service.absorb([PartitionJoin.restore(transport.latest_checkpoint(p)).engine
                    for p in range(log.partitions)])
    return service


def test_learned_sums_equal_a_direct_batch_computation():
    s = streamdata.make(600, seed=1)
    log = _log()
    _fill(log, s)
    transport = MemoryTransport(log, max_records=97)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    streamdata.assert_same_model(_model(log), streamdata.reference(s))
    assert worker.counters.joined == 600
    assert worker.counters.decisions == 600 + 3  # and the sentinels
    assert worker.counters.duplicates == s.duplicates
    assert worker.counters.late == s.late
    assert (worker.counters.machine, worker.counters.scanner) == (
        s.excluded["machine"], s.excluded["scanner"]) != (0, 0)
    letters = log.read(log.topics.deadletter, 0)
    assert len(letters) == s.late
    assert all(dict(h)["reason"].startswith(b"late") for _, _, h in letters)
    blocks = [(k, v) for p in range(3) for k, v, _ in log.read(log.topics.joined, p)]
    joined = [orjson.loads(v) for _, block in blocks for v in examples(block)]
    assert sorted(j["decision_id"] for j in joined) == sorted(e.decision_id for e in s.joined)
    assert len(blocks) < 600  # many decisions per record, keyed by the first one's id
    assert all(k == orjson.loads(examples(v)[0])["decision_id"].encode() for k, v in blocks)


def test_a_restart_from_every_checkpoint_ends_in_the_same_state():
    s = streamdata.make(300, seed=2)
    log = _log(partitions=2)
    _fill(log, s)
    transport = MemoryTransport(log, max_records=13)
    worker = Worker(transport, checkpoint_interval_ms=0)
    transport.attach(worker)
    steps = 0
    while worker.step():
        steps += 1
        # Kill: a new worker on a new transport, from the checkpoints alone.
        transport = MemoryTransport(log, max_records=13 + steps % 7)
        worker = Worker(transport, checkpoint_interval_ms=0)
        transport.attach(worker)
    assert steps > 5
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


def test_a_kill_between_checkpoints_re_processes_and_ends_in_the_same_state():
    s = streamdata.make(300, seed=7)
    log = _log(partitions=2)
    streamdata.fill(log, s, size=1)  # a decision per record: batches between checkpoints

    batches = []

    def start(steps: int) -> tuple[MemoryTransport, Worker]:
        transport = MemoryTransport(log, max_records=11 + steps % 5)
        worker = Worker(transport, checkpoint_interval_ms=2500, clock=streamdata.Clock(),
                        on_batch=lambda p, out: batches.append(out.counters.records))
        transport.attach(worker)
        return transport, worker

    transport, worker = start(0)
    steps = 0
    while worker.step():
        steps += 1
        if steps % 4 == 0:  # killed: whatever came after its last checkpoint is done again
            transport, worker = start(steps)
    checkpoints = sum(log.end(log.topics.state, p) for p in range(2))
    assert checkpoints < len(batches)  # not one per batch
    streamdata.assert_same_model(_model(log), streamdata.reference(s))
    joined = [orjson.loads(v)["decision_id"] for p in range(2)
              for _, block, _ in log.read(log.topics.joined, p) for v in examples(block)]
    # At least once: batches re-processed after a kill write their closed decisions again
    # (while behind, a batch that closes windows waits for its checkpoint too).
    assert set(joined) == {e.decision_id for e in s.joined}
    records = sum(log.end(t, p) for t in (log.topics.decisions, log.topics.events)
                  for p in range(2))
    assert sum(batches) > records  # records after a lost checkpoint were processed again


def test_while_behind_checkpoints_are_apart_ten_times_what_one_takes():
    s = streamdata.make(200, seed=5)
    log = _log(partitions=1)
    streamdata.fill(log, s, size=1)
    transport = MemoryTransport(log, max_records=4)
    clock = streamdata.Clock()  # a second per reading: a checkpoint takes a second
    worker = Worker(transport, checkpoint_interval_ms=1000, clock=clock)
    transport.attach(worker)
    written, behind = [], True
    while behind:
        before = log.end(log.topics.state, 0)
        behind = worker.step() > 0
        if behind and log.end(log.topics.state, 0) > before:
            written.append(clock.now)
    assert len(written) > 2
    assert all(b - a >= CHECKPOINT_SHARE for a, b in zip(written, written[1:], strict=False))
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


def test_revocation_and_stop_write_what_is_pending():
    s = streamdata.make(100, seed=8)
    log = _log(partitions=2)
    streamdata.fill(log, s, size=1)
    transport = MemoryTransport(log, max_records=20)
    worker = Worker(transport, checkpoint_interval_ms=10**9)
    transport.attach(worker)
    before = log.end(log.topics.state, 0)
    worker.step()
    part = worker.partitions[0]
    assert log.end(log.topics.state, 0) == before  # pending: nothing closed, not caught up
    worker.on_revoked([0])
    assert PartitionJoin.restore(transport.latest_checkpoint(0)).offsets == part.offsets
    steps = iter(range(3))
    worker.run(lambda: next(steps, None) is None)
    assert PartitionJoin.restore(transport.latest_checkpoint(1)).offsets == \
        worker.partitions[1].offsets


def _line(line: bytes, **change) -> bytes:
    return orjson.dumps({**orjson.loads(line), **change})


def test_bad_records_and_lines_are_dead_lettered_with_a_reason_and_the_rest_learned():
    s = streamdata.make(200, seed=3)
    log = _log(partitions=1)
    (_, first), (_, second) = s.decisions[:2]
    ghost = _line(first, decision_id="f" * 31 + "1",
                  slots={"subject": {"arm": "ghost", "propensity": 0.5}})
    [(_, good_and_bad)] = blocks.DECISIONS.pack([s.decisions[0], ("x", ghost), s.decisions[1]])
    decisions = [b"not a block", encode(s.events[0]), good_and_bad,
                 blocks.DECISIONS.pack([("y", first)])[0][1].replace(b"/1 1", b"/1 2"),
                 blocks.DECISIONS.pack([("z", _line(first, subject="alice"))])[0][1], None]
    events = [b"not json", b"[]", b'{"type": "view"}', good_and_bad,
              encode({**s.events[0], "event_id": "x1", "campaign": "nope"}),
              encode({"type": "open", "event_id": "x2", "decision_id": "0" * 32, "ts": 0,
                      "campaign": "news", "slot": "ghost"}),
              b'{"type": "click", "ts": NaN}', None]
    for value in decisions:
        log.append(log.topics.decisions, value, partition=0)
    for value in events:
        log.append(log.topics.events, value, partition=0)
    _fill(log, dataclasses.replace(s, decisions=s.decisions[2:]))
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    letters = log.read(log.topics.deadletter, 0)
    reasons = {dict(h)["source"].decode(): dict(h)["reason"].decode() for _, _, h in letters}
    values = {dict(h)["source"].decode(): v for _, v, h in letters}
    assert reasons["decisions/0/0"] == "not a decision block: no 'cmab.decisions/1' header"
    assert reasons["decisions/0/1"] == ("a JSON event, not a decision block: senders and "
                                        "trackers write to <prefix>.events")
    assert reasons["decisions/0/2"] == "line 2 of the block: slot 'subject': no arm 'ghost'"
    assert values["decisions/0/2"] == ghost  # the line alone: the block's others are learned
    assert reasons["decisions/0/3"].startswith("damaged decision block: header says 2")
    assert reasons["decisions/0/4"].startswith("line 1 of the block: decision: subject:")
    assert reasons["decisions/0/5"] == "empty record"
    assert reasons["events/0/0"].startswith("not JSON")
    assert reasons["events/0/1"] == "not a JSON object but list"
    assert reasons["events/0/2"].startswith("type: expected one of 'impression', 'send'")
    assert reasons["events/0/3"] == ("a 'cmab.decisions/1' block on the events topic, not an "
                                     "event: decision blocks go to <prefix>.decisions")
    assert "no campaign 'nope'" in reasons["events/0/4"]
    assert "no slot 'ghost'" in reasons["events/0/5"]
    assert reasons["events/0/6"].startswith("not JSON")
    assert reasons["events/0/7"] == "empty record"
    assert [v for _, v, _ in letters[:len(decisions) + len(events)]] == [
        b"not a block", encode(s.events[0]), ghost, decisions[3],
        _line(first, subject="alice"), None, *events]
    assert worker.counters.decisions == 200 + 3  # the ghost's, alice's, the sentinel's
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


@settings(max_examples=25, deadline=None)
@given(garbage=st.lists(st.one_of(st.binary(max_size=64),
                                  st.dictionaries(st.text(max_size=8),
                                                  st.one_of(st.integers(-2**63, 2**63 - 1),
                                                            st.text(max_size=8), st.floats()),
                                                  max_size=6)
                                  .map(orjson.dumps)), max_size=20))
def test_garbage_never_stops_the_worker(garbage):
    log = _log(partitions=1)
    for value in garbage:
        log.append(log.topics.events, value, partition=0)
        log.append(log.topics.decisions, value, partition=0)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert len(log.read(log.topics.deadletter, 0)) == 2 * len(garbage)
    assert worker.counters.records == 2 * len(garbage)


def _blocks(s: streamdata.Streams, end: int | None = None) -> list[bytes]:
    """The decision blocks of a one-partition log (and the sentinel's when ``end`` is given)."""
    values = [value for _, value in streamdata.blocks_of(s.decisions, 1)[0]]
    return values + ([streamdata.sentinels(0, end)[0]] if end is not None else [])


def test_the_watermark_waits_for_the_slower_input():
    s = streamdata.make(50, seed=4)
    part = PartitionJoin(0, Engine())
    part.engine.create_campaign(streamdata.spec())
    decisions = _blocks(s, 10**9)
    out = part.process([Batch(DECISIONS, 0, list(range(len(decisions))), decisions)],
                       idle=set())
    assert out.joined == []  # events have not moved: no window may close yet
    events = [encode(e) for e in s.events]
    out = part.process([Batch(EVENTS, 0, list(range(len(events))), events)],
                       idle={DECISIONS})
    assert len(out.joined) > 0 and math.isfinite(part.newest[EVENTS])


def test_a_damaged_or_format_2_checkpoint_is_refused():
    old = Engine().to_bytes(extra={
        "checkpoint": 2, "partition": 0, "seq": 1, "offsets": {"impressions": 5, "clicks": 3},
        "newest": {"impressions": 10, "clicks": 9}, "counters": {"records": 8}})
    with pytest.raises(IncompatibleStateError, match="format-2 .* fresh topics .* replay"):
        PartitionJoin.restore(old)
    with pytest.raises(IncompatibleStateError, match="partition 3"):
        PartitionJoin.restore(b"garbage", what="checkpoint of partition 3")
    with pytest.raises(IncompatibleStateError, match="not a worker checkpoint"):
        PartitionJoin.restore(Engine().to_bytes())


def test_absorb_sums_partitions_with_arms_added_later():
    base = Engine()
    base.create_campaign(streamdata.spec())
    s = streamdata.make(100, seed=5)
    early = Engine.from_bytes(base.to_bytes())[0]
    early.learn(s.joined[:50])
    from bandit.models import Arm
    base.add_arm("news", "subject", Arm(id="emoji"))
    late = Engine.from_bytes(base.to_bytes())[0]
    late.learn(s.joined[50:])
    base.absorb([early, late])
    whole = Engine()
    whole.create_campaign(streamdata.spec())
    whole.add_arm("news", "subject", Arm(id="emoji"))
    whole.learn(s.joined)
    streamdata.assert_same_model(base, whole)
    assert base.model_version("news") == 2
    np.testing.assert_array_equal(base._campaigns["news"].slots[0].policy.active, [1, 1, 1, 1])


def test_watermark_records_close_the_windows_they_pass():
    s = streamdata.make(120, seed=6)
    log = _log(partitions=2)
    streamdata.fill(log, s, sentinel=False)
    mark = encode({"type": "watermark", "ts": s.end_ts})
    for p in range(2):
        log.append(log.topics.events, mark, partition=p)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert worker.counters.joined == 120 and worker.counters.dead_letters == s.late
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


class _CampaignDuringPoll(MemoryTransport):
    """A memory transport whose first poll with records is answered after a campaign record
    was published (a campaign created while the poll was in flight, its events written
    after it), and that counts its reads of the campaigns topic."""

    def __init__(self, log: MemoryLog, record: dict) -> None:
        super().__init__(log)
        self.record: dict | None = record
        self.reads = 0

    def poll(self, timeout_ms: int) -> list[Batch]:
        batches = super().poll(timeout_ms)
        if batches and self.record is not None:
            self.log.publish_campaign(self.record)
            self.record = None
        return batches

    def campaign_records(self) -> list[dict]:
        self.reads += 1
        return super().campaign_records()


def test_a_step_reads_the_campaigns_once_after_its_poll():
    """A read of the campaigns topic to its end is a round trip to the broker: a step makes
    one, after its poll, so a campaign created just before its first events is known to them."""
    s = streamdata.make(60, seed=4)
    log = MemoryLog(Topics("t"), 1)
    _fill(log, s)
    service = Engine()
    service.create_campaign(streamdata.spec())
    transport = _CampaignDuringPoll(log, service.campaign_record("news"))
    worker = Worker(transport)
    transport.attach(worker)
    reads = transport.reads  # the assignment's
    steps = 1
    while worker.step():
        steps += 1
    assert transport.reads - reads == steps
    assert worker.counters.dead_letters == s.late and worker.counters.joined == 60


class _Flushes(MemoryTransport):
    """A memory transport that notes its checkpoints and flushes in order."""

    def __init__(self, log: MemoryLog) -> None:
        super().__init__(log)
        self.calls: list[str] = []

    def send_checkpoint(self, partition: int, data: bytes) -> None:
        self.calls.append(f"checkpoint {partition}")
        super().send_checkpoint(partition, data)

    def flush(self) -> None:
        self.calls.append("flush")


def test_the_checkpoints_of_several_partitions_wait_for_one_flush():
    """A checkpoint is durable once the transport's flush returns: a step flushes its
    outputs, then sends every due partition's checkpoint, then flushes once (one wait for
    the broker, not one each)."""
    log = _log(3)
    _fill(log, streamdata.make(90, seed=5))
    transport = _Flushes(log)
    worker = Worker(transport)
    transport.attach(worker)
    assert worker.step() and worker.counters.joined  # closed windows: checkpoints due
    assert transport.calls == ["flush", "checkpoint 0", "checkpoint 1", "checkpoint 2",
                               "flush"]


def test_a_campaign_activated_by_sends_learns_sent_decisions_and_counts_the_unsent():
    s = streamdata.make(400, seed=10, activation="send")
    log = MemoryLog(Topics("t"), 2)
    service = Engine()
    service.create_campaign(streamdata.spec(activation="send"))
    log.publish_campaign(service.campaign_record("news"))
    streamdata.fill(log, s)
    transport = MemoryTransport(log, max_records=29)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert worker.counters.unsent == s.excluded["unsent"] > 0
    assert worker.counters.joined == len(s.joined) == 400 - s.excluded["unsent"]
    assert (worker.counters.machine, worker.counters.scanner, worker.counters.late) == (
        s.excluded["machine"], s.excluded["scanner"], s.late)
    model = Engine()
    model.create_campaign(streamdata.spec(activation="send"))
    model.absorb([PartitionJoin.restore(transport.latest_checkpoint(p)).engine
                  for p in range(2)])
    streamdata.assert_same_model(model, streamdata.reference(s, activation="send"))
    joined = {j["decision_id"]: j for p in range(2)
              for _, block, _ in log.read(log.topics.joined, p) for j in
              map(orjson.loads, examples(block))}
    assert joined == {e.decision_id: orjson.loads(e.model_dump_json(exclude_none=True))
                      for e in s.joined}


def test_absorb_keeps_a_vw_slot_when_partitions_cannot_merge():
    from bandit.models import CampaignSpec

    spec = CampaignSpec.model_validate({
        "name": "vw", "holdout": 0.0, "slots": [
            {"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a",
             "policy": {"kind": "vw"}},
            {"name": "t", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"}]})
    service, left, right = Engine(), Engine(), Engine()
    for e in (service, left, right):
        e.create_campaign(spec)
    before = [s.policy for s in service._campaigns["vw"].slots]
    assert service.absorb([left, right]) == 1
    after = [s.policy for s in service._campaigns["vw"].slots]
    assert after[0] is before[0]  # VW: kept
    assert after[1] is not before[1]  # summable: the merged partitions


def test_a_model_only_restore_has_the_model_and_no_windows():
    s = streamdata.make(80, seed=9)
    part = PartitionJoin(0, Engine())
    part.engine.create_campaign(streamdata.spec())
    half = len(s.joined) // 2
    decisions = _blocks(s)
    part.process([Batch(DECISIONS, 0, list(range(len(decisions))), decisions)], idle={EVENTS})
    part.engine.learn(s.joined[:half])
    data = part.checkpoint()
    full = PartitionJoin.restore(data)
    model = PartitionJoin.restore(data, model_only=True)
    assert full.engine.open_windows() == part.engine.open_windows() > 0
    assert model.engine.open_windows() == 0
    assert (model.offsets, model.counters) == (part.offsets, part.counters)
    streamdata.assert_same_model(model.engine, full.engine)


def test_a_negative_checkpoint_interval_is_refused():
    with pytest.raises(InvalidInputError, match="checkpoint_interval_ms"):
        Worker(MemoryTransport(_log()), checkpoint_interval_ms=-1)


def test_timing_the_stages_changes_nothing_and_times_every_stage():
    s = streamdata.make(300, seed=5)
    logs = [_log(partitions=2), _log(partitions=2)]
    workers = []
    for log, stages in zip(logs, [None, Stages()], strict=True):
        _fill(log, s)
        transport = MemoryTransport(log, max_records=61)
        workers.append(Worker(transport, stages=stages, checkpoint_interval_ms=0))
        transport.attach(workers[-1])
        _drain(workers[-1])
    written = [{name: [log.read(name, p) for p in range(n)]
                for name, n in log.topics.partition_counts(2).items()} for log in logs]
    assert written[0] == written[1]
    seconds = workers[1].stages.seconds
    assert list(seconds) == list(Stages.NAMES)
    assert all(seconds[stage] > 0 for stage in Stages.NAMES), seconds


def test_an_erasure_survives_a_kill_a_restore_and_a_replay():
    """Two subjects erased while their decisions are open: one in the last checkpoint (which
    predates the erasure), the other in records after it. The worker is killed after it
    applied the erasure in memory and before any checkpoint; its successor restores the old
    checkpoint and re-processes those records. Nothing of the subjects is learned, written to
    .joined or dead-lettered, and the next checkpoint no longer holds them."""
    s = streamdata.make(200, seed=21)
    logged = [orjson.loads(line) for _, line in s.decisions]
    first, second = logged[120], logged[150]
    gone = {s.user_ids[first["decision_id"]], s.user_ids[second["decision_id"]]}
    log = _log(partitions=1)
    sent = {"decisions": 0, "events": 0}

    def send_until(ts: float) -> None:  # both inputs, in event time, up to ts
        start = sent["decisions"]
        while sent["decisions"] < len(logged) and logged[sent["decisions"]]["ts"] <= ts:
            sent["decisions"] += 1
        for _, value in blocks.DECISIONS.pack(s.decisions[start:sent["decisions"]]):
            log.append(log.topics.decisions, value, partition=0)
        while sent["events"] < len(s.events) and s.events[sent["events"]]["ts"] <= ts:
            event = s.events[sent["events"]]
            log.append(log.topics.events, encode(event), partition=0)
            sent["events"] += 1

    send_until(first["ts"])
    transport = MemoryTransport(log)
    worker = Worker(transport, checkpoint_interval_ms=10**9)
    transport.attach(worker)
    _drain(worker)
    assert first["decision_id"] in worker.partitions[0].engine._joiner._row  # checkpointed
    transport.send_checkpoint = lambda partition, data: None  # from now on: killed before
    send_until(second["ts"])
    worker.step()
    for user_id in sorted(gone):
        for key in s.subjects.erase_keys(user_id):
            log.publish_campaign(erase_record(key, s.end_ts))
    worker.step()
    open_ids = worker.partitions[0].engine._joiner._row.keys()
    assert first["decision_id"] not in open_ids and second["decision_id"] not in open_ids
    # Killed. The successor restores the checkpoint holding the first subject, replays the
    # second's decision, then reads the rest of the stream.
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    send_until(s.end_ts)
    block, mark = streamdata.sentinels(0, s.end_ts + 10 * streamdata.WINDOW_MS)
    log.append(log.topics.decisions, block, partition=0)
    log.append(log.topics.events, mark, partition=0)
    _drain(worker)
    assert worker.counters.erased == 2  # one open decision restored, one decision replayed
    keys = {key.hex() for user_id in gone for key in s.subjects.all_of(user_id)}
    kept = [e for e in s.joined if e.subject not in keys]
    streamdata.assert_same_model(_model(log), streamdata.reference(
        dataclasses.replace(s, joined=kept)))
    joined = [orjson.loads(v) for _, block, _ in log.read(log.topics.joined, 0)
              for v in examples(block)]
    # At least once: what the killed worker wrote after its checkpoint is written again.
    assert {j["decision_id"] for j in joined} == {e.decision_id for e in kept}
    quoted = [orjson.dumps(user_id) for user_id in gone]
    letters = b"".join(value or b"" for _, value, _ in log.read(log.topics.deadletter, 0))
    checkpoint = transport.latest_checkpoint(0)
    assert not any(q in letters or q in checkpoint for q in quoted)
    assert PartitionJoin.restore(checkpoint).counters.erased == 2


def test_a_malformed_erase_record_is_refused_without_logging_its_contents(caplog):
    log = _log(partitions=1)
    log.publish_campaign({"erase": "alice@example.org"})  # an older version's: a user id
    log.publish_campaign({"erase": "z" * 32, "at": 0})
    log.publish_campaign({"erase": "0" * 32, "at": float("inf")})
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    assert worker.campaign_errors == 3 and worker.erasures == {}
    assert "erase record" in caplog.text and "alice" not in caplog.text


def test_no_topic_holds_the_context_or_segments_of_a_decision_made_without_consent():
    """The service logs none for such a decision; a sender's legacy impression of one (a
    decision made elsewhere) brings a secret context and segment value: after a run, every
    topic but the one it was written to is read back and holds neither, whether the
    impression was joined or dead-lettered."""
    s = streamdata.make(300, seed=12)
    log = _log(partitions=2)
    streamdata.fill(log, s, sentinel=False)
    without = [d for d, given in s.consent.items() if not given]
    assert without and all(b'"context"' not in line for d, line in s.decisions if d in without)
    for i, arm in enumerate(["plain", "ghost"]):  # joined, and dead-lettered (no such arm)
        decision_id = f"{i:031x}0"  # lowest bit 0: decided without consent
        log.append(log.topics.events, encode({
            "type": "impression", "event_id": f"legacy-{i}", "decision_id": decision_id,
            "campaign": "news", "user_id": "secret-user", "ts": 10 + i,
            "slots": {"subject": {"arm": arm, "propensity": 1.0}},
            "context": {"engagement": 0.123456789, "plan": "SECRET-PLAN"},
            "segments": {"region": "SECRET-REGION"}}), key=decision_id.encode())
    for p in range(2):
        block, mark = streamdata.sentinels(p, s.end_ts + 10 * streamdata.WINDOW_MS)
        log.append(log.topics.decisions, block, partition=p)
        log.append(log.topics.events, mark, partition=p)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert worker.counters.stripped == 2 and worker.counters.dead_letters >= 1
    written = b"".join(b"%r%r%r" % (key, value, headers)
                       for name, n in log.topics.partition_counts(2).items()
                       if name != log.topics.events for p in range(n)
                       for key, value, headers in log.read(name, p))
    for secret in (b"SECRET-PLAN", b"SECRET-REGION", b"0.123456789"):
        assert secret not in written
    joined = [orjson.loads(v) for p in range(2) for _, block, _ in log.read(log.topics.joined, p)
              for v in examples(block)]
    for j in joined:
        if j["decision_id"] in without or j["decision_id"].endswith("0"):
            assert "context" not in j and j["segments"] == {}
    assert {"0" * 31 + "0"} <= {j["decision_id"] for j in joined}


# -- erasure from the model: the partitions' erasure ledgers ------------------------------------


def subject_stream(n: int, seed: int, picks: list[int]) -> tuple[streamdata.Streams, bytes]:
    """``streamdata.make(n, seed)`` whose decisions ``picks`` (indexes in event time) are all
    of one subject S: their logged lines carry the first one's subject key. Returns the
    streams and S's key (whatever the service made it: the worker takes keys as they come)."""
    s = streamdata.make(n, seed)
    decisions = list(s.decisions)
    key = orjson.loads(decisions[picks[0]][1])["subject"]
    for i in picks:
        decision_id, line = decisions[i]
        decisions[i] = (decision_id, orjson.dumps({**orjson.loads(line), "subject": key}))
    return dataclasses.replace(s, decisions=decisions), bytes.fromhex(key)


def without(s: streamdata.Streams, key: bytes, at_ms: float) -> streamdata.Streams:
    """``s`` without the decisions of subject ``key`` made at or before ``at_ms`` and without
    their events: the stream of a run where erasure had nothing to take out."""
    gone = {d for d, line in s.decisions if orjson.loads(line)["subject"] == key.hex()
            and orjson.loads(line)["ts"] <= at_ms}
    return dataclasses.replace(
        s, decisions=[(d, line) for d, line in s.decisions if d not in gone],
        events=[e for e in s.events if e["decision_id"] not in gone],
        joined=[j for j in s.joined if j.decision_id not in gone])


def assert_same_sums(actual: Engine, expected: Engine, campaign: str = "news") -> None:
    """Every slot's policy and fallback hold the same sums to 1e-9, seen from a common event
    time (``Policy.sums_at``: forgetting leaves a policy's clock where learning took it)."""
    a, e = actual._campaigns[campaign], expected._campaigns[campaign]
    for sa, se in zip(a.slots, e.slots, strict=True):
        for pa, pe in ((sa.policy, se.policy), (sa.fallback, se.fallback)):
            times = [t for t in (pa._t_newest, pe._t_newest) if t is not None]
            at = max(times) if times else None
            ta, te = pa.sums_at(at), pe.sums_at(at)
            assert ta.keys() == te.keys()
            for name in ta:
                np.testing.assert_allclose(ta[name], te[name], rtol=1e-9, atol=1e-9,
                                           err_msg=f"{sa.spec.name} {name}")


def decay_log(partitions: int, half_life_ms: float | None) -> MemoryLog:
    """``_log`` of ``streamdata.spec(half_life_ms=half_life_ms)``."""
    log = MemoryLog(Topics("t"), partitions)
    service = Engine()
    service.create_campaign(streamdata.spec(half_life_ms=half_life_ms))
    log.publish_campaign(service.campaign_record("news"))
    return log


def _partition_engines(log: MemoryLog) -> dict[int, Engine]:
    transport = MemoryTransport(log)
    return {p: PartitionJoin.restore(transport.latest_checkpoint(p)).engine
            for p in range(log.partitions)}


@pytest.mark.parametrize("half_life_ms", [None, 700.0])
def test_an_erase_record_takes_learned_decisions_out_of_every_partition_once(half_life_ms):
    """A worker learned a stream in which subject S made 5 decisions; an erase record of S
    comes. The worker forgets S's learned decisions in each partition (its erasure ledger),
    then is killed before its checkpoint: its successor restores the older state and forgets
    them again; a third worker restores the erased checkpoint and re-applies the record, a
    no-op. Each time every partition's sums equal those of a run without S's events."""
    s, key = subject_stream(300, seed=41, picks=[30, 95, 150, 151, 240])
    plain = without(s, key, s.end_ts)
    assert len(plain.joined) == len(s.joined) - 5
    reference = decay_log(2, half_life_ms)
    _fill(reference, plain)
    _drain(_worker(reference))
    expected = _partition_engines(reference)

    log = decay_log(2, half_life_ms)
    _fill(log, s)
    worker = _worker(log)
    _drain(worker)
    learned = sum(w.engine._ledger.size for w in worker.partitions.values())
    assert learned == len(s.joined)  # the sentinels stay open
    worker.transport.send_checkpoint = lambda partition, data: None  # killed before it
    log.publish_campaign({"erase": key.hex(), "at": s.end_ts})
    worker.step()
    for p, part in worker.partitions.items():
        assert_same_sums(part.engine, expected[p])
        assert not len(part.engine._ledger.find({key: math.inf}))
    assert sum(w.engine._ledger.size for w in worker.partitions.values()) == learned - 5
    for _ in range(2):  # forgets again; then re-applies with nothing left to forget
        worker = _worker(log)  # restores the newest checkpoints
        for p, part in worker.partitions.items():
            assert_same_sums(part.engine, expected[p])
            assert part.campaigns == 2  # the campaign and the erase record
        _drain(worker)
        worker.write_checkpoints()
    for p, engine in _partition_engines(log).items():
        assert_same_sums(engine, expected[p])
        assert not len(engine._ledger.find({key: math.inf}))


def _worker(log: MemoryLog, **options) -> Worker:
    transport = MemoryTransport(log)
    worker = Worker(transport, **options)
    transport.attach(worker)
    return worker


def test_partition_engines_keep_the_ledger_to_its_bound_and_never_guard():
    """The worker's partition engines keep ``erasure_ledger`` learned decisions each (0:
    none) and never evaluate guardrails: a harmful campaign learned in a partition stays
    running there, while the service's merged model trips its guardrail."""
    from tests.bandit.engine.test_guardrails import HARM, send, spec

    log = MemoryLog(Topics("t"), 1)
    service = Engine(seed=8, id_seed=8)
    service.create_campaign(spec("harm", HARM, holdout=0.5))
    log.publish_campaign(service.campaign_record("harm"))
    worker = _worker(log, erasure_ledger=3000)
    part = worker.partitions[0].engine
    assert part.guarding is False and service.guarding is True
    rng = np.random.default_rng(8)
    for k in range(40):  # the service absorbs the partition's state after each send
        send(service, k, rng, learner=part)
        service.absorb([part])
        if service.guard() == ["harm"]:
            break
    assert service.is_paused("harm"), "not tripped in 40 sends"
    assert not part.is_paused("harm") and not part.breaches and part.guard() == []
    assert part._ledger.size <= 3000 and not part._ledger.complete
    assert _worker(log, erasure_ledger=0).partitions[0].engine._ledger.max_decisions == 0
    with pytest.raises(InvalidInputError, match="erasure_ledger"):
        Worker(MemoryTransport(log), erasure_ledger=-1)


# -- binary decision blocks: a run of columns through the join -----------------------------------


def test_a_binary_block_is_joined_whole_and_its_misfits_and_overflow_leave_alone():
    """A binary block's decisions go to the join as one run; a decision the campaigns refuse
    (an arm they do not have) and one over the join's cap are dead-lettered alone, as the
    JSON of their decision, with their number in the block; the others are joined."""
    s = streamdata.make(60, seed=8)
    log = DecisionLog.concat(s.logs)
    head, body = log.block().split(b"\n", 1)
    block = msgspec.msgpack.decode(body, type=columns.Block3)
    hour = block.slots[2]  # h09, h18: h18 becomes an arm the campaign does not have
    ghost = columns.write(msgspec.structs.replace(block, slots=[*block.slots[:2], msgspec.structs
                          .replace(hour, arm_ids=["h09", "ghost"])]), len(log))
    arms = np.frombuffer(hour.arms, dtype="<i4")
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    part = PartitionJoin(0, engine)
    part.engine.limit_pending(10)
    out = part.process([Batch(DECISIONS, 0, [0], [ghost])], idle={EVENTS})
    misfit = np.flatnonzero(arms == 1).tolist()
    fits = np.flatnonzero(arms == 0).tolist()
    assert misfit and len(fits) > 10
    decisions = log.logged()
    expected = [(f"decision {j + 1} of the block: slot 'hour': no arm 'ghost'",
                 {**orjson.loads(encode(decisions[j])),
                  "slots": {**orjson.loads(encode(decisions[j]))["slots"],
                            "hour": {**orjson.loads(encode(decisions[j]))["slots"]["hour"],
                                     "arm": "ghost"}}}) for j in misfit]
    expected += [(f"decision {j + 1} of the block: over capacity: campaign 'news' already has 10 "
                  "decisions waiting for their attribution windows (setting max_pending)",
                  orjson.loads(encode(decisions[j]))) for j in fits[10:]]
    got = [(d.reason, orjson.loads(d.value)) for d in out.dead_letters]
    assert sorted(got, key=lambda x: x[0]) == sorted(expected, key=lambda x: x[0])
    assert all(d.source == "decisions/0/0" for d in out.dead_letters)
    assert part.counters.decisions == len(log) and part.engine.open_windows() == 10


def test_a_damaged_binary_block_beside_good_ones_is_dead_lettered_whole():
    s = streamdata.make(20, seed=9)
    good = DecisionLog.concat(s.logs).block()
    engine = Engine()
    engine.create_campaign(streamdata.spec())
    part = PartitionJoin(0, engine)
    out = part.process([Batch(DECISIONS, 0, [0, 1, 2], [good[:-1], good, b"?"])], idle={EVENTS})
    assert [(d.value, d.reason[:29]) for d in out.dead_letters] == [
        (good[:-1], "damaged decision block: Input"), (b"?", "not a decision block: no 'cma")]
    assert part.counters.decisions == 20 and part.engine.open_windows() == 20


def test_events_ahead_of_the_decisions_wait_outside_the_join_and_a_kill_loses_nothing():
    s = streamdata.make(400, seed=11)
    log = _log(partitions=2)
    streamdata.fill(log, s, size=5)

    def start(steps: int) -> Worker:
        # Polls as a consumer catching up on both inputs does: every event at once, the
        # decisions a few blocks a poll.
        transport = MemoryTransport(log, limits={EVENTS: 10**9, DECISIONS: 1 + steps % 3})
        worker = Worker(transport, checkpoint_interval_ms=0)
        transport.attach(worker)
        return worker

    worker, steps, held = start(0), 0, 0
    while worker.step():
        steps += 1
        for p, part in worker.partitions.items():
            # The join never holds an outcome whose decision it has not read yet: the
            # events wait in the partition, and its checkpoint resumes at the first of them.
            assert not part.engine._joiner._early
            held = max(held, part.holding)
            end = log.end(log.topics.events, p)
            assert part.offsets[EVENTS] == end - part.holding
            saved = PartitionJoin.restore(MemoryTransport(log).latest_checkpoint(p))
            assert saved.offsets == part.offsets
        if steps % 5 == 0:  # killed: held events are read again by the successor
            worker = start(steps)
    assert held > 0 and steps > 10
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


def test_a_partition_holds_back_at_most_hold_events_and_the_oldest_go_first(monkeypatch):
    monkeypatch.setattr("streams.worker.HOLD_EVENTS", 7)
    s = streamdata.make(100, seed=12)
    part = PartitionJoin(0, Engine())
    part.engine.create_campaign(streamdata.spec())
    events = [encode(e) for e in s.events]
    out = part.process([Batch(EVENTS, 0, list(range(len(events))), events)], idle=set())
    # No decision read yet, the decisions not idle: all but the 7 newest wait in the join.
    assert part.holding == 7 and out.counters.records == len(events) - 7
    assert part.offsets[EVENTS] == len(events) - 7
    out = part.process([], idle={DECISIONS, EVENTS})  # the decisions idle: the rest go
    assert part.holding == 0 and out.counters.records == 7
    assert part.offsets[EVENTS] == len(events)
