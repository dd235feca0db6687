"""The label topic: created retained by time (not compacted: a stream has many labels), written
by ``python -m detector label``, read whole by the backtest and by training."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from detector.kafka import clients, topics
from detector.labels import codec, reading
from detector.labels.book import LabelBook
from detector.labels.codec import Label, LabelError
from detector.settings.kafka import KafkaSettings
from detector.settings.labels import LabelTopicSettings

log = logging.getLogger(__name__)


def ensure(kafka: KafkaSettings, topic: LabelTopicSettings) -> None:
    topics.ensure_topics(kafka, [topics.TopicSpec(
        topic.labels_topic, topic.labels_partitions,
        {"cleanup.policy": "delete", "retention.ms": str(topic.retention_ms)},
        {"cleanup.policy": ("delete", "compaction would keep one label a stream")})])


def write(kafka: KafkaSettings, topic: LabelTopicSettings, labels: list[Label]) -> None:
    """Each label keyed by its stream, acknowledged by every in-sync replica."""
    ensure(kafka, topic)
    producer = clients.producer(kafka, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic.labels_topic, key=label.stream.encode(),
                                 value=codec.encode(label)) for label in labels]
        producer.flush(timeout=kafka.connect_timeout_s)
        for future in futures:
            future.get(timeout=kafka.connect_timeout_s)
    except KafkaError as exc:
        raise clients.KafkaUnavailable(f"writing to {topic.labels_topic} failed: {exc}") from exc
    finally:
        clients.close_bounded(producer.close, "the label writer")


class Skipped:
    """Records of the label topic that are no label: counted by reason, the first few logged."""

    LOGGED = 5

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def add(self, record: ConsumerRecord, error: LabelError) -> None:
        reason = "not_json" if str(error).startswith("not a JSON") else "bad_label"
        self.reasons[reason] += 1
        if sum(self.reasons.values()) <= self.LOGGED:
            log.warning("skipping record %d of %s partition %d: %s", record.offset,
                        record.topic, record.partition, error)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


def take(records: Sequence[ConsumerRecord], apply, skipped: Skipped) -> None:  # type: ignore[no-untyped-def]
    """``apply(label, position)`` for each record that is a label."""
    for r in records:
        try:
            label = codec.decode(r.key, r.value)
        except LabelError as exc:
            skipped.add(r, exc)
            continue
        apply(label, (r.timestamp, r.partition, r.offset))


def load(kafka: KafkaSettings, topic: str) -> tuple[LabelBook, Skipped]:
    """Every label the topic holds now, the latest of each id; UsageError when it has none."""
    book, skipped = LabelBook(), Skipped()
    consumer = reading.reader(kafka)
    try:
        tps = reading.partitions(kafka, topic)
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)

        def handle(_: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
            take(records, book.add, skipped)

        reading.read_ranges(consumer, {tp: (starts[tp], ends[tp]) for tp in tps}, handle)
    finally:
        clients.close_bounded(consumer.close, "the label reader")
    return book, skipped
