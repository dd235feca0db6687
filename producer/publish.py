"""The producer's Kafka loop: paced sends, a progress line, a clean flush on stop.

Paced (a rate), it sends through KafkaProducer, which rides out a broker outage by retrying.
As fast as it can (rate 0), it appends to the detector's outbox (``detector.kafka.outbox``): record
batches built per partition, a tenth of the cost of a ``send`` a record, so that benchmarks
measure the detector rather than the producer feeding it.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable

from kafka.partitioner.default import murmur2

from detector.kafka import acl, clients, tansu, topics
from detector.kafka.outbox import Outbox
from detector.settings.producer import ProducerSettings
from producer.csv_source import CsvSource, LongCsvSource, stream_id_column
from producer.source import StreamSource

PROGRESS_EVERY_S = 2.0
#: How long records gather into one batch per partition, unless set (or on Tansu).
LINGER_MS = 5
#: The random streams' prefix when none is given (a CSV column's id is its name).
RANDOM_PREFIX = "s-"

Source = StreamSource | CsvSource | LongCsvSource


def open_source(settings: ProducerSettings,
                note: Callable[[str], None] = lambda line: print(line, file=sys.stderr,
                                                                 flush=True)) -> Source:
    """The CSV replay or the random streams the settings ask for; the CSV is read and checked
    here, before any connection, and what it leaves out is said (``note``). Raises
    UsageError."""
    prefix = settings.stream_prefix or ""
    if settings.from_csv is not None and settings.value_column is not None:
        return LongCsvSource(settings.from_csv, settings.value_column, settings.stream_column,
                             prefix)
    if settings.from_csv is not None:
        source = CsvSource(settings.from_csv, settings.column, prefix)
        for skipped in source.skipped:
            note(f"producer: {skipped}")
        ids = stream_id_column(settings.from_csv, tuple(c.name for c in source.columns))
        if ids is not None:
            sent = ", ".join(c.name for c in source.columns)
            note(f"producer: note: column {ids!r} looks like stream ids; each column is "
                 f"replayed as one stream ({sent}). For one row an event: --stream-column "
                 f"{ids} --value-column NAME")
        return source
    prefix = RANDOM_PREFIX if settings.stream_prefix is None else settings.stream_prefix
    return StreamSource(settings.streams, settings.pattern, settings.seed, prefix,
                        epoch=int(time.time() * 1000))


def java_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2, as Java does)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Paced:
    """KafkaProducer, for a paced run: its retries ride out a broker outage. What it gives up
    on (a missing ACL, a record too large) stops the run: its records are not written."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.topic = settings.topic
        self.client = clients.producer(settings.kafka, acks="all", linger_ms=settings.linger_ms,
                                        batch_size=256 * 1024)
        self.failed: BaseException | None = None  # the first send that failed

    def send(self, partition: int, key: bytes, value: bytes) -> None:
        self.client.send(self.topic, key=key, value=value,
                         partition=partition).add_errback(self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.failed = self.failed or exc

    def sent_chunk(self) -> None:
        """The producer's linger sends; the first send that failed stops the run."""
        if self.failed is not None:
            with acl.writing(self.topic):
                raise self.failed

    def close(self) -> None:
        try:
            self.client.flush(timeout=30)
        finally:
            clients.close_bounded(lambda: self.client.close(timeout=5), "the producer")
        self.sent_chunk()


class _Batched:
    """The outbox, as fast as it goes: what has lingered long enough is flushed after each
    chunk; a failed request stops the run (OutputFailed, one line)."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.topic = settings.topic
        self.outbox = Outbox(settings.kafka, [settings.topic], linger_ms=settings.linger_ms)

    def send(self, partition: int, key: bytes, value: bytes) -> None:
        self.outbox.append(self.topic, partition, key, value)

    def sent_chunk(self) -> None:
        if not self.outbox.linger_left_s():
            with acl.writing(self.topic):
                self.outbox.flush()

    def close(self) -> None:
        try:
            with acl.writing(self.topic):
                self.outbox.wait(self.outbox.flush(), 30)
        finally:
            self.outbox.close()


def publish(
    settings: ProducerSettings,
    stop: threading.Event,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    source: Source | None = None,
) -> int:
    """Send events until ``count`` is reached, the source ends or ``stop`` is set; returns how
    many were sent. ``source``: one already opened (``open_source``), else the settings'."""
    source = source if source is not None else open_source(settings)
    acl.check(settings.kafka, acl.producer(settings))
    counts = topics.ensure_topics(
        settings.kafka, [topics.TopicSpec(settings.topic, settings.partitions)],
        settings.replication_factor
    )
    partitions = counts[settings.topic]
    linger, why = tansu.linger_ms(settings.linger_ms, LINGER_MS, settings.kafka)
    settings = dataclasses.replace(settings, linger_ms=linger)
    if why:
        progress(f"producer: {why}")
    # Computing each key's partition once saves the pure-Python murmur2 on every send.
    targets = [java_partition(k, partitions) for k in source.keys]
    out = _Paced(settings) if settings.rate else _Batched(settings)
    total = settings.count or float("inf")
    sent = 0
    started = last_report = time.monotonic()
    reported = 0
    chunk = max(1, min(len(source.ids), int(settings.rate / 50) or len(source.ids)))
    try:
        while sent < total and not stop.is_set():
            streams = source.next_round()
            if streams is None:
                break
            for start in range(0, len(streams), chunk):
                if settings.rate:
                    wait = started + sent / settings.rate - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                end = min(len(streams), start + chunk)
                if settings.count:
                    end = min(end, start + settings.count - sent)
                now = time.time()
                for i in streams[start:end]:
                    out.send(targets[i], source.keys[i], source.record(i, now))
                out.sent_chunk()
                sent += end - start
                if sent >= total:
                    break
            mono = time.monotonic()
            if mono - last_report >= PROGRESS_EVERY_S:
                rate = (sent - reported) / (mono - last_report)
                progress(f"producer: {sent:,} events sent ({rate:,.0f}/s) to {settings.topic}")
                last_report, reported = mono, sent
    finally:
        out.close()
    progress(f"producer: done, {sent:,} events sent in {time.monotonic() - started:.1f} s")
    return sent
