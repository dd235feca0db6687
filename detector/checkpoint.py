"""The checkpoint protocol, pipelined so that the loop never stops to wait for the broker.

A checkpoint covers everything processed up to the moment it is taken (its *snapshot*):
  1. the outputs and dead letters sent so far are acknowledged;
  2. then the state of every stream changed so far, encoded at the snapshot, is written to the
     state topic (partition = the stream's input partition) and acknowledged;
  3. then the input positions taken at the snapshot are committed.
Streams idle for longer than the stream TTL are forgotten at a snapshot: their slot is freed
and a tombstone goes to the state topic with the snapshot's state records (before the commit),
so compaction drops their state and a restore does not bring them back.
The loop calls ``tick`` between polls: it takes a snapshot when one is due and moves the
pending one on as its acknowledgements arrive, so processing continues meanwhile. ``complete``
does the same to the end, blocking (shutdown); ``persist`` does steps 1 and 2 for partitions
being handed over (a rebalance callback, where kafka-python allows no commit: the next owner
skips what the written state covers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from detector.state import StateSnapshot, StreamStore

log = logging.getLogger(__name__)

#: Longest a tick spends sending state records: a burst of 1,000 sends is ~30 ms of latency
#: for every event that arrives meanwhile. The loop polls without waiting while it sends.
STATE_SEND_BUDGET_S = 0.005


class OutputFailed(RuntimeError):
    """Some output, dead letter or state record was not acknowledged: nothing is committed."""


class Acks:
    """Counts the acknowledgements of a group of sends without holding on to their futures.

    A million state records would otherwise keep a million futures alive until the last is
    acknowledged. Callbacks run on the producer's I/O thread, hence the lock.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def add(self, future: object) -> None:
        self.sent += 1
        future.add_both(self._done)  # type: ignore[attr-defined]  # kafka.future.Future

    def _done(self, value: object) -> None:
        with self._lock:
            self.acked += 1
            if isinstance(value, BaseException):
                self.error = value

    def complete(self) -> bool:
        """True when every send so far is acknowledged; raises if one failed."""
        if self.error is not None:
            raise OutputFailed(f"a record was not acknowledged: {self.error}")
        return self.acked >= self.sent


@dataclass
class _Pending:
    outputs: Acks  # the outputs and dead letters the snapshot covers
    states: StateSnapshot  # the changed streams' state records, encoded at the snapshot
    offsets: dict[TopicPartition, OffsetAndMetadata]
    started: float
    deadline: float
    tombstones: list[tuple[bytes, int]] = field(default_factory=list)  # (key, partition)
    state_acks: Acks = field(default_factory=Acks)
    states_sent: int = 0


class Checkpointer:
    def __init__(self, store: StreamStore, fingerprint: bytes, state_topic: str,
                 interval_s: float, ack_timeout_s: float, commit_timeout_ms: int = 10_000,
                 stream_ttl_s: float = 0.0, wall_clock: Callable[[], float] = time.time):
        self.store = store
        self.fingerprint = fingerprint
        self.state_topic = state_topic
        self.interval_s = interval_s
        self.ack_timeout_s = ack_timeout_s
        self.commit_timeout_ms = commit_timeout_ms
        self.outputs = Acks()  # sends since the last snapshot
        self.pending: _Pending | None = None
        self.last_snapshot = time.monotonic()
        self.last_ok: float | None = None  # when a checkpoint was last committed
        self.durations: list[float] = []  # seconds of each committed checkpoint, for metrics
        self.stream_ttl_s = stream_ttl_s  # 0: never forget a stream
        self._wall = wall_clock
        self._evicted = 0  # streams forgotten since the last ``take_evicted``

    def track(self, future: object) -> None:
        self.outputs.add(future)

    def take_evicted(self) -> int:
        """Streams forgotten since the last call (for a metric)."""
        n, self._evicted = self._evicted, 0
        return n

    def reset(self) -> None:
        """Forget everything in flight (recovery: memory is about to be rebuilt)."""
        self.outputs = Acks()
        self.pending = None

    # --- steps ------------------------------------------------------------------------------

    def _snapshot(self, positions: dict[TopicPartition, int],
                  partitions: set[int] | None = None) -> _Pending:
        tombstones = self._evict() if partitions is None else []
        slots = self.store.dirty_slots(partitions)
        states = self.store.snapshot(slots, self.fingerprint)
        self.store.dirty[slots] = False
        now = time.monotonic()
        self.last_snapshot = now
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()
                   if partitions is None or tp.partition in partitions}
        outputs, self.outputs = self.outputs, Acks()
        return _Pending(outputs, states, offsets, now, now + self.ack_timeout_s, tombstones)

    def _evict(self) -> list[tuple[bytes, int]]:
        """Forget the streams idle for longer than the TTL; their tombstones, to be sent."""
        if not self.stream_ttl_s:
            return []
        slots = self.store.idle_slots(self._wall() - self.stream_ttl_s)
        if not len(slots):
            return []
        keys = [self.store.keys[slot] for slot in slots.tolist()]
        tombstones = [(key if isinstance(key, bytes) else key.encode(), int(p))
                      for key, p in zip(keys, self.store.partition[slots].tolist(), strict=True)]
        self._evicted += self.store.drop(slots)
        return tombstones

    def _advance(self, cp: _Pending, producer: KafkaProducer,
                 consumer: KafkaConsumer | None, budget_s: float | None) -> bool:
        """Move ``cp`` on without waiting for acknowledgements; True when its commit is made (or,
        without a consumer, when its state is written). ``budget_s`` bounds the sending; with
        a budget the commit is asynchronous (a lost one only means a little more replay)."""
        if time.monotonic() > cp.deadline:
            raise OutputFailed(f"checkpoint not acknowledged within {self.ack_timeout_s:g} s")
        if not cp.outputs.complete():
            return False
        if cp.states_sent < len(cp.states):
            until = None if budget_s is None else time.perf_counter() + budget_s
            send = producer.send
            while cp.states_sent < len(cp.states):
                for key, value, p in cp.states.records(cp.states_sent, cp.states_sent + 20):
                    cp.state_acks.add(send(self.state_topic, key=key, value=value, partition=p))
                cp.states_sent = min(cp.states_sent + 20, len(cp.states))
                if until is not None and time.perf_counter() > until:
                    return False
        for key, p in cp.tombstones:
            cp.state_acks.add(producer.send(self.state_topic, key=key, value=None, partition=p))
        cp.tombstones = []
        if not cp.state_acks.complete():
            return False
        if consumer is None:
            return True
        if budget_s is None:
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

    def tick(self, producer: KafkaProducer, consumer: KafkaConsumer,
             positions: dict[TopicPartition, int]) -> None:
        """Between polls: take a snapshot when due, move the pending one on. Never waits."""
        if self.pending is None and time.monotonic() - self.last_snapshot >= self.interval_s:
            self.pending = self._snapshot(positions)
        if self.pending is not None and self._advance(self.pending, producer, consumer,
                                                      STATE_SEND_BUDGET_S):
            self.pending = None

    @property
    def sending(self) -> bool:
        """State records of the pending checkpoint are being sent: poll without waiting."""
        cp = self.pending
        return cp is not None and 0 < cp.states_sent < len(cp.states)

    def complete(self, producer: KafkaProducer, consumer: KafkaConsumer,
                 positions: dict[TopicPartition, int], timeout_s: float | None = None) -> None:
        """Everything processed so far, checkpointed and committed, waiting as needed (each
        flush at most ``timeout_s``, by default the acknowledgement timeout)."""
        if self.pending is not None:
            self._finish(self.pending, producer, consumer, timeout_s)
        self.pending = None
        self._finish(self._snapshot(positions), producer, consumer, timeout_s)

    def persist(self, producer: KafkaProducer, partitions: set[int]) -> None:
        """Steps 1 and 2 for partitions being handed over; no commit (not allowed there)."""
        if self.pending is not None:
            self._finish(self.pending, producer, None)
        self.pending = None
        self._finish(self._snapshot({}, partitions), producer, None)

    def _finish(self, cp: _Pending, producer: KafkaProducer, consumer: KafkaConsumer | None,
                timeout_s: float | None = None) -> None:
        """Drive ``cp`` to the end: flush, send its state, flush, commit."""
        timeout_s = self.ack_timeout_s if timeout_s is None else timeout_s
        producer.flush(timeout=timeout_s)
        if self._advance(cp, producer, consumer, None):
            return
        producer.flush(timeout=timeout_s)
        if not self._advance(cp, producer, consumer, None):
            raise OutputFailed("checkpoint not acknowledged after a flush")
