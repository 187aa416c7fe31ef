"""Each long-running command takes its settings from `--config`: the service listens on the
file's port, the broker too, the worker and the VW learner use its topics and group (on the
real local broker), and a flag still wins over the file."""

import signal
import socket
import subprocess
import sys
import uuid

import httpx
import pytest

pytestmark = pytest.mark.broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmab(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bandit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def test_serve_and_broker_listen_where_the_file_says(tmp_path):
    serve_port, broker_port = _free_port(), _free_port()
    config = tmp_path / "cmab.toml"
    config.write_text(f'[service]\nport = {serve_port}\n[broker]\nport = {broker_port}\n')
    broker = _cmab("broker", "--config", str(config))
    try:
        assert broker.stdout.readline().strip() == f"127.0.0.1:{broker_port}"
    finally:
        assert _stop(broker) is not None and broker.returncode == 0
    serve = _cmab("serve", "--config", str(config))
    try:
        listening = ""
        for line in serve.stderr:  # uvicorn's log: the port it listens on, then ready
            if "cmab serve: listening on" in line:
                listening = line
            if "Application startup complete" in line:
                break
        assert f"http://127.0.0.1:{serve_port}" in listening
        assert httpx.get(f"http://127.0.0.1:{serve_port}/healthz").json() == {"status": "ok"}
    finally:
        _stop(serve)


def test_worker_and_vw_learner_take_topics_and_group_from_the_file(kafka, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:8]}"
    config = tmp_path / "cmab.toml"
    config.write_text(f'bootstrap_servers = "{kafka.bootstrap_servers}"\n'
                      f'topic_prefix = "{prefix}"\npartitions = 2\n'
                      '[worker]\ngroup = "group-from-file"\n'
                      '[vw_learner]\ngroup = "learner-from-file"\n')
    worker = _cmab("worker", "--config", str(config))
    try:
        line = worker.stderr.readline()
        assert line.startswith(f"cmab worker: group group-from-file on {prefix}.decisions "
                               f"and {prefix}.events at {kafka.bootstrap_servers}"), line
    finally:
        _stop(worker)
    learner = _cmab("vw-learner", "--config", str(config), "--topic-prefix", f"{prefix}x")
    try:
        line = learner.stderr.readline()  # the flag wins over the file
        assert line.startswith(f"cmab vw-learner: {prefix}x.joined to {prefix}x.vwstate at "
                               f"{kafka.bootstrap_servers}"), line
    finally:
        _stop(learner)
