"""The ``broker`` marker is where it should be: on every test using the ``kafka`` fixture, and a
test without it cannot start a broker (tests/conftest.py)."""

import subprocess
import sys

import pytest

from tests.conftest import starts_broker


def test_every_test_using_the_kafka_fixture_is_marked_broker(request):
    items = request.session.items
    assert request.node in items
    unmarked = [item.nodeid for item in items if "kafka" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("broker") is None]
    assert unmarked == []


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "bandit.cli", "broker", "--port", "1"],
    [sys.executable, "-m", "bandit.cli", "demo", "--sends", "0"],
    ["/nowhere/tansu", "broker", "--listener-url", "tcp://127.0.0.1:1"],
])
def test_an_unmarked_test_cannot_start_a_broker(argv):
    with pytest.raises(AssertionError, match="mark it @pytest.mark.broker"):
        subprocess.Popen(argv)


def test_other_child_processes_are_not_brokers():
    assert not starts_broker([sys.executable, "-m", "bandit.cli", "serve", "--port", "1"])
    assert not starts_broker([sys.executable, "-c", "print('broker')"])
    assert not starts_broker("cmab broker")  # a shell string: never how the tests start one
