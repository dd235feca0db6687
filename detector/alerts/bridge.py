"""``python -m detector alertmanager``: run records from the alert topic to Alertmanager.

One alert per run, labelled ``alertname="TrendRun"``, ``stream``, ``direction``, ``model`` and
``start_seq`` (so two runs of one stream are two alerts). A firing record posts the alert with
an ``endsAt`` ``firing_ttl_s`` ahead and the bridge posts it again every ``resend_interval_s``
while the run is open: if the bridge stops, Alertmanager resolves the alert by itself. The
resolved record posts it with ``endsAt`` at the resolution's time. ``startsAt`` is the time
(``ts``, else ``detected_at``) of the firing record: the record does not carry the time of the
run's first event.

Nothing is lost. A request that fails is retried with a bounded back-off while the partitions
are paused (the group membership stays). Offsets are committed only past records whose alerts
Alertmanager accepted, and never past the firing record of a run still open: a restarted
bridge, or the next owner of a partition, reads every open run's firing record again and keeps
re-posting it. What it reads again of runs already resolved is posted again; Alertmanager
takes the same labels as the same alert, so that is harmless. Each post sends a run's latest
state only, so a firing and its resolution read together become one resolved alert; unless
``min_firing_s`` holds resolutions back until their firing was accepted that long ago, so that
Alertmanager (which tells a receiver of a resolution only if it told it of the firing) notifies
short runs too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from detector.alerts.alertmanager import MAX_ALERTS_PER_POST, Alertmanager, PostFailed, Run, alert
from detector.kafka import acl, clients, topics
from detector.kafka.group_watch import GroupWatch
from detector.kafka.predecessors import MemberRecords, remove_dead
from detector.ops.metrics import BridgeMetrics
from detector.settings.bridge import BridgeSettings
from detector.stream.codec import decode_run

log = logging.getLogger(__name__)

MAX_POLL_RECORDS = 2000
POLL_TIMEOUT_MS = 200
#: While records keep coming in full polls (a backlog, a replay), posts wait this long at most,
#: so that a run's firing and resolution read close together go out as one resolved alert.
MAX_POST_DELAY_S = 1.0
COMMIT_INTERVAL_S = 1.0
FIRST_BACKOFF_S = 0.5
TOPIC_WAIT_S = 2.0


class Bridge(ConsumerRebalanceListener):
    """A member of the bridge's consumer group: reads run records, posts alerts, commits."""

    def __init__(self, settings: BridgeSettings, metrics: BridgeMetrics,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.s = settings
        self.metrics = metrics
        self.stop_event = stop if stop is not None else threading.Event()
        self.alertmanager = Alertmanager(settings.url or "", settings.timeout_s)
        self._clock, self._now = clock, wall_clock
        self._runs: dict[tuple[str, int], Run] = {}  # (stream, start_seq)
        self._finished: dict[str, tuple[int, int]] = {}  # stream: (partition, last start_seq)
        self._pending: dict[tuple[str, int], None] = {}  # runs to post, in order
        self._pending_since = 0.0
        self._positions: dict[int, int] = {}  # next offset to read, per partition
        self._committed: dict[int, int] = {}
        self._last_commit = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._retry_at = 0.0
        self._failing = False  # the last post failed
        self._commit_failed = False
        self._joined = False
        self._warned_foreign = False
        self.records = MemberRecords.of(settings.member_dir, settings.group_id)
        self._revoked: set[int] = set()
        self._lock = threading.Lock()  # the rebalance callbacks run on the client's IO thread
        self.watch = GroupWatch(settings.kafka, settings.group_id, settings.session_timeout_ms,
                                metrics.group,
                                rebalance_timeout_ms=settings.max_poll_interval_ms)
        metrics.ready.set_function(lambda: 1.0 if self.ready else 0.0)
        metrics.open_runs.set_function(lambda: sum(
            1 for run in list(self._runs.values()) if run.resolved is None))
        metrics.pending.set_function(lambda: len(self._pending))

    @property
    def ready(self) -> bool:
        """In the group, the last commit went through, and Alertmanager took the last post."""
        return not self.not_ready_because()

    def not_ready_because(self) -> str:
        """Why the bridge is not ready, in a few words ("" when it is)."""
        if not self._joined or not self.watch.settled:
            return (f"waiting {self.watch.waited_s():.0f} s for an assignment from group "
                    f"{self.s.group_id}")
        if self._failing:
            return "Alertmanager does not accept posts"
        if self._commit_failed:
            return "committing offsets fails"
        return ""

    # --- set-up and tear-down -----------------------------------------------------------------

    def connect(self) -> None:
        """Wait for the alert topic (the detector creates it), then join the group.

        Never creates the topic: the detector gives it the input topic's partition count.
        """
        kafka, topic = self.s.kafka, self.s.alert_topic
        acl.check(kafka, acl.bridge(self.s))  # else a topic it may not see is waited for forever
        while topics.partition_count(kafka, topic) is None:
            log.info("waiting for topic %s (the detector creates it)", topic)
            if self.stop_event.wait(TOPIC_WAIT_S):
                return
        if self.records:  # a crashed bridge's successor need not wait out its session
            remove_dead(kafka, self.s.group_id, self.records)
        self.metrics.group.input_partitions.set(topics.partition_count(kafka, topic) or 0)
        self._join()

    def _join(self) -> None:
        """A new consumer in the group (at start, and when the group did not settle)."""
        self.consumer = clients.consumer(
            self.s.kafka, group_id=self.s.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=MAX_POLL_RECORDS,
            session_timeout_ms=self.s.session_timeout_ms,
            heartbeat_interval_ms=self.s.heartbeat_interval_ms,
            max_poll_interval_ms=self.s.max_poll_interval_ms,
            request_timeout_ms=max(30_000, self.s.session_timeout_ms + 5_000),
            fetch_max_wait_ms=100, isolation_level="read_committed")
        self.consumer.subscribe([self.s.alert_topic], listener=self)
        clients.await_partitions(self.consumer, self.s.alert_topic, self.s.kafka.connect_timeout_s)
        self.watch.attach(self.consumer)

    def run(self) -> None:
        """Read, post and commit until the stop event is set; then post once more and close."""
        if self.stop_event.is_set():
            return
        try:
            while not self.stop_event.is_set():
                self._apply_revocations()
                if self._failing:  # read nothing more until Alertmanager takes what is read
                    self.consumer.pause(*self.consumer.assignment())
                records = self.consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                self._apply_revocations()
                read = 0
                for tp, recs in records.items():
                    for r in recs:
                        self._read(tp.partition, r.offset, r.value)
                    read += len(recs)
                    self._positions[tp.partition] = recs[-1].offset + 1
                self._due_resends()
                backlog = read >= MAX_POLL_RECORDS
                if self._pending and (not backlog or
                                      self._clock() - self._pending_since >= MAX_POST_DELAY_S):
                    self._post()
                self._commit()
                if self.watch.tick():
                    clients.close_bounded(lambda: self.consumer.close(autocommit=False),
                                           "the consumer")
                    self._join()
        finally:
            self.close()

    def close(self) -> None:
        """One last post (no retry: what fails is read again by the next owner), then commit."""
        if self._pending and not self._failing:
            self._post()
        self._commit(force=True)
        clients.close_bounded(lambda: self.consumer.close(autocommit=False), "the consumer")
        if self.records:
            self.records.forget_own()

    # --- records ------------------------------------------------------------------------------

    def _read(self, partition: int, offset: int, value: bytes | None) -> None:
        record = decode_run(value)
        if record is None:
            self.metrics.skipped.labels("not_a_run_record").inc()
            if not self._warned_foreign:
                log.warning("skipping records of %s that are not run records (partition %d, "
                            "offset %d): a detector without run alerts?", self.s.alert_topic,
                            partition, offset)
                self._warned_foreign = True
            return
        self.metrics.records.labels(record.status).inc()
        key = (record.stream, record.start_seq)
        run = self._runs.get(key)
        finished = self._finished.get(record.stream)
        if finished is not None and record.start_seq <= finished[1]:
            duplicate = True  # a run already resolved (a detector's replay after a crash)
        elif record.status == "firing":
            duplicate = run is not None
            if not duplicate:
                self._runs[key] = Run(partition, offset, record)
        else:
            duplicate = run is not None and run.resolved is not None
            if run is None:
                self._runs[key] = Run(partition, offset, None, record)
            elif not duplicate:
                run.resolved = record
        if duplicate:
            self.metrics.skipped.labels("duplicate").inc()
        else:
            self._want_post(key)

    def _want_post(self, key: tuple[str, int]) -> None:
        if not self._pending:
            self._pending_since = self._clock()
        self._pending[key] = None

    def _due_resends(self) -> None:
        due = self._clock() - self.s.resend_interval_s
        for key, run in self._runs.items():
            if run.resolved is None and run.posted_at is not None and run.posted_at <= due \
                    and key not in self._pending:
                self._want_post(key)

    # --- Alertmanager -------------------------------------------------------------------------

    def _post(self) -> None:
        """Post every pending alert that is due, in chunks; on a failure back off, stop reading."""
        if self._clock() < self._retry_at:
            return
        due = [k for k in self._pending if self._due(self._runs[k])]
        for at in range(0, len(due), MAX_ALERTS_PER_POST):
            keys = due[at:at + MAX_ALERTS_PER_POST]
            runs = [self._runs[k] for k in keys]
            resolve = [self._resolve_now(run) for run in runs]
            now = self._now()
            started = self._clock()
            try:
                self.alertmanager.post([alert(run, now, self.s.firing_ttl_s, res)
                                        for run, res in zip(runs, resolve, strict=True)])
            except PostFailed as exc:
                self._failed(exc)
                return
            finally:
                self.metrics.post_seconds.observe(self._clock() - started)
            self.metrics.posts.inc()
            for key, run, res in zip(keys, runs, resolve, strict=True):
                self.metrics.alerts_sent.labels("resolved" if res else "firing").inc()
                if res:
                    del self._pending[key]
                    self._finish(key, run)
                    continue
                run.posted_at = started
                if run.first_posted_at is None:
                    run.first_posted_at = started
                if run.resolved is None:
                    del self._pending[key]
        if self._failing:
            log.info("Alertmanager accepts alerts again; reading on")
            self.consumer.resume(*self.consumer.paused())
        self._failing = False
        self._backoff = FIRST_BACKOFF_S

    def _resolve_now(self, run: Run) -> bool:
        """Post the resolution (rather than the firing)? Not before the firing was held
        ``min_firing_s``, so that Alertmanager notified it; a run known only by its resolution
        (its firing was read before a restart) has nothing to hold."""
        if run.resolved is None:
            return False
        if run.firing is None or self.s.min_firing_s == 0:
            return True
        return run.first_posted_at is not None and \
            self._clock() - run.first_posted_at >= self.s.min_firing_s

    def _due(self, run: Run) -> bool:
        """A resolution held back is not due until its time (its firing is posted first)."""
        return run.resolved is None or run.first_posted_at is None or self._resolve_now(run)

    def _failed(self, exc: PostFailed) -> None:
        self.metrics.post_failures.labels(exc.reason).inc()
        log.warning("posting %d alert(s) to Alertmanager failed (%s); retrying in %.1f s",
                    len(self._pending), exc, self._backoff)
        self._failing = True
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.s.retry_backoff_max_s)

    def _finish(self, key: tuple[str, int], run: Run) -> None:
        del self._runs[key]
        stream, start_seq = key
        last = self._finished.get(stream)
        if last is None or last[1] < start_seq:
            self._finished[stream] = (run.partition, start_seq)

    # --- offsets and rebalances ---------------------------------------------------------------

    def _commit(self, force: bool = False) -> None:
        """Commit each partition up to what is posted, and never past an open run's firing."""
        if not force and self._clock() - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = self._clock()
        guard: dict[int, int] = {}
        for run in self._runs.values():
            guard[run.partition] = min(guard.get(run.partition, run.offset), run.offset)
        offsets = {}
        for partition, position in self._positions.items():
            at = min(position, guard.get(partition, position))
            if self._committed.get(partition) != at:
                offsets[TopicPartition(self.s.alert_topic, partition)] = \
                    OffsetAndMetadata(at, "", -1)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("committing offsets failed (%s); retrying", exc)
            self._commit_failed = True
            return
        self._commit_failed = False
        for tp, committed in offsets.items():
            self._committed[tp.partition] = committed.offset

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Noted here, applied by the loop: the next owner reads from the last commit."""
        with self._lock:
            self._revoked |= {tp.partition for tp in revoked}

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joined = True
        if self.records:
            self.records.assigned(self.consumer)
        log.info("assigned partitions %s of %s", sorted(tp.partition for tp in assigned),
                 self.s.alert_topic)

    def _apply_revocations(self) -> None:
        """Forget the runs of partitions given up: their next owner reads them again."""
        with self._lock:
            gone, self._revoked = self._revoked, set()
        if not gone:
            return
        for key in [k for k, run in self._runs.items() if run.partition in gone]:
            del self._runs[key]
            self._pending.pop(key, None)
        for stream in [s for s, (p, _) in self._finished.items() if p in gone]:
            del self._finished[stream]
        for partition in gone:
            self._positions.pop(partition, None)
            self._committed.pop(partition, None)
