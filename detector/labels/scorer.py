"""``python -m detector score``: labels joined with the live model's and the candidate's flags.

Outside any consumer group, it reads the label topic from its start and follows it, and
follows the flag topics (the live model's, the candidate's) from their end: each new flag
record whose stream has labels goes to the join (``matcher.Matcher``), and every flag record
goes through the window (``window.Window``). A label finds its events in the window, or, for
events read before it (or before the scorer started), by a read-back of the flag topics from
the label's time (``readback``). So the figures are rebuilt from the topics at every start;
nothing is stored. Streams need no co-partitioning: the flag topics are read whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from detector.kafka import clients, topics
from detector.labels import readback, reading, topic
from detector.labels.book import Position
from detector.labels.codec import Label
from detector.labels.figures import OUTCOMES
from detector.labels.matcher import Matcher, decode_flag, report
from detector.labels.readback import Waiting
from detector.labels.window import Window
from detector.ops.score_metrics import ScoreMetrics
from detector.settings.labels import ScoreSettings

log = logging.getLogger(__name__)

#: How often a missing flag topic is looked for again, and said so in the log.
TOPIC_WAIT_S = 5.0
#: Label records taken per step; a step that took this many leaves its read-back to a later
#: one, so that labels arriving in bulk (a CSV import, a restart) share one read-back.
LABELS_PER_STEP = 50_000


class Scorer:
    def __init__(self, settings: ScoreSettings, stop: threading.Event | None = None):
        self.s = settings
        self.stop = stop or threading.Event()
        self.matcher = Matcher()
        self.metrics = ScoreMetrics(self._events, self._runs)
        self._snapshot: tuple[dict, dict] = ({}, {})
        self.roles = {settings.output_topic: "live"}
        if settings.candidate_topic:
            self.roles[settings.candidate_topic] = "candidate"
        self.waiting: list[Waiting] = []
        self.skipped = topic.Skipped()
        self.error = ""  # the last failure, for /healthz ("" while all is well)
        self._connected = False

    # --- set-up -------------------------------------------------------------------------------

    def connect(self, wait: bool = True) -> None:
        """Create the label topic if missing, find the flag topics (``wait``: until the detector
        has created them; else KafkaUnavailable), and start reading: labels from their start,
        flags from their end (older ones by read-back)."""
        kafka = self.s.kafka
        flag_tps = [tp for t in self.roles
                    for tp in (self._wait_for(t) if wait else reading.partitions(kafka, t))]
        topic.ensure(kafka, self.s.labels)
        self.labels = reading.reader(kafka)
        label_tps = reading.partitions(kafka, self.s.labels.labels_topic)
        self.labels.assign(label_tps)
        self.labels.seek_to_beginning(*label_tps)
        self.label_end = self.labels.end_offsets(label_tps)
        self.flags = reading.reader(kafka)
        self.flags.assign(flag_tps)
        self.flags_end = self.flags.end_offsets(flag_tps)
        for tp, end in self.flags_end.items():
            self.flags.seek(tp, end)
        self.back: KafkaConsumer = reading.reader(kafka)
        self.window = Window(self.s.window_flags, self.flags_end, int(time.time() * 1000))
        self._connected = True

    def _wait_for(self, name: str) -> list[TopicPartition]:
        while not self.stop.is_set():
            if topics.partition_count(self.s.kafka, name):
                return reading.partitions(self.s.kafka, name)
            log.info("waiting for topic %s (the detector creates it)", name)
            self.stop.wait(TOPIC_WAIT_S)
        return []

    # --- the loop -----------------------------------------------------------------------------

    def tick(self) -> None:
        """One step; a read that fails is logged, shown on /healthz and tried again."""
        try:
            self.step()
            self.error = ""
        except (KafkaError, clients.KafkaUnavailable) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("reading failed (%s); trying again in 2 s", self.error)
            self.stop.wait(2.0)

    def step(self, timeout_ms: int = 200) -> None:
        """New labels (found in the window or read back), then new flag records."""
        fresh: list[tuple[Label, int]] = []

        def apply(label: Label, position: Position) -> None:
            if self.matcher.add_label(label, position):
                fresh.append((label, position[0]))

        before = Counter(self.skipped.reasons)
        read = 0
        for records in self.labels.poll(timeout_ms=0, max_records=LABELS_PER_STEP).values():
            read += len(records)
            topic.take(records, apply, self.skipped)
        self.matcher.settle()
        if fresh:
            self._place(fresh)
        if self.waiting and read < LABELS_PER_STEP:
            self._read_back()
        for tp, records in self.flags.poll(timeout_ms=timeout_ms, max_records=20_000).items():
            self._flags(tp, records)
        self._publish()
        # Counted once their figures are published, read-backs included: whoever sees the
        # count sees the figures of those labels.
        self.metrics.label_records.inc(read)
        for reason, n in (self.skipped.reasons - before).items():
            self.metrics.skipped.labels(reason).inc(n)

    def _flags(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        role = self.roles[tp.topic]
        self.metrics.flag_records.labels(role).inc(len(records))
        keys = self.matcher.book.keys
        for r in records:
            if r.key in keys:
                flag = decode_flag(r.value)
                if flag is not None:
                    self.matcher.offer(role, flag)
        self.window.add(tp, role, records)

    def _place(self, fresh: list[tuple[Label, int]]) -> None:
        """New labels: their events in the window now; a read-back for those whose events
        may lie before it."""
        keys = {label.stream.encode() for label, _ in fresh}
        earliest: dict[str, int] = {}  # per stream, the lowest seq of a live flag held
        for role, value in self.window.find(keys):
            flag = decode_flag(value)
            if flag is None:
                continue
            self.matcher.offer(role, flag)
            if role == "live":
                earliest[flag.stream] = min(flag.seq, earliest.get(flag.stream, flag.seq))
        held_from = self.window.boundary_ms / 1000
        for label, written_ms in fresh:
            w = Waiting(label, written_ms / 1000)
            needed, first = w.needed_s, w.first_seq
            held = (needed > held_from if needed is not None
                    else first is not None and earliest.get(label.stream, first + 1) <= first)
            if not held:
                self.waiting.append(w)

    def _read_back(self) -> None:
        out = readback.sweep(self.back, self.roles, self.window.start,
                             self.window.boundary_ms / 1000, self.waiting, self.s.lateness_s,
                             self.matcher.offer)
        self.metrics.readbacks.inc()
        self.metrics.readback_records.inc(out.records)
        for w in out.too_late:
            if self.matcher.book.get(w.label.id) is w.label:  # not replaced meanwhile
                self.matcher.too_late.add(w.label.id)
        self.waiting = []

    # --- figures ------------------------------------------------------------------------------

    def _publish(self) -> None:
        """Hand the figures to the metrics endpoint (another thread) as a snapshot."""
        m = self.matcher
        events = {(*key, outcome): getattr(counts, outcome)  # every outcome, 0 too
                  for key, counts in m.figures().items() for outcome in OUTCOMES}
        runs = dict(m.verdicts())
        self._snapshot = (events, runs)
        for kind, n in m.book.kinds.items():
            self.metrics.labels.labels(kind).set(n)
        self.metrics.too_late.set(len(m.too_late))
        self.metrics.waiting.set(len(self.waiting))
        self.metrics.kept.set(m.kept())
        self.metrics.ready.set(0 if self.not_ready_because() else 1)

    def _events(self) -> Iterable[tuple[tuple[str, ...], int]]:
        return self._snapshot[0].items()

    def _runs(self) -> Iterable[tuple[tuple[str, ...], int]]:
        return self._snapshot[1].items()

    def not_ready_because(self) -> str:
        if not self._connected:
            return "connecting"
        if self.error:
            return f"reading failed: {self.error}"
        return f"{len(self.waiting)} label(s) wait for a read-back" if self.waiting else ""

    def caught_up(self) -> bool:
        """Every label that was there at the start is taken in and none waits for a read-back
        (the flags from before the start are read back for them)."""
        return (all(self.labels.position(tp) >= end for tp, end in self.label_end.items())
                and not self.waiting)

    def report(self) -> dict:
        return report(self.matcher, len(self.waiting)) | {
            "label_records_skipped": self.skipped.total}

    def close(self) -> None:
        for consumer in (getattr(self, name, None) for name in ("labels", "flags", "back")):
            if consumer is not None:
                clients.close_bounded(consumer.close, "a scorer reader")

