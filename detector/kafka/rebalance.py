"""This member's partitions: hand-over on revoke, state restore on assign, and recovery.

A rebalance moves partitions, and their streams' state moves with them through the state
topic: on revoke the partitions' state is written (``Checkpointer.persist``) and their streams
are forgotten; on assign the partitions are paused and the state topic's partitions of the
same numbers are read back between the loop's polls (``restore.StateReader``, merged by
``state_restore.StateMerge``); a partition serves once its state is in, under a writer token
of its own (``state_keys``) and a model marker of a new epoch. A recovery (after any failure
of the loop) does what a restart does: forget memory and everything unacknowledged, restore,
seek to the committed offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from detector.kafka import clients
from detector.kafka.checkpoint import Checkpointer
from detector.kafka.outbox import Outbox, OutputFailed
from detector.kafka.predecessors import MemberRecords, remove_dead
from detector.kafka.restore import StateReader
from detector.kafka.rollout import Rollout
from detector.ops.metrics import Metrics
from detector.settings.detector import DetectorSettings
from detector.stream import runs
from detector.stream.rebuild import rebuild
from detector.stream.runs import EndedRun
from detector.stream.state import StreamStore
from detector.stream.state_keys import ModelMarker, marker_key, new_writer
from detector.stream.state_restore import StateMerge

log = logging.getLogger(__name__)

#: What the loop survives by backing off and recovering (the broker gone, a send not acked).
TRANSIENT = (KafkaError, OutputFailed, clients.KafkaUnavailable)


class Membership(ConsumerRebalanceListener):
    """The rebalance listener, the restore and the recovery of one detector.

    ``needs_recovery`` is set by whatever failed (here or in the loop); the loop calls
    ``recover`` before its next poll, and ``advance`` between polls (the restore's steps).
    ``positions`` is the loop's dict of input positions, shared (changed in place, never
    replaced). A restore gives up once ``stop`` is set.
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
        self.writers: dict[int, int] = {}  # served partition -> this ownership's writer token
        self.ranks: dict[int, tuple[int, int]] = {}  # served partition -> its marker's rank
        #: Fired runs a restore ended (state another model wrote), for the loop to resolve.
        self.ended_runs: list[tuple[list[EndedRun], ModelMarker]] = []
        self._taken_over: list[str] = []  # partitions restored under another model, for a log
        # static members replace themselves; dynamic ones record their id for a restart
        self.records = (None if settings.group_instance_id
                        else MemberRecords.of(settings.member_dir, settings.group_id))
        self.merge = StateMerge(store)
        self.consumer: KafkaConsumer
        self.outbox: Outbox
        self.reader: StateReader
        self._restore_started = 0.0

    def attach(self, consumer: KafkaConsumer, outbox: Outbox) -> None:
        """Start listening to ``consumer``'s rebalances; before the first join, remove this
        host's dead members of the group (``predecessors``)."""
        self.consumer, self.outbox = consumer, outbox
        if self.records:
            remove_dead(self.s.kafka, self.s.group_id, self.records)
        self.reader = StateReader(self.s.kafka, self.s.state_topic, self.merge, self.stop)
        self.subscribe(consumer)

    def subscribe(self, consumer: KafkaConsumer) -> None:
        """Listen to ``consumer``'s rebalances from now on (a new consumer after a rejoin)."""
        self.consumer = consumer
        consumer.subscribe([self.s.input_topic], listener=self)
        clients.await_partitions(consumer, self.s.input_topic, self.s.kafka.connect_timeout_s)

    def writer_of(self, partitions: np.ndarray) -> np.ndarray:
        """The writer token of each of ``partitions`` (for state keys)."""
        return np.array([self.writers.get(p, 0) for p in partitions.tolist()], np.uint64)

    @property
    def restoring(self) -> set[int]:
        return self.reader.restoring if hasattr(self, "reader") else set()

    # --- the listener (kafka-python runs it on the consumer's I/O thread, the loop waiting) -

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Hand the partitions over: their state is written, then their streams forgotten.

        A commit cannot be made here; none is needed: the next owner restores the state with
        the offsets it has applied and skips what it covers.
        """
        if revoked:
            log.info("partitions %s revoked: the group is rebalancing",
                     sorted(tp.partition for tp in revoked))
        if self.checkpoints.transactional:
            self._abort_and_drop(revoked)
            return
        served = {tp.partition for tp in revoked} - self.restoring
        try:
            if not self.needs_recovery and served:
                # kafka-python sends no heartbeat while this runs: well within a session
                self.checkpoints.persist(self.outbox, served, self.s.session_timeout_ms / 2000)
        except TRANSIENT as exc:
            log.warning("state write on revoke failed (%s); the next owner replays", exc)
        self._drop(revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Evicted: another member may own these already, so write nothing for them. With
        exactly-once the open transaction is aborted: committed later with another
        assignment's offsets, it would duplicate the new owner's outputs."""
        log.warning("partitions %s lost: this member was dropped from the group",
                    sorted(tp.partition for tp in lost))
        if self.checkpoints.transactional:
            self._abort_and_drop(lost)
        else:
            self._drop(lost)

    def _abort_and_drop(self, tps: set[TopicPartition]) -> None:
        """Exactly-once: drop everything since the last commit and abort its transaction
        (where that fails, recover: a new producer epoch aborts it), then these partitions.
        The transaction held the kept partitions' work too: they go back to the commit."""
        try:
            self.checkpoints.abort(self.outbox)
        except TRANSIENT as exc:
            log.warning("aborting the open transaction failed (%s); recovering", exc)
            self.needs_recovery = True
        self._drop(tps)
        if len(self.store):
            self.needs_recovery = True

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Pause them until their state is in (``advance``)."""
        self.joined = True
        if self.records:
            self.records.assigned(self.consumer)
        if assigned:
            self.consumer.pause(*assigned)
            self._restore({tp.partition for tp in assigned})
        log.info("assigned partitions %s: restoring their state",
                 sorted(tp.partition for tp in assigned))

    def _drop(self, tps: set[TopicPartition]) -> None:
        self.joined = False
        parts = {tp.partition for tp in tps}
        if hasattr(self, "reader"):
            self.reader.cancel(parts)
        self.store.drop_partitions(parts)
        self.rollout.forget(parts)
        for p in parts:
            self.writers.pop(p, None)
            self.ranks.pop(p, None)
        for tp in tps:
            self.positions.pop(tp, None)
        self.metrics.forget_partitions(parts)
        self.metrics.active_streams.set(len(self.store))

    # --- restore and recovery ---------------------------------------------------------------

    def _restore(self, partitions: set[int]) -> None:
        if not self.restoring:
            self._restore_started = time.perf_counter()
        live = self.rollout.live
        if live is not None:
            self.store.ensure_state_size(live.state_size)
        self.reader.add(partitions)

    def advance(self) -> None:
        """One step of the restore in progress (bounded); serve the partitions it finished."""
        if not self.restoring:
            return
        for p in sorted(self.reader.step()):
            self._serve(p)
        if not self.restoring:
            if self._taken_over:
                live = self.rollout.live
                log.info("state another model wrote, restored under %s v%d: %s; their runs "
                         "start afresh", self.rollout.name, live.version if live else 0,
                         "; ".join(self._taken_over))
                self._taken_over.clear()
            if self.merge.rejected:
                log.warning("skipped %d state records that are not ours or are damaged",
                            self.merge.rejected)
                self.merge.rejected = 0
            self.metrics.restore_seconds.observe(time.perf_counter() - self._restore_started)
            self.metrics.restore_records.inc(self.merge.merged)
            self.merge.merged = 0
        self.metrics.active_streams.set(len(self.store))

    def _serve(self, partition: int) -> None:
        """A partition whose state is in: its model (its marker's), LSTM state rebuilt where
        another model wrote it, a writer token and a marker of its own, then its records."""
        marker = self.merge.marker(partition)
        step = self.rollout.assign(partition, marker)
        size_before = self.store.state_size
        self.store.ensure_state_size(step.state_size)
        other = self.merge.stale(partition, step.fingerprint)  # state another model wrote
        stale = (np.nonzero(self.store.partition == partition)[0]
                 if step.state_size > size_before else other)
        if len(stale):
            rebuild(self.store, stale, step)
        if len(other):
            self._taken_over.append(self._runs_end(partition, other, marker))
        self.writers[partition] = writer = new_writer()
        epoch = (marker.epoch if marker is not None else -1) + 1
        generation = self.consumer.group_metadata().generation_id
        self.ranks[partition] = (epoch, generation)
        old_keys = [k for k in self.merge.marker_keys(partition) if k != marker_key(writer)]
        self.checkpoints.write_markers(self.outbox, {partition: self.marker_for(partition)},
                                       {partition: old_keys})
        self.merge.forget(partition)
        tp = TopicPartition(self.s.input_topic, partition)
        if self.checkpoints.transactional:
            # kafka-python keeps the position of a partition it is given back, past what the
            # aborted transaction held: the commit is where the restored state stands
            self._to_committed([tp])
        self.consumer.resume(tp)
        log.info("partition %d serves with model %s v%d (%d streams restored, %d rebuilt)",
                 partition, step.name, step.version,
                 int(np.count_nonzero(self.store.partition == partition)), len(stale))

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

    def marker_for(self, partition: int, step: object | None = None) -> ModelMarker:
        """The marker saying ``step`` (by default the partition's model) serves ``partition``
        from here on, at this ownership's rank."""
        base = self.rollout.marker(step or self.rollout.by_partition.get(partition))
        epoch, generation = self.ranks.get(partition, (-1, -1))
        return ModelMarker(base.name, base.version, base.fingerprint, epoch, generation,
                           base.pattern)

    def recover(self) -> None:
        """Do what a restart does: forget memory and everything unacknowledged, restore state,
        seek to the committed offsets."""
        self.checkpoints.reset()
        self.outbox.reset()
        assigned = self.consumer.assignment()
        parts = {tp.partition for tp in assigned}
        self.reader.cancel(self.restoring)
        self.store.clear()
        self.positions.clear()
        self.rollout.forget(parts)
        self.writers.clear()
        self.ranks.clear()
        if assigned:
            self.consumer.pause(*assigned)
            self._to_committed(assigned)
            self._restore(parts)
        self.needs_recovery = False
        log.info("recovering: restoring %d partitions, resuming from committed offsets",
                 len(parts))

    def _to_committed(self, tps: Iterable[TopicPartition]) -> None:
        """Seek to the group's committed offsets (the beginning where there is none)."""
        for tp in tps:
            committed = self.consumer.committed(tp, timeout_ms=10_000)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)

    def close(self) -> None:
        """After the consumer's close (it left the group): stop the reader, drop the record."""
        if hasattr(self, "reader"):
            self.reader.close()
        if self.records:
            self.records.forget_own()
