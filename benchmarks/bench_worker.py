"""The stream worker on the local broker: consume -> validate -> join -> learn -> checkpoint.

Workload S4: one weekly send of the four-slot newsletter (simulators.email_campaign) decided
by an engine: n impressions (context of 4 features, 4 slots), their clicks from the
simulator's true click probabilities, and a watermark that closes every window; 2 partitions.

REFERENCE: kafka-python consuming the same records from the same broker in the same run (a
consumer assigned to every partition, touching each value), the rate the issue compares to
(target >= 0.7x). FLOOR: the same consume with each poll's values decoded by the worker's
decoder and nothing else, the best a worker of this design (kafka-python + msgspec) could do.
The worker is timed from its first batch to the last checkpoint, so the group join is not
counted; it runs in this process, one worker on both partitions.

Workload S5: S4 with one weekly send's impressions and clicks on ONE partition, embedded
(streams.memory, no broker), batches of 5000 records as KafkaTransport polls them: every
window stays open until the watermark closes them all, so this is the worker with the largest
open set a 280k send gives a partition (140k) in the full run. Reported: records/s, and the
checkpoint at the largest open set (bytes, ms; restore ms in full and model-only) against the
time the worker spends on one batch in the same run, and where the time of the run goes: µs per
record in each stage of the worker (streams.worker.Stages: a clock read per stage and batch).

Run on its own: ``python -m benchmarks.bench_worker [--quick]``.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import orjson
from kafka import KafkaConsumer, TopicPartition

from bandit.engine import Engine
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main
from simulators.demo import CAMPAIGN, _events
from simulators.email_campaign import SLOTS, EmailCampaign
from streams.broker import LocalBroker
from streams.codec import decode_many
from streams.kafka import KafkaTransport
from streams.memory import MemoryLog, MemoryTransport
from streams.publish import Publisher
from streams.topics import Topics, create_topics
from streams.worker import PartitionJoin, Stages, Worker

BENCH = "worker"
PARTITIONS = 2


def workload(n: int) -> tuple[dict, list[dict], list[dict], int]:
    """S4 as wire data: the campaign record, impressions, clicks (event time order) and the
    watermark that closes every window. Also used to profile the worker embedded."""
    env = EmailCampaign()
    spec = env.campaign_spec(name=CAMPAIGN)
    engine = Engine(seed=0)
    engine.create_campaign(spec)
    rng = np.random.default_rng(0)
    population = env.subscribers(n, rng)
    batch = engine.decide_batch(CAMPAIGN, population.requests(CAMPAIGN))
    decisions = [orjson.loads(line) for line in batch.lines()]
    choices = {slot: np.array([d["slots"][i]["arm"] for d in decisions])
               for i, slot in enumerate(SLOTS)}
    clicked = env.sample_clicks(population, choices, rng)
    impressions, clicks = _events(decisions, population, clicked, 0,
                                  spec.attribution_window_ms, rng)
    return (engine.campaign_record(CAMPAIGN), impressions, clicks,
            spec.attribution_window_ms + 1)


def _send(n: int, topics: Topics, bootstrap: str) -> int:
    record, impressions, clicks, watermark = workload(n)
    with Publisher(bootstrap, topics) as pub:
        pub.campaign(record)
        pub.events(impressions, flush=False)
        pub.events(clicks)
        pub.watermark(watermark)
    return len(impressions) + len(clicks) + 2 * PARTITIONS


def _raw(bootstrap: str, topics: Topics, total: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             allow_auto_create_topics=False, max_poll_records=5000)
    consumer.assign([TopicPartition(t, p) for t in (topics.impressions, topics.clicks)
                     for p in range(PARTITIONS)])
    seen, size, start = 0, 0, None
    while seen < total:
        for records in consumer.poll(timeout_ms=200).values():
            start = start or time.perf_counter()
            seen += len(records)
            size += sum(len(r.value) for r in records)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _floor(bootstrap: str, topics: Topics, total: int) -> float:
    """The same consume, each poll's values decoded by the worker's decoder (decode_many):
    the least any worker of this design does per record, without join, learning or output."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             allow_auto_create_topics=False, max_poll_records=5000)
    consumer.assign([TopicPartition(t, p) for t in (topics.impressions, topics.clicks)
                     for p in range(PARTITIONS)])
    seen, start = 0, None
    while seen < total:
        for records in consumer.poll(timeout_ms=200).values():
            start = start or time.perf_counter()
            seen += len(decode_many([r.value for r in records]))
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _worker(bootstrap: str, topics: Topics, total: int) -> tuple[float, Worker]:
    transport = KafkaTransport(bootstrap, topics, f"bench-{uuid.uuid4().hex[:8]}",
                               max_poll_records=5000, session_timeout_ms=2000,
                               heartbeat_interval_ms=500)
    worker = Worker(transport)
    transport.attach(worker)
    start = None
    while worker.counters.records < total:
        if worker.step(200) and start is None:
            start = time.perf_counter()
    worker.write_checkpoints()  # the last one, if the interval had not come round yet
    elapsed = time.perf_counter() - start
    transport.close()
    return elapsed, worker


def _embedded(n: int) -> Results:
    """S5: the worker over an in-process log, one partition, every window open at once."""
    record, impressions, clicks, watermark = workload(n)
    log = MemoryLog(Topics("s5"), partitions=1)
    log.publish_campaign(record)
    for topic, events in ((log.topics.impressions, impressions), (log.topics.clicks, clicks)):
        for event in events:
            log.append(topic, orjson.dumps(event), partition=0)
    transport = MemoryTransport(log, max_records=5000)
    worker = Worker(transport, stages=Stages())
    transport.attach(worker)
    start = time.perf_counter()
    while worker.step():
        pass
    opened = time.perf_counter() - start
    part = worker.partitions[0]
    open_n = part.engine.open_windows()
    t_checkpoint, data = best_time(lambda: None, lambda _: part.checkpoint(), repeat=3)
    t_restore, _ = best_time(lambda: None, lambda _: PartitionJoin.restore(data), repeat=2)
    t_model, _ = best_time(lambda: None,
                           lambda _: PartitionJoin.restore(data, model_only=True), repeat=2)
    mark = orjson.dumps({"type": "watermark", "ts": watermark})
    log.append(log.topics.impressions, mark, partition=0)
    log.append(log.topics.clicks, mark, partition=0)
    start = time.perf_counter()
    while worker.step():
        pass
    closed = time.perf_counter() - start
    total, batches = worker.counters.records, -(-worker.counters.records // 5000)
    per_batch = (opened + closed) / batches
    ms = [Measurement(BENCH, "embedded worker, one partition, batches of 5000", "S5",
                      total / (opened + closed), "records/s", total,
                      note=f"{worker.checkpoints} checkpoints (interval "
                           f"{worker.checkpoint_interval_ms} ms)"),
          Measurement(BENCH, f"checkpoint with {open_n:,} open windows", "S5",
                      t_checkpoint * 1e3, "ms", open_n, note=f"{len(data) / 1e6:.1f} MB"),
          Measurement(BENCH, "restore that checkpoint (worker)", "S5", t_restore * 1e3, "ms",
                      open_n),
          Measurement(BENCH, "restore it model-only (decision service)", "S5", t_model * 1e3,
                      "ms", open_n)]
    ms += [Measurement(BENCH, f"embedded worker stage: {stage}", "S5", seconds / total * 1e6,
                       "us/record", total)
           for stage, seconds in worker.stages.seconds.items()]
    rs = [Ratio(BENCH, "one batch's time / one checkpoint's, largest open set", "S5",
                per_batch / t_checkpoint)]
    return ms, rs


def run(quick: bool = False) -> Results:
    embedded = _embedded(10_000 if quick else 140_000)
    n = 5_000 if quick else 40_000
    with LocalBroker() as broker:
        topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
        create_topics(broker.bootstrap_servers, topics, PARTITIONS)
        total = _send(n, topics, broker.bootstrap_servers)
        t_raw = _raw(broker.bootstrap_servers, topics, total)
        t_floor = _floor(broker.bootstrap_servers, topics, total)
        t_worker, worker = _worker(broker.bootstrap_servers, topics, total)
    c = worker.counters
    ms = [Measurement(BENCH, "REFERENCE kafka-python consume, same records", "S4", total / t_raw,
                      "records/s", total),
          Measurement(BENCH, "worker: consume, validate, join, learn, checkpoint", "S4",
                      total / t_worker, "records/s", total,
                      note=f"{c.joined:,} decisions joined, {c.dead_letters} dead letters")]
    ms.append(Measurement(BENCH, "floor: kafka-python consume + decode_many only", "S4",
                          total / t_floor, "records/s", total,
                          note="no join, learning, output or checkpoint"))
    rs = [Ratio(BENCH, "worker / raw consume (records/s)", "S4", t_raw / t_worker, target=0.7),
          Ratio(BENCH, "floor (consume + decode only) / raw consume (records/s)", "S4",
                t_raw / t_floor)]
    return ms + embedded[0], rs + embedded[1]


if __name__ == "__main__":
    script_main(run)
