"""Records out as whole record batches: one produce request per broker and flush, acks=all.

``KafkaProducer.send`` costs 22-25 µs a record here (a future, locks, the partitioner and the
accumulator per record); appending to the outbox, kafka-python's own batch builder underneath,
about 4 µs (``python bench/outbox.py``).
The detector already knows every record's partition, and a poll's outputs leave together,
so the outbox builds one batch per partition (``DefaultRecordBatchBuilder``) and sends them as
``ProduceRequest``s with ``acks=all`` through kafka-python's network client (``KafkaNetClient``,
which replaced ``kafka.client_async.KafkaClient`` in kafka-python 3), its I/O on a thread of
its own as KafkaConsumer runs it. Nothing is retried here: any error, timeout or lost
connection makes every later ``done`` raise ``OutputFailed``, and the caller recovers the way
a restart does (replay from the last commit, identical duplicates). An error that says the
metadata is stale (a leader moved, a partition unknown) also asks for fresh metadata before
that recovery.

Acknowledgements are counted by *marks*: ``flush`` returns one, and ``done(mark)`` is true once
every record appended before it is acknowledged. That is all the checkpoint needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import kafka.errors as Errors
from kafka import TopicPartition
from kafka.future import Future
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.protocol.api_key import ApiKey
from kafka.protocol.producer import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from detector.errors import DetectorError
from detector.kafka import clients
from detector.kafka.versions import PINNED
from detector.settings.kafka import KafkaSettings

#: One partition's batch, as KafkaProducer's default batch_size here: well below a broker's
#: default message.max.bytes (1 MiB), which a whole uncompressed batch must fit.
BATCH_BYTES = 256 * 1024
#: One produce request, at most (the batches of one flush are split over several above it).
MAX_REQUEST_BYTES = 4 << 20
#: Unacknowledged bytes above which ``flush`` waits: the memory a stalled broker may cost.
MAX_IN_FLIGHT_BYTES = 32 << 20
#: Unacknowledged requests above which ``flush`` waits (the connections allow more, so a
#: request is never refused for being one too many).
MAX_IN_FLIGHT_REQUESTS = 100
#: A request without a response this long fails (and its connection is closed). Longer than
#: the stalls a broker rides out (a GC pause, a leader election; the chaos bench pauses it for
#: 15 s), so those end in acknowledgements rather than a recovery with its replay.
REQUEST_TIMEOUT_MS = 30_000
#: The magic of record batch v2 (headers, KIP-98 fields): every broker since 0.11.
MAGIC = 2

PRODUCE = PINNED[ApiKey.Produce]

_Topic = ProduceRequest.TopicProduceData
_Partition = _Topic.PartitionProduceData


class OutputFailed(DetectorError):
    """Some output, dead letter or state record was not acknowledged: nothing is committed
    (the detector recovers; the producer stops with this one line)."""


class Outbox:
    """Record batches per (topic, partition), sent with ``acks=all``; acknowledgements by mark.

    ``append`` and ``flush`` run on one thread at a time (the loop, or a rebalance callback
    while the loop waits in its poll); responses arrive on the client's I/O thread.
    """

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str], linger_ms: int = 0,
                 batch_bytes: int = BATCH_BYTES, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
                 request_timeout_ms: int = REQUEST_TIMEOUT_MS) -> None:
        self.topics = list(topics)
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.max_request_bytes = max_request_bytes
        self.max_in_flight_bytes = max_in_flight_bytes
        self.timeout_s = request_timeout_ms / 1000
        self._open: dict[tuple[str, int], list[Any]] = {}  # -> [builder, records]
        self._full: list[tuple[str, int, bytearray]] = []  # closed batches, not yet sent
        self._first_append: float | None = None  # monotonic time of the oldest unsent record
        self._cond = threading.Condition()
        self._generation = 0  # bumped by reset: responses of older requests are ignored
        self._next = 0  # id of the next request; a mark is the id of the next request
        self._in_flight: dict[int, int] = {}  # request id -> bytes, unacknowledged
        self._in_flight_bytes = 0
        self._error: BaseException | None = None
        self._stale = False  # a failure said the metadata is out of date: reset refreshes it
        self._net, self._manager, self._client = clients.guarded(
            kafka, _network, request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=2 * MAX_IN_FLIGHT_REQUESTS)
        try:
            self._refresh_metadata(kafka.connect_timeout_s)
        except OutputFailed as exc:
            self.close()
            raise clients.KafkaUnavailable(str(exc)) from exc

    # --- the loop's side --------------------------------------------------------------------

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: Iterable[tuple[str, bytes]] = ()) -> None:
        """One record into its partition's open batch (a full one is closed, a new one begun)."""
        slot = self._open.get((topic, partition))
        if slot is None:
            slot = self._open[(topic, partition)] = [self._builder(), 0]
            if self._first_append is None:
                self._first_append = time.monotonic()
        builder = slot[0]  # the timestamp (None): now, as KafkaProducer.send sets it
        if builder.append(slot[1], None, key, value, headers) is None:
            self._full.append((topic, partition, builder.build()))
            builder = slot[0] = self._builder()
            slot[1] = 0
            builder.append(0, None, key, value, headers)
        slot[1] += 1

    def _builder(self) -> DefaultRecordBatchBuilder:
        return DefaultRecordBatchBuilder(magic=MAGIC, compression_type=0, is_transactional=False,
                                         producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                         batch_size=self.batch_bytes)

    @property
    def pending(self) -> bool:
        """Records appended and not yet flushed."""
        return self._first_append is not None

    def linger_left_s(self) -> float:
        """How long the unsent records may still wait (0: flush now; inf: nothing waits)."""
        if self._first_append is None:
            return float("inf")
        return max(0.0, self._first_append + self.linger_s - time.monotonic())

    def flush(self) -> int:
        """Send every appended record: per leader, one request with one batch per partition
        (more when a partition has several batches or a request would exceed its limit).
        Returns the mark that covers them. Raises OutputFailed when a leader is unknown or
        the unacknowledged bytes stay above their limit for the request timeout."""
        if self._first_append is None:
            return self._next
        batches = self._full
        batches += [(topic, p, slot[0].build()) for (topic, p), slot in self._open.items()]
        self._full, self._open, self._first_append = [], {}, None
        by_node: dict[int, list[tuple[str, int, bytearray]]] = {}
        leader = self._manager.cluster.leader_for_partition
        for batch in batches:
            node = leader(TopicPartition(batch[0], batch[1]))
            if node is None or node < 0:
                self._stale = True
                self._manager.cluster.request_update()
                self._fail(OutputFailed(f"no leader known for {batch[0]}-{batch[1]}"))
                self._raise()
            by_node.setdefault(node, []).append(batch)
        requests = [(node, *request) for node, node_batches in by_node.items()
                    for request in self._requests(node_batches)]
        self._wait_for_room(len(requests), sum(size for _, _, size in requests))
        with self._cond:
            ids = []
            for _, _, size in requests:
                ids.append(self._next)
                self._in_flight[self._next] = size
                self._in_flight_bytes += size
                self._next += 1
            generation = self._generation
        self._manager.call_soon(self._send, generation,
                                [(node, request, i) for (node, request, _), i
                                 in zip(requests, ids, strict=True)])
        return self._next

    def _requests(self, batches: list[tuple[str, int, bytearray]]
                  ) -> Iterable[tuple[ProduceRequest, int]]:
        """Requests carrying ``batches`` in order: one batch per partition per request (the
        broker takes no more), at most ``max_request_bytes`` each (at least one batch)."""
        while batches:
            taken: dict[tuple[str, int], bytearray] = {}
            later: list[tuple[str, int, bytearray]] = []
            deferred: set[tuple[str, int]] = set()
            size = 0
            for topic, p, records in batches:
                tp = (topic, p)
                if tp in taken or tp in deferred or (
                        taken and size + len(records) > self.max_request_bytes):
                    later.append((topic, p, records))
                    deferred.add(tp)  # its later batches wait too: they stay in order
                    continue
                taken[tp] = records
                size += len(records)
            by_topic: dict[str, list[Any]] = {}
            for (topic, p), records in taken.items():
                by_topic.setdefault(topic, []).append(_Partition(index=p, records=records))
            yield ProduceRequest(
                transactional_id=None, acks=-1, timeout_ms=int(self.timeout_s * 1000),
                topic_data=[_Topic(name=t, partition_data=parts) for t, parts in by_topic.items()],
                min_version=PRODUCE[0], max_version=PRODUCE[1]), size
            batches = later

    def _wait_for_room(self, count: int, size: int) -> None:
        """Back-pressure: wait while the unacknowledged requests or bytes exceed their limit."""
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._in_flight and self._error is None and (
                    len(self._in_flight) + count > MAX_IN_FLIGHT_REQUESTS
                    or self._in_flight_bytes + size > self.max_in_flight_bytes):
                left = deadline - time.monotonic()
                if left <= 0:  # the batches in hand are dropped: it is an error for good
                    self._fail(OutputFailed(f"{self._in_flight_bytes:,} bytes still "
                                            f"unacknowledged after {self.timeout_s:g} s"))
                    break
                self._cond.wait(left)
        self._raise()

    def done(self, mark: int) -> bool:
        """True when every request before ``mark`` is acknowledged; raises OutputFailed once
        any request failed (until ``reset``)."""
        with self._cond:
            self._raise()
            return not self._in_flight or min(self._in_flight) >= mark

    def wait(self, mark: int, timeout_s: float) -> None:
        """Block until ``done(mark)``; OutputFailed after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self.done(mark):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutputFailed(f"records not acknowledged within {timeout_s:g} s")
                self._cond.wait(left)

    def reset(self) -> None:
        """Forget everything unsent and in flight (recovery: it is all replayed). When the
        metadata was found stale, wait (bounded) for a fresh copy first."""
        with self._cond:
            stale, self._stale = self._stale, False
            self._generation += 1
            self._in_flight.clear()
            self._in_flight_bytes = 0
            self._error = None
            self._open, self._full, self._first_append = {}, [], None
        if stale:
            self._refresh_metadata(self.timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the I/O thread and close the connections (nothing is flushed)."""
        self._net.stop(int(timeout_s * 1000))
        self._client.close()

    # --- the I/O thread's side --------------------------------------------------------------

    def _send(self, generation: int, requests: list[tuple[int, ProduceRequest, int]]) -> None:
        for node, request, i in requests:
            try:
                future: Future = self._client.send(node, request)
            except Errors.KafkaError as exc:  # an unknown broker id, a failed login
                self._failed(generation, i, exc)
                continue
            future.add_callback(self._response, generation, i)
            future.add_errback(self._failed, generation, i)

    def _response(self, generation: int, i: int, response: Any) -> None:
        error = produce_error(response)
        if error is not None:
            self._failed(generation, i, error)
            return
        with self._cond:
            if generation == self._generation:
                self._in_flight_bytes -= self._in_flight.pop(i, 0)
                self._cond.notify_all()

    def _failed(self, generation: int, i: int, error: BaseException) -> None:
        if isinstance(error, Errors.KafkaError) and error.invalid_metadata:
            self._stale = True
            self._manager.cluster.request_update()
        with self._cond:
            if generation == self._generation:
                self._fail(error)

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def _raise(self) -> None:
        error = self._error
        if isinstance(error, OutputFailed):
            raise OutputFailed(str(error))
        if error is not None:
            raise OutputFailed(f"a produce request failed: {type(error).__name__}: {error}")

    def _refresh_metadata(self, timeout_s: float) -> None:
        """Fresh metadata of our topics (their leaders), waiting at most ``timeout_s``."""
        cluster = self._manager.cluster
        future = cluster.set_topics(self.topics)
        if future.is_done:  # the topics were known: ask for a refresh all the same
            future = cluster.request_update()
        try:
            self._net.run(self._manager.wait_for, future, int(timeout_s * 1000))
        except Errors.KafkaError as exc:
            raise OutputFailed(f"no metadata for {', '.join(self.topics)}: {exc}") from exc


def produce_error(response: Any) -> Errors.KafkaError | None:
    """The first partition error in a ProduceResponse, as kafka-python's exception; None."""
    for topic in response.responses:
        for part in topic.partition_responses:
            if part.error_code:
                detail = f"{topic.name}-{part.index}"
                if part.error_message:
                    detail += f": {part.error_message}"
                return Errors.for_code(part.error_code)(detail)
    return None


def _network(bootstrap_timeout_ms: int, **config: Any
             ) -> tuple[NetworkSelector, KafkaConnectionManager, KafkaNetClient]:
    """kafka-python's network client without a producer on top, its I/O on its own thread
    (as KafkaConsumer runs it), bootstrapped."""
    net = NetworkSelector(**config)
    manager = KafkaConnectionManager(net, **config)
    client = KafkaNetClient(net=net, manager=manager)
    net.start()
    try:
        manager.bootstrap(bootstrap_timeout_ms)
    except BaseException:
        net.stop(1000)
        client.close()
        raise
    return net, manager, client
