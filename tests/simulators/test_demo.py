"""`cmab demo`, reduced: broker, service and worker as child processes, two weekly sends
through HTTP and Kafka, a report that lists every slot, and nothing left running."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from simulators.email_campaign import SLOTS

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


def test_a_reduced_demo_runs_beside_another_and_ctrl_c_stops_everything(tmp_path: Path):
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

        marker = f"DEMO_TEST_MARK={uuid.uuid4().hex}"
        reduced = _demo(["--subscribers", "2000", "--sends", "2", "--out", str(tmp_path / "demo")],
                        marker, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = reduced.communicate(timeout=600)
        assert reduced.returncode == 0, stderr[-3000:]
        assert stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'demo' / 'report.html'}"
        page = (tmp_path / "demo" / "report.html").read_text()
        for slot in SLOTS:
            assert slot in page
        results = orjson.loads((tmp_path / "demo" / "results.json").read_bytes())
        assert [s["send"] for s in results["sends"]] == [1, 2]
        assert results["service_report"]["impressions"] == 4000  # both sends learned
        assert {s["slot"] for s in results["service_report"]["slots"]} == set(SLOTS)
        for png in ("cumulative_reward.png", "allocation.png", "lift.png"):
            assert (tmp_path / "demo" / png).stat().st_size > 1000
        assert _processes_with(marker.encode()) == []  # broker, service, worker all stopped

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
