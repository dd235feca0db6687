"""The checkpoint protocol, pipelined so that the loop never stops to wait for the broker.

A checkpoint covers everything processed up to the moment it is taken (its *snapshot*):
  1. the outputs and dead letters sent so far are acknowledged;
  2. then the state of every stream changed so far, encoded at the snapshot, is written to the
     state topic (partition = the stream's input partition) and acknowledged;
  3. then the input positions taken at the snapshot are committed.
Each state record goes under its stream id and the writer token of this ownership of its
partition (``state_keys``); a stream last written under another key (restored from the previous
owner's) gets a tombstone for that key after its new record, in the same partition.
Streams idle for longer than the stream TTL are forgotten at a snapshot: their slot is freed
and a tombstone goes to the state topic with the snapshot's state records (before the commit),
so compaction drops their state and a restore does not bring them back.
The loop calls ``tick`` between polls: it takes a snapshot when one is due and moves the
pending one on as its acknowledgements arrive, so processing continues meanwhile. ``complete``
does the same to the end, blocking (shutdown); ``persist`` does steps 1 and 2 for partitions
being handed over (a rebalance callback, where kafka-python allows no commit: the next owner
skips what the written state covers).

With exactly-once (``transactional``) a checkpoint is one transaction: everything written
since the last one (outputs, dead letters, state records, markers) and, in its commit, the
input offsets at the snapshot. It is taken whole, the loop waiting (a snapshot must be a cut:
an output of a later event in the same transaction would be visible with the offsets before
it); a revoke or a loss of partitions aborts the open transaction, and the next owner replays
from the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from detector.kafka.outbox import Outbox, OutputFailed
from detector.stream.state import StateSnapshot, StreamStore
from detector.stream.state_keys import NO_WRITER, ModelMarker, marker_key, state_key

log = logging.getLogger(__name__)

#: Longest a tick spends appending state records (a few µs each), so that a checkpoint of
#: many streams does not hold up the events that arrive meanwhile. The loop polls without
#: waiting while it sends.
STATE_SEND_BUDGET_S = 0.005
#: State records appended between two looks at the clock.
STATE_CHUNK = 200


@dataclass
class _Pending:
    outputs: int  # the outbox mark of the outputs and dead letters the snapshot covers
    states: StateSnapshot  # the changed streams' state records, encoded at the snapshot
    offsets: dict[TopicPartition, OffsetAndMetadata]
    started: float
    deadline: float
    # Records sent with the state records: idle streams' tombstones, partitions' model markers
    extra: list[tuple[bytes, int, bytes | None]] = field(default_factory=list)  # key, p, value
    states_sent: int = 0
    states_mark: int | None = None  # the outbox mark of its state records, once all are sent


class Checkpointer:
    """The checkpoint protocol over an ``Outbox``: its marks say what is acknowledged."""

    def __init__(self, store: StreamStore,
                 fingerprint: Callable[[np.ndarray], np.ndarray | bytes],
                 writer_of: Callable[[np.ndarray], np.ndarray], state_topic: str,
                 interval_s: float, ack_timeout_s: float, commit_timeout_ms: int = 10_000,
                 stream_ttl_s: float = 0.0, wall_clock: Callable[[], float] = time.time,
                 transactional: bool = False):
        self.store = store
        self.fingerprint = fingerprint
        self.writer_of = writer_of  # partitions -> the writer token each is written under
        self.state_topic = state_topic
        self.interval_s = interval_s
        self.ack_timeout_s = ack_timeout_s
        self.commit_timeout_ms = commit_timeout_ms
        self.pending: _Pending | None = None
        self.last_snapshot = time.monotonic()
        self.last_ok: float | None = None  # when a checkpoint was last committed
        self.durations: list[float] = []  # seconds of each committed checkpoint, for metrics
        self.stream_ttl_s = stream_ttl_s  # 0: never forget a stream
        self.transactional = transactional
        self._committed_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._wall = wall_clock
        self._evicted = 0  # streams forgotten since the last ``take_evicted``

    def take_evicted(self) -> int:
        """Streams forgotten since the last call (for a metric)."""
        n, self._evicted = self._evicted, 0
        return n

    def reset(self) -> None:
        """Forget the checkpoint in flight (recovery: memory is about to be rebuilt)."""
        self.pending = None
        self._committed_offsets = {}

    # --- steps ------------------------------------------------------------------------------

    def _snapshot(self, outputs: int, positions: dict[TopicPartition, int],
                  partitions: set[int] | None = None) -> _Pending:
        """The checkpoint of everything processed so far; ``outputs``: the outbox mark after
        its outputs were flushed."""
        extra = self._evict() if partitions is None else []
        slots = self.store.dirty_slots(partitions)
        extra += self._rekey(slots)
        states = self.store.snapshot(slots, self.fingerprint(self.store.partition[slots]))
        self.store.dirty[slots] = False
        now = time.monotonic()
        self.last_snapshot = now
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()
                   if partitions is None or tp.partition in partitions}
        return _Pending(outputs, states, offsets, now, now + self.ack_timeout_s, extra)

    def _rekey(self, slots: np.ndarray) -> list[tuple[bytes, int, bytes | None]]:
        """Give ``slots`` their partition's writer; tombstones for the keys they leave (sent
        after their new records)."""
        new = self.writer_of(self.store.partition[slots])
        old = self.store.writer[slots]
        moved = np.nonzero((old != new) & (old != NO_WRITER))[0]
        tombstones = [(state_key(self._key(int(slots[i])), int(old[i])),
                       int(self.store.partition[slots[i]]), None) for i in moved.tolist()]
        self.store.writer[slots] = new
        return tombstones

    def _key(self, slot: int) -> bytes:
        key = self.store.keys[slot]
        return key if isinstance(key, bytes) else key.encode()

    def _evict(self) -> list[tuple[bytes, int, bytes | None]]:
        """Forget the streams idle for longer than the TTL; their tombstones, to be sent."""
        if not self.stream_ttl_s:
            return []
        slots = self.store.idle_slots(self._wall() - self.stream_ttl_s)
        if not len(slots):
            return []
        tombstones = [(state_key(self._key(slot), writer), p, None) for slot, writer, p in
                      zip(slots.tolist(), self.store.writer[slots].tolist(),
                          self.store.partition[slots].tolist(), strict=True)
                      if writer != NO_WRITER]
        self._evicted += self.store.drop(slots)
        return tombstones

    def _advance(self, cp: _Pending, outbox: Outbox,
                 consumer: KafkaConsumer | None, budget_s: float | None) -> bool:
        """Move ``cp`` on without waiting for acknowledgements; True when its commit is made (or,
        without a consumer, when its state is written). ``budget_s`` bounds the appending of
        state records; with a budget the commit is asynchronous (a lost one only means a
        little more replay)."""
        if time.monotonic() > cp.deadline:
            raise OutputFailed(f"checkpoint not acknowledged within {self.ack_timeout_s:g} s")
        if not outbox.done(cp.outputs):
            return False
        if cp.states_mark is None:
            until = None if budget_s is None else time.perf_counter() + budget_s
            append, topic = outbox.append, self.state_topic
            while cp.states_sent < len(cp.states):
                end = min(cp.states_sent + STATE_CHUNK, len(cp.states))
                for key, value, p in cp.states.records(cp.states_sent, end):
                    append(topic, p, key, value)
                cp.states_sent = end
                if until is not None and time.perf_counter() > until:
                    outbox.flush()
                    return False
            for key, p, value in cp.extra:
                append(topic, p, key, value)
            cp.extra = []
            cp.states_mark = outbox.flush()
        if not outbox.done(cp.states_mark):
            return False
        if consumer is None:
            return True
        if self.transactional:
            if outbox.in_transaction or cp.offsets != self._committed_offsets:
                outbox.commit(cp.offsets, consumer.group_metadata())
                self._committed_offsets = cp.offsets
            self._committed(cp.started, None)
        elif budget_s is None:
            if cp.offsets:
                consumer.commit(cp.offsets, timeout_ms=self.commit_timeout_ms)
            self._committed(cp.started, None)
        else:
            consumer.commit_async(cp.offsets,
                                  callback=lambda _, result: self._committed(cp.started, result))
        return True

    def _committed(self, started: float, result: object) -> None:
        """A commit came back (on the consumer's I/O thread when asynchronous)."""
        if isinstance(result, BaseException):
            log.warning("offset commit failed (%s); the next checkpoint's commit covers it",
                        result)
            return
        self.last_ok = time.monotonic()
        self.durations.append(self.last_ok - started)

    # --- what the loop calls ----------------------------------------------------------------

    def tick(self, outbox: Outbox, consumer: KafkaConsumer,
             positions: dict[TopicPartition, int]) -> None:
        """Between polls: take a snapshot when due, move the pending one on. Never waits (but
        with exactly-once, where a due checkpoint is taken whole)."""
        due = time.monotonic() - self.last_snapshot >= self.interval_s
        if self.transactional:
            if due:
                self.complete(outbox, consumer, positions)
            return
        if self.pending is None and due:
            self.pending = self._snapshot(outbox.flush(), positions)
        if self.pending is not None and self._advance(self.pending, outbox, consumer,
                                                      STATE_SEND_BUDGET_S):
            self.pending = None

    @property
    def sending(self) -> bool:
        """State records of the pending checkpoint are being sent: poll without waiting."""
        cp = self.pending
        return cp is not None and 0 < cp.states_sent < len(cp.states)

    def complete(self, outbox: Outbox, consumer: KafkaConsumer,
                 positions: dict[TopicPartition, int], timeout_s: float | None = None,
                 markers: dict[int, ModelMarker] | None = None) -> None:
        """Everything processed so far, checkpointed and committed, waiting as needed (each
        wait at most ``timeout_s``, by default the acknowledgement timeout). ``markers``: the
        model each of these partitions is served by from here on, written with the state."""
        if self.pending is not None:
            self._finish(self.pending, outbox, consumer, timeout_s)
        self.pending = None
        cp = self._snapshot(outbox.flush(), positions)
        cp.extra += [(self._marker_key(p), p, m.encode()) for p, m in (markers or {}).items()]
        self._finish(cp, outbox, consumer, timeout_s)

    def _marker_key(self, partition: int) -> bytes:
        return marker_key(int(self.writer_of(np.array([partition]))[0]))

    def write_markers(self, outbox: Outbox, markers: dict[int, ModelMarker],
                      replaced: dict[int, list[bytes]]) -> None:
        """The model of partitions just taken over, written (and acknowledged) before they
        serve: a replay after a crash then uses it too. ``replaced``: the marker keys of
        earlier owners, tombstoned after it."""
        for p, marker in markers.items():
            outbox.append(self.state_topic, p, self._marker_key(p), marker.encode())
            for key in replaced.get(p, []):
                outbox.append(self.state_topic, p, key, None)
        outbox.wait(outbox.flush(), self.ack_timeout_s)

    def persist(self, outbox: Outbox, partitions: set[int], timeout_s: float) -> None:
        """Steps 1 and 2 for partitions being handed over; no commit (not allowed there).
        Each wait at most ``timeout_s``: it runs in a rebalance callback, where the consumer
        sends no heartbeat (OutputFailed then; the next owner replays a little more)."""
        if self.pending is not None:
            self._finish(self.pending, outbox, None, timeout_s)
        self.pending = None
        self._finish(self._snapshot(outbox.flush(), {}, partitions), outbox, None, timeout_s)

    def abort(self, outbox: Outbox) -> None:
        """Exactly-once, at a revoke or a loss: everything since the last commit is dropped
        and its transaction aborted; the next owner replays from the commit."""
        self.reset()
        outbox.abort()

    def _finish(self, cp: _Pending, outbox: Outbox, consumer: KafkaConsumer | None,
                timeout_s: float | None = None) -> None:
        """Drive ``cp`` to the end: outputs acknowledged, its state sent and acknowledged,
        the commit."""
        timeout_s = self.ack_timeout_s if timeout_s is None else timeout_s
        outbox.wait(cp.outputs, timeout_s)
        if self._advance(cp, outbox, consumer, None):
            return
        assert cp.states_mark is not None  # without a budget, every state record is sent
        outbox.wait(cp.states_mark, timeout_s)
        if not self._advance(cp, outbox, consumer, None):
            raise OutputFailed("checkpoint not acknowledged after a wait")
