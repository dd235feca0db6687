"""Helpers for the tests that run against the real local broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import TopicPartition

from detector import kafka_io
from detector.config import DetectorSettings, KafkaSettings
from detector.engine import Batch, Engine
from detector.local_broker import free_port
from detector.metrics import Metrics, MetricsServer

ROOT = Path(__file__).resolve().parent.parent

#: Short group timings: the local broker makes a join wait about half the session timeout.
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "checkpoint_interval_ms": 300}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.value)


def settings(kafka: KafkaSettings, **overrides) -> DetectorSettings:
    return DetectorSettings(kafka=kafka, **{**FAST, "metrics_port": 0, **overrides})


def send(kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes | None]],
         partitions: int = 6) -> None:
    """Write raw (key, value) records; the topic is created first with ``partitions``."""
    kafka_io.ensure_topics(kafka, [kafka_io.TopicSpec(topic, partitions)])
    producer = kafka_io.producer(kafka, max_request_size=8 << 20, linger_ms=5)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def event(stream: str, seq: int, value: float, ts: float | None = None) -> tuple[bytes, bytes]:
    body = {"stream": stream, "seq": seq, "value": value}
    if ts is not None:
        body["ts"] = ts
    return stream.encode(), json.dumps(body).encode()


def uniform_events(streams: int, per_stream: int, seed: int = 0, ts: bool = True
                   ) -> list[tuple[bytes, bytes]]:
    """Round-robin events of ``streams`` streams, each with seq 0..per_stream-1."""
    rng = np.random.default_rng(seed)
    values = rng.random((streams, per_stream))
    now = time.time() if ts else None
    return [event(f"s-{s}", t, float(values[s, t]), now)
            for t in range(per_stream) for s in range(streams)]


def read_all(kafka: KafkaSettings, topic: str, expect: int | None = None,
             timeout: float = 30.0, settle: float = 1.0) -> list[Record]:
    """Every record of ``topic``: until ``expect`` arrive, or nothing new for ``settle`` s."""
    n = kafka_io.partition_count(kafka, topic)
    if n is None:
        return []
    consumer = kafka_io.consumer(kafka, group_id=None, enable_auto_commit=False,
                                 max_partition_fetch_bytes=8 << 20)
    tps = [TopicPartition(topic, p) for p in range(n)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=200)
            for tp, recs in got.items():
                out += [Record(topic, tp.partition, r.offset, r.key, r.value, list(r.headers))
                        for r in recs]
            if got:
                last_new = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() - last_new > settle:
                break
    finally:
        consumer.close(autocommit=False)
    return out


def wait_for(predicate, timeout: float = 60.0, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def expected_flags(step, records: list[tuple[bytes, bytes]]) -> dict[tuple[str, int], int]:
    """What an uninterrupted detector gives: each stream's valid events in order, one engine."""
    from detector.codec import Event, decode_event

    events = [e for e in (decode_event(k, v) for k, v in records) if isinstance(e, Event)]
    engine = Engine(step)
    res = engine.process(Batch.of([e.stream for e in events], np.array([e.value for e in events]),
                                  seq=np.array([e.seq for e in events])))
    return {(e.stream, e.seq): int(res.flag[i])
            for i, e in enumerate(events) if res.processed[i]}


class DetectorThread:
    """A detector in this process (a thread), with its own metrics registry and endpoint."""

    def __init__(self, s: DetectorSettings, step, serve_metrics: bool = False):
        from detector.pipeline import Pipeline

        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.pipeline = Pipeline(s, step, self.metrics, self.stop_event)
        self.server = (MetricsServer(self.metrics, "127.0.0.1", 0, lambda: self.pipeline.ready)
                       if serve_metrics else None)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> DetectorThread:
        if self.server:
            self.server.start()
        self.pipeline.connect()
        self.thread.start()
        return self

    def value(self, name: str, labels: dict | None = None) -> float:
        return self.metrics.value(name, labels)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        if self.server:
            self.server.stop()
        assert not self.thread.is_alive(), "detector did not stop"
        if self.error:
            raise self.error


class DetectorProcess:
    """``python -m detector run`` as a real process, configured through the environment."""

    def __init__(self, kafka: KafkaSettings, model: str = "seed", **env: str):
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "DETECTOR_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DETECTOR_MODEL": model,
            "DETECTOR_METRICS_PORT": str(self.metrics_port),
            "DETECTOR_SESSION_TIMEOUT_MS": str(FAST["session_timeout_ms"]),
            "DETECTOR_HEARTBEAT_INTERVAL_MS": str(FAST["heartbeat_interval_ms"]),
            "DETECTOR_CHECKPOINT_INTERVAL_MS": str(FAST["checkpoint_interval_ms"]),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> DetectorProcess:
        self.log = open(f"/tmp/detector-{os.getpid()}-{self.metrics_port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def metric(self, name: str) -> float | None:
        """A sample from the live /metrics endpoint, or None while it is not up."""
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except (urllib.error.URLError, OSError):
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def healthz(self) -> int | None:
        try:
            return urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
