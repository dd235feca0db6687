"""The input topic's retained history from a time on, decoded as ``run`` decodes it.

Read outside the detectors' group (nothing committed), every partition from the first record
at or after the start time to the end the topic had when the read began. Records the input
settings cannot decode are counted (they would be dead letters), never events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import nan

import numpy as np
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detector.kafka import clients
from detector.labels import reading
from detector.settings.input import InputSettings
from detector.settings.kafka import KafkaSettings
from detector.stream.codec import BadInput
from detector.stream.engine import Batch
from detector.stream.mapping import InputMapping


@dataclass
class Events:
    """Decoded events of one stretch of records: a ``Batch`` and each event's record time."""

    names: list[str]
    batch: Batch
    record_s: np.ndarray  # float64: the input record's Kafka timestamp, epoch seconds


@dataclass
class History:
    """What a read covered."""

    topic: str
    since_s: float  # the start time asked for, epoch seconds
    records: int = 0
    bad_records: int = 0
    events: int = 0
    first_s: float | None = None  # the first and last record's Kafka timestamp read
    last_s: float | None = None
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition: [from, to)

    def time_range(self) -> dict:
        """For a model card: the topic and the time range of the records read."""
        return {"topic": self.topic, "since": self.since_s, "from": self.first_s,
                "to": self.last_s, "records": self.records, "bad_records": self.bad_records,
                "events": self.events}


def decode(mapping: InputMapping, records: Sequence[ConsumerRecord], partition: int
           ) -> tuple[Events, int]:
    """The events of a stretch of one partition's records, in order; and how many records
    did not decode."""
    names: list[str] = []
    cols: tuple[list, ...] = ([], [], [], [], [], [])  # seq, value, ts, epoch, offset, record
    bad = 0
    for r in records:
        got = mapping.decode(r.key, r.value, r.timestamp)
        if type(got) is BadInput:
            bad += 1
            continue
        for e in got:
            names.append(e.stream)
            for col, x in zip(cols, (e.seq, e.value, nan if e.ts is None else e.ts, e.epoch,
                                     r.offset, r.timestamp / 1000), strict=True):
                col.append(x)
    seq, value, ts, epoch, offset, record_s = cols
    n = len(names)
    batch = Batch.of(list(names), value, seq=seq, partition=np.full(n, partition, np.int32),
                     offset=offset, epoch=epoch, ts=ts)
    return Events(names, batch, np.asarray(record_s, np.float64)), bad


def read(kafka: KafkaSettings, topic: str, mapping: InputSettings, since_s: float,
         handle: Callable[[Events], None], progress: Callable[[int, int], None]
         ) -> History:
    """``handle`` each stretch of events from ``since_s`` (a duration back from now) to the
    end; ``progress(records read, records in all)`` as it goes."""
    start = time.time() - since_s
    history = History(topic, start)
    decoder = InputMapping(mapping)
    consumer = reading.reader(kafka)
    try:
        tps = reading.partitions(kafka, topic)
        firsts, ends = reading.offsets_at(consumer, tps, start), consumer.end_offsets(tps)
        history.offsets = {tp.partition: (firsts[tp], ends[tp]) for tp in tps}
        total = sum(max(0, ends[tp] - firsts[tp]) for tp in tps)
        progress(0, total)

        def take(tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
            events, bad = decode(decoder, records, tp.partition)
            history.records += len(records)
            history.bad_records += bad
            if not events.names:
                return
            history.events += len(events.names)
            first, last = float(events.record_s.min()), float(events.record_s.max())
            history.first_s = first if history.first_s is None else min(first, history.first_s)
            history.last_s = last if history.last_s is None else max(last, history.last_s)
            handle(events)

        reading.read_ranges(consumer, {tp: (firsts[tp], ends[tp]) for tp in tps}, take,
                            lambda n: progress(n, total))
    finally:
        clients.close_bounded(consumer.close, "the history reader")
    return history
