"""The stream worker in embedded mode (in-process log): join, learning, checkpoints,
dead letters, restarts. The same code runs over Kafka in test_worker_kafka.py."""

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit.engine import Engine
from bandit.engine.join import subject_key
from bandit.errors import IncompatibleStateError, InvalidInputError
from streams.codec import encode
from streams.joined import examples
from streams.memory import MemoryLog, MemoryTransport
from streams.records import CLICKS, IMPRESSIONS, Batch
from streams.topics import Topics
from streams.worker import PartitionJoin, Stages, Worker, erase_record
from tests import streamdata


def _fill(log: MemoryLog, s: streamdata.Streams) -> None:
    for imp in s.impressions:
        log.append(log.topics.impressions, encode(imp), key=imp["decision_id"].encode())
    for click in s.clicks:
        log.append(log.topics.clicks, encode(click), key=click["decision_id"].encode())
    for p in range(log.partitions):
        imp, click = streamdata.sentinels(p, s.end_ts + 10 * streamdata.WINDOW_MS)
        log.append(log.topics.impressions, encode(imp), partition=p)
        log.append(log.topics.clicks, encode(click), partition=p)


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
    assert worker.counters.duplicates == s.duplicates
    assert worker.counters.late == s.late
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
    _fill(log, s)

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
    assert sorted(joined) == sorted(e.decision_id for e in s.joined)  # closing checkpoints
    records = sum(log.end(t, p) for t in (log.topics.impressions, log.topics.clicks)
                  for p in range(2))
    assert sum(batches) > records  # records after a lost checkpoint were processed again


def test_revocation_and_stop_write_what_is_pending():
    s = streamdata.make(100, seed=8)
    log = _log(partitions=2)
    _fill(log, s)
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


def test_bad_records_are_dead_lettered_with_a_reason_and_the_rest_learned():
    s = streamdata.make(200, seed=3)
    log = _log(partitions=1)
    bad = [b"not json", b"[]", b'{"type": "view"}',
           encode({**s.impressions[0], "event_id": "x1", "campaign": "nope"}),
           encode({**s.impressions[0], "event_id": "x2",
                   "slots": {"subject": {"arm": "ghost", "propensity": 0.5}}}),
           b'{"type": "impression", "ts": NaN}',
           encode({**s.impressions[0], "event_id": "x3", "context": {"engagement": "high"}}),
           encode(s.clicks[0]),  # a click on the impressions topic
           None]
    for value in bad:
        log.append(log.topics.impressions, value, partition=0)
    _fill(log, s)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    letters = log.read(log.topics.deadletter, 0)
    reasons = [dict(h)["reason"].decode() for _, _, h in letters]
    assert [v for v, _, in [(v, h) for _, v, h in letters[:len(bad)]]] == bad
    assert reasons[0].startswith("not JSON")
    assert "no campaign 'nope'" in reasons[3]
    assert "no arm 'ghost'" in reasons[4]
    assert "engagement" in reasons[6]
    assert "a click on the impressions topic" in reasons[7]
    assert reasons[8] == "empty record"
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
        log.append(log.topics.clicks, value, partition=0)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert len(log.read(log.topics.deadletter, 0)) == len(garbage)
    assert worker.counters.records == len(garbage)


def test_the_watermark_waits_for_the_slower_input():
    s = streamdata.make(50, seed=4)
    part = PartitionJoin(0, Engine())
    part.engine.create_campaign(streamdata.spec())
    imps = [encode(e) for e in s.impressions] + [encode(streamdata.sentinels(0, 10**9)[0])]
    out = part.process([Batch(IMPRESSIONS, 0, list(range(len(imps))), imps)], idle=set())
    assert out.joined == []  # clicks have not moved: no window may close yet
    clicks = [encode(c) for c in s.clicks]
    out = part.process([Batch(CLICKS, 0, list(range(len(clicks))), clicks)],
                       idle={IMPRESSIONS})
    assert len(out.joined) > 0 and math.isfinite(part.newest[CLICKS])


def test_a_damaged_checkpoint_is_refused():
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
    for imp in s.impressions:
        log.append(log.topics.impressions, encode(imp), key=imp["decision_id"].encode())
    for click in s.clicks:
        log.append(log.topics.clicks, encode(click), key=click["decision_id"].encode())
    mark = encode({"type": "watermark", "ts": s.end_ts})
    for p in range(2):
        log.append(log.topics.impressions, mark, partition=p)
        log.append(log.topics.clicks, mark, partition=p)
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    _drain(worker)
    assert worker.counters.joined == 120 and worker.counters.dead_letters == s.late
    streamdata.assert_same_model(_model(log), streamdata.reference(s))


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
    half = len(s.impressions) // 2
    part.process([Batch(IMPRESSIONS, 0, list(range(len(s.impressions))),
                        [encode(e) for e in s.impressions])], idle={CLICKS})
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
    first, second = s.impressions[120], s.impressions[150]
    gone = {first["user_id"], second["user_id"]}
    log = _log(partitions=1)
    sent = {"impressions": 0, "clicks": 0}

    def send_until(ts: float) -> None:  # both inputs, in event time, up to ts
        for stream, topic in (("impressions", log.topics.impressions),
                              ("clicks", log.topics.clicks)):
            events = getattr(s, stream)
            while sent[stream] < len(events) and events[sent[stream]]["ts"] <= ts:
                event = events[sent[stream]]
                log.append(topic, encode(event), key=event["decision_id"].encode())
                sent[stream] += 1

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
        log.publish_campaign(erase_record(user_id, s.end_ts))
    worker.step()
    open_ids = worker.partitions[0].engine._joiner._row.keys()
    assert first["decision_id"] not in open_ids and second["decision_id"] not in open_ids
    # Killed. The successor restores the checkpoint holding the first subject, replays the
    # second's impression, then reads the rest of the stream.
    transport = MemoryTransport(log)
    worker = Worker(transport)
    transport.attach(worker)
    send_until(s.end_ts)
    imp, click = streamdata.sentinels(0, s.end_ts + 10 * streamdata.WINDOW_MS)
    log.append(log.topics.impressions, encode(imp), partition=0)
    log.append(log.topics.clicks, encode(click), partition=0)
    _drain(worker)
    assert worker.counters.erased == 2  # one open decision restored, one impression replayed
    keys = {subject_key(user_id).hex() for user_id in gone}
    kept = [e for e in s.joined if e.subject not in keys]
    streamdata.assert_same_model(_model(log), streamdata.reference(
        streamdata.Streams(s.impressions, s.clicks, kept, s.late, s.duplicates, s.end_ts)))
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
