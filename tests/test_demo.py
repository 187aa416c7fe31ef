"""`cmab demo`, reduced: broker, service and worker as child processes, two weekly sends
through HTTP and Kafka, a report that lists every slot, and nothing left running."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from simulators.email_campaign import SLOTS


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


def test_a_reduced_demo_runs_end_to_end_and_cleans_up(tmp_path: Path):
    marker = f"DEMO_TEST_MARK={uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-m", "bandit.cli", "demo", "--subscribers", "2000", "--sends", "2",
         "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "120", marker.split("=")[0]: marker.split("=")[1]})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"report: {tmp_path / 'demo' / 'report.html'}"
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


def test_a_bad_argument_is_one_line_and_exit_code_2(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "bandit.cli", "demo", "--sends", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--sends" in done.stderr
