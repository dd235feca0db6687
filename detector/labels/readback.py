"""Late labels: the flag topics read back for events that have left the scorer's memory.

A label whose events may lie before the window (``window.Window``) waits here. One sweep
serves every label waiting: it reads the flag topics backwards in stretches, from the window's
start to a time found by offsets for times, each stretch twice as long as the one before
(1 min, 2, 4, ...), so a label an hour late costs about two hours of flags read once, however
many labels came with it. Each record of a waiting label's stream goes to the matcher.

A label is done when its events cannot lie further back: a time range once the read has
passed its start (less ``CLOCK_SLACK_S``: a flag record is written after its event); a range of
seqs or a verdict once a live flag of its stream at or before its first seq has been read.
It is too late (counted and reported, never dropped silently) when the read reaches
``lateness`` before the label was written, or the first record a topic still retains while
records before it have been deleted, without that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from detector.labels import reading
from detector.labels.codec import Label, RangeLabel
from detector.labels.matcher import Flag, decode_flag

log = logging.getLogger(__name__)

#: How much older than its flag record an event's own time may be (clocks, queues): a time
#: range is read back from its start less this.
CLOCK_SLACK_S = 300.0
#: The first stretch read back, doubled each time.
FIRST_STRETCH_S = 60.0


@dataclass
class Waiting:
    """A label waiting for a read-back, with what is known of it so far."""

    label: Label
    written_s: float  # its record's time
    found: bool = False  # seqs: a live flag of its stream at or before its first seq was read

    @property
    def first_seq(self) -> int | None:
        label = self.label
        if isinstance(label, RangeLabel):
            return None if label.by_time else int(label.start)
        return label.run_start_seq

    @property
    def needed_s(self) -> float | None:
        """A time range's start, less the slack; None for seqs (found by reading)."""
        label = self.label
        return label.start - CLOCK_SLACK_S if isinstance(label, RangeLabel) and \
            label.by_time else None


@dataclass
class Outcome:
    done: list[Waiting]
    too_late: list[Waiting]
    records: int


def sweep(consumer: KafkaConsumer, roles: dict[str, str], start: dict[TopicPartition, int],
          boundary_s: float, waiting: list[Waiting], lateness_s: float,
          offer: Callable[[str, Flag], object]) -> Outcome:
    """Read back below ``start`` (the window's) for every label ``waiting``; ``roles`` maps
    each flag topic to its role (live, candidate)."""
    tps = list(start)
    upper = dict(start)
    first = consumer.beginning_offsets(tps)
    out = Outcome([], [], 0)
    left = list(waiting)
    keys = {w.label.stream.encode() for w in left}
    stretch = FIRST_STRETCH_S

    def handle(tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        role = roles[tp.topic]
        for r in records:
            if r.key not in keys:
                continue
            flag = decode_flag(r.value)
            if flag is None:
                continue
            offer(role, flag)
            if role == "live":
                for w in left:
                    if w.label.stream == flag.stream and w.first_seq is not None \
                            and flag.seq <= w.first_seq:
                        w.found = True

    while left:
        floor = min(w.written_s - lateness_s for w in left)
        times = [w.needed_s for w in left]
        at = boundary_s - stretch
        if all(t is not None for t in times):
            at = min(t for t in times if t is not None)  # time ranges only: one stretch
        at = max(at, floor)
        lower = {tp: min(o, upper[tp]) for tp, o in reading.offsets_at(consumer, tps, at).items()}
        out.records += reading.read_ranges(consumer, {tp: (lower[tp], upper[tp]) for tp in tps},
                                           handle)
        at_first = [tp for tp in tps if lower[tp] <= first[tp]]
        truncated = any(first[tp] > 0 for tp in at_first)
        for w in list(left):
            needed = w.needed_s
            if w.found:
                verdict: list[Waiting] | None = out.done
            elif (needed is not None and at <= needed) or len(at_first) == len(tps):
                verdict = out.too_late if truncated else out.done
            else:
                verdict = out.too_late if at <= w.written_s - lateness_s else None
            if verdict is not None:
                left.remove(w)
                verdict.append(w)
        log.info("read the flag topics back to %s: %d record(s) so far, %d label(s) of %d "
                 "still waiting", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)),
                 out.records, len(left), len(waiting))
        upper = lower
        stretch *= 2
    if out.too_late:
        log.warning("%d label(s) too late: their events are no longer all in the flag topics "
                    "(retention), or lie more than --label-lateness before the label",
                    len(out.too_late))
    return out
