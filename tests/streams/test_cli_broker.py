"""`cmab broker`: prints its address, serves Kafka clients, stops cleanly on SIGTERM; with
--durable DIR a restart finds its topics again."""

import signal
import socket
import subprocess
import sys

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

pytestmark = pytest.mark.broker  # every test here starts `cmab broker`


def _cmab(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bandit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_broker_command_serves_and_stops_on_sigterm():
    proc = _cmab("broker")
    try:
        address = proc.stdout.readline().strip()
        host, port = address.split(":")
        assert host == "127.0.0.1"
        admin = KafkaAdminClient(bootstrap_servers=address)
        assert admin.list_topics() == []
        admin.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    with socket.socket() as s:  # the broker is gone with it
        s.bind(("127.0.0.1", int(port)))


def test_broker_command_on_a_taken_port_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _cmab("broker", "--port", str(taken.getsockname()[1]))
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("cmab: error:") and "Traceback" not in err


def test_durable_broker_command_keeps_topics_across_a_restart(tmp_path):
    for round_ in range(2):
        proc = _cmab("broker", "--durable", str(tmp_path / "data"))
        try:
            address = proc.stdout.readline().strip()
            admin = KafkaAdminClient(bootstrap_servers=address)
            if round_ == 0:
                assert admin.list_topics() == []
                admin.create_topics([NewTopic("kept", 1, 1)])
            else:
                assert admin.list_topics() == ["kept"]
            admin.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


def test_durable_broker_command_on_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("")
    proc = _cmab("broker", "--durable", str(tmp_path / "file"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "durable directory" in err and "Traceback" not in err
