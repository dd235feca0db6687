"""The checkpoint protocol, pipelined so that the loop never stops to wait for the broker.

A checkpoint covers everything processed up to the moment it is taken (its *snapshot*):
  1. the outputs and dead letters sent so far are acknowledged;
  2. then the state of every stream changed so far, encoded at the snapshot, is written to the
     state topic (partition = the stream's input partition) and acknowledged;
  3. then the input positions taken at the snapshot are committed.
The loop calls ``tick`` between polls: it takes a snapshot when one is due and moves the
pending one on as its acknowledgements arrive, so processing continues meanwhile. ``complete``
does the same to the end, blocking (shutdown); ``persist`` does steps 1 and 2 for partitions
being handed over (a rebalance callback, where kafka-python allows no commit: the next owner
skips what the written state covers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from detector.state import StateSnapshot, StreamStore

log = logging.getLogger(__name__)


#: State records sent per tick of the loop: a burst of 1,000 sends is ~25 ms of latency.
STATE_SENDS_PER_TICK = 250


class OutputFailed(RuntimeError):
    """Some output, dead letter or state record was not acknowledged: nothing is committed."""


@dataclass
class _Pending:
    outputs: list  # futures of the outputs and dead letters the snapshot covers
    states: StateSnapshot  # the changed streams' state records, encoded at the snapshot
    offsets: dict[TopicPartition, OffsetAndMetadata]
    started: float
    deadline: float
    scanned: int = 0  # outputs[:scanned] are known to be acknowledged
    state_futures: list | None = None
    states_scanned: int = 0
    committed: bool = field(default=False)


def _scan(futures: list, start: int) -> int:
    """How many futures from the front are acknowledged; raises if one failed."""
    i = start
    n = len(futures)
    while i < n:
        f = futures[i]
        if not f.is_done:
            break
        if f.exception is not None:
            raise OutputFailed(f"a record was not acknowledged: {f.exception}")
        i += 1
    return i


class Checkpointer:
    def __init__(self, store: StreamStore, fingerprint: bytes, state_topic: str,
                 interval_s: float, ack_timeout_s: float, commit_timeout_ms: int = 10_000):
        self.store = store
        self.fingerprint = fingerprint
        self.state_topic = state_topic
        self.interval_s = interval_s
        self.ack_timeout_s = ack_timeout_s
        self.commit_timeout_ms = commit_timeout_ms
        self.outputs: list = []  # futures sent since the last snapshot
        self.pending: _Pending | None = None
        self.last_snapshot = time.monotonic()
        self.last_ok: float | None = None  # when a checkpoint was last committed
        self.durations: list[float] = []  # seconds of each committed checkpoint, for metrics

    def track(self, future: object) -> None:
        self.outputs.append(future)

    def reset(self) -> None:
        """Forget everything in flight (recovery: memory is about to be rebuilt)."""
        self.outputs = []
        self.pending = None

    # --- steps ------------------------------------------------------------------------------

    def _snapshot(self, positions: dict[TopicPartition, int],
                  partitions: set[int] | None = None) -> _Pending:
        slots = self.store.dirty_slots(partitions)
        states = self.store.snapshot(slots, self.fingerprint)
        self.store.dirty[slots] = False
        now = time.monotonic()
        self.last_snapshot = now
        offsets = {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()
                   if partitions is None or tp.partition in partitions}
        outputs, self.outputs = self.outputs, []
        return _Pending(outputs, states, offsets, now, now + self.ack_timeout_s)

    def _advance(self, cp: _Pending, producer: KafkaProducer,
                 consumer: KafkaConsumer | None, chunk: int = STATE_SENDS_PER_TICK) -> bool:
        """Move ``cp`` on without waiting; True when it is committed (or, without a consumer,
        when its state is written)."""
        if time.monotonic() > cp.deadline:
            raise OutputFailed(f"checkpoint not acknowledged within {self.ack_timeout_s:g} s")
        if cp.state_futures is None:
            cp.scanned = _scan(cp.outputs, cp.scanned)
            if cp.scanned < len(cp.outputs):
                return False
            cp.state_futures = []
        if len(cp.state_futures) < len(cp.states):
            # A slice per call: 100,000 sends at once would hold the loop for seconds.
            send, start = producer.send, len(cp.state_futures)
            cp.state_futures += [send(self.state_topic, key=key, value=value, partition=p)
                                 for key, value, p in cp.states.records(start, start + chunk)]
            if len(cp.state_futures) < len(cp.states):
                return False
        cp.states_scanned = _scan(cp.state_futures, cp.states_scanned)
        if cp.states_scanned < len(cp.state_futures):
            return False
        if consumer is None:
            return True
        if cp.offsets:
            consumer.commit(cp.offsets, timeout_ms=self.commit_timeout_ms)
        self.last_ok = time.monotonic()
        self.durations.append(self.last_ok - cp.started)
        return True

    # --- what the loop calls ----------------------------------------------------------------

    def tick(self, producer: KafkaProducer, consumer: KafkaConsumer,
             positions: dict[TopicPartition, int]) -> None:
        """Between polls: take a snapshot when due, move the pending one on. Never waits."""
        if self.pending is None and time.monotonic() - self.last_snapshot >= self.interval_s:
            self.pending = self._snapshot(positions)
        if self.pending is not None and self._advance(self.pending, producer, consumer):
            self.pending = None

    def complete(self, producer: KafkaProducer, consumer: KafkaConsumer,
                 positions: dict[TopicPartition, int]) -> None:
        """Everything processed so far, checkpointed and committed, waiting as needed."""
        if self.pending is not None:
            self._finish(self.pending, producer, consumer)
        self.pending = None
        self._finish(self._snapshot(positions), producer, consumer)

    def persist(self, producer: KafkaProducer, partitions: set[int]) -> None:
        """Steps 1 and 2 for partitions being handed over; no commit (not allowed there)."""
        if self.pending is not None:
            self._finish(self.pending, producer, None)
        self.pending = None
        self._finish(self._snapshot({}, partitions), producer, None)

    def _finish(self, cp: _Pending, producer: KafkaProducer,
                consumer: KafkaConsumer | None) -> None:
        """Drive ``cp`` to the end, flushing whenever it waits on acknowledgements."""
        producer.flush(timeout=self.ack_timeout_s)
        while not self._advance(cp, producer, consumer, chunk=10_000):
            if cp.state_futures is None or len(cp.state_futures) == len(cp.states):
                producer.flush(timeout=self.ack_timeout_s)
