"""``cmab demo``: the whole loop on one machine, through the real parts.

It starts the local broker, the decision service (``cmab serve`` in stream mode) and one
worker (``cmab worker``) as child processes on 127.0.0.1, creates the four-slot newsletter
campaign of ``simulators.email_campaign`` over HTTP, with the email reward
(``EmailCampaign.email_reward``: a click 1, a conversion 0.01 per unit of value, an
unsubscribe -5) and ``activation: "send"``, then plays weekly sends:

1. decide: the whole list streamed to ``POST /v1/decisions/batch`` as JSON lines by
   ``bandit.client`` (as every call to the service here); the service logs every decision
   itself to ``<prefix>.decisions``;
2. send: the sender posts one ``send`` per email to ``<prefix>.events`` (no context, no arms),
   at the send hour the service chose;
3. respond: the tracker posts what the simulated subscribers did (``simulators.outcomes``:
   opens, some of them a privacy proxy's machine opens, clicks, a link scanner's among them,
   conversions with a value, unsubscribes, complaints, bounces) to ``<prefix>.events``;
4. close: a watermark past the attribution window; the worker joins the decisions, sends and
   outcomes, learns the reward and checkpoints; the service follows the state topic and swaps
   the new model in before the next send.

Event time: the service logs its decisions at its own clock's time, and the demo plays a week
in seconds, so its sends are dated from the next midnight (UTC) after the start, a week apart,
and the campaign accepts a send up to the whole run after its decision
(``activation_window_ms``).

Every send prints a row: the learned click rate (CTR) of personalized and holdout subscribers
and its lift with a 95% interval, the rate and lift of every other outcome type, the model
version the send was decided with, events/s and dead letters. At the end a report folder
(HTML, Markdown, JSON, PNGs) compares the sends with the simulator's oracle and uniform random
(expected reward) and includes the service's report (outcome rates and lift per type, bias
audit). Beside it, copied before the broker stops: ``joined.jsonl``, the joined log (every
decision once, as ``cmab export-joined`` writes it), and ``spec.json``, the campaign's spec, the
inputs of ``cmab replay --dataset joined``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bandit.client import Client, Retry
from bandit.errors import InvalidInputError, UnavailableError
from bandit.models import OUTCOME_TYPES, CampaignSpec
from simulators.email_campaign import SLOTS, EmailCampaign, Subscribers
from simulators.outcomes import EmailOutcomes
from simulators.reports.demo import SendResult, write_report
from streams.broker import LocalBroker, free_port
from streams.joinedfile import write_joined_file

DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS
CAMPAIGN = "weekly-newsletter"
# Beside the report: the joined log (one JSON line per decision) and the campaign's spec, for
# ``cmab replay --dataset joined --log DIR/joined.jsonl --spec DIR/spec.json --slot SLOT``.
JOINED_FILE, SPEC_FILE = "joined.jsonl", "spec.json"
_START_TIMEOUT_S = 120.0
# The wait for the model gives up only when the worker has stopped making progress this long.
_STALL_TIMEOUT_S = 120.0


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
             on_send: Any = None, bootstrap_servers: str | None = None,
             prefix: str | None = None) -> tuple[list[SendResult], Path]:
    """Play the demo; returns the sends and the report's path. ``on_send(result)`` is called
    after each send (the CLI draws its live table with it). ``bootstrap_servers``: a running
    broker to use instead of starting one; ``prefix``: the topics' prefix (default: a new
    random one)."""
    if subscribers < 10:
        raise InvalidInputError(f"--subscribers: at least 10, got {subscribers}")
    if sends < 1:
        raise InvalidInputError(f"--sends: at least 1, got {sends}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"--out: cannot create {out}: {exc.strerror}") from None
    prefix = prefix or f"demo-{uuid.uuid4().hex[:8]}"
    children = _Children()
    with contextlib.ExitStack() as stack:
        servers = bootstrap_servers or stack.enter_context(LocalBroker()).bootstrap_servers
        stack.callback(children.stop)
        env = {**os.environ, "CMAB_BOOTSTRAP_SERVERS": servers, "CMAB_TOPIC_PREFIX": prefix}
        from streams.topics import Topics, create_topics

        topics = Topics(prefix)
        create_topics(servers, topics, partitions)
        port = free_port()
        # Seeded decision ids (an opt-in for reproducible runs): the same sends on every run.
        children.start("decision service", ["serve", "--port", str(port)],
                       {**env, "CMAB_ID_SEED": str(seed)}, out / "service.log")
        children.start("worker", ["worker", "--bootstrap-servers", servers,
                                  "--topic-prefix", prefix, "--group", f"{prefix}-workers"],
                       env, out / "worker.log")
        # Every retry first checks that the children still run.
        client = stack.enter_context(Client(f"http://127.0.0.1:{port}", timeout_s=300,
                                            retry=Retry(on_retry=lambda _: children.check())))
        _wait_ready(client, children)
        from bandit.engine import Engine
        from streams.follower import StateFollower
        from streams.publish import Publisher

        publisher = stack.enter_context(Publisher(servers, topics))
        # The demo's own view of the checkpoints, for the worker's counters (dead letters).
        follower = StateFollower(Engine(), servers, topics).start()
        stack.callback(follower.close)
        spec = _spec(sends)
        results = _play(client, publisher, follower, children, spec, subscribers=subscribers,
                        sends=sends, seed=seed, on_send=on_send)
        report = orjson.loads(client.report(CAMPAIGN).model_dump_json())
        # The researcher's inputs, while the broker still runs: every send's decisions closed
        # (_play waited until the model learned them, and the worker writes .joined first).
        (out / SPEC_FILE).write_bytes(spec.model_dump_json(indent=2).encode() + b"\n")
        try:
            write_joined_file(servers, topics.joined, out / JOINED_FILE)
        except OSError as exc:
            raise InvalidInputError(f"--out: cannot write {out / JOINED_FILE}: "
                                    f"{exc.strerror}") from None
    path = write_report(results, report, out, subscribers=subscribers, seed=seed)
    return results, path


def _wait_ready(client: Client, children: _Children) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        children.check()
        with contextlib.suppress(UnavailableError):  # not listening yet, or warming up
            client.readiness()
            return
        if time.monotonic() > deadline:
            raise UnavailableError(f"the decision service was not ready in "
                                   f"{_START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _spec(sends: int) -> CampaignSpec:
    """The demo's campaign: the newsletter with the email reward, learned once sent."""
    return EmailCampaign().campaign_spec(name=CAMPAIGN, reward=EmailCampaign.email_reward(),
                                         activation="send",
                                         activation_window_ms=(sends + 1) * WEEK_MS)


def _play(client: Client, publisher: Any, follower: Any, children: _Children,
          spec: CampaignSpec, *, subscribers: int, sends: int, seed: int,
          on_send: Any) -> list[SendResult]:
    env = EmailCampaign()
    model = EmailOutcomes(env)
    reward = EmailCampaign.email_reward()
    # The first send day: the next midnight (UTC) after now, so every send comes after the
    # decisions the service logs at its clock's time (see the module docstring).
    first_day = (time.time_ns() // 10**6 // DAY_MS + 1) * DAY_MS
    client.create_campaign(spec)
    rng = np.random.default_rng(seed)
    population = env.subscribers(subscribers, rng)
    inboxes = model.inboxes(subscribers, rng)
    window = int(spec.attribution_window_ms)  # whole ms: the spec checks it is integral
    # The yardsticks, once per population: the best combination's and uniform random's
    # expected reward per subscriber.
    oracle = float(model.oracle(population, reward, window, inboxes)[1].mean())
    uniform = float(model.uniform_value(population, reward, window, inboxes).mean())
    results: list[SendResult] = []
    for k in range(sends):
        started = time.monotonic()
        day = first_day + k * WEEK_MS
        decisions = _decide(client, population)
        choices = {slot: np.array([d["slots"][i]["arm"] for d in decisions])
                   for i, slot in enumerate(SLOTS)}
        holdout = np.array([d["holdout"] for d in decisions])
        sent = EmailOutcomes.send_times(day, choices, env)
        columns = model.sample([d["decision_id"] for d in decisions], choices, sent,
                               population, inboxes, rng, campaign=CAMPAIGN)
        events = columns.payloads()  # the sender's sends and the tracker's outcomes
        publisher.events(events)
        publisher.watermark(int(sent.max()) + window + 1)
        learned = sum(r.decisions for r in results) + len(decisions)
        _wait_learned(client, children, follower, learned)
        dead = sum(part.counters.dead_letters for part in follower.partitions().values())
        seconds = time.monotonic() - started
        counts, rewards = columns.realized(reward, window)
        expected = model.expected_reward(population, choices, reward, window, inboxes)
        personalized = ~holdout
        reached = counts > 0
        result = SendResult(
            send=k + 1, decisions=len(decisions),
            model_version=int(decisions[0]["model_version"]),
            holdout=int(holdout.sum()),
            reached={kind: [int(reached[personalized, j].sum()), int(reached[holdout, j].sum())]
                     for j, kind in enumerate(OUTCOME_TYPES)},
            reward=[float(rewards[personalized].sum()), float(rewards[holdout].sum())],
            expected=float(expected[personalized].mean()) if personalized.any() else float("nan"),
            oracle=oracle, uniform=uniform,
            seconds=seconds, events_per_s=len(events) / seconds, dead_letters=dead,
            allocation={slot: {str(a): int(n) for a, n in zip(
                *np.unique(choices[slot], return_counts=True), strict=True)} for slot in SLOTS})
        results.append(result)
        if on_send is not None:
            on_send(result)
    return results


def _decide(client: Client, population: Subscribers) -> list[dict[str, Any]]:
    # The service's JSON lines, read as dicts: a model per decision would cost more than the
    # demo reads of it.
    return [orjson.loads(line) for line in client.decide_lines(
        CAMPAIGN, population.payloads(CAMPAIGN))]


def _wait_learned(client: Client, children: _Children, follower: Any,
                  learned: int) -> None:
    """Wait until the service's model holds ``learned`` decisions, as long as the worker makes
    progress (records in its checkpoints, or decisions in the service's model): a large send
    on a busy machine may take long, a stalled pipeline is reported."""
    deadline, last = time.monotonic() + _STALL_TIMEOUT_S, None
    while True:
        children.check()
        seen = client.report(CAMPAIGN).impressions
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
