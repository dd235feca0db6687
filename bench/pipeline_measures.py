"""What ``bench/pipeline.py`` measures besides throughput, and the helpers both use: a detector
process on the local broker, input written at a rate, latency, memory, restore and first flag.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from detector.kafka import clients, topics
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.stream.codec import encode_event
from detector.testing.harness import DetectorProcess, wait_for
from producer.publish import java_partition, publish

from common import say


def start_detector(kafka: KafkaSettings, group: str, **env: str) -> DetectorProcess:
    """A detector process with its own group and output topics."""
    return DetectorProcess(
        kafka, DETECTOR_GROUP_ID=group, DETECTOR_OUTPUT_TOPIC=f"{group}.flags",
        DETECTOR_ALERT_TOPIC=f"{group}.alerts", DETECTOR_DLQ_TOPIC=f"{group}.dlq", **env,
    ).start()


def wait_processed(det: DetectorProcess, n: int, timeout: float = 600) -> tuple[float, float]:
    """(time of the first processed event, time of the n-th), polled every 50 ms."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = det.processed()
        now = time.monotonic()
        if done > 0 and first is None:
            first = now
        if done >= n:
            return first or now, now
        time.sleep(0.05)
    raise RuntimeError(f"detector processed {det.processed():.0f} of {n} in {timeout} s")


def wait_ready(det: DetectorProcess, timeout: float = 120) -> None:
    wait_for(lambda: det.metrics().get("detector_ready", 0) >= 1, timeout, what="ready")


def fill(kafka: KafkaSettings, topic: str, events: int, streams: int, rate: float = 0,
         prefix: str = "s-") -> None:
    say(f"  producing {events:,} events over {streams:,} streams to {topic} ...")
    publish(ProducerSettings(kafka=kafka, topic=topic, streams=streams, count=events, rate=rate,
                             seed=1, stream_prefix=prefix), threading.Event(),
            progress=lambda _: None)


def fill_skewed(kafka: KafkaSettings, topic: str, events: int, streams: int, hot_share: float
                ) -> None:
    """``events`` uniform values, ``hot_share`` of them from stream ``s-0`` and the rest spread
    evenly over the others, each stream in seq order (the producer's records, its keying)."""
    say(f"  producing {events:,} events over {streams:,} streams, {hot_share:.0%} of them from "
        f"one, to {topic} ...")
    n = topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6)])[topic]
    rng = np.random.default_rng(1)
    hot = rng.random(events) < hot_share
    ids = np.where(hot, 0, rng.integers(1, max(streams, 2), events)).tolist()
    values = rng.random(events).tolist()
    keys = [f"s-{i}".encode() for i in range(streams)]
    partitions = [java_partition(k, n) for k in keys]
    seq = [0] * streams
    producer = clients.producer(kafka, acks="all", linger_ms=5, batch_size=256 * 1024)
    now = time.time()
    for i, value in zip(ids, values, strict=True):
        producer.send(topic, key=keys[i], value=encode_event(f"s-{i}", seq[i], value, now),
                      partition=partitions[i])
        seq[i] += 1
    producer.flush()
    producer.close()


def percentiles(latencies_s: list[float]) -> dict:
    """Count, p50, p99 and max of latencies in seconds, as milliseconds."""
    ms = np.array(latencies_s) * 1000
    return {"events": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def latency(kafka: KafkaSettings, rate: float, seconds: float, streams: int) -> dict:
    """p50/p99 of detected_at - ts over every output at a steady producer rate."""
    topic, group = "latency.in", "latency"
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6)])
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC=topic)
    try:
        wait_ready(det)
        events = int(rate * seconds)
        say(f"  steady {rate:,.0f} events/s for {seconds:.0f} s ({events:,} events) ...")
        fill(kafka, topic, events, streams, rate=rate)
        wait_processed(det, events, timeout=seconds + 120)
    finally:
        det.terminate()
        det.close()
    from kafka import TopicPartition

    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(f"{group}.flags", p) for p in range(6)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    lat = []
    quiet = time.monotonic()
    while time.monotonic() - quiet < 2:
        for recs in consumer.poll(timeout_ms=200).values():
            quiet = time.monotonic()
            for r in recs:
                rec = json.loads(r.value)
                lat.append(rec["detected_at"] - rec["ts"])
    consumer.close()
    return {"rate": rate, **percentiles(lat)}


def latency_floor(kafka: KafkaSettings, rate: float, seconds: float, streams: int) -> dict:
    """The same feed read by a plain consumer in the detector's place (no decoding beyond the
    timestamp, nothing produced): p50/p99 of receipt time - ts, the broker's and the client's
    own share of ``latency``."""
    topic = "floor.in"
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6)])
    lat: list[float] = []
    stop = threading.Event()
    consumer = clients.consumer(kafka, group_id="floor", auto_offset_reset="earliest",
                                 fetch_max_wait_ms=10, session_timeout_ms=6000,
                                 heartbeat_interval_ms=2000)
    consumer.subscribe([topic])

    def consume() -> None:
        while not stop.is_set():
            for recs in consumer.poll(timeout_ms=100).values():
                now = time.time()
                lat.extend(now - json.loads(r.value)["ts"] for r in recs)

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(5)  # joined the group before the feed starts
    fill(kafka, topic, int(rate * seconds), streams, rate=rate)
    time.sleep(3)
    stop.set()
    reader.join()
    consumer.close()
    return {"rate": rate, "seconds": seconds, **percentiles(lat)}


def memory(kafka: KafkaSettings, streams: int, model: str = "seed") -> dict:
    """RSS growth of a detector serving ``model`` from empty to ``streams`` streams (one event
    each)."""
    topic, group = "memory.in", "memory"
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6)])
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC=topic, DETECTOR_MODEL=model)
    try:
        wait_ready(det)
        # The baseline is a detector that has already worked (20,000 events of 10 streams):
        # its fixed buffers (the producer's 32 MiB pool, fetch buffers) are not per stream.
        fill(kafka, topic, 20_000, 10, prefix="warm-")
        wait_processed(det, 20_000)
        time.sleep(3)
        empty = det.rss_bytes()
        fill(kafka, topic, streams, streams)
        say(f"  waiting for {streams:,} streams to be processed ...")
        wait_processed(det, streams + 20_000, timeout=1800)
        # Measured once a checkpoint that began after the last event has finished: every
        # stream's state written, nothing in flight.
        done = det.metrics().get("detector_checkpoint_seconds_count", 0)
        wait_for(lambda: det.metrics().get("detector_checkpoint_seconds_count", 0) >= done + 2,
                 600, what="a checkpoint covering every stream")
        full = det.rss_bytes()
        active = det.metrics().get("detector_active_streams", 0)
    finally:
        det.terminate()
        det.close()
    per_stream = (full - empty) / streams
    return {"model": Path(model).stem if model.endswith(".keras") else model,
            "streams": streams, "active_streams": active, "rss_empty_mb": empty / 2**20,
            "rss_full_mb": full / 2**20, "bytes_per_stream": per_stream,
            "kb_per_1000_streams": per_stream * 1000 / 1024}


def restore(kafka: KafkaSettings, streams: int) -> dict:
    """A fresh detector restoring ``streams`` streams' state from the state topic."""
    from detector.model.serving import ModelStep
    from detector.stream.state import StreamStore

    group = "restore"
    state_topic = f"{group}.state"
    topics.ensure_topics(kafka, [topics.TopicSpec("restore.in", 6),
                                   topics.TopicSpec(state_topic, 6,
                                                      {"cleanup.policy": "compact"})])
    fingerprint = ModelStep.load("seed").fingerprint
    producer = clients.producer(kafka, linger_ms=5, batch_size=256 * 1024)
    say(f"  writing {streams:,} state records ...")
    store = StreamStore(0)
    slots = store.lookup([f"r-{i}".encode() for i in range(streams)], np.arange(streams) % 6)
    store.prev[slots], store.seen[slots], store.last_seq[slots] = 0.5, 10, 9
    store.last_offset[slots], store.last_active[slots] = 9, time.time()
    for key, value, p in store.snapshot(slots, fingerprint).records(0, streams):
        producer.send(state_topic, key=key, value=value, partition=p)
    producer.flush()
    producer.close()
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC="restore.in")
    try:
        wait_for(lambda: det.metrics().get("detector_active_streams", 0) >= streams, 180,
                 what="the restore")
        m = det.metrics()
    finally:
        det.terminate()
        det.close()
    return {"streams": int(m.get("detector_active_streams", 0)),
            "seconds": m.get("detector_state_restore_seconds_sum", float("nan"))}


def first_flag(kafka: KafkaSettings) -> float:
    """Seconds from starting the detector process to its first processed event."""
    topic = "first.in"
    fill(kafka, topic, 1000, 10)
    det = start_detector(kafka, "first", DETECTOR_INPUT_TOPIC=topic)
    try:
        first, _ = wait_processed(det, 1, timeout=120)
        return first - det.started
    finally:
        det.terminate()
        det.close()
