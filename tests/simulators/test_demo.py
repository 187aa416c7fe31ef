"""`cmab demo`, reduced: broker, service and worker as child processes, two weekly sends
through HTTP and Kafka, a report that lists every slot and every outcome type, nothing left
running; the topics read back hold the service's decisions and the sender's sends and the
tracker's outcomes, never an impression."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from bandit.models import OUTCOME_TYPES
from simulators.demo import run_demo
from simulators.email_campaign import SLOTS
from streams.blocks import decision_lines
from streams.topics import Topics

pytestmark = pytest.mark.broker  # every test here starts `cmab demo`


def _processes_with(marker: bytes) -> list[str]:
    """Processes whose environment holds ``marker`` (children inherit it, whoever reaps them)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return found


def _demo(args: list[str], marker: str, **popen) -> subprocess.Popen[str]:
    name, value = marker.split("=")
    return subprocess.Popen([sys.executable, "-m", "bandit.cli", "demo", *args], text=True,
                            env={**os.environ, "COLUMNS": "120", name: value}, **popen)


def _read_topic(bootstrap_servers: str, topic: str) -> list[bytes]:
    """Every record of ``topic``, from its start to its end now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end, values = consumer.end_offsets(parts), []
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def test_a_reduced_demo_runs_beside_another_and_ctrl_c_stops_everything(
        tmp_path: Path, kafka, monkeypatch):
    # A long demo runs in the background: the reduced one must work beside it (free ports,
    # its own topics), and Ctrl-C must then stop everything the long one started.
    other_marker = f"DEMO_TEST_MARK={uuid.uuid4().hex}"
    other = _demo(["--subscribers", "20000", "--sends", "50", "--out", str(tmp_path / "other")],
                  other_marker, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # the demo itself, the broker, service and worker
        while len(_processes_with(other_marker.encode())) < 4 and time.monotonic() < deadline:
            assert other.poll() is None, other.stderr.read()
            time.sleep(0.2)

        # The reduced one in this process, on the test's broker, so its topics can be read
        # back; its service and worker inherit the marker.
        name, value = f"DEMO_TEST_MARK={uuid.uuid4().hex}".split("=")
        monkeypatch.setenv(name, value)
        prefix = f"demo-test-{uuid.uuid4().hex[:8]}"
        results, path = run_demo(subscribers=1000, sends=2, seed=0, out=tmp_path / "demo",
                                 bootstrap_servers=kafka.bootstrap_servers, prefix=prefix)
        assert path == tmp_path / "demo" / "report.html"
        assert _processes_with(f"{name}={value}".encode()) == []  # service, worker stopped
        page = path.read_text()
        markdown = (tmp_path / "demo" / "report.md").read_text()
        for slot in SLOTS:
            assert slot in page
        for kind in OUTCOME_TYPES:  # per send and in the service's outcome table
            assert f"| 1 | {kind} |" in markdown and f"| 2 | {kind} |" in markdown
            assert markdown.count(f"| {kind} |") >= 3 and f"<td>{kind}</td>" in page
        results_json = orjson.loads((tmp_path / "demo" / "results.json").read_bytes())
        assert [s["send"] for s in results_json["sends"]] == [1, 2]
        report = results_json["service_report"]
        assert report["impressions"] == 2000  # both sends learned
        assert {s["slot"] for s in report["slots"]} == set(SLOTS)
        assert {"unsubscribe", "complaint"} <= set(report["outcome_lift"])
        for png in ("cumulative_reward.png", "allocation.png", "lift.png"):
            assert (tmp_path / "demo" / png).stat().st_size > 1000

        # The topics: the service logged every decision; the demo wrote sends, outcomes and
        # watermarks only, a send per decision, no impression (no context, no arms).
        topics = Topics(prefix)
        logged = [line for block in _read_topic(kafka.bootstrap_servers, topics.decisions)
                  for line in decision_lines(block)]
        assert len(logged) == 2000
        events = [orjson.loads(v) for v in _read_topic(kafka.bootstrap_servers, topics.events)]
        kinds = {e["type"] for e in events}
        assert kinds <= {"send", *OUTCOME_TYPES, "watermark"} and "impression" not in kinds
        assert {"send", "open", "click"} <= kinds
        sends = [e for e in events if e["type"] == "send"]
        assert len(sends) == 2000 and all(set(e) == {"type", "event_id", "decision_id", "ts",
                                                     "campaign"} for e in sends)
        assert {e["decision_id"] for e in sends} == {
            orjson.loads(line)["decision_id"] for line in logged}
        assert any(e.get("machine") for e in events if e["type"] == "open")
        assert all(e["value"] > 0 for e in events if e["type"] == "conversion")

        assert other.poll() is None, "the long demo ended early: " + other.stderr.read()
        other.send_signal(signal.SIGINT)
        _, stderr = other.communicate(timeout=120)
        assert other.returncode == 130, stderr  # 128 + SIGINT, as shells report Ctrl-C
        assert _processes_with(other_marker.encode()) == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_a_bad_argument_is_one_line_and_exit_code_2(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "bandit.cli", "demo", "--sends", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--sends" in done.stderr


def test_the_demo_leaves_its_joined_log_and_spec_and_replay_runs_on_them(tmp_path: Path) -> None:
    # The researcher's path from the main job: cmab demo --out DIR, then cmab replay on DIR's
    # joined log and spec, with a policy's settings on the command line.
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "bandit.cli", "demo", "--subscribers", "300",
                           "--sends", "2", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "160"})
    assert done.returncode == 0, done.stderr
    lines = (out / "joined.jsonl").read_bytes().splitlines()
    decisions = [orjson.loads(line)["decision_id"] for line in lines]
    assert len(decisions) == len(set(decisions)) == 600  # every decision of both sends, once
    spec = orjson.loads((out / "spec.json").read_bytes())
    assert spec["name"] == "weekly-newsletter" and [s["name"] for s in spec["slots"]] == list(SLOTS)

    replayed = subprocess.run(
        [sys.executable, "-m", "bandit.cli", "replay", "--dataset", "joined",
         "--log", str(out / "joined.jsonl"), "--spec", str(out / "spec.json"),
         "--slot", SLOTS[0], "--policy", "lin_ucb:alpha=0.3,uniform",
         "--estimators", "ips,snips,dm,dr", "--n-boot", "50", "--no-progress",
         "--out", str(tmp_path / "replay")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"})
    assert replayed.returncode == 0, replayed.stderr
    result = orjson.loads((tmp_path / "replay" / "results.json").read_bytes())
    assert set(result["estimates"]) == {"lin_ucb:alpha=0.3", "uniform"}
    # Holdout subscribers are left out of the slot's log; everyone else was sent both weeks.
    assert 0 < result["events"] <= 600
