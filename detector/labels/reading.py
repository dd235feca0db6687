"""Reading topics outside any consumer group: stretches of offsets, and offsets for times.

Every reader here is assigned its partitions (no group, no commits) and reads committed records
only (``read_committed``), so flags or labels written in transactions that were aborted never
count. A stretch is read from its first offset up to (not including) its end; a read that
makes no progress for ``STALL_S`` is a broker that cannot be used (KafkaUnavailable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detector.kafka import clients, topics
from detector.settings.kafka import KafkaSettings

#: Longest a read may go without a record while the stretch is not read to its end.
STALL_S = 30.0

Ranges = dict[TopicPartition, tuple[int, int]]
Handle = Callable[[TopicPartition, Sequence[ConsumerRecord]], None]


def reader(kafka: KafkaSettings) -> KafkaConsumer:
    """A consumer outside any group that commits nothing and reads committed records only."""
    return clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                            isolation_level="read_committed", fetch_max_wait_ms=50,
                            max_partition_fetch_bytes=8 << 20)


def partitions(kafka: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``; KafkaUnavailable when it does not exist."""
    n = topics.partition_count(kafka, topic)
    if not n:
        raise clients.KafkaUnavailable(f"topic {topic} does not exist on "
                                       f"{kafka.bootstrap_servers}")
    return [TopicPartition(topic, p) for p in range(n)]


def offsets_at(consumer: KafkaConsumer, tps: list[TopicPartition], time_s: float
               ) -> dict[TopicPartition, int]:
    """Per partition, the first offset whose record is at or after ``time_s`` (epoch
    seconds); the end where every record is older."""
    found = consumer.offsets_for_times({tp: max(0, int(time_s * 1000)) for tp in tps})
    ends = consumer.end_offsets(tps)
    return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}


def read_ranges(consumer: KafkaConsumer, ranges: Ranges, handle: Handle,
                progress: Callable[[int], None] = lambda _: None) -> int:
    """Every record of each ``[first, end)`` stretch, in offset order per partition, to
    ``handle``; the records read. ``progress`` gets the count read so far after each poll."""
    todo = {tp: (lo, hi) for tp, (lo, hi) in ranges.items() if lo < hi}
    if not todo:
        return 0
    consumer.assign(list(todo))
    for tp, (lo, _) in todo.items():
        consumer.seek(tp, lo)
    read, last_new = 0, time.monotonic()
    while todo:
        got = consumer.poll(timeout_ms=200, max_records=20_000)
        for tp, records in got.items():
            if tp not in todo:
                continue
            hi = todo[tp][1]
            inside = [r for r in records if r.offset < hi] if records[-1].offset >= hi \
                else records
            if inside:
                handle(tp, inside)
                read += len(inside)
        for tp in list(todo):
            # Transaction markers take offsets too: the position tells when a stretch is done.
            if consumer.position(tp) >= todo[tp][1]:
                del todo[tp]
                consumer.pause(tp)
        if got:
            last_new = time.monotonic()
            progress(read)
        elif time.monotonic() - last_new > STALL_S:
            raise clients.KafkaUnavailable(
                f"reading {', '.join(sorted({tp.topic for tp in todo}))} made no progress for "
                f"{STALL_S:g} s")
    consumer.assign([])
    return read
