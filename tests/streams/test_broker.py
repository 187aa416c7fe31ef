"""The local broker: starts on a free loopback port, carries records, stops by its PID; durable,
it keeps topics, records and offsets in a directory across restarts."""

import os
import socket
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from bandit.errors import InvalidInputError, UnavailableError
from streams.broker import LocalBroker, ObjectStore, free_port


@pytest.mark.broker
def test_broker_round_trip_and_clean_stop():
    with LocalBroker() as broker:
        pid = broker.pid
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic("roundtrip", 2, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers,
                                 allow_auto_create_topics=False)
        for i in range(10):
            producer.send("roundtrip", f"v{i}".encode(), key=f"k{i}".encode())
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers,
                                 auto_offset_reset="earliest", allow_auto_create_topics=False)
        consumer.assign([TopicPartition("roundtrip", 0), TopicPartition("roundtrip", 1)])
        values, deadline = [], time.monotonic() + 10
        while len(values) < 10 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
        assert sorted(values) == sorted(f"v{i}".encode() for i in range(10))
        consumer.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", int(port)))


@pytest.mark.broker
def test_a_taken_port_gets_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalBroker(port=port)
        with pytest.raises(UnavailableError, match="broker"):
            broker.start()


def test_free_port_is_bindable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def _serving(directory) -> list[int]:
    """PIDs of processes whose command line names ``directory`` (a store left behind)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if str(directory).encode() in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@pytest.mark.broker
def test_a_durable_broker_keeps_topics_records_and_offsets_across_a_restart(tmp_path):
    data = tmp_path / "kafka"
    with LocalBroker(durable=data) as broker:
        first = broker.bootstrap_servers, broker.store.endpoint
        pids = broker.pid, broker.store.pid
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic("kept", 2, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers,
                                 allow_auto_create_topics=False)
        for i in range(10):
            producer.send("kept", f"v{i}".encode(), partition=i % 2)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id="g",
                                 enable_auto_commit=False, allow_auto_create_topics=False)
        consumer.commit({TopicPartition("kept", 0): OffsetAndMetadata(3, "", -1)})
        consumer.close()
    for pid in pids:  # both stopped by their PIDs
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert _serving(data) == []
    with LocalBroker(durable=data) as broker:
        assert (broker.bootstrap_servers, broker.store.endpoint) != first  # new ports
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        assert admin.list_topics() == ["kept"]
        admin.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id="g",
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 allow_auto_create_topics=False)
        assert consumer.committed(TopicPartition("kept", 0)) == 3
        consumer.assign([TopicPartition("kept", 0), TopicPartition("kept", 1)])
        consumer.seek(TopicPartition("kept", 0), 0)
        values, deadline = [], time.monotonic() + 10
        while len(values) < 10 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
        consumer.close()
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(10))


@pytest.mark.broker
def test_one_durable_directory_serves_one_broker_at_a_time(tmp_path):
    with LocalBroker(durable=tmp_path) as broker:
        with pytest.raises(InvalidInputError, match=f"{tmp_path}.*another broker"):
            LocalBroker(durable=tmp_path).start()
        assert broker.store.pid in _serving(tmp_path)  # the refused one stopped nothing
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        assert admin.list_topics() == []
        admin.close()


@pytest.mark.broker
def test_a_durable_directory_that_is_a_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(InvalidInputError, match=f"durable directory {path}: cannot use it"):
        LocalBroker(durable=path).start()


@pytest.mark.broker
def test_a_broker_that_fails_to_start_leaves_no_store_behind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UnavailableError, match="broker"):
            LocalBroker(port=taken.getsockname()[1], durable=tmp_path).start()
    assert _serving(tmp_path) == []
    with ObjectStore(tmp_path):  # and the directory is free again
        pass


def test_a_store_on_a_taken_port_gets_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UnavailableError, match="object store"):
            ObjectStore(tmp_path, port=taken.getsockname()[1]).start()
    assert _serving(tmp_path) == []
