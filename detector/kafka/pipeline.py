"""The Kafka loop: poll, decode, detect, publish, checkpoint. Thin; the work is elsewhere.

Outputs, alerts and dead letters go to the outbox (``detector/kafka/outbox.py``): record batches per
partition, flushed once a poll's outputs are in (or when the linger is up). Checkpoints
(``detector/kafka/checkpoint.py``) make a crash at any moment safe: outputs acknowledged, then state
written, then offsets committed. A crash replays input from the last commit: events at or below
a restored stream's applied offset are skipped (their outputs were acknowledged), later ones
are processed again from the restored state and give identical outputs. Any failure in the
loop (broker gone, a request not acknowledged, a restore that could not finish) drops the
in-memory state and does what a restart does (``detector/kafka/rebalance.py``, which also hands
partitions over in a rebalance): restore, seek to the committed offsets, go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from math import nan

import numpy as np
from kafka import TopicPartition

from detector.kafka import acl, clients, wiring
from detector.kafka.checkpoint import Checkpointer
from detector.kafka.group_watch import GroupWatch
from detector.kafka.publish import Publisher
from detector.kafka.rebalance import TRANSIENT, Membership
from detector.kafka.rollout import Rollout
from detector.model.serving import ModelStep
from detector.ops.metrics import Metrics
from detector.ops.process_tuning import release_free_memory
from detector.ops.stall import Progress, StallWatch, waiting
from detector.settings.detector import DetectorSettings
from detector.stream.codec import MODEL_CHANGED, MODEL_SWAP, BadInput
from detector.stream.engine import Batch, Engine, Result
from detector.stream.mapping import InputMapping
from detector.stream.rebuild import rebuild
from detector.stream.shadow import Shadow
from detector.stream.state import StreamStore

log = logging.getLogger(__name__)

#: Longest a checkpoint may take from its snapshot to its commit. Each produce request times
#: out on its own (``outbox.REQUEST_TIMEOUT_MS``); this bounds the whole, state included.
CHECKPOINT_TIMEOUT_S = 130.0
#: On shutdown, the longest a wait for the final checkpoint's acknowledgements lasts. With the
#: broker gone it cannot succeed; giving up loses nothing (those offsets stay uncommitted and
#: are replayed).
SHUTDOWN_FLUSH_TIMEOUT_S = 10.0


class Pipeline:
    """One detector process: a consumer group member with its streams' state."""

    def __init__(
        self,
        settings: DetectorSettings,
        step: ModelStep | None,
        metrics: Metrics,
        stop: threading.Event | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        """``step``: the model to start with (None: a name the model registry holds)."""
        self.s = settings
        self.metrics = metrics
        self.store = StreamStore(step.state_size if step else 0)
        self.rollout = Rollout(settings, step, metrics)
        self.engine = Engine(step, store=self.store, alert_min_length=settings.alert_min_length,
                             alert_min_flags=settings.alert_min_flags, wall_clock=wall_clock)
        self.shadow: Shadow | None = None
        self.mapping = InputMapping(settings.mapping)
        self.stop_event = stop if stop is not None else threading.Event()
        self._now = wall_clock
        self._positions: dict[TopicPartition, int] = {}
        self.checkpoints = Checkpointer(
            self.store, self.rollout.fingerprints, self._writer_of, settings.state_topic,
            settings.checkpoint_interval_ms / 1000, ack_timeout_s=CHECKPOINT_TIMEOUT_S,
            stream_ttl_s=settings.stream_ttl_s, wall_clock=wall_clock,
            transactional=settings.processing_guarantee == "exactly-once",
        )
        self.membership = Membership(settings, self.rollout, self.store, self.checkpoints,
                                     metrics, self._positions, self.stop_event)
        self.watch = GroupWatch(settings.kafka, settings.group_id, settings.session_timeout_ms,
                                metrics.group,
                                rebalance_timeout_ms=settings.max_poll_interval_ms)
        self._backoff = 0.5
        self._closed = False
        self._partitions: dict[str, int] = {}
        self._txn_lock: object = None  # holds this member's transactional id (exactly-once)
        self.stalls = StallWatch()
        metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)

    def _writer_of(self, partitions: np.ndarray) -> np.ndarray:
        return self.membership.writer_of(partitions)

    @property
    def step(self) -> ModelStep:
        """The live model."""
        assert self.rollout.live is not None
        return self.rollout.live

    # --- set-up and tear-down -------------------------------------------------------------

    def connect(self) -> None:
        """Read the model registry, create missing topics and the clients. Raises
        KafkaUnavailable (or ModelError, with no model to serve) with one line."""
        s = self.s
        acl.check(s.kafka, acl.detector(s))
        self.engine.step = self.rollout.start()
        self._track_candidate()  # a candidate already in the registry shadows from the start
        self._partitions = wiring.detector_topics(s)
        self.metrics.group.input_partitions.set(self._partitions[s.input_topic])
        txid = None
        if s.processing_guarantee == "exactly-once":
            txid, self._txn_lock = wiring.transactional_id(s)
            log.info("exactly-once: each checkpoint is a transaction of %s", txid)
        self.outbox = wiring.outbox(s, txid)
        self.publisher = Publisher(s, self.outbox, self._partitions, self.metrics, self._now)
        self.consumer = wiring.consumer(s)
        self.membership.attach(self.consumer, self.outbox)
        self.watch.attach(self.consumer)

    def _rejoin(self) -> None:
        """The group did not settle (``GroupWatch``): leave it and join with a new consumer.
        Closing hands this member's partitions over as any revoke does."""
        clients.close_bounded(lambda: self.consumer.close(autocommit=False), "the consumer")
        self.consumer = wiring.consumer(self.s)
        self.membership.subscribe(self.consumer)
        self.watch.attach(self.consumer)

    def close(self) -> None:
        """Finish cleanly: checkpoint, commit, leave the group."""
        try:
            if self.membership.needs_recovery:
                log.warning("final checkpoint failed (a recovery was due); the next owner "
                            "replays from the last one")
            else:
                self.checkpoint(timeout_s=SHUTDOWN_FLUSH_TIMEOUT_S)
        except TRANSIENT as exc:
            log.warning("final checkpoint failed (%s); the next owner replays from the last one",
                        exc)
        clients.close_bounded(lambda: self.consumer.close(autocommit=False), "the consumer")
        self.membership.close()
        self.rollout.close()
        clients.close_bounded(self.outbox.close, "the outbox", 10.0)
        self._closed = True

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and process until the stop event is set; then close."""
        try:
            while not self.stop_event.is_set():
                try:
                    if self.membership.needs_recovery:
                        self.membership.recover()
                    self.membership.advance()
                    records = self.consumer.poll(timeout_ms=self._poll_wait_ms())
                    if self.membership.needs_recovery:
                        continue  # a rebalance callback failed: these records wait for recovery
                    while self.membership.ended_runs:  # by a restore under another model
                        self.publisher.ended(*self.membership.ended_runs.pop(0), MODEL_CHANGED)
                    if records:
                        self._handle(records)
                    self._advance_positions()
                    if self.outbox.pending and not self.outbox.linger_left_s():
                        self.outbox.flush()
                    self._tick()
                    self._follow()
                    if self.watch.tick():
                        self._rejoin()
                except TRANSIENT as exc:
                    refused = acl.refusal(exc)
                    if refused:
                        raise clients.KafkaRefused(refused) from exc
                    self._failed(exc)
        finally:
            self.close()

    def _poll_wait_ms(self) -> int:
        """The poll's wait: none while state records go out, at most until the outbox's
        linger is up."""
        if self.checkpoints.sending or self.membership.restoring:
            return 0
        return int(min(self.s.poll_timeout_ms, self.outbox.linger_left_s() * 1000))

    def _failed(self, exc: BaseException) -> None:
        self.membership.needs_recovery = True
        self.metrics.broker_errors.labels(type(exc).__name__).inc()
        log.warning("Kafka operation failed (%s: %s); retrying in %.1f s",
                    type(exc).__name__, exc, self._backoff)
        self.stop_event.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.s.retry_backoff_max_s)

    @property
    def ready(self) -> bool:
        """Connected, holding an assignment and keeping up: a checkpoint (which needs the
        broker) succeeded lately."""
        return not self.not_ready_because()

    def not_ready_because(self) -> str:
        """Why the detector is not ready, in a few words ("" when it is).

        Derived rather than set, so a flush stuck on a vanished broker turns it false too.
        """
        last_ok = self.checkpoints.last_ok
        if self._closed:
            return "stopped"
        if self.membership.needs_recovery:
            return "recovering from a failed Kafka operation"
        if not self.membership.joined:
            return (f"waiting {self.watch.waited_s():.0f} s for an assignment from group "
                    f"{self.s.group_id}")
        restoring = self.membership.restoring
        if restoring:
            return (f"restoring the state of {len(restoring)} partition(s) "
                    f"({self.membership.reader.records_read():,} records read)")
        if last_ok is None:
            return "no checkpoint yet"
        ago = time.monotonic() - last_ok
        if ago >= max(5.0, 3 * self.s.checkpoint_interval_ms / 1000):
            return f"last checkpoint {ago:.0f} s ago"
        return self.stalls.why()

    # --- one poll's records -----------------------------------------------------------------

    def _advance_positions(self) -> None:
        """Every served partition's position after what the poll returned was processed: past
        its last record, and past transaction markers (so that an idle member commits the
        end of its input, and lag against committed positions is 0 when idle)."""
        restoring = self.membership.restoring
        for tp in self.consumer.assignment():
            if tp.partition in restoring:
                continue
            position = clients.position(self.consumer, tp)
            if position is not None and position > self._positions.get(tp, -1):
                self._positions[tp] = position

    def _handle(self, records: dict) -> None:
        names: list[str] = []
        seqs: list[int] = []
        values: list[float] = []
        tss: list[float] = []
        epochs: list[int] = []
        parts: list[int] = []
        offsets: list[int] = []
        consumed = 0
        decode = self.mapping.decode
        bad_lines = self.mapping.bad_lines  # line protocol: lines of a record that do not fit
        for tp, recs in records.items():
            partition = tp.partition
            for r in recs:
                events = decode(r.key, r.value, r.timestamp)
                if type(events) is BadInput:
                    self.publisher.dead_letter(events, r)
                    continue
                if bad_lines:
                    for bad in bad_lines:
                        self.publisher.dead_letter(bad, r)
                for event in events:
                    names.append(event.stream)
                    seqs.append(event.seq)
                    values.append(event.value)
                    tss.append(nan if event.ts is None else event.ts)
                    epochs.append(event.epoch)
                    parts.append(partition)
                    offsets.append(r.offset)
            consumed += len(recs)
        self.metrics.events_consumed.inc(consumed)
        if self.mapping.skipped:
            self.metrics.skipped_fields.inc(self.mapping.skipped)
            self.mapping.skipped = 0
        if not names:
            return
        # The store key is the stream id's UTF-8 bytes (with the default mapping: the key).
        batch = Batch.of([name.encode() for name in names], values, seq=seqs, partition=parts,
                         offset=offsets, epoch=epochs, ts=tss)
        for step, idx in self.rollout.groups(batch.partition):
            part = batch if idx is None else batch.take(idx)
            part_names = names if idx is None else [names[i] for i in idx.tolist()]
            if self.shadow is not None:
                self.shadow.seed(self.store, part.streams)
            result = self.engine.process(part, step)
            self.publisher.answers(part, part_names, result, step)
            if self.shadow is not None:
                self._shadowed(part, part_names, result)

    def _shadowed(self, batch: Batch, names: list[str], live: Result) -> None:
        """The candidate over the same events: agreement in metrics, its flags to the candidate
        topic when there is one."""
        assert self.shadow is not None
        res, events, differ = self.shadow.process(batch, live)
        self.metrics.shadow_events.inc(events)
        self.metrics.shadow_disagreements.inc(differ)
        if self.s.candidate_topic:
            self.publisher.flags(batch, names, res, self.shadow.step, self.s.candidate_topic)

    # --- the model: following the registry ---------------------------------------------------

    def _follow(self) -> None:
        """Take in the registry's news; move partitions to a new live model; start or stop
        the shadow of a candidate."""
        if self.rollout.follow() or (self.rollout.pending() and self.membership.joined):
            self._swap()
        self._track_candidate()

    def _track_candidate(self) -> None:
        """Shadow the registry's candidate, if any, from the next batch on."""
        candidate = self.rollout.candidate
        if candidate is None:
            self.shadow = None
        elif self.shadow is None or self.shadow.step is not candidate:
            self.shadow = Shadow(candidate, self.s.alert_min_length, self.s.alert_min_flags)

    def _swap(self) -> None:
        """At a checkpoint: every partition not served by the live model is from here on. The
        checkpoint writes each one's marker with its state and commits before any output of the
        new model; then the streams' LSTM state is rebuilt for it from their recent values."""
        parts = self.rollout.pending()
        if not parts:
            return
        live = self.step
        before = {f"{s.name} v{s.version}" for s in map(self.rollout.by_partition.get, parts)}
        for p in parts:  # a run is its model's: an open one ends here, under that model
            old = self.rollout.marker(self.rollout.by_partition[p])
            self.publisher.end_runs(self.store, p, old, MODEL_SWAP)
        self.checkpoints.complete(self.outbox, self.consumer, self._positions,
                                  markers={p: self.membership.marker_for(p, live)
                                           for p in parts})
        self._checkpointed()
        slots = np.nonzero(np.isin(self.store.partition, list(parts)))[0]
        started = time.perf_counter()
        rebuild(self.store, slots, live)
        self.metrics.state_rebuild_seconds.observe(time.perf_counter() - started)
        self.store.dirty[slots] = True
        self.rollout.swapped(parts)
        self.metrics.model_swaps.inc(len(parts))
        log.info("model %s v%d serves partitions %s from here on (was %s); %d streams' state "
                 "rebuilt in %.0f ms", live.name, live.version, sorted(parts),
                 "/".join(sorted(before)), len(slots),
                 1000 * (time.perf_counter() - started))

    # --- checkpoints ------------------------------------------------------------------------

    def _tick(self) -> None:
        """Move the pipelined checkpoint on; report what it finished."""
        self.checkpoints.tick(self.outbox, self.consumer, self._positions)
        self._checkpointed()

    def checkpoint(self, timeout_s: float | None = None) -> None:
        """Everything processed so far: outputs acknowledged, state written, offsets committed."""
        self.checkpoints.complete(self.outbox, self.consumer, self._positions, timeout_s)
        self._checkpointed()

    def _checkpointed(self) -> None:
        """Metrics for the checkpoints committed since the last call (commits may come back
        on the consumer's I/O thread)."""
        durations = self.checkpoints.durations
        if not durations:
            return
        while durations:  # pop, not clear: an asynchronous commit may append meanwhile
            self.metrics.checkpoint_seconds.observe(durations.pop())
        self._backoff = 0.5
        self._update_gauges()
        release_free_memory()

    def _update_gauges(self) -> None:
        self.metrics.produce_retries.inc(self.outbox.sender.take_retries())
        commits, self.outbox.commits = self.outbox.commits, []
        self.metrics.transactions.labels("committed").inc(len(commits))
        self.metrics.observe_many(self.metrics.transaction_commit_seconds, commits)
        aborted, self.outbox.aborts = self.outbox.aborts, 0
        self.metrics.transactions.labels("aborted").inc(aborted)
        self.metrics.active_streams.set(len(self.store))
        self.metrics.runs_firing.set(int(np.count_nonzero(self.store.run_fired)))
        self.metrics.evicted.inc(self.checkpoints.take_evicted())
        lags, progress = [], {}
        for tp in self.consumer.assignment():  # also those that never returned a record
            high, fetch = self.consumer.highwater(tp), self._fetch_position(tp)
            pos = self._positions.get(tp, fetch)
            if high is not None and pos is not None:
                lags.append((tp.partition, max(0, high - pos)))
                progress[tp.partition] = Progress(pos, waiting(pos, fetch, high))
        self.metrics.set_lag(lags)
        self.stalls.observe(progress)

    def _fetch_position(self, tp: TopicPartition) -> int | None:
        """Where the consumer fetches ``tp`` next (past a commit marker it skipped), from its
        subscription state: ``KafkaConsumer.position`` may ask the coordinator first."""
        try:
            return self.consumer._subscription.position(tp).offset
        except (KeyError, AttributeError):  # not assigned any more, or no position yet
            return None
