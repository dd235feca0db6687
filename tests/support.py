"""Helpers for the tests that run against a real broker: Apache Kafka (``conftest.py`` starts
one per test worker; each test has topic and group names of its own, ``ScopedKafka``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from kafka.errors import KafkaError

from detector.kafka import clients, topics
from detector.ops.metrics import Metrics
from detector.ops.server import MetricsServer
from detector.settings.detector import DetectorSettings
from detector.settings.kafka import KafkaSettings
from detector.testing import harness
from detector.testing.harness import (  # noqa: F401 - re-exported for the tests
    FAST_GROUP,
    ROOT,
    Record,
    covered,
    expected_flags,
    read_topic,
    uncovered,
    wait_for,
)
from detector.testing.local_broker import free_port

FAST = {**FAST_GROUP, "checkpoint_interval_ms": 300}


@dataclass(frozen=True)
class ScopedKafka(KafkaSettings):
    """The test worker's shared Apache Kafka, with topic and group names of one test's own:
    each name the programs use by default, behind the test's ``prefix``. Tests then neither
    see each other's records nor wait for each other's group members."""

    prefix: str = ""

    def name(self, default: str) -> str:
        return self.prefix + default

    @property
    def values(self) -> str:
        return self.name("values")

    @property
    def flags(self) -> str:
        return self.name("trend-flags")

    @property
    def alerts(self) -> str:
        return self.name("trend-alerts")

    @property
    def dlq(self) -> str:
        return self.name("values.dlq")

    @property
    def group(self) -> str:
        return self.name("trend-detector")

    @property
    def state(self) -> str:
        return f"{self.group}.state"

    @property
    def models(self) -> str:
        return self.name("detector-models")

    @property
    def candidates(self) -> str:
        return self.name("trend-candidates")

    def topics(self) -> dict[str, str]:
        """The detector's topic and group settings under this prefix."""
        return {"group_id": self.group, "input_topic": self.values, "output_topic": self.flags,
                "alert_topic": self.alerts, "dlq_topic": self.dlq, "models_topic": self.models}

    def env(self, command: str = "run") -> dict[str, str]:
        """The same as environment variables, for ``command``'s process (the Alertmanager
        bridge has a group of its own under the same variable)."""
        out = {f"DETECTOR_{k.upper()}": v for k, v in self.topics().items()}
        if command == "alertmanager":
            out["DETECTOR_GROUP_ID"] = self.name("trend-alertmanager")
        return out | {"PRODUCER_TOPIC": self.values}


def drop_topics(kafka: ScopedKafka) -> None:
    """Delete the test's topics (best effort: the broker stays light over a whole run)."""
    try:
        client = clients.admin(kafka)
    except clients.KafkaUnavailable:
        return
    try:
        mine = [t for t in client.list_topics() if t.startswith(kafka.prefix)]
        if mine:
            with contextlib.suppress(KafkaError):  # a leftover topic costs nothing but disk
                client.delete_topics(mine)
    finally:
        client.close()


def scoped(kafka: KafkaSettings) -> dict[str, str]:
    """The detector's names for ``kafka``: a scoped one's, or none (the defaults)."""
    return kafka.topics() if isinstance(kafka, ScopedKafka) else {}


def settings(kafka: KafkaSettings, **overrides) -> DetectorSettings:
    return DetectorSettings(kafka=kafka, **{**FAST, "metrics_port": 0, **scoped(kafka),
                                            **overrides})


class DetectorProcess(harness.DetectorProcess):
    """``harness.DetectorProcess`` under the test's own names."""

    def __init__(self, kafka: KafkaSettings, model: str = "seed", command: str = "run",
                 **env: str):
        names = kafka.env(command) if isinstance(kafka, ScopedKafka) else {}
        super().__init__(kafka, model, command, **{**names, **env})


@contextlib.contextmanager
def all_closed(started: list[DetectorProcess]) -> Iterator[list[DetectorProcess]]:
    """Every process in ``started`` (the test may add more) closed at the end; where the
    test fails in between, the end of each one's log printed first."""
    try:
        yield started
    except BaseException:
        for d in started:
            print(f"--- {d.command} log\n{d.output()[-6000:]}")
        raise
    finally:
        for d in started:
            d.close()


def send(kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes | None]],
         partitions: int = 6) -> None:
    """Write raw (key, value) records; the topic is created first with ``partitions``."""
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, partitions)])
    producer = clients.producer(kafka, max_request_size=8 << 20, linger_ms=5)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def feed(kafka: ScopedKafka, records: list[tuple[bytes, bytes]], rate: float,
         done: threading.Event | None = None) -> None:
    """Write ``records`` to the test's input topic at ``rate`` a second (live input)."""
    producer = clients.producer(kafka, linger_ms=5)
    started = time.monotonic()
    for i, (key, value) in enumerate(records):
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        producer.send(kafka.values, key=key, value=value)
    producer.flush()
    producer.close()
    if done is not None:
        done.set()


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


class DetectorThread:
    """A detector in this process (a thread), with its own metrics registry and endpoint."""

    def __init__(self, s: DetectorSettings, step, serve_metrics: bool = False):
        from detector.kafka.pipeline import Pipeline

        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.pipeline = Pipeline(s, step, self.metrics, self.stop_event)
        self.server = (MetricsServer(self.metrics, "127.0.0.1", 0,
                                     self.pipeline.not_ready_because,
                                     lambda: self.pipeline.rollout.failure)
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


# --- Alertmanager, real (Debian's prometheus-alertmanager), with a webhook this process runs ---


class Webhook:
    """An HTTP server Alertmanager notifies: every alert of every notification, in order."""

    def __init__(self):
        self.received: list[dict] = []  # {"status", "labels", "startsAt", "endsAt", "at"}
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                at = time.monotonic()
                received.extend({**a, "at": at} for a in body["alerts"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, format, *args) -> None:
                """Quiet: the test reads what arrived."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def runs(self, status: str) -> set[tuple[str, int]]:
        """(stream, start_seq) of the TrendRun alerts notified with ``status``."""
        return {(a["labels"]["stream"], int(a["labels"]["start_seq"]))
                for a in list(self.received)
                if a["status"] == status and a["labels"].get("alertname") == "TrendRun"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Short timings so a test sees notifications within a few seconds.
ALERTMANAGER_CONFIG = """
route:
  receiver: webhook
  group_by: [alertname, stream, start_seq]   # one notification group per run
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


class AlertmanagerProcess:
    """``prometheus-alertmanager`` on a free loopback port, with its own storage, no cluster."""

    def __init__(self, webhook_url: str, workdir: Path):
        exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if exe is None:
            pytest.skip("Alertmanager missing (apt-get install prometheus-alertmanager)")
        config = workdir / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG.format(url=webhook_url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "alertmanager.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        wait_for(self._ready, 30, what=lambda: "Alertmanager to start: " + self.output())

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def kill_after(kafka: ScopedKafka, model: str, processed: float, **env: str) -> None:
    """A detector process, SIGKILLed once it has processed ``processed`` events."""
    det = DetectorProcess(kafka, model=model, **env).start()
    try:
        wait_for(lambda: (det.metric("detector_events_processed_total") or 0) >= processed, 120,
                 every=0.02, what="progress before the kill")
        det.kill()
    finally:
        det.close()


def run_until_every_output(kafka: ScopedKafka, model: str, expect: int, timeout: float = 120,
                           **env: str) -> None:
    """A detector process until the flags topic holds outputs of ``expect`` distinct events
    (counting records would pass early: a replay's duplicates count too); then SIGTERM, exit
    0."""
    def distinct() -> int:
        return len(harness.events_of(read_topic(kafka, kafka.flags, settle=0.5)))

    det = DetectorProcess(kafka, model=model, **env).start()
    try:
        wait_for(lambda: distinct() >= expect, timeout, every=1,
                 what=lambda: f"every event to have an output ({distinct()} of {expect})")
        assert det.terminate() == 0
    finally:
        det.close()


# --- labeled streams (your own pattern) --------------------------------------------------------


def write_labeled(path: Path, streams: dict[str, np.ndarray], label,
                  stream_column: str = "stream") -> Path:
    """A long-format labeled CSV (stream, value, label; streams one after the other)."""
    import csv

    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([stream_column, "value", "label"])
        for name, values in streams.items():
            for v, y in zip(values, label(values), strict=True):
                out.writerow([name, repr(float(v)), int(y)])
    return path


#: Epochs the battery's pattern models train in the tests and the README's figures (users'
#: own data gets the default, 20).
PATTERN_EPOCHS = 5


def labeled_battery(path: Path, pattern: str) -> Path:
    """The battery (real series and generated shapes) labeled by one of its patterns."""
    from detector.task.patterns import PATTERNS
    from detector.training.evaluation import battery

    streams = {f"{part}/{name}": v for part, named in battery().items()
               for name, v in named.items()}
    return write_labeled(path, streams, PATTERNS[pattern].label)


def copy_model(directory: Path, shipped: str, name: str, **card_changes) -> str:
    """A shipped model's files (``.keras``, ``.tflite``, card) as ``NAME.keras`` in
    ``directory``, its card changed (say ``pattern=...`` to stand for a model of a pattern):
    the path."""
    from detector.model.files import MODELS_DIR

    path = directory / f"{name}.keras"
    for suffix in (".keras", ".tflite"):
        shutil.copy((MODELS_DIR / shipped).with_suffix(suffix), path.with_suffix(suffix))
    card = json.loads((MODELS_DIR / f"{shipped}.card.json").read_text())
    path.with_suffix(".card.json").write_text(json.dumps({**card, **card_changes}))
    return str(path)
