"""The Apache Kafka starter: the request versions the project pins, no JVM outliving its owner,
one line where Java or Maven is missing, and ``broker --engine kafka`` as people run it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka.protocol.api_key import ApiKey

from detector.kafka import clients, versions
from detector.testing import apache_kafka, kafka_jars
from detector.testing.apache_kafka import RUNS, sweep
from detector.testing.local_broker import free_port
from tests.support import ROOT, ScopedKafka, read_topic, wait_for


def _jvms_of(run: Path) -> list[int]:
    """Pids of the processes whose command line names ``run`` (our JVMs carry it)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(run).encode() in (proc / "cmdline").read_bytes():
                out.append(int(proc.name))
        except OSError:
            continue
    return out


@pytest.mark.broker
def test_the_broker_takes_the_request_versions_the_project_pins(kafka):
    client = clients.admin(kafka)
    try:
        offered = client.api_versions()
    finally:
        client.close()
    assert versions.refused(offered) == []
    versions.check(kafka)  # what the detector runs at start: silent on this broker
    # A broker without them is named with what it takes: Kafka 4 dropped Produce v0-v2.
    older = {**offered, ApiKey.Produce: (0, 2)}
    assert versions.refused(older) == ["Produce v3-9 (it takes v0-2)"]
    assert versions.refused({k: v for k, v in offered.items() if k != ApiKey.JoinGroup}) == [
        "JoinGroup v0-7 (it takes none)"]


CHILD = """
import sys, time
from detector.testing.apache_kafka import KafkaCluster
cluster = KafkaCluster().start()
print(cluster._run, flush=True)
time.sleep(600)
"""


@pytest.mark.broker
@pytest.mark.slow
def test_a_node_dies_with_the_process_that_started_it():
    """A test worker killed by a timeout (SIGKILL: no teardown runs) leaves no JVM behind."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    try:
        run = Path(child.stdout.readline().strip())
        assert run.parent == RUNS and _jvms_of(run), "the node did not start"
        child.kill()
        child.wait(10)
        wait_for(lambda: not _jvms_of(run), 20, what="the orphaned JVM to die")
        assert run.exists()  # its directory is what the next start sweeps
        sweep()
        assert not run.exists()
    finally:
        child.kill()


def test_a_sweep_kills_what_a_dead_owner_left_and_spares_the_living(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    runs = {}
    for owner in (dead.pid, os.getpid()):
        run = RUNS / f"test-sweep-{owner}-{time.monotonic_ns()}"
        (run / "node-1").mkdir(parents=True)
        (run / "owner.json").write_text(f'{{"pid": {owner}}}')
        # a process standing for a JVM: its command line names the run, as a node's does
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run)])
        (run / "node-1" / "pid").write_text(str(proc.pid))
        runs[owner] = (run, proc)
    try:
        assert sweep() >= 1
        run, proc = runs[dead.pid]
        assert proc.wait(10) == -signal.SIGKILL and not run.exists()
        run, proc = runs[os.getpid()]
        assert proc.poll() is None and run.exists()
    finally:
        for run, proc in runs.values():
            proc.kill()
            shutil.rmtree(run, ignore_errors=True)


def _broker_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector", "broker", "--engine", "kafka",
                           "--port", str(free_port()), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_missing_java_or_maven_is_one_line_naming_what_to_install(tmp_path):
    bin_only = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME",
                                                                 kafka_jars.LIBS_ENV)}
    bin_only["PATH"] = str(Path(sys.executable).parent)  # no java, no mvn
    done = _broker_cli(bin_only)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        "detector: error: Apache Kafka needs Java 17 or newer: install a JDK (Debian: apt-get "
        "install openjdk-17-jdk-headless) or set JAVA_HOME"], done.stderr
    java = shutil.which("java")
    if java is None:
        pytest.skip("no Java here to get past the first check")
    # Java found (alone in a directory of its own), the jars not fetched yet (an empty
    # cache), no Maven to fetch them
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").symlink_to(java)
    with_java = {**bin_only, "PATH": f"{Path(sys.executable).parent}:{tmp_path / 'bin'}",
                 kafka_jars.CACHE_ENV: str(tmp_path / "empty-cache")}
    done = _broker_cli(with_java)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "needs Maven: install it (Debian: apt-get install maven)" in done.stderr


@pytest.mark.broker
@pytest.mark.slow
def test_broker_engine_kafka_serves_the_commands_it_prints_until_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "detector", "broker", "--engine", "kafka",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 5, 90, what=lambda: f"the broker's commands: {lines}")
        assert re.match(rf"broker: Apache Kafka {apache_kafka.kafka_version()} \(1 KRaft "
                        rf"node\(s\)\) is listening on 127\.0\.0\.1:{port}", lines[0]), lines[0]
        producer = lines[2].split()
        sent = subprocess.run([sys.executable, *producer[1:], "--count", "20", "--rate", "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        kafka = ScopedKafka(bootstrap_servers=f"127.0.0.1:{port}")
        assert len(read_topic(kafka, "values", expect=20)) == 20
        jvms = _jvms_listening_on(port)
        assert len(jvms) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert lines[-1] == "broker: stopped\n"
    assert not any(Path(f"/proc/{pid}").exists() for pid in jvms), "its JVM still runs"


def _jvms_listening_on(port: int) -> list[int]:
    """Pids of the Kafka JVMs whose server.properties has a listener on ``port``."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"kafka.Kafka" in args and f":{port}\n".encode() in Path(
                    args[args.index(b"kafka.Kafka") + 1].decode()).read_bytes():
                out.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return out
