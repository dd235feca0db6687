"""``python -m detector demo``: the whole pipeline on this machine, readable by a person.

Starts the bundled local broker, the producer and the detector (with its metrics endpoint),
then shows alerts as they come, a few a second at most, and a stats line every few seconds.
The producer sends random values, or replays columns of a CSV (``--csv FILE --column NAME``)
so a person can watch their own data go through. Everything it starts stops with it: Ctrl-C
or ``--duration``.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable

from kafka import TopicPartition

from detector.cli.tail import describe
from detector.errors import DetectorError
from detector.kafka import clients, topics
from detector.ops.metrics import Metrics, histogram_quantile
from detector.settings.detector import DetectorSettings
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.testing.local_broker import LocalBroker, free_port

ALERT_LINES_PER_SECOND = 3
STATS_EVERY_S = 5.0


def _say(line: str) -> None:
    print(line, flush=True)


class _Thread(threading.Thread):
    """A worker thread that keeps its exception for the main thread to report."""

    def __init__(self, name: str, target: Callable[[], object]):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # reported by the main thread, which decides to stop
            self.error = exc


def demo(*, duration: float, streams: int, rate: float, model: str, metrics_port: int,
         csv: str | None, columns: tuple[str, ...], runtime: str, alert_min_length: int,
         value_column: str | None = None, stream_column: str | None = None,
         out: Callable[[str], None] = _say) -> int:
    """Run everything until Ctrl-C or ``duration``; the arguments are ``demo``'s options."""
    from producer.publish import open_source, publish

    # The settings and the CSV are checked first: a wrong one is one line, before anything
    # starts. Both programs batch as they do on Tansu (``detector/kafka/tansu.py``).
    settings = DetectorSettings(model=model, session_timeout_ms=6000, heartbeat_interval_ms=2000,
                                checkpoint_interval_ms=500, alert_min_length=alert_min_length)
    producer_settings = ProducerSettings(streams=streams, rate=rate, from_csv=csv, column=columns,
                                         value_column=value_column, stream_column=stream_column)
    source = open_source(producer_settings, note=lambda line: out(f"demo: {line}"))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = LocalBroker().start()
    workers: list[_Thread] = []
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        out(f"demo: the local Kafka-compatible broker (Tansu) is ready at {broker.bootstrap}; "
            f"loading model {model!r} ({runtime}) ...")
        out(f"demo: every run record, in another terminal: python -m detector tail "
            f"--bootstrap-servers {broker.bootstrap}   (--topic trend-flags: every flag)")
        out(f"demo: values of your own: python -m producer --bootstrap-servers {broker.bootstrap} "
            "--stream-prefix mine-   (or --from-csv FILE --column NAME)")
        from detector.kafka.pipeline import Pipeline
        from detector.model.serving import ModelStep
        from detector.ops.process_tuning import settle_garbage_collector
        from detector.ops.server import MetricsServer

        step = ModelStep.load(model, runtime)
        settings = dataclasses.replace(settings, kafka=kafka)
        metrics = Metrics()
        pipeline = Pipeline(settings, step, metrics, stop)
        try:
            server = MetricsServer(metrics, "127.0.0.1", metrics_port, pipeline.not_ready_because,
                                   lambda: pipeline.rollout.failure)
        except DetectorError:
            server = MetricsServer(metrics, "127.0.0.1", free_port(), pipeline.not_ready_because,
                                   lambda: pipeline.rollout.failure)
        server.start()
        pipeline.connect()
        settle_garbage_collector()
        producer_settings = dataclasses.replace(producer_settings, kafka=kafka,
                                                topic=settings.input_topic)
        workers = [_Thread("detector", pipeline.run)]
        workers[0].start()
        out("demo: detector joining its consumer group ...")
        deadline = time.monotonic() + 60
        while not pipeline.ready and workers[0].is_alive() and time.monotonic() < deadline:
            stop.wait(0.1)
        workers.append(_Thread("producer", lambda: publish(
            producer_settings, stop, progress=lambda _: None, source=source)))
        workers[1].start()
        what = (f"{csv}: {len(source.ids)} stream(s), {source.events:,} values" if csv
                else f"{streams} streams")
        out(f"demo: producer sends {what} at {rate:g} events/s; detector model "
            f"{step.name}; metrics at {server.url} (health: /healthz)")
        runs = (f"runs of the pattern {step.pattern!r} ({step.alert_min_flags} or more flags "
                "in a row, as its card says)" if step.pattern else
                f"runs of {alert_min_length} or more values moving the same way")
        out(f"demo: {runs}, as they fire and resolve, at most {ALERT_LINES_PER_SECOND} lines a "
            "second: (+N not shown) counts the records skipped before a line (the tail command "
            "above shows every one); Ctrl-C to stop")
        _show(kafka, settings.alert_topic, metrics, server.url, stop, workers, duration, out,
              step.pattern)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        if "server" in locals():
            server.stop()
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [w for w in workers if w.error is not None]
    for w in failed:
        out(f"demo: {w.name} failed: {type(w.error).__name__}: {w.error}")
    out("demo: stopped; broker, producer and detector are gone")
    return 1 if failed else 0


def _show(kafka: KafkaSettings, topic: str, metrics: Metrics, url: str, stop: threading.Event,
          workers: list[_Thread], duration: float, out: Callable[[str], None],
          pattern: str) -> None:
    """Print paced alerts and periodic stats until stop, a worker failure or the duration.
    A pattern model's stats count its flags: it has no rule to agree with, and the demo no
    labels."""
    n = topics.partition_count(kafka, topic) or 1
    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(n)])
    started = last_stats = last_line = time.monotonic()
    held = 0
    replayed = False
    latency_name = "detector_end_to_end_latency_seconds"
    buckets_before = metrics.buckets(latency_name)
    processed_before = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if duration and now - started >= duration:
                break
            if not workers[0].is_alive() or any(w.error for w in workers):
                break
            if not workers[1].is_alive() and not replayed:
                replayed = True
                out("demo: the producer has sent everything; Ctrl-C to stop")
            for recs in consumer.poll(timeout_ms=100).values():
                for r in recs:
                    if time.monotonic() - last_line >= 1 / ALERT_LINES_PER_SECOND:
                        suffix = f"   (+{held} not shown)" if held else ""
                        out(describe(r.value) + suffix)
                        held, last_line = 0, time.monotonic()
                    else:
                        held += 1
            if now - last_stats >= STATS_EVERY_S:
                processed = metrics.value("detector_events_processed_total")
                rate = (processed - processed_before) / (now - last_stats)
                if pattern:
                    flagged = metrics.value("detector_flags_total", {"flag": "1"})
                    judged = f"{flagged:,.0f} flags of {pattern}"
                else:
                    wrong = metrics.value("detector_rule_disagreements_total")
                    judged = (f"agreement with exact rule "
                              f"{1 - wrong / processed if processed else 1.0:.2%}")
                buckets_now = metrics.buckets(latency_name)
                p99 = histogram_quantile(0.99, buckets_before, buckets_now)
                p99_text = "n/a" if p99 is None else f"{p99 * 1000:.0f} ms"
                ready = "ready" if metrics.value("detector_ready") else "NOT READY"
                fired = metrics.value("detector_run_alerts_total", {"status": "firing"})
                out(f"[stats] {rate:,.0f} events/s | {processed:,.0f} events | {fired:,.0f} runs "
                    f"fired | {judged} | p99 latency {p99_text} | {ready} | {url}")
                processed_before, last_stats, buckets_before = processed, now, buckets_now
    finally:
        consumer.close(autocommit=False)
    sys.stdout.flush()
