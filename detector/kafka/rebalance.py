"""This member's partitions: hand-over on revoke, state restore on assign, and recovery.

A rebalance moves partitions, and their streams' state moves with them through the state
topic: on revoke the partitions' state is written (``Checkpointer.persist``) and their streams
are forgotten; on assign the state topic's partitions of the same numbers are read back. A
recovery (after any failure of the loop) does what a restart does: forget memory and
everything unacknowledged, restore, seek to the committed offsets.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from detector.kafka import clients
from detector.kafka.checkpoint import Checkpointer
from detector.kafka.outbox import Outbox, OutputFailed
from detector.kafka.predecessors import MemberRecords, remove_dead
from detector.kafka.rollout import Rollout
from detector.ops.metrics import Metrics
from detector.settings.detector import DetectorSettings
from detector.stream import runs
from detector.stream.rebuild import rebuild
from detector.stream.runs import EndedRun
from detector.stream.state import (
    MODEL_MARKER_KEY,
    ModelMarker,
    StateRecordError,
    StreamStore,
    decode_state,
)

log = logging.getLogger(__name__)

STATE_RESTORE_TIMEOUT_S = 60.0

#: What the loop survives by backing off and recovering (the broker gone, a send not acked).
TRANSIENT = (KafkaError, OutputFailed, clients.KafkaUnavailable)


class Membership(ConsumerRebalanceListener):
    """The rebalance listener, the restore and the recovery of one detector.

    ``needs_recovery`` is set by whatever failed (here or in the loop); the loop calls
    ``recover`` before its next poll. ``positions`` is the loop's dict of input positions,
    shared (changed in place, never replaced). A restore gives up once ``stop`` is set: with
    the broker gone it would otherwise hold a shutdown for its whole timeout.
    """

    def __init__(self, settings: DetectorSettings, rollout: Rollout, store: StreamStore,
                 checkpoints: Checkpointer, metrics: Metrics,
                 positions: dict[TopicPartition, int], stop: threading.Event):
        self.s = settings
        self.stop = stop
        self.rollout = rollout
        self.store = store
        self.checkpoints = checkpoints
        self.metrics = metrics
        self.positions = positions
        self.needs_recovery = False
        self.joined = False  # a member of the group with an assignment (maybe empty)
        #: Fired runs a restore ended (state another model wrote), for the loop to resolve.
        self.ended_runs: list[tuple[list[EndedRun], ModelMarker]] = []
        # static members replace themselves; dynamic ones record their id for a restart
        self.records = (None if settings.group_instance_id
                        else MemberRecords.of(settings.member_dir, settings.group_id))
        self.consumer: KafkaConsumer
        self.outbox: Outbox
        self.restorer: KafkaConsumer

    def attach(self, consumer: KafkaConsumer, outbox: Outbox) -> None:
        """Start reading the state topic and listening to ``consumer``'s rebalances; before
        the first join, remove this host's dead members of the group (``predecessors``)."""
        self.consumer, self.outbox = consumer, outbox
        if self.records:
            remove_dead(self.s.kafka, self.s.group_id, self.records)
        self.restorer = clients.consumer(self.s.kafka, group_id=None, enable_auto_commit=False,
                                          fetch_max_wait_ms=20)
        self.subscribe(consumer)

    def subscribe(self, consumer: KafkaConsumer) -> None:
        """Listen to ``consumer``'s rebalances from now on (a new consumer after a rejoin)."""
        self.consumer = consumer
        consumer.subscribe([self.s.input_topic], listener=self)

    # --- the listener (kafka-python runs it on the consumer's I/O thread, the loop waiting) -

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Hand the partitions over: their state is written, then their streams forgotten.

        A commit cannot be made here; none is needed: the next owner restores the state with
        the offsets it has applied and skips what it covers.
        """
        if revoked:
            log.info("partitions %s revoked: the group is rebalancing",
                     sorted(tp.partition for tp in revoked))
        try:
            if not self.needs_recovery:
                self.checkpoints.persist(self.outbox, {tp.partition for tp in revoked})
        except TRANSIENT as exc:
            log.warning("state write on revoke failed (%s); the next owner replays", exc)
        self._drop(revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted: another member may own these already, so write nothing for them."""
        log.warning("partitions %s lost: this member was dropped from the group",
                    sorted(tp.partition for tp in lost))
        self._drop(lost)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.joined = True
        if self.records:
            self.records.assigned(self.consumer)
        try:
            self.restore({tp.partition for tp in assigned})
        except TRANSIENT as exc:
            log.warning("state restore failed (%s); recovering", exc)
            self.needs_recovery = True
        log.info("assigned partitions %s (%d streams in memory)",
                 sorted(tp.partition for tp in assigned), len(self.store))

    def _drop(self, tps: set[TopicPartition]) -> None:
        self.joined = False
        parts = {tp.partition for tp in tps}
        self.store.drop_partitions(parts)
        self.rollout.forget(parts)
        for tp in tps:
            self.positions.pop(tp, None)
        self.metrics.forget_partitions(parts)
        self.metrics.active_streams.set(len(self.store))

    # --- restore and recovery ---------------------------------------------------------------

    def restore(self, partitions: set[int]) -> None:
        """Read the state topic's partitions back; per stream the highest applied offset wins.

        Taking the highest offset rather than the last record makes a stale checkpoint from
        an evicted member (a zombie that did not know it had lost the partition) harmless.
        Each partition is served by the model its last marker names (``rollout.assign``); a
        stream whose LSTM state another model wrote gets its state rebuilt for this one.
        """
        if not partitions:
            return
        started = time.perf_counter()
        best, markers, rejected = self._read_state(partitions)
        models = {p: self.rollout.assign(p, markers.get(p)) for p in partitions}
        unmarked = {p: self.rollout.marker(step) for p, (step, missing) in models.items()
                    if missing}
        if unmarked:
            self.checkpoints.write_markers(self.outbox, unmarked)
        keys = list(best)
        rows = [row for row, _, _ in best.values()]
        fits = [lstm if fp == models[int(row["partition"])][0].fingerprint else None
                for row, lstm, fp in best.values()]
        self.store.ensure_state_size(max(step.state_size for step, _ in models.values()))
        self.store.put(keys, rows, fits)
        slots = self.store.index.find(keys, self.store.keys) if keys else np.zeros(0, np.int64)
        stale = np.array([f is None for f in fits], bool)
        taken_over = []
        for p, (step, _) in models.items():
            mine = slots[stale & (self.store.partition[slots] == p)]
            if len(mine):
                rebuild(self.store, mine, step)
                taken_over.append(self._runs_end(p, mine, markers.get(p)))
        if taken_over:
            log.info("state another model wrote, restored under %s v%d: %s; their runs start "
                     "afresh", self.rollout.name, self.rollout.live.version if self.rollout.live
                     else 0, "; ".join(taken_over))
        if rejected:
            log.warning("skipped %d state records that are not ours or are damaged", rejected)
        self.metrics.restore_seconds.observe(time.perf_counter() - started)
        self.metrics.active_streams.set(len(self.store))

    def _runs_end(self, partition: int, slots: np.ndarray, writer: ModelMarker | None) -> str:
        """Streams whose state another model wrote: their runs start afresh; the fired ones
        are resolved under the writer (the loop sends them, ``ended_runs``). What happened,
        for the restore's one log line."""
        ended = runs.end(self.store, slots)
        if writer is not None and ended:
            self.ended_runs.append((ended, writer))
        by = f"{writer.name} v{writer.version}" if writer else "an unnamed model"
        return (f"partition {partition}, {len(slots)} streams written by {by}"
                + (f", {len(ended)} fired run(s) resolved under it" if writer and ended else ""))

    def _read_state(self, partitions: set[int]
                    ) -> tuple[dict[bytes, tuple[np.void, np.ndarray, bytes]],
                               dict[int, ModelMarker], int]:
        """Every stream's state record with the highest applied offset, each partition's last
        model marker, and how many records were rejected."""
        tps = [TopicPartition(self.s.state_topic, p) for p in sorted(partitions)]
        self.restorer.assign(tps)
        self.restorer.seek_to_beginning(*tps)
        # The end is the high watermark of a fetch, not ListOffsets: the local broker answers
        # ListOffsets(latest) with the start of the last batch + 1, short of the real end.
        remaining = set(tps)
        best: dict[bytes, tuple[np.void, np.ndarray, bytes]] = {}
        markers: dict[int, ModelMarker] = {}
        rejected = 0
        deadline = time.monotonic() + STATE_RESTORE_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise OutputFailed(f"state restore did not finish in {STATE_RESTORE_TIMEOUT_S} s")
            if self.stop.is_set():
                raise OutputFailed("state restore abandoned: stopping")
            for tp, recs in self.restorer.poll(timeout_ms=200, max_records=50_000).items():
                for r in recs:
                    if r.key == MODEL_MARKER_KEY:
                        marker = ModelMarker.decode(r.value)
                        if marker is not None:
                            markers[tp.partition] = marker
                        continue
                    if r.value is None:  # a tombstone: the stream was forgotten (idle)
                        best.pop(r.key, None)
                        continue
                    try:
                        row, lstm, fingerprint = decode_state(r.value)
                    except StateRecordError as exc:
                        rejected += 1
                        log.debug("skipping state record at %s:%d: %s", tp, r.offset, exc)
                        continue
                    old = best.get(r.key)
                    if old is None or row["last_offset"] >= old[0]["last_offset"]:
                        best[r.key] = (row, lstm, fingerprint)
            for tp in list(remaining):
                high = self.restorer.highwater(tp)
                if high is not None and self.restorer.position(tp) >= high:
                    remaining.discard(tp)
        best.pop(None, None)  # type: ignore[call-overload]
        self.restorer.unsubscribe()
        return best, markers, rejected

    def recover(self) -> None:
        """Do what a restart does: forget memory and everything unacknowledged, restore state,
        seek to the committed offsets."""
        self.checkpoints.reset()
        self.outbox.reset()
        self.store.clear()
        self.positions.clear()
        assigned = self.consumer.assignment()
        self.restore({tp.partition for tp in assigned})
        for tp in assigned:
            committed = self.consumer.committed(tp, timeout_ms=10_000)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        self.needs_recovery = False
        log.info("recovered: %d streams restored, resuming from committed offsets",
                 len(self.store))

    def close(self) -> None:
        """After the consumer's close (it left the group): stop the reader, drop the record."""
        clients.close_bounded(self.restorer.close, "the state reader")
        if self.records:
            self.records.forget_own()
