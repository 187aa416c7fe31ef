"""``cmab demo``: the whole loop on one machine, through the real parts.

It starts the local broker, the decision service (``cmab serve`` in stream mode) and one
worker (``cmab worker``) as child processes on 127.0.0.1, creates the four-slot newsletter
campaign of ``simulators.email_campaign`` over HTTP, then plays weekly sends:

1. decide: the whole list in one ``POST /v1/decisions/batch`` (JSON lines);
2. send: the impressions go to ``<prefix>.impressions`` (as a sender would write them);
3. click: clicks drawn from the simulator's true click probabilities go to
   ``<prefix>.clicks`` (as a tracker would), within the attribution window;
4. close: both write a watermark past the window; the worker joins, learns and checkpoints;
   the service follows the state topic and swaps the new model in before the next send.

Every send prints a row: CTR of personalized and holdout subscribers, the lift with its
interval, the model version the send was decided with, events/s and dead letters. At the end a
report folder (HTML, Markdown, JSON, PNGs) compares the sends with the simulator's oracle and
uniform random and includes the service's report (holdout lift, bias audit).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bandit.errors import InvalidInputError, UnavailableError
from simulators.email_campaign import SLOTS, EmailCampaign, Subscribers
from simulators.reports.demo import SendResult, write_report
from streams.broker import LocalBroker, free_port

DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS
T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the first send
CAMPAIGN = "weekly-newsletter"
_Z95 = 1.959963984540054
_START_TIMEOUT_S = 120.0
# The wait for the model gives up only when the worker has stopped making progress this long.
_STALL_TIMEOUT_S = 120.0


def _lift(c1: int, n1: int, c0: int, n0: int) -> tuple[float, float, float] | None:
    """Difference of two proportions with a 95% normal-approximation interval."""
    if n1 < 2 or n0 < 2:
        return None
    p1, p0 = c1 / n1, c0 / n0
    half = _Z95 * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return p1 - p0, p1 - p0 - half, p1 - p0 + half


class _Children:
    """Child processes that must not outlive the demo (stopped on exit, error and Ctrl-C)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        out = open(log, "wb")  # noqa: SIM115 - the child owns it; closed with the child
        proc = subprocess.Popen([sys.executable, "-m", "bandit.cli", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.procs.append((name, proc))

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise UnavailableError(f"the {name} stopped (exit code {proc.returncode}); "
                                       f"see its log in the report folder")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def run_demo(*, subscribers: int = 20_000, sends: int = 6, seed: int = 0,
             out: Path = Path("reports/demo"), partitions: int = 2,
             on_send: Any = None) -> tuple[list[SendResult], Path]:
    """Play the demo; returns the sends and the report's path. ``on_send(result)`` is called
    after each send (the CLI draws its live table with it)."""
    if subscribers < 10:
        raise InvalidInputError(f"--subscribers: at least 10, got {subscribers}")
    if sends < 1:
        raise InvalidInputError(f"--sends: at least 1, got {sends}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"--out: cannot create {out}: {exc.strerror}") from None
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    children = _Children()
    with LocalBroker() as broker, contextlib.ExitStack() as stack:
        stack.callback(children.stop)
        env = {**os.environ, "CMAB_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
               "CMAB_TOPIC_PREFIX": prefix}
        from streams.topics import Topics, create_topics

        topics = Topics(prefix)
        create_topics(broker.bootstrap_servers, topics, partitions)
        port = free_port()
        # Seeded decision ids (an opt-in for reproducible runs): the same sends on every run.
        children.start("decision service", ["serve", "--port", str(port)],
                       {**env, "CMAB_ID_SEED": str(seed)}, out / "service.log")
        children.start("worker", ["worker", "--bootstrap-servers", broker.bootstrap_servers,
                                  "--topic-prefix", prefix, "--group", f"{prefix}-workers"],
                       env, out / "worker.log")
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                  timeout=300))
        _wait_ready(client, children)
        from bandit.engine import Engine
        from streams.follower import StateFollower
        from streams.publish import Publisher

        publisher = stack.enter_context(Publisher(broker.bootstrap_servers, topics))
        # The demo's own view of the checkpoints, for the worker's counters (dead letters).
        follower = StateFollower(Engine(), broker.bootstrap_servers, topics).start()
        stack.callback(follower.close)
        results = _play(client, publisher, follower, children, subscribers=subscribers,
                        sends=sends, seed=seed, on_send=on_send)
        report = client.get(f"/v1/campaigns/{CAMPAIGN}/report").json()
    path = write_report(results, report, out, subscribers=subscribers, seed=seed)
    return results, path


def _wait_ready(client: httpx.Client, children: _Children) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        children.check()
        with contextlib.suppress(httpx.TransportError):
            if client.get("/readyz").status_code == 200:
                return
        if time.monotonic() > deadline:
            raise UnavailableError(f"the decision service was not ready in "
                                   f"{_START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _play(client: httpx.Client, publisher: Any, follower: Any, children: _Children, *,
          subscribers: int, sends: int, seed: int, on_send: Any) -> list[SendResult]:
    env = EmailCampaign()
    spec = env.campaign_spec(name=CAMPAIGN)
    created = client.post("/v1/campaigns", json=spec.model_dump(mode="json"))
    if created.status_code != 201:
        raise UnavailableError(f"campaign not created: {created.status_code} {created.text}")
    rng = np.random.default_rng(seed)
    population = env.subscribers(subscribers, rng)
    window = int(spec.attribution_window_ms)  # whole ms: the spec checks it is integral
    results: list[SendResult] = []
    for k in range(sends):
        started = time.monotonic()
        send_ts = T0_MS + k * WEEK_MS
        decisions = _decide(client, population)
        choices = {slot: np.array([d["slots"][i]["arm"] for d in decisions])
                   for i, slot in enumerate(SLOTS)}
        holdout = np.array([d["holdout"] for d in decisions])
        clicked = env.sample_clicks(population, choices, rng)
        p = env.click_probability(population, choices)
        _, best = env.oracle(population)
        uniform = env.uniform_value(population)
        impressions, clicks = _events(decisions, population, clicked, send_ts, window, rng)
        publisher.events(impressions, flush=False)
        publisher.events(clicks)
        publisher.watermark(send_ts + window + 1)
        learned = sum(r.decisions for r in results) + len(decisions)
        _wait_learned(client, children, follower, learned)
        dead = sum(part.counters.dead_letters for part in follower.partitions().values())
        seconds = time.monotonic() - started
        personalized = ~holdout
        result = SendResult(
            send=k + 1, decisions=len(decisions),
            model_version=int(decisions[0]["model_version"]),
            holdout=int(holdout.sum()),
            clicks_personalized=int(clicked[personalized].sum()),
            clicks_holdout=int(clicked[holdout].sum()),
            expected=float(p[personalized].mean()) if personalized.any() else math.nan,
            oracle=float(best.mean()), uniform=float(uniform.mean()),
            lift=_lift(int(clicked[personalized].sum()), int(personalized.sum()),
                       int(clicked[holdout].sum()), int(holdout.sum())),
            seconds=seconds, events_per_s=(len(impressions) + len(clicks)) / seconds,
            dead_letters=dead,
            allocation={slot: dict(zip(*np.unique(choices[slot], return_counts=True), strict=True))
                        for slot in SLOTS})
        result.allocation = {slot: {str(a): int(n) for a, n in counts.items()}
                             for slot, counts in result.allocation.items()}
        results.append(result)
        if on_send is not None:
            on_send(result)
    return results


def _decide(client: httpx.Client, population: Subscribers) -> list[dict[str, Any]]:
    body = b"\n".join(orjson.dumps(p) for p in population.payloads(CAMPAIGN))
    answer = client.post("/v1/decisions/batch", content=body,
                         headers={"content-type": "application/x-ndjson"})
    if answer.status_code != 200:
        raise UnavailableError(f"batch decision failed: {answer.status_code} "
                               f"{answer.text[:300]}")
    return [orjson.loads(line) for line in answer.content.splitlines() if line]


def _events(decisions: list[dict[str, Any]], population: Subscribers, clicked: np.ndarray,
            send_ts: int, window: int, rng: np.random.Generator
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sender's impressions and the tracker's clicks of one send, as wire dicts."""
    contexts, segments = population.contexts(), population.segments()
    impressions, clicks = [], []
    delays = rng.integers(60_000, window, size=len(decisions))
    for i, d in enumerate(decisions):
        impressions.append({
            "type": "impression", "event_id": f"imp-{d['decision_id']}",
            "decision_id": d["decision_id"], "campaign": CAMPAIGN, "user_id": d["user_id"],
            "ts": send_ts, "slots": {s["slot"]: {"arm": s["arm"], "propensity": s["propensity"]}
                                     for s in d["slots"]},
            "context": contexts[i], "segments": segments[i], "holdout": d["holdout"],
            "model_version": d["model_version"]})
        if clicked[i]:
            clicks.append({"type": "click", "event_id": f"clk-{d['decision_id']}",
                           "decision_id": d["decision_id"], "campaign": CAMPAIGN,
                           "ts": send_ts + int(delays[i])})
    clicks.sort(key=lambda c: c["ts"])
    return impressions, clicks


def _wait_learned(client: httpx.Client, children: _Children, follower: Any,
                  learned: int) -> None:
    """Wait until the service's model holds ``learned`` decisions, as long as the worker makes
    progress (records in its checkpoints, or decisions in the service's model): a large send
    on a busy machine may take long, a stalled pipeline is reported."""
    deadline, last = time.monotonic() + _STALL_TIMEOUT_S, None
    while True:
        children.check()
        report = client.get(f"/v1/campaigns/{CAMPAIGN}/report").json()
        seen = int(report["impressions"])
        if seen >= learned:
            return
        progress = (seen, sum(part.counters.records for part in follower.partitions().values()))
        if progress != last:
            deadline, last = time.monotonic() + _STALL_TIMEOUT_S, progress
        elif time.monotonic() > deadline:
            raise UnavailableError(f"the model did not reach the service: no progress for "
                                   f"{_STALL_TIMEOUT_S:.0f} s ({seen} of {learned} decisions "
                                   f"learned, {progress[1]:,} records read by the worker)")
        time.sleep(0.2)
