"""The outbox's sending side: an idempotent producer's record batches, in order per partition,
retried until acknowledged.

The producer id and epoch come from ``InitProducerId``; each partition's batches carry
consecutive sequence numbers, so the broker writes a batch once however often it is sent
(KIP-98). A retry after a leader moved (NOT_LEADER_OR_FOLLOWER), a lost connection, a request
that timed out or NOT_ENOUGH_REPLICAS during a rolling restart then neither loses, duplicates
nor reorders records. At most ``MAX_IN_FLIGHT_PER_PARTITION`` batches of a partition are
unacknowledged on the wire (what the broker remembers per producer and partition); a failed
one holds its partition back until every batch of it in flight has answered, then all its
unacknowledged batches go again, in order, after a backoff. What retrying cannot cure (an
authorization, a record too large, a sequence the broker lost) fails the sender for good: the
caller recovers, or stops where the error is fatal (``clients.fatal``).

Everything here but ``init_producer`` runs on the network client's I/O thread; the outbox
calls in through ``submit`` (thread-safe) and reads ``unacked`` under ``cond``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kafka.errors as Errors
from kafka import TopicPartition
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest

from detector.kafka.versions import PINNED, ApiKey

log = logging.getLogger(__name__)

#: Unacknowledged batches of one partition on the wire: the broker keeps the last five per
#: producer to recognise a retried one (``DUPLICATE_SEQUENCE_NUMBER``).
MAX_IN_FLIGHT_PER_PARTITION = 5
#: Backoff of a partition's retries: doubled per failure of its first batch, up to the max.
RETRY_BACKOFF_S = 0.1
RETRY_BACKOFF_MAX_S = 1.0
#: Sequence numbers wrap at the int32 maximum (as the Java producer's do).
_SEQ_MOD = 2**31

_Topic = ProduceRequest.TopicProduceData
_Partition = _Topic.PartitionProduceData


@dataclass(eq=False)
class Batch:
    """One partition's built record batch; ``id`` orders batches across partitions (a mark)."""

    id: int
    topic: str
    partition: int
    data: bytearray
    records: int
    in_flight: bool = False
    first_sent: float | None = None
    failures: int = 0


class SendFailed(Exception):
    """What the outbox reports as ``OutputFailed``: ``cause`` is the broker's error, if any."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class Sender:
    """Per partition, its unacknowledged batches in sequence order; requests per leader."""

    def __init__(self, net: NetworkSelector, manager: KafkaConnectionManager,
                 client: KafkaNetClient, request_timeout_s: float, max_request_bytes: int,
                 on_failure: Callable[[SendFailed], None]):
        self.net, self.manager, self.client = net, manager, client
        self.request_timeout_s = request_timeout_s
        self.max_request_bytes = max_request_bytes
        self.cond = threading.Condition()
        self.unacked: dict[int, Batch] = {}  # id -> batch
        self.unacked_bytes = 0
        self._queues: dict[tuple[str, int], deque[Batch]] = {}
        self._retry_at: dict[tuple[str, int], float] = {}
        self._generation = 0
        self._on_failure = on_failure
        self.producer_id, self.epoch = -1, -1
        self.transactional: str | None = None  # the transactional id of its batches
        self._sequence: dict[tuple[str, int], int] = {}
        self.retries = 0  # batches sent again since the last ``take_retries``

    # --- identity (the caller's thread) ------------------------------------------------------

    def init_producer(self, timeout_s: float) -> None:
        """A fresh producer id and epoch (InitProducerId), sequences from 0. A broker that
        will not give one (too old, or an ACL) leaves the sender plain, without retries;
        one that cannot be reached raises SendFailed (the caller retries later)."""
        request = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1,
                                        producer_id=-1, producer_epoch=-1)

        async def init() -> Any:
            return await self.manager.send(request)

        self._sequence.clear()
        self.producer_id, self.epoch = -1, -1
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                left = max(0.1, deadline - time.monotonic())
                response = self.manager.run(self.manager.wait_for,
                                            self.manager.call_soon(init), int(left * 1000))
                error = Errors.for_code(response.error_code)
                if error is not Errors.NoError:
                    raise error()
            except Errors.KafkaError as exc:
                if not exc.retriable:
                    log.warning("no idempotent producer id from Kafka (%s): outputs are sent "
                                "without retries", type(exc).__name__)
                    return
                if time.monotonic() > deadline:  # a fresh cluster loads its ids at first
                    raise SendFailed(f"no producer id from Kafka: {type(exc).__name__}",
                                     exc) from exc
                time.sleep(RETRY_BACKOFF_S)
                continue
            self.producer_id, self.epoch = response.producer_id, response.producer_epoch
            return

    def use_producer(self, producer_id: int, epoch: int, transactional_id: str) -> None:
        """A transactional producer's id and epoch (``transactions.Transactions.init``):
        its batches are transactional, sequences from 0."""
        self.producer_id, self.epoch = producer_id, epoch
        self.transactional = transactional_id
        self._sequence.clear()

    def take_retries(self) -> int:
        n, self.retries = self.retries, 0
        return n

    @property
    def idempotent(self) -> bool:
        return self.producer_id >= 0

    def stamp(self, builder: Any, topic: str, partition: int, records: int) -> None:
        """Give a batch about to be built its producer id, epoch and first sequence."""
        if not self.idempotent:
            return
        tp = (topic, partition)
        base = self._sequence.get(tp, 0)
        self._sequence[tp] = (base + records) % _SEQ_MOD
        builder.set_producer_state(self.producer_id, self.epoch, base, bool(self.transactional))

    # --- the loop's side ---------------------------------------------------------------------

    def submit(self, batches: list[Batch]) -> None:
        """Queue built batches (in their partitions' order) and have them sent."""
        with self.cond:
            generation = self._generation
            for b in batches:
                self.unacked[b.id] = b
                self.unacked_bytes += len(b.data)
        self.manager.call_soon(self._enqueue, generation, batches)

    def reset(self) -> None:
        """Forget every batch (recovery: they are all replayed)."""
        with self.cond:
            self._generation += 1
            self.unacked.clear()
            self.unacked_bytes = 0
        self.manager.call_soon(self._clear, self._generation)

    # --- the I/O thread's side ---------------------------------------------------------------

    def _clear(self, generation: int) -> None:
        if generation == self._generation:
            self._queues.clear()
            self._retry_at.clear()

    def _enqueue(self, generation: int, batches: list[Batch]) -> None:
        if generation != self._generation:
            return
        for b in batches:
            self._queues.setdefault((b.topic, b.partition), deque()).append(b)
        self._dispatch()

    def _sendable(self, now: float) -> list[Batch]:
        """The batches that may go now, in each partition's order."""
        out: list[Batch] = []
        for tp, queue in self._queues.items():
            if self._retry_at.get(tp, 0.0) > now:
                continue
            flying = sum(1 for b in queue if b.in_flight)
            if flying and any(b.failures and not b.in_flight for b in queue):
                continue  # a failed batch waits for the rest of its partition to answer
            room = (MAX_IN_FLIGHT_PER_PARTITION if self.idempotent else 1 << 30) - flying
            for b in queue:
                if room <= 0:
                    break
                if not b.in_flight:
                    out.append(b)
                    room -= 1
        return out

    def _dispatch(self) -> None:
        """Send what may go: per leader, requests of one batch per partition."""
        now = time.monotonic()
        by_node: dict[int, list[Batch]] = {}
        cluster = self.manager.cluster
        for b in self._sendable(now):
            tp = TopicPartition(b.topic, b.partition)
            known = cluster.partitions_for_topic(b.topic)
            if known is not None and b.partition not in known:
                self._fail(SendFailed(f"{b.topic}-{b.partition}: no such partition (the topic "
                                      f"has {len(known)})"))
                return
            node = cluster.leader_for_partition(tp)
            if node is None or node < 0:  # an election, or metadata not in yet: later
                self._retry(b, Errors.LeaderNotAvailableError(f"{b.topic}-{b.partition}"))
                continue
            by_node.setdefault(node, []).append(b)
        for node, batches in by_node.items():
            while batches:
                taken, batches = self._one_request(batches)
                self._send(node, taken)

    def _one_request(self, batches: list[Batch]) -> tuple[list[Batch], list[Batch]]:
        """The batches of one request (one per partition, within the size limit, each
        partition's in order) and those left for the next."""
        taken: dict[tuple[str, int], Batch] = {}
        later: list[Batch] = []
        size = 0
        for b in batches:
            tp = (b.topic, b.partition)
            if tp in taken or (taken and size + len(b.data) > self.max_request_bytes) \
                    or any((x.topic, x.partition) == tp for x in later):
                later.append(b)
                continue
            taken[tp] = b
            size += len(b.data)
        return list(taken.values()), later

    def _send(self, node: int, batches: list[Batch]) -> None:
        by_topic: dict[str, list[Any]] = {}
        for b in batches:
            by_topic.setdefault(b.topic, []).append(_Partition(index=b.partition, records=b.data))
            b.in_flight = True
            b.first_sent = b.first_sent or time.monotonic()
        low, high = PINNED[ApiKey.Produce]
        request = ProduceRequest(
            transactional_id=self.transactional, acks=-1,
            timeout_ms=int(self.request_timeout_s * 1000),
            topic_data=[_Topic(name=t, partition_data=p) for t, p in by_topic.items()],
            min_version=low, max_version=high)
        generation = self._generation
        try:
            future = self.client.send(node, request)
        except Errors.KafkaError as exc:  # an unknown broker id: metadata moved on
            self._answered(generation, batches, exc)
            return
        future.add_callback(self._response, generation, batches)
        future.add_errback(lambda exc: self._answered(generation, batches, exc))

    def _response(self, generation: int, batches: list[Batch], response: Any) -> None:
        errors = {(topic.name, part.index): (part.error_code, part.error_message)
                  for topic in response.responses for part in topic.partition_responses}
        for b in batches:
            code, message = errors.get((b.topic, b.partition), (0, None))
            error = None
            if code and code != Errors.DuplicateSequenceNumberError.errno:
                detail = f"{b.topic}-{b.partition}" + (f": {message}" if message else "")
                error = Errors.for_code(code)(detail)
            self._answered(generation, [b], error)

    def _answered(self, generation: int, batches: list[Batch], error: BaseException | None
                  ) -> None:
        if generation != self._generation:
            return
        for b in batches:
            b.in_flight = False
            if error is None:
                self._acked(b)
            elif self._retriable(b, error):
                self._retry(b, error)
            else:
                self._fail(SendFailed(f"a produce request failed: {type(error).__name__}: "
                                      f"{error}", error))
                return
        self._dispatch()

    def _retriable(self, b: Batch, error: BaseException) -> bool:
        """Whether sending ``b`` again can cure ``error``."""
        if not self.idempotent:
            return False  # without sequence numbers a retry could reorder the partition
        if isinstance(error, Errors.OutOfOrderSequenceNumberError):
            queue = self._queues.get((b.topic, b.partition))
            return bool(queue) and queue[0] is not b  # an earlier batch failed first
        if isinstance(error, Errors.UnknownBrokerIdError):
            return True  # its leader left the metadata: fresh metadata names the new one
        if isinstance(error, Errors.KafkaError):
            return error.retriable
        return isinstance(error, OSError)

    def _retry(self, b: Batch, error: BaseException) -> None:
        tp = (b.topic, b.partition)
        b.failures += 1
        self.retries += 1
        if getattr(error, "invalid_metadata", False) or isinstance(error, OSError):
            self.manager.cluster.request_update()
        first = self._queues[tp][0]
        delay = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S * 2 ** min(first.failures, 10))
        self._retry_at[tp] = time.monotonic() + delay
        log.debug("retrying %s-%d in %.1f s (%s)", b.topic, b.partition, delay, error)
        self.net.call_later(delay, self._dispatch)

    def _acked(self, b: Batch) -> None:
        queue = self._queues.get((b.topic, b.partition))
        if queue is not None and b in queue:
            queue.remove(b)
            if not queue:
                del self._queues[(b.topic, b.partition)]
                self._retry_at.pop((b.topic, b.partition), None)
        with self.cond:
            if self.unacked.pop(b.id, None) is not None:
                self.unacked_bytes -= len(b.data)
            self.cond.notify_all()

    def _fail(self, failure: SendFailed) -> None:
        with self.cond:
            self._generation += 1  # nothing of this generation is sent or counted any more
        self._queues.clear()
        self._retry_at.clear()
        self._on_failure(failure)
