"""Helpers for the tests that run against the real local broker."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from detector import kafka_io
from detector.config import DetectorSettings, KafkaSettings
from detector.harness import (  # noqa: F401 - re-exported for the tests
    FAST_GROUP,
    ROOT,
    DetectorProcess,
    Record,
    expected_flags,
    read_topic,
    wait_for,
)
from detector.metrics import Metrics, MetricsServer

FAST = {**FAST_GROUP, "checkpoint_interval_ms": 300}


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
