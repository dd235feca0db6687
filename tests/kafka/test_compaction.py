"""A stale writer and compaction, on Apache Kafka: an evicted member's late checkpoint never
makes a stream's restored state go back.

The state topic compacts aggressively (a segment a second, any dirty ratio). Under live input
a member is stopped (SIGSTOP) past its session timeout; the group moves its partitions to the
other member, which restores and writes their state. Half the streams then go quiet, and the
stopped member is continued (SIGCONT): before it learns it lost its partitions, it writes its
checkpoint, a stale state of streams the new owner has written since. The quiet streams are
written by nobody after that, so under one key per stream compaction would keep only the stale
record; the busy ones roll the segments that the cleaner compacts. Then the new owner is
SIGKILLed, a new member restores, and the quiet streams come back. Every stream's flags must
equal an uninterrupted run; a tail of the state topic shows the stale record landed after the
new owner's. Once in ``make test``, five times in ``make test-faults``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import pytest

from detector.kafka import clients, topics
from detector.stream.state import StateRecordError, decode_state
from detector.testing.harness import audit
from tests.support import (
    DetectorProcess,
    ScopedKafka,
    all_closed,
    covered,
    expected_flags,
    read_topic,
    uncovered,
    uniform_events,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: Compaction as soon as it can: segments roll every second, any dirty ratio is enough.
AGGRESSIVE = {"cleanup.policy": "compact", "segment.ms": "1000",
              "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
              "delete.retention.ms": "1000"}
STREAMS, PER_STREAM, RATE = 60, 450, 500.0  # 27,000 events, at least 54 s of input
FAST = {"DETECTOR_CHECKPOINT_INTERVAL_MS": "300"}


class Feed(threading.Thread):
    """Live input, each stream's events in order; the quiet streams (every other one) send
    nothing while ``quiet`` is set."""

    def __init__(self, kafka: ScopedKafka, records: list[tuple[bytes, bytes]]):
        super().__init__(daemon=True)
        self.kafka = kafka
        self.busy = [r for r in records if int(r[0].split(b"-")[1]) % 2]
        self.calm = [r for r in records if not int(r[0].split(b"-")[1]) % 2]
        self.quiet = threading.Event()

    def run(self) -> None:
        producer = clients.producer(self.kafka, linger_ms=5)
        started, sent = time.monotonic(), 0
        busy, calm = iter(self.busy), iter(self.calm)
        left = len(self.busy) + len(self.calm)
        while left:
            sources = [busy] if self.quiet.is_set() else [busy, calm]
            for source in sources:
                record = next(source, None)
                if record is not None:
                    producer.send(self.kafka.values, key=record[0], value=record[1])
                    left -= 1
                sent += 1
            time.sleep(max(0.0, started + sent / RATE - time.monotonic()))
        producer.flush()
        producer.close()


@dataclass
class Written:
    partition: int
    stream: bytes
    applied: int  # the input offset its state covers
    writer: int


class StateTail(threading.Thread):
    """Every state record as it lands (before compaction can remove any), in log order."""

    def __init__(self, kafka: ScopedKafka):
        super().__init__(daemon=True)
        self.kafka = kafka
        self.records: list[Written] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from kafka import TopicPartition

        consumer = clients.consumer(self.kafka, group_id=None, enable_auto_commit=False,
                                    fetch_max_wait_ms=50)
        tps = [TopicPartition(self.kafka.state, p) for p in range(6)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while not self.halt.is_set():
            for tp, recs in consumer.poll(timeout_ms=200).items():
                for r in recs:
                    try:
                        row, _, _ = decode_state(r.value)
                    except StateRecordError:
                        continue  # a tombstone or a model marker
                    self.records.append(Written(tp.partition, r.key[:-8],
                                                int(row["last_offset"]), int(row["writer"])))
        consumer.close(autocommit=False)

    def stale_after_newer(self) -> list[Written]:
        """Records that landed after a record of the same stream that covered more input."""
        best: dict[bytes, int] = {}
        stale = []
        for w in list(self.records):
            if w.applied < best.get(w.stream, -1):
                stale.append(w)
            best[w.stream] = max(best.get(w.stream, -1), w.applied)
        return stale


def owned(det: DetectorProcess) -> float:
    return det.metric("detector_assigned_partitions") or 0


def compaction_round(kafka: ScopedKafka, step, seed: int) -> int:
    """One round; the number of stale records that landed after newer ones."""
    records = uniform_events(STREAMS, PER_STREAM, seed=seed)
    want = expected_flags(step, records)
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6),
                                 topics.TopicSpec(kafka.state, 6, AGGRESSIVE)])
    tail = StateTail(kafka)
    tail.start()
    dets = [DetectorProcess(kafka, **FAST).start() for _ in range(2)]
    started = list(dets)
    feeder = Feed(kafka, records)
    try:
        with all_closed(started):
            wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two members ready")
            feeder.start()
            time.sleep(4)
            paused = max(dets, key=owned)
            owner = next(d for d in dets if d is not paused)
            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: owned(owner) == 6 and owner.healthz() == 200, 60,
                         what="the other member to own and serve every partition")
                time.sleep(2)  # it writes the moved streams' state under its own keys
                feeder.quiet.set()  # half the streams go quiet: nobody writes them again
                time.sleep(1)
            finally:
                os.kill(paused.proc.pid, signal.SIGCONT)  # its stale checkpoint lands now
            time.sleep(8)  # the busy streams roll segments; the cleaner compacts them
            owner.kill()  # the new owner dies; the rest of the input goes to the others
            dets.remove(owner)
            dets.append(DetectorProcess(kafka, **FAST).start())
            started.append(dets[-1])
            wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="the two restored")
            feeder.quiet.clear()  # the quiet streams come back
            feeder.join(180)
            wait_for(lambda: covered(kafka, kafka.flags, want), 180, every=1,
                     what=lambda: uncovered(kafka, kafka.flags, want))
    finally:
        tail.halt.set()
    result = audit(read_topic(kafka, kafka.flags, settle=2.0, timeout=60), want)
    stale = tail.stale_after_newer()
    print(f"round {seed}: {len(stale)} stale state records landed after newer ones "
          f"({len(tail.records)} state records); flags {result}")
    assert result.clean, result
    return len(stale)


def test_a_stale_checkpoint_after_the_new_owner_changes_no_flag(kafka, steps):
    assert compaction_round(kafka, steps("seed"), seed=1) > 0, \
        "the stopped member wrote no stale checkpoint after the new owner's"


@pytest.mark.faults
@pytest.mark.parametrize("round_no", range(2, 7))
def test_compaction_rounds(kafka, steps, round_no):
    assert compaction_round(kafka, steps("seed"), seed=round_no) > 0
