"""``score`` on Apache Kafka: labels that come while their events are in memory, after they
left it, hours after them, by time, and after the flags topic lost them; its figures are an
offline join of what the topics hold, duplicates counted once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from kafka import TopicPartition

from detector.kafka import clients, topics
from detector.labels import topic
from detector.labels.codec import Label, RangeLabel, Verdict
from detector.labels.figures import Counts
from detector.labels.scorer import Scorer
from detector.ops.score_metrics import ScoreMetrics
from detector.settings.labels import LabelTopicSettings, ScoreSettings
from detector.stream.codec import encode_flag, json_string, model_fields
from tests.labels.joined import from_topics
from tests.support import read_topic, wait_for

pytestmark = pytest.mark.broker

STREAMS = {"a": 0, "b": 1, "c": 2}  # the flags' partition, as the detector's input had them
HOUR_MS = 3_600_000


def figures(metrics: ScoreMetrics) -> dict[tuple[str, str, str], Counts]:
    """``detector_label_events_total`` as the endpoint serves it, per (name, version, role)."""
    out: dict[tuple[str, str, str], Counts] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "detector_label_events_total":
                lab = sample.labels
                c = out.setdefault((lab["name"], lab["version"], lab["role"]), Counts())
                setattr(c, lab["outcome"], int(sample.value))
    return out


def write_flags(kafka, seqs: range, at_ms: int, flags: dict, again: bool = False) -> None:
    """Flag records of ``dip`` v1 for every stream, as the detector writes them, stamped from
    ``at_ms`` on; the event's own time is the stamp."""
    producer = clients.producer(kafka, linger_ms=5)
    fields = model_fields("dip", 1, "dip")
    for i, seq in enumerate(seqs):
        for stream, p in STREAMS.items():
            ms = at_ms + 10 * i
            value = flags.setdefault((stream, seq), int(np.random.default_rng(seq).random() < .4))
            record = encode_flag(json_string(stream), seq, 0.5, value, 0.9, 1, None, fields, p,
                                 seq, ms / 1000, repr(ms / 1000))
            producer.send(kafka.flags, key=stream.encode(), value=record, partition=p,
                          timestamp_ms=ms + (1 if again else 0))
    producer.flush()
    producer.close()


class Running:
    """A scorer in this process's thread, stepping until stopped."""

    def __init__(self, settings: ScoreSettings):
        self.stop = threading.Event()
        self.scorer = Scorer(settings, self.stop)
        self.scorer.connect()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.scorer.tick()

    def settled(self, labels: int) -> bool:
        m = self.scorer.metrics
        return (m.value("detector_label_records_total") >= labels
                and not self.scorer.waiting and self.scorer.not_ready_because() == "")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.scorer.close()


def test_late_labels_are_scored_or_counted_as_too_late(kafka):
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.flags, 3)])
    labels_topic = LabelTopicSettings(labels_topic=kafka.name("detector-labels"))
    flags: dict = {}
    old = int(time.time() * 1000) - 3 * HOUR_MS
    write_flags(kafka, range(200), old, flags)  # three hours ago, before the scorer started
    write_flags(kafka, range(100, 150), old, flags, again=True)  # identical duplicates
    scorer = Running(ScoreSettings(labels=labels_topic, output_topic=kafka.flags,
                                   window_flags=100, metrics_port=0, kafka=kafka))
    try:
        now = int(time.time() * 1000)
        write_flags(kafka, range(200, 400), now, flags)  # the last 100 stay in memory
        wait_for(lambda: scorer.scorer.metrics.value("detector_score_flag_records_total",
                                                     {"role": "live"}) >= 600, 30,
                 what="the new flag records")
        t = lambda seq: (now + 10 * (seq - 200)) / 1000  # noqa: E731 - an event's own time
        labels: list[Label] = [
            RangeLabel("in-memory", "a", "pattern", 380, 399),
            RangeLabel("hours-late", "a", "no_pattern", 10, 30),
            RangeLabel("duplicated", "a", "pattern", 95, 130),
            RangeLabel("left-memory", "b", "pattern", 250, 260),
            RangeLabel("by-time", "c", "pattern", t(300), t(320), by_time=True),
            RangeLabel("unlabeled-soon", "c", "ignore", 301, 302),
            Verdict("verdict", "c", next(s for s in range(200, 400) if flags[("c", s)]),
                    "right"),
        ]
        topic.write(kafka, labels_topic, labels)
        wait_for(lambda: scorer.settled(len(labels)), 60, what="the labels to settle")
        assert scorer.scorer.metrics.value("detector_label_readbacks_total") >= 1
        assert scorer.scorer.metrics.value("detector_labels_too_late") == 0

        def expected(flag_records: int, label_records: int) -> dict:
            return from_topics({"live": read_topic(kafka, kafka.flags, expect=flag_records)},
                               read_topic(kafka, labels_topic.labels_topic,
                                          expect=label_records))

        want = expected(3 * (400 + 50), len(labels))
        assert figures(scorer.scorer.metrics) == want
        assert want[("dip", "1", "live")].events == 20 + 21 + 36 + 11 + (21 - 2)
        assert scorer.scorer.metrics.value("detector_label_runs_total", {
            "name": "dip", "version": "1", "verdict": "right"}) == 1

        # The flags topic loses b's first 100 records (retention, as DeleteRecords does it):
        # a label of them is counted as too late, the others keep their figures.
        admin = clients.admin(kafka)
        admin.delete_records({TopicPartition(kafka.flags, STREAMS["b"]): 100})
        admin.close()
        topic.write(kafka, labels_topic, [RangeLabel("gone", "b", "pattern", 5, 15)])
        wait_for(lambda: scorer.settled(len(labels) + 1), 60, what="the last label")
        assert scorer.scorer.metrics.value("detector_labels_too_late") == 1
        assert figures(scorer.scorer.metrics) == expected(3 * 450 - 100, len(labels) + 1) \
            == want
        assert scorer.scorer.report()["labels_too_late"] == 1
    finally:
        scorer.close()
