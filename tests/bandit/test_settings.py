"""One config file (bandit.settings): file, then environment, then options; unknown keys and
wrong types refused by name; the README's production topology is a valid file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bandit.cli import main
from bandit.errors import InvalidInputError
from bandit.settings import (
    COMMANDS,
    BrokerSettings,
    Settings,
    VWLearnerSettings,
    WorkerSettings,
)

TOPOLOGY = """
bootstrap_servers = "kafka:9092"
partitions = 8
max_pending = 500

[service]
port = 9001

[worker]
group = "from-file"
max_poll_records = 123

[vw_learner]
max_poll_records = 7

[broker]
port = 19092
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cmab.toml"
    path.write_text(TOPOLOGY)
    return path


def test_each_command_reads_its_section_and_the_shared_keys(config):
    service = Settings(config=config)
    assert (service.port, service.bootstrap_servers, service.max_pending) == (9001, "kafka:9092",
                                                                                500)
    worker = WorkerSettings(config=config)
    assert (worker.group, worker.max_poll_records, worker.partitions, worker.max_pending) == (
        "from-file", 123, 8, 500)
    learner = VWLearnerSettings(config=config)
    assert (learner.max_poll_records, learner.partitions, learner.group) == (
        7, 8, "cmab-vw-learner")
    assert BrokerSettings(config=config).port == 19092


def test_the_environment_overrides_the_file_and_options_override_both(config, monkeypatch):
    monkeypatch.setenv("CMAB_WORKER_GROUP", "from-env")
    monkeypatch.setenv("CMAB_PARTITIONS", "3")
    monkeypatch.setenv("CMAB_PORT", "9002")
    assert WorkerSettings(config=config).group == "from-env"
    assert WorkerSettings(config=config).partitions == 3
    assert Settings(config=config).port == 9002
    assert WorkerSettings(config=config, group="from-option").group == "from-option"
    assert Settings(config=config, port=9003).port == 9003
    monkeypatch.setenv("CMAB_CONFIG", str(config))  # the file named by the environment
    assert WorkerSettings().max_poll_records == 123


ALL = ("serve", "worker", "vw-learner", "broker")


# Every command checks the names of the whole file, and the values of its own keys.
@pytest.mark.parametrize("text, needle, commands", [
    ('bootstrap_server = "k:9092"\n', "unknown key bootstrap_server (expected a section", ALL),
    ('[worker]\ngorup = "g"\n', "unknown key worker.gorup (expected one of", ALL),
    ('[service]\ntopic_prefix = "p"\n', "unknown key service.topic_prefix", ALL),
    ('[workers]\ngroup = "g"\n', "unknown key workers ", ALL),
    ('[service\n', "Expected ']'", ALL),
    ('[worker]\nmax_poll_records = "many"\n',
     "worker.max_poll_records: Input should be a valid integer", ("worker",)),
    ('[service]\nport = 70000\n', "service.port: Input should be less than or equal to 65535",
     ("serve",)),
    ('[broker]\ndurable = 1\n', "broker.durable: Input is not a valid path", ("broker",)),
    ('partitions = [1]\n', "partitions: Input should be a valid integer",
     ("worker", "vw-learner")),
])
def test_a_bad_file_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, needle,
                                                        commands):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for command in commands:
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"cmab: error: config {path}: ") and needle in err, err


def test_a_missing_file_named_by_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CMAB_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(InvalidInputError, match="nope.toml: no such file"):
        Settings()


def test_variables_of_other_commands_are_known_and_typos_are_not(monkeypatch):
    monkeypatch.setenv("CMAB_WORKER_GROUP", "g")  # one environment for a whole topology
    monkeypatch.setenv("CMAB_BROKER_PORT", "9092")
    assert Settings().port == 8000
    monkeypatch.setenv("CMAB_WORKER_GORUP", "g")
    with pytest.raises(ValueError, match="CMAB_WORKER_GORUP"):
        WorkerSettings()


def test_the_readme_topology_is_a_valid_file_for_every_command(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [block] = re.findall(r"```toml\n(.*?)```", readme, re.S)
    path = tmp_path / "cmab.toml"
    path.write_text(block)
    data = tomllib.loads(block)
    assert {"service", "worker", "vw_learner"} <= set(data)
    for command in COMMANDS:
        command(config=path)
    assert WorkerSettings(config=path).bootstrap_servers.count(",") >= 1  # a real Kafka
