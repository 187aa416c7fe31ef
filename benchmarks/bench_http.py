"""The decision service over real HTTP: single decisions against a bare FastAPI route, batches.

Server: a separate process (``python -m benchmarks.bench_http --serve``) runs uvicorn (uvloop,
httptools, access log off, ``tune_gc`` as in ``cmab serve``) on a free 127.0.0.1 port, with the
service of ``bandit.service`` over the engine of ``bench_engine`` (4 slots of K=10 arms at d=20,
20,000 events learned) plus one route added here only: ``POST /bare`` reads the body and
answers a canned decision of the same size, the floor that FastAPI and uvicorn cost with no
validation and no engine.

Single decisions: C = 1, 4 and 16 client processes, each with one keep-alive ``http.client``
connection, start together (a barrier after warm-up requests) and send a fixed share of 6,000
requests, cycling through 64 distinct bodies (so holdout and non-holdout subscribers both
appear), to ``/v1/decisions`` and to ``/bare`` in turns; req/s is all requests over the wall
time of the round; p50/p99 are per-request latencies of that round (under load they include
queueing), and the server's CPU per request (user + system time of the server process over
the round, all its threads: on a machine shared with other work the wall-clock rates move, the
CPU a request costs much less). The clients share the machine's cores with the server, which
caps the bare route at high C.
The RATIO service / bare req/s (target >= 0.8) compares two figures of the same run.

Batches: one client posts 280,000 subscribers as NDJSON (and the JSON maximum, 100,000) to
``/v1/decisions/batch`` and reads the whole answer; decisions/s is the count over the time from
the first byte sent to the last byte received (target >= 100,000/s for the NDJSON send), with
the server's CPU per decision over that time.
In process, the NDJSON text of a 280,000 x 4-slot ``DecisionBatch`` is built two ways, the
same bytes: ``ndjson`` (the route's: a kernel copies the column texts) and the REFERENCE writer
here (a dict per decision built from the columns, each line by ``orjson.dumps``); and the
route's other two stages are timed alone: the body decoded into columns
(``bandit.wire.batch.ndjson_columns``) and ``Engine.decide_columns`` of the whole send in one
call.

Run on its own: ``pytest benchmarks/bench_http.py [--quick]``.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi import Request  # at module level: FastAPI resolves the route's annotations here
from fastapi.responses import Response

from benchmarks.common import ratio, record, rounds

if TYPE_CHECKING:
    from bandit.engine import DecisionBatch

BENCH = "http"
N_SEND = 280_000
N_JSON = 100_000  # the largest JSON batch the service takes
CLIENTS = (1, 4, 16)  # concurrent connections: unloaded, saturated, coalescing
PER_ROUND = 6000  # requests per round, shared by its clients
WARM = 50
BODIES = 64
NDJSON = "application/x-ndjson"


# -- the server process ----------------------------------------------------------------------


def serve() -> None:
    """The server: the service plus ``/bare``, on a free loopback port printed on stdout."""
    import uvicorn

    from bandit.service import create_app, tune_gc
    from bandit.settings import Settings
    from benchmarks.bench_engine import build, trained_engine

    engine = trained_engine()
    requests, _ = build(1, seed=5)
    canned = engine.decide_batch("bench", requests).lines()[0]
    app = create_app(engine, Settings())

    @app.post("/bare", include_in_schema=False)
    async def bare(request: Request) -> Response:
        await request.body()
        return Response(canned, media_type="application/json")

    tune_gc()  # as cmab serve does
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(
        sockets=[sock])


class Server:
    """``serve()`` in a child process, until the block ends."""

    def __enter__(self) -> Server:
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_http",
                                         "--serve"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"benchmark server did not start (exit {self.process.poll()})")
        self.port = int(line)
        deadline = time.monotonic() + 120
        while True:  # ready: kernels warm, campaign loaded
            try:
                status, _ = request(self.port, "GET", "/readyz")
            except ConnectionError:
                status = 0
            if status == 200:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("benchmark server never became ready")
            time.sleep(0.2)

    def cpu_s(self) -> float:
        """The server process's CPU time so far (user + system, every thread; Linux)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body, {"content-type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- clients ---------------------------------------------------------------------------------


def _client(port: int, path: str, bodies: list[bytes], n: int, barrier: Any,
            results: Any) -> None:
    """One keep-alive connection: WARM untimed requests, the barrier, n timed ones."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"}

    def one(i: int) -> None:
        conn.request("POST", path, bodies[i % len(bodies)], headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: status {response.status}")

    for i in range(WARM):
        one(i)
    barrier.wait()
    latencies = np.empty(n)
    start = time.monotonic()
    for i in range(n):
        t0 = time.perf_counter()
        one(i)
        latencies[i] = time.perf_counter() - t0
    results.put((start, time.monotonic(), latencies))
    conn.close()


def _round(port: int, path: str, bodies: list[bytes], clients: int,
           n: int) -> tuple[float, np.ndarray]:
    """req/s over all clients and every request's latency (s) of one concurrent round."""
    ctx = multiprocessing.get_context("spawn")  # no inherited Numba or BLAS threads
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    workers = [ctx.Process(target=_client, args=(port, path, bodies, n, barrier, results))
               for _ in range(clients)]
    for w in workers:
        w.start()
    done: list[tuple[float, float, np.ndarray]] = []
    while len(done) < clients:
        try:
            done.append(results.get(timeout=1))
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                for w in workers:
                    w.kill()
                raise RuntimeError(f"a benchmark client failed on {path}") from None
    for w in workers:
        w.join(30)
    wall = max(end for _, end, _ in done) - min(start for start, _, _ in done)
    return clients * n / wall, np.concatenate([lat for _, _, lat in done])


def _batch(port: int, body: bytes, content_type: str, n: int) -> float:
    """Seconds from sending a batch to having read its whole answer."""
    t0 = time.perf_counter()
    status, answer = request(port, "POST", "/v1/decisions/batch", body, content_type)
    seconds = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"batch: status {status}: {answer[:200]!r}")
    count = answer.count(b"\n") if content_type == NDJSON else answer.count(b'"decision_id"')
    if count != n:
        raise RuntimeError(f"batch: {count} decisions for {n} requests")
    return seconds


def reference_ndjson(batch: DecisionBatch) -> bytes:
    """The REFERENCE writer of a batch's NDJSON: a dict per decision built from the columns,
    each line by ``orjson.dumps``; the bytes of ``DecisionBatch.ndjson``."""
    import orjson

    n = len(batch)
    slots = [(s.slot, [s.arm_ids[a] for a in s.arms.tolist()], s.propensity.tolist(),
              s.expected_reward.tolist(), s.exploration_bonus.tolist(),
              s.explanations or [None] * n) for s in batch.slots]
    holdout = batch.holdout.tolist()
    return b"".join(orjson.dumps({
        "decision_id": decision_id, "campaign": batch.campaign, "user_id": batch.user_ids[i],
        "holdout": holdout[i], "model_version": batch.model_version,
        "slots": [{"slot": slot, "arm": arms[i], "propensity": p[i], "expected_reward": mean[i],
                   "exploration_bonus": bonus[i],
                   "explanation": None if why[i] is None else [c.model_dump() for c in why[i]]}
                  for slot, arms, p, mean, bonus, why in slots]}) + b"\n"
        for i, decision_id in enumerate(batch.decision_ids))


# -- the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bodies:
    """The requests as the clients send them: single bodies, the send as NDJSON and as JSON."""

    singles: list[bytes]
    requests: list[Any]
    ndjson: bytes
    json_body: bytes
    n_send: int
    n_json: int
    quick: bool


@pytest.fixture(scope="module")
def bodies(quick: bool) -> Bodies:
    from benchmarks.bench_engine import build

    n_send, n_json = (N_SEND // 10, N_JSON // 10) if quick else (N_SEND, N_JSON)
    singles = [r.model_dump_json(exclude_defaults=True).encode() for r in build(BODIES, 6)[0]]
    requests, _ = build(n_send, seed=7)
    lines = [r.model_dump_json(exclude_defaults=True).encode() for r in requests]
    return Bodies(singles, requests, b"\n".join(lines) + b"\n",
                  b'{"campaign":"bench","requests":[' + b",".join(lines[:n_json]) + b"]}",
                  n_send, n_json, quick)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


BARE = "REFERENCE bare FastAPI route, canned decision"
ROUTES = (("/bare", BARE), ("/v1/decisions", "POST /v1/decisions, 4 slots"))


@pytest.mark.parametrize("clients", CLIENTS)
def test_single(benchmark, server, bodies, clients):
    """One round per route in turns (so that noise hits both alike), the best of 3 per route."""
    n = (PER_ROUND // 5 if bodies.quick else PER_ROUND) // clients
    best: dict[str, tuple[float, np.ndarray, float]] = {}

    def turn() -> None:
        for path, _ in ROUTES:
            cpu = server.cpu_s()
            rate, latencies = _round(server.port, path, bodies.singles, clients, n)
            cpu = (server.cpu_s() - cpu) / (n * clients)
            if rate > best.get(path, (0.0, None, 0.0))[0]:
                best[path] = (rate, latencies, cpu)

    benchmark.pedantic(turn, rounds=rounds(bodies.quick))
    for path, case in ROUTES:
        rate, latencies, cpu = best[path]
        p50, p99 = np.percentile(latencies, [50, 99]) * 1e3
        rs = ([] if path == "/bare" else
              [ratio(f"POST /v1/decisions / bare route (req/s), {clients} clients",
                     f"{BARE}, {clients} clients", target=0.8,
                     note="concurrent keep-alive connections")])
        record(benchmark, BENCH, f"{case}, {clients} clients", "E4", len(latencies), "req/s",
               seconds=len(latencies) / rate, ratios=rs,
               note=f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, server CPU {cpu * 1e6:.0f} us/req")


def test_batch_ndjson(benchmark, server, bodies):
    cpu = server.cpu_s()
    reps = rounds(bodies.quick)
    benchmark.pedantic(_batch, args=(server.port, bodies.ndjson, NDJSON, bodies.n_send),
                       rounds=reps)
    cpu = (server.cpu_s() - cpu) / (bodies.n_send * reps)
    full = bodies.n_send == N_SEND
    record(benchmark, BENCH, "POST /v1/decisions/batch NDJSON, 4 slots", "E4", bodies.n_send,
           "decisions/s", target=(">=", 100_000) if full else None,
           note=f"{len(bodies.ndjson) / 1e6:.0f} MB in, server CPU {cpu * 1e6:.1f} us/decision "
                "(mean of the rounds)")


def test_batch_json(benchmark, server, bodies):
    benchmark.pedantic(_batch, args=(server.port, bodies.json_body, "application/json",
                                     bodies.n_json), rounds=rounds(bodies.quick))
    record(benchmark, BENCH, "POST /v1/decisions/batch JSON, 4 slots", "E4", bodies.n_json,
           "decisions/s")


@pytest.fixture(scope="module")
def decided(bodies: Bodies) -> tuple[Any, DecisionBatch]:
    """The engine of the server, in process, and its batch for the send."""
    from benchmarks.bench_engine import trained_engine

    engine = trained_engine()
    batch = engine.decide_batch("bench", bodies.requests)
    if reference_ndjson(batch) != batch.ndjson():  # untimed: the two write the same bytes
        raise RuntimeError("the reference writer and DecisionBatch.ndjson differ")
    return engine, batch


WRITER = "REFERENCE NDJSON via orjson of dicts"


def test_reference_writer(benchmark, bodies, decided):
    _, batch = decided
    benchmark.pedantic(reference_ndjson, args=(batch,), rounds=rounds(bodies.quick))
    record(benchmark, BENCH, WRITER, "E4", bodies.n_send, "s/send")


def test_ndjson(benchmark, bodies, decided):
    """The route's own path in process: msgspec columns, decide_columns, DecisionBatch.ndjson;
    here its writer."""
    _, batch = decided
    benchmark.pedantic(batch.ndjson, rounds=rounds(bodies.quick))
    record(benchmark, BENCH, "NDJSON via DecisionBatch.ndjson", "E4", bodies.n_send, "s/send",
           ratios=[ratio("reference writer / ndjson (time ratio)", WRITER,
                         note="serializing a send's decisions, in process")])


def test_ndjson_columns(benchmark, bodies, decided):
    from bandit.wire.batch import ndjson_columns

    engine, _ = decided
    benchmark.pedantic(ndjson_columns, args=(bodies.ndjson, engine), rounds=rounds(bodies.quick))
    record(benchmark, BENCH, "wire.batch.ndjson_columns (parse + encode)", "E4", bodies.n_send,
           "s/send", note=f"{len(bodies.ndjson) / 1e6:.0f} MB")


def test_decide_columns(benchmark, bodies, decided):
    from bandit.wire.batch import ndjson_columns

    engine, _ = decided
    columns = ndjson_columns(bodies.ndjson, engine)
    benchmark.pedantic(engine.decide_columns, args=(columns,), rounds=rounds(bodies.quick))
    record(benchmark, BENCH, "Engine.decide_columns, 4 slots", "E4", bodies.n_send, "s/send")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
