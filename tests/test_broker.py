"""The local broker: starts on a free loopback port, carries records, stops by its PID."""

import os
import socket
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from bandit.errors import UnavailableError
from streams.broker import LocalBroker, free_port


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
