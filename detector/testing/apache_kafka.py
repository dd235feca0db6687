"""Apache Kafka 4.x in KRaft mode, as plain JVM processes: the reference broker of the tests and
benchmarks, and ``python -m detector broker --engine kafka``.

The jars come from Maven Central (``kafka_jars``). Each node is a combined broker and controller, as
Kafka's ``server.properties`` has it; a cluster of three has a quorum of three controllers,
replication factor 3 and ``min.insync.replicas`` 2 by default.

No JVM outlives its owner: each gets SIGKILL when the process that started it dies
(``PR_SET_PDEATHSIG``: a test worker killed by a timeout), and each start first sweeps the
nodes of owners that are gone (their directories under ``<tmp>/detector-kafka``).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from detector.testing.kafka_jars import java, kafka_version, libs
from detector.testing.local_broker import BrokerError, free_port

__all__ = ["KafkaCluster", "kafka_version", "sweep"]

#: Where every node lives while it runs: one directory per cluster, named by its owner's pid.
RUNS = Path(tempfile.gettempdir()) / "detector-kafka"
#: A small heap and the serial collector: the suite runs nodes beside detectors on 2 cores.
JVM_OPTIONS = ("-Xms64m", "-Xmx320m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
               "-Djava.awt.headless=true")
READY_LINE = "Kafka Server started"

LOG4J2 = """Configuration:
  Appenders:
    File:
      name: file
      fileName: "{path}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: state.change.logger
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: file
"""


def _cluster_id() -> str:
    """16 random bytes in URL-safe base64, as ``random-uuid`` makes one, never starting with a
    dash (the storage tool would read it as an option, as Kafka's own Uuid avoids)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()  # a Ctrl-C at the terminal reaches the owner, which stops the nodes in order


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> int:
    """Kill the nodes of owners that are gone and remove their directories; how many."""
    swept = 0
    for run in RUNS.glob("*"):
        try:
            owner = json.loads((run / "owner.json").read_text())
        except (OSError, ValueError):
            if time.time() - run.stat().st_mtime > 60:  # half-made and abandoned
                shutil.rmtree(run, ignore_errors=True)
            continue
        if _alive(owner["pid"]):
            continue
        for pidfile in run.glob("node-*/pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if str(run).encode() in cmdline:  # that pid is still one of our JVMs
                    os.kill(pid, signal.SIGKILL)
                    swept += 1
        shutil.rmtree(run, ignore_errors=True)
    return swept


@dataclass
class Node:
    """One combined broker and controller."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        out = (self.directory / "stdout.log")
        text += out.read_text(errors="replace") if out.exists() else ""
        errors = [line for line in text.splitlines() if " ERROR " in line or "Exception" in line]
        return " | ".join((errors or text.splitlines())[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class KafkaCluster:
    """``nodes`` combined nodes on 127.0.0.1, each in its own directory; a context manager.

    ``config``: broker settings added to (or replacing) the defaults below, for every node.
    ``listeners``: extra listeners beside PLAINTEXT (``{"SASL_PLAINTEXT": port}``), with
    ``scram_users`` ({name: password}) made at format time (SCRAM-SHA-256 and -512).
    """

    nodes: int = 1
    port: int | None = None
    config: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, int] = field(default_factory=dict)
    scram_users: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None  # kept across runs when given; else a fresh temporary one
    jvm_options: tuple[str, ...] = JVM_OPTIONS
    members: list[Node] = field(default_factory=list)
    _run: Path | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.members)

    @property
    def running(self) -> bool:
        """Every node's process runs."""
        return bool(self.members) and all(n.running for n in self.members)

    def log_tail(self) -> str:
        """The last lines of the first node that is not running (else of node 1)."""
        down = [n for n in self.members if not n.running] or self.members
        return f"node {down[0].node_id}: {down[0].log_tail()}" if down else ""

    def listener_bootstrap(self, name: str) -> str:
        """The bootstrap list of an extra listener (``SASL_PLAINTEXT``, ``SSL``, ...)."""
        return ",".join(f"127.0.0.1:{self._extra_port(name, n)}" for n in self.members)

    def _extra_port(self, name: str, node: Node) -> int:
        return self.listeners[name] + node.node_id - 1

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        exe, lib = java(), libs()
        sweep()
        RUNS.mkdir(parents=True, exist_ok=True)
        self._run = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=RUNS))
        (self._run / "owner.json").write_text(json.dumps({"pid": os.getpid()}))
        base = Path(self.data_dir) if self.data_dir else self._run
        first = self.port or free_port()
        self.members = [Node(i + 1, first if i == 0 else free_port(), free_port(),
                             base / f"node-{i + 1}") for i in range(self.nodes)]
        cluster_id = self._cluster_id(base)
        for node in self.members:
            self._configure(node)
            if not (node.directory / "data" / "meta.properties").exists():
                self._format(exe, lib, node, cluster_id)
        try:
            for node in self.members:
                self._launch(exe, lib, node)
            self.wait_ready(self.members, timeout, [0] * len(self.members))
        except BaseException:
            self.stop()
            raise
        return self

    def _cluster_id(self, base: Path) -> str:
        path = base / "cluster.id"
        if not path.exists():
            base.mkdir(parents=True, exist_ok=True)
            path.write_text(_cluster_id())
        return path.read_text().strip()

    def _configure(self, node: Node) -> None:
        n = self.nodes
        voters = ",".join(f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in self.members)
        listeners = {"PLAINTEXT": node.port, "CONTROLLER": node.controller_port}
        listeners |= {name: self._extra_port(name, node) for name in self.listeners}
        protocols = {name: name for name in listeners} | {"CONTROLLER": "PLAINTEXT"}
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join(f"{k}://127.0.0.1:{p}" for k, p in listeners.items()),
            "advertised.listeners": ",".join(f"{k}://127.0.0.1:{p}" for k, p in listeners.items()
                                             if k != "CONTROLLER"),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(node.directory / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(n),
            "min.insync.replicas": str(min(2, n)),
            "offsets.topic.replication.factor": str(n),
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": str(n),
            "transaction.state.log.min.isr": str(min(2, n)),
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.index.size.max.bytes": str(1 << 20),  # many small test topics: small indexes
            **self.config,
        }
        if self.scram_users:
            mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512"
            settings.setdefault("sasl.enabled.mechanisms", mechanisms)
            for name in self.listeners:
                if name.startswith("SASL"):
                    for mech in ("scram-sha-256", "scram-sha-512"):
                        settings.setdefault(
                            f"listener.name.{name.lower()}.{mech}.sasl.jaas.config",
                            "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in settings.items()))
        (node.directory / "log4j2.yaml").write_text(LOG4J2.format(path=node.log_path))

    def _format(self, exe: str, lib: Path, node: Node, cluster_id: str) -> None:
        scram = [arg for name, password in self.scram_users.items()
                 for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                 for arg in ("--add-scram", f"{mech}=[name={name},password={password}]")]
        done = subprocess.run(
            [exe, *self.jvm_options, f"-Dlog4j2.configurationFile={node.directory}/log4j2.yaml",
             "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(node.directory / "server.properties"), "--ignore-formatted", *scram],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka node {node.node_id} failed: "
                              + " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:]))

    def _launch(self, exe: str, lib: Path, node: Node) -> None:
        assert self._run is not None
        with open(node.directory / "stdout.log", "ab") as out:
            node.proc = subprocess.Popen(
                [exe, *self.jvm_options,
                 f"-Dlog4j2.configurationFile={node.directory}/log4j2.yaml",
                 f"-Ddetector.kafka.run={self._run}",  # how a sweep knows the JVM is ours
                 "-cp", f"{lib}/*", "kafka.Kafka", str(node.directory / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent)
        node.paused = False
        (self._run / f"node-{node.node_id}").mkdir(exist_ok=True)
        (self._run / f"node-{node.node_id}" / "pid").write_text(str(node.proc.pid))

    def wait_ready(self, nodes: list[Node], timeout: float, since: list[int]) -> None:
        """Until each node logged that it started (past ``since``, its log's size before)."""
        deadline = time.monotonic() + timeout
        waiting = list(zip(nodes, since, strict=True))
        while waiting:
            node, offset = waiting[0]
            if not node.running:
                raise BrokerError(f"Kafka node {node.node_id} exited at start: {node.log_tail()}")
            with contextlib.suppress(OSError), open(node.log_path, "rb") as f:
                f.seek(offset)
                if READY_LINE.encode() in f.read():
                    waiting.pop(0)
                    continue
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka node {node.node_id} not ready after {timeout:g} s: "
                                  f"{node.log_tail()}")
            time.sleep(0.1)

    # --- faults -----------------------------------------------------------------------------

    def node(self, node_id: int) -> Node:
        return self.members[node_id - 1]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (its log directory stays: ``restart`` brings it back)."""
        node = self.node(node_id)
        if node.running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGCONT)
            node.proc.kill()
            node.proc.wait(30)

    def pause(self, node_id: int | None = None) -> None:
        """SIGSTOP one node (None: every node, as ``LocalBroker.pause`` stops its broker)."""
        for node in self._nodes(node_id):
            assert node.proc is not None
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, node_id: int | None = None) -> None:
        for node in self._nodes(node_id):
            assert node.proc is not None
            node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def _nodes(self, node_id: int | None) -> list[Node]:
        return list(self.members) if node_id is None else [self.node(node_id)]

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """A controlled shutdown (SIGTERM: leadership moves first), SIGKILL after ``timeout``."""
        node = self.node(node_id)
        if node.running:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGCONT)
            node.proc.terminate()
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(30)

    def restart(self, node_id: int, timeout: float = 90.0, graceful: bool = True) -> None:
        """Stop one node (SIGTERM, or SIGKILL) and start it again on its log directory."""
        if graceful:
            self.stop_node(node_id)
        else:
            self.kill(node_id)
        self.start_node(node_id, timeout)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a node that was stopped or killed, and wait until it is ready."""
        node = self.node(node_id)
        since = node.log_size()
        self._launch(java(), libs(), node)
        self.wait_ready([node], timeout, [since])

    # --- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a few seconds), remove the directory
        (but a ``data_dir``)."""
        for node in self.members:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
                node.proc.terminate()
        deadline = time.monotonic() + 15
        for node in self.members:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(30)
        if self._run is not None:
            shutil.rmtree(self._run, ignore_errors=True)
            self._run = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None,
                                    TracebackType | None]) -> None:
        self.stop()
