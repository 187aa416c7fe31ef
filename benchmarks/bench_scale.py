"""Scale-out and end-to-end lag of the stream on the local broker.

Workload S4 (as bench_worker): the four-slot newsletter of simulators.email_campaign decided by
an engine, impressions and simulated clicks, a watermark that closes every window; 2 partitions.

(a) Two ``cmab worker`` processes in one group against one, on the same records (published
    once per topic prefix), same run: records/s from the first checkpoint seen on the state
    topic to the last, so process start-up and the group join are not counted. The workers
    checkpoint after every batch here (``--checkpoint-interval-ms 0``): with the default
    interval the first checkpoint may come only near the end, and the clock would start late.
(b) Lag from a click produced to the model visible in the decision service: ``cmab serve`` in
    stream mode and one ``cmab worker``; per step, a few decisions' impressions and clicks and
    a watermark that closes their windows are produced (flushed), then the service's report
    is polled every 2 ms until it counts them. One untimed step first, so the worker's group
    join and the service's first model are not counted. REFERENCE: one record produced
    (flushed) and consumed by a kafka-python consumer on the same broker, in the same run:
    right after the previous record (the consumer's next fetch is not yet waiting at the
    broker), and after an idle gap with the project's ``fetch_max_wait_ms`` (the broker holds
    a waiting fetch for part of that time, record or not): the floor of one hop of the loop,
    which has two (events to the worker, checkpoint to the service).

The figures are clocked inside each scenario (rates from the first checkpoint, latency
percentiles); the fixture's own time covers the whole scenario, one round each.

Run on its own: ``pytest benchmarks/bench_scale.py [--quick]``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from bandit.engine import Engine
from benchmarks.bench_worker import workload
from benchmarks.common import ratio, record
from simulators.demo import CAMPAIGN
from streams.broker import LocalBroker, free_port
from streams.follower import StateFollower
from streams.kafka import FETCH_MAX_WAIT_MS
from streams.publish import Publisher
from streams.topics import Topics, create_topics

BENCH = "scale"
PARTITIONS = 2
_TIMEOUT_S = 300.0


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bandit.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _workers_rate(bootstrap: str, workers: int, campaign: dict[str, Any], impressions: list,
                  clicks: list, window: int) -> tuple[int, float]:
    """Records and seconds of ``workers`` `cmab worker` processes over freshly published
    records, from the first checkpoint seen to the last."""
    topics = Topics(f"scale-{uuid.uuid4().hex[:8]}")
    create_topics(bootstrap, topics, PARTITIONS)
    with Publisher(bootstrap, topics) as pub:
        pub.campaign(campaign)
        pub.events(impressions, flush=False)
        pub.events(clicks)
        pub.watermark(window + 1)
    total = len(impressions) + len(clicks) + PARTITIONS  # a watermark per events partition
    first: list[tuple[float, int]] = []

    def consumed(latest: dict) -> int:
        return sum(sum(part.offsets.values()) for part in latest.values())

    def done(latest: dict) -> bool:
        if latest and not first:
            first.append((time.perf_counter(), consumed(latest)))
        return consumed(latest) >= total

    follower = StateFollower(Engine(), bootstrap, topics, poll_timeout_ms=20).start()
    group = f"{topics.prefix}-workers"
    procs = [_spawn(["worker", "--bootstrap-servers", bootstrap, "--topic-prefix",
                     topics.prefix, "--group", group, "--quiet",
                     "--checkpoint-interval-ms", "0"]) for _ in range(workers)]
    try:
        if not follower.wait_for(done, _TIMEOUT_S):
            raise RuntimeError(f"{workers} worker(s) did not finish in {_TIMEOUT_S:.0f} s")
        end = time.perf_counter()
    finally:
        _stop(procs)
        follower.close()
    t_first, n_first = first[0]
    return total - n_first, end - t_first


def _raw_latency(bootstrap: str, steps: int, idle_s: float = 0.0, **config: Any) -> np.ndarray:
    """Seconds from one record's send (flushed) to its arrival at a consumer, per step;
    before each send the consumer polls on for a seeded random 0..``idle_s`` seconds."""
    topic = f"scale-raw-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             allow_auto_create_topics=False, **config)
    consumer.assign([TopicPartition(topic, 0)])
    gaps = random.Random(0)
    out = np.empty(steps)
    try:
        for i in range(steps):
            until = time.perf_counter() + gaps.uniform(0, idle_s)
            while (left := until - time.perf_counter()) > 0:
                consumer.poll(timeout_ms=max(1, int(left * 1e3)))
            t0 = time.perf_counter()
            producer.send(topic, b"x")
            producer.flush()
            while not consumer.poll(timeout_ms=100):
                pass
            out[i] = time.perf_counter() - t0
    finally:
        producer.close()
        consumer.close()
    return out


def _service_lag(bootstrap: str, spec: dict[str, Any], impressions: list, clicks: list,
                 window: int, steps: int, per_step: int) -> np.ndarray:
    """Seconds from a step's events produced (flushed) to the service's report counting them."""
    prefix = f"scale-lag-{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    create_topics(bootstrap, topics, PARTITIONS)
    port = free_port()
    env = {**os.environ, "CMAB_BOOTSTRAP_SERVERS": bootstrap, "CMAB_TOPIC_PREFIX": prefix}
    procs = [_spawn(["serve", "--port", str(port)], env),
             _spawn(["worker", "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
                     "--group", f"{prefix}-workers", "--quiet"])]
    clicks_of: dict[str, list[dict]] = {}
    for c in clicks:
        clicks_of.setdefault(c["decision_id"], []).append(c)
    out = np.empty(steps)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the decision service did not start")
            time.sleep(0.1)
        created = client.post("/v1/campaigns", json=spec)
        if created.status_code != 201:
            raise RuntimeError(f"campaign not created: {created.text[:300]}")
        with Publisher(bootstrap, topics, linger_ms=0) as pub:
            for step in range(steps + 1):  # step 0 waits for the worker's join: not timed
                shift = step * (window + 2)  # each step's windows close at its watermark
                batch = impressions[step * per_step:(step + 1) * per_step]
                events = [{**e, "ts": e["ts"] + shift} for e in batch]
                events += [{**c, "ts": c["ts"] + shift} for e in batch
                           for c in clicks_of.get(e["decision_id"], [])]
                t0 = time.perf_counter()
                pub.events(events, flush=False)
                pub.watermark(shift + window + 1)
                while int(client.get(f"/v1/campaigns/{CAMPAIGN}/report").json()[
                        "impressions"]) < (step + 1) * per_step:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"step {step}: the model never reached the service")
                    time.sleep(0.002)
                if step:
                    out[step - 1] = time.perf_counter() - t0
        client.close()
    finally:
        _stop(procs)
    return out


@dataclass(frozen=True)
class Stream:
    """S4 (the legacy impressions and clicks) on a running local broker."""

    bootstrap: str
    spec: dict[str, Any]
    campaign: dict[str, Any]
    impressions: list[dict[str, Any]]
    clicks: list[dict[str, Any]]
    window: int
    n: int
    steps: int
    per_step: int


@pytest.fixture(scope="module")
def stream(quick: bool) -> Iterator[Stream]:
    n = 5_000 if quick else 40_000
    steps, per_step = (30, 10) if quick else (200, 10)
    campaign, impressions, clicks, watermark = workload(max(n, (steps + 1) * per_step))
    with LocalBroker() as broker:
        yield Stream(broker.bootstrap_servers, campaign["spec"], campaign, impressions, clicks,
                     watermark - 1, n, steps, per_step)


@pytest.mark.broker
@pytest.mark.parametrize("workers", [1, 2])
def test_workers(benchmark, stream, workers):
    """``workers`` cmab worker processes in one group on 2 partitions; one round each."""
    s = stream
    ids = {e["decision_id"] for e in s.impressions[: s.n]}
    clicks = [c for c in s.clicks if c["decision_id"] in ids]
    done, seconds = benchmark.pedantic(_workers_rate, args=(
        s.bootstrap, workers, s.campaign, s.impressions[: s.n], clicks, s.window))
    rs = ([ratio("2 workers / 1 worker (records/s)", "1 cmab worker, 2 partitions")]
          if workers == 2 else [])
    name = "1 cmab worker" if workers == 1 else "2 cmab workers (one group)"
    record(benchmark, BENCH, f"{name}, 2 partitions", "S4", done, "records/s", seconds=seconds,
           note=f"{s.n + len(clicks) + PARTITIONS:,} records, counted from the first "
                "checkpoint", ratios=rs)


LAG = "click produced -> model in the service, p50"


@pytest.mark.broker
@pytest.mark.parametrize("idle", [False, True])
def test_raw_latency(benchmark, stream, idle):
    s = stream
    config = {"idle_s": 0.3, "fetch_max_wait_ms": FETCH_MAX_WAIT_MS} if idle else {}
    lat = benchmark.pedantic(_raw_latency, args=(s.bootstrap, s.steps), kwargs=config)
    p50, p99 = np.percentile(lat, [50, 99])
    if idle:
        record(benchmark, BENCH, "REFERENCE one record to an idle consumer, p50", "S4 step",
               s.steps, "ms", seconds=p50,
               note=f"p99 {p99 * 1e3:.1f} ms; fetch_max_wait_ms {FETCH_MAX_WAIT_MS}, "
                    "idle 0-300 ms before each send",
               ratios=[ratio("two idle-consumer hops / service lag (p50)", LAG, by="value",
                             factor=2.0,
                             note="the share of the lag that is fetch waiting at the broker")])
    else:
        record(benchmark, BENCH, "REFERENCE one record produce -> consume, p50", "S4 step",
               s.steps, "ms", seconds=p50, note=f"p99 {p99 * 1e3:.1f} ms",
               ratios=[ratio("raw produce->consume / service lag (p50)", LAG, by="value",
                             note="the share of the lag that is the broker's own latency")])


@pytest.mark.broker
def test_service_lag(benchmark, stream):
    s = stream
    lag = benchmark.pedantic(_service_lag, args=(s.bootstrap, s.spec, s.impressions, s.clicks,
                                                 s.window, s.steps, s.per_step))
    p50, p99 = np.percentile(lag, [50, 99])
    record(benchmark, BENCH, LAG, "S4 step", s.steps, "ms", seconds=p50,
           note=f"p99 {p99 * 1e3:.1f} ms; {s.per_step} decisions + clicks + watermark per "
                "step; report polled every 2 ms")
