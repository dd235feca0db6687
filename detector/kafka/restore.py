"""Reading partitions of the state topic back between the loop's polls, so that the member
keeps its place in the group however long the state log is.

A restore inside ``on_partitions_assigned`` runs on the consumer's I/O thread, and no
heartbeat goes out meanwhile: a state log of a few hundred thousand records held the member
past its session timeout, it was expelled, and the restore started over, in a loop. Instead,
the assigned partitions are paused and the loop reads their state ``STEP_S`` at a time between
polls (``Membership`` drives it); a partition serves once its state is in. A restore fails
(the loop recovers) only when it makes no progress for ``PROGRESS_TIMEOUT_S``.

The end of a partition: its high watermark from a fetch (the bundled Tansu answers
ListOffsets short of its log). The reader is read_committed: where the state topic is written
in transactions, a transaction still open (a member killed in it) holds the restore until it
ends, committed or aborted (at most the transaction timeout). Stopping at the last stable
offset instead could miss state that such a transaction commits after the restore, while the
committed input offsets (fetched stable) already include it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from detector.kafka import clients
from detector.kafka.outbox import OutputFailed
from detector.settings.kafka import KafkaSettings
from detector.stream.state_restore import StateMerge

log = logging.getLogger(__name__)

#: Longest one step of a restore keeps the loop from its poll.
STEP_S = 0.2
#: A restore that reads nothing new for this long, short of its end, has failed.
PROGRESS_TIMEOUT_S = 60.0
#: Records taken per look at the clock.
CHUNK = 20_000


@dataclass
class _Progress:
    tp: TopicPartition
    started: float
    last_progress: float
    records: int = 0


class StateReader:
    """One consumer outside the group reading state partitions from their start."""

    def __init__(self, kafka: KafkaSettings, topic: str, merge: StateMerge,
                 stop: threading.Event):
        self.topic = topic
        self.merge = merge
        self.stop = stop
        self.pending: dict[int, _Progress] = {}
        self.consumer: KafkaConsumer = clients.consumer(
            kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20,
            isolation_level="read_committed", max_partition_fetch_bytes=8 << 20)

    @property
    def restoring(self) -> set[int]:
        return set(self.pending)

    def records_read(self) -> int:
        return sum(p.records for p in self.pending.values())

    def add(self, partitions: set[int]) -> None:
        """Start reading these partitions from their first record."""
        new = [TopicPartition(self.topic, p) for p in sorted(partitions - set(self.pending))]
        if not new:
            return
        now = time.monotonic()
        for tp in new:
            self.merge.forget(tp.partition)
            self.pending[tp.partition] = _Progress(tp, now, now)
        self.consumer.assign([p.tp for p in self.pending.values()])
        self.consumer.seek_to_beginning(*new)

    def cancel(self, partitions: set[int]) -> None:
        """Stop reading these (revoked before their restore finished)."""
        for p in partitions & set(self.pending):
            del self.pending[p]
            self.merge.forget(p)
        self.consumer.assign([p.tp for p in self.pending.values()])

    def step(self, budget_s: float = STEP_S) -> set[int]:
        """Read for at most ``budget_s``; the partitions whose state is now all in."""
        if not self.pending:
            return set()
        if self.stop.is_set():
            raise OutputFailed("state restore abandoned: stopping")
        deadline = time.monotonic() + budget_s
        done: set[int] = set()
        while self.pending.keys() - done:
            left = deadline - time.monotonic()
            got = self.consumer.poll(timeout_ms=int(max(0.0, min(left, 0.05)) * 1000),
                                     max_records=CHUNK)
            now = time.monotonic()
            for tp, recs in got.items():
                progress = self.pending.get(tp.partition)
                if progress is None:
                    continue
                self.merge.apply(tp.partition, [(r.key, r.value) for r in recs])
                progress.records += len(recs)
                progress.last_progress = now
            done |= {p for p, progress in self.pending.items() if self._at_end(progress)}
            if not got or time.monotonic() >= deadline:
                break
        if got:
            for progress in self.pending.values():  # one reader: progress is shared
                progress.last_progress = now
        for p in done:
            progress = self.pending.pop(p)
            log.info("state of partition %d restored: %d records in %.1f s", p,
                     progress.records, time.monotonic() - progress.started)
        self._check_progress()
        if done:
            self.consumer.assign([p.tp for p in self.pending.values()])
        return done

    def _at_end(self, progress: _Progress) -> bool:
        position = clients.position(self.consumer, progress.tp)
        if position is None:
            return False
        high = self.consumer.highwater(progress.tp)
        return high is not None and position >= high

    def _check_progress(self) -> None:
        now = time.monotonic()
        for p, progress in self.pending.items():
            if now - progress.last_progress > PROGRESS_TIMEOUT_S:
                raise OutputFailed(f"state restore of partition {p} read nothing for "
                                   f"{PROGRESS_TIMEOUT_S:g} s ({progress.records} records so "
                                   "far)")

    def close(self) -> None:
        clients.close_bounded(self.consumer.close, "the state reader")
