"""Records out as whole record batches: one produce request per broker and flush, acks=all.

``KafkaProducer.send`` costs 22-25 µs a record here (a future, locks, the partitioner and the
accumulator per record); appending to the outbox, kafka-python's own batch builder underneath,
about 4 µs (``python bench/outbox.py``).
The detector already knows every record's partition, and a poll's outputs leave together,
so the outbox builds one batch per partition (``DefaultRecordBatchBuilder``) and hands them to
its sender (``detector/kafka/produce.py``): an idempotent producer that sends them as
``ProduceRequest``s with ``acks=all`` through kafka-python's network client
(``KafkaNetClient``), its I/O on a thread of its own, and retries what the broker can take
later (a leader moved, a replica missing, a lost connection) without reordering or
duplicating a partition. What retrying cannot cure, or a batch unacknowledged for the
delivery timeout, makes every later ``done`` raise ``OutputFailed``, and the caller recovers
the way a restart does (replay from the last commit, identical duplicates) or, for a fatal
cause (``clients.fatal``), stops with one line.

Acknowledgements are counted by *marks*: ``flush`` returns one, and ``done(mark)`` is true once
every record appended before it is acknowledged. That is all the checkpoint needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import kafka.errors as Errors
from kafka.net.compat import KafkaNetClient
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.record.default_records import DefaultRecordBatchBuilder

from detector.errors import DetectorError
from detector.kafka import clients
from detector.kafka.produce import Batch, Sender, SendFailed
from detector.kafka.transactions import Transactions
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: One partition's batch, as KafkaProducer's default batch_size here: well below a broker's
#: default message.max.bytes (1 MiB), which a whole uncompressed batch must fit.
BATCH_BYTES = 256 * 1024
#: One produce request, at most (the batches of one flush are split over several above it).
MAX_REQUEST_BYTES = 4 << 20
#: Unacknowledged bytes above which ``flush`` waits: the memory a stalled broker may cost.
MAX_IN_FLIGHT_BYTES = 32 << 20
#: A request without a response this long is sent again (its connection closed). Longer than
#: the stalls a broker rides out (a GC pause, a leader election).
REQUEST_TIMEOUT_MS = 30_000
#: A batch still unacknowledged this long after it was first sent fails the outbox: the
#: broker is gone for good, as far as this detector can tell (as Kafka's delivery.timeout.ms).
DELIVERY_TIMEOUT_MS = 120_000
#: The magic of record batch v2 (headers, KIP-98 fields): every broker since 0.11.
MAGIC = 2


class OutputFailed(DetectorError):
    """Some output, dead letter or state record was not acknowledged: nothing is committed
    (the detector recovers; the producer stops with this one line). ``cause``: the broker's
    error where there was one."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class Outbox:
    """Record batches per (topic, partition), sent with ``acks=all``; acknowledgements by mark.

    ``append`` and ``flush`` run on one thread at a time (the loop, or a rebalance callback
    while the loop waits in its poll); responses arrive on the client's I/O thread.
    """

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str], linger_ms: int = 0,
                 batch_bytes: int = BATCH_BYTES, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_in_flight_bytes: int = MAX_IN_FLIGHT_BYTES,
                 request_timeout_ms: int = REQUEST_TIMEOUT_MS,
                 delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
                 transactional_id: str | None = None,
                 transaction_timeout_ms: int = 10_000) -> None:
        """``transactional_id``: write in transactions (``commit``, ``abort``), as that id."""
        self.topics = list(topics)
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.max_in_flight_bytes = max_in_flight_bytes
        self.timeout_s = request_timeout_ms / 1000
        self.delivery_s = delivery_timeout_ms / 1000
        self._open: dict[tuple[str, int], list[Any]] = {}  # -> [builder, records]
        self._full: list[tuple[str, int, DefaultRecordBatchBuilder, int]] = []
        self._first_append: float | None = None  # monotonic time of the oldest unsent record
        self._next = 0  # id of the next batch; a mark is the id of the next batch
        self._error: SendFailed | None = None
        self._net, self._manager, self._client = clients.guarded(
            kafka, _network, request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=1000)
        self.sender = Sender(self._net, self._manager, self._client, self.timeout_s,
                             max_request_bytes, self._failed)
        self._cond = self.sender.cond
        self.txn = None if not transactional_id else Transactions(
            self._manager, transactional_id, transaction_timeout_ms,
            max(kafka.connect_timeout_s, self.timeout_s))
        self._in_txn: set[tuple[str, int]] = set()  # partitions added to the open transaction
        self.commits: list[float] = []  # seconds each transaction's commit took, to be taken
        self.aborts = 0
        try:
            self._refresh_metadata(kafka.connect_timeout_s)
            self._init_producer(kafka.connect_timeout_s)
        except (OutputFailed, SendFailed, Errors.KafkaError) as exc:
            self.close()
            if clients.fatal(exc):
                raise
            raise clients.KafkaUnavailable(str(exc)) from exc

    def _init_producer(self, timeout_s: float) -> None:
        """An idempotent producer id, or the transactional one (which aborts what this id's
        previous holder left open)."""
        if self.txn is None:
            self.sender.init_producer(timeout_s)
        else:
            self.sender.use_producer(*self.txn.init(), self.txn.transactional_id)
            self._in_txn.clear()

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
            self._full.append((topic, partition, builder, slot[1]))
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
        """Send every appended record: the sender groups the batches into one request per
        leader (more when a partition has several batches or a request would exceed its
        limit). Returns the mark that covers them. Raises OutputFailed once the outbox failed,
        or when the unacknowledged bytes stay above their limit for the request timeout."""
        self._raise()
        if self._first_append is None:
            return self._next
        built = self._full + [(t, p, slot[0], slot[1]) for (t, p), slot in self._open.items()]
        self._full, self._open, self._first_append = [], {}, None
        batches = []
        for topic, partition, builder, records in built:
            self.sender.stamp(builder, topic, partition, records)
            batches.append(Batch(self._next, topic, partition, builder.build(), records))
            self._next += 1
        self._wait_for_room(sum(len(b.data) for b in batches))
        if self.txn is not None:
            new = {(b.topic, b.partition) for b in batches} - self._in_txn
            if new:
                self._add_to_transaction(sorted(new))
        self.sender.submit(batches)
        return self._next

    def _add_to_transaction(self, partitions: list[tuple[str, int]]) -> None:
        assert self.txn is not None
        try:
            self.txn.add_partitions(partitions)
        except Errors.KafkaError as exc:
            raise OutputFailed(f"cannot add partitions to the transaction: {exc}", exc) from exc
        self._in_txn.update(partitions)

    @property
    def in_transaction(self) -> bool:
        """Something was written in the open transaction."""
        return bool(self._in_txn)

    def commit(self, offsets: dict, group: object) -> None:
        """Commit the open transaction with these input offsets (everything in it must be
        acknowledged first: ``wait``). OutputFailed when it cannot: the caller recovers,
        which aborts it."""
        assert self.txn is not None
        self._raise()
        started = time.perf_counter()
        try:
            self.txn.commit(offsets, group)
            self.commits.append(time.perf_counter() - started)
        except Errors.KafkaError as exc:
            raise OutputFailed(f"the transaction did not commit: {exc}",
                               getattr(exc, "cause", exc)) from exc
        self._in_txn.clear()

    def abort(self) -> None:
        """Forget everything since the last commit. Records not yet sent are dropped; when the
        open transaction holds any, a new producer epoch aborts it (``reset``). An EndTxn
        would not do: a batch still in flight or retried after it would land in the next
        transaction, and records appended before it would be sent in that one."""
        if self.txn is None:
            return
        if self._in_txn:
            self.reset()
        else:
            self._drop_unsent()

    def _drop_unsent(self) -> None:
        with self._cond:
            self._open, self._full, self._first_append = {}, [], None

    def _wait_for_room(self, size: int) -> None:
        """Back-pressure: wait while the unacknowledged bytes exceed their limit."""
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while (self.sender.unacked and self._error is None
                   and self.sender.unacked_bytes + size > self.max_in_flight_bytes):
                left = deadline - time.monotonic()
                if left <= 0:
                    self._error = SendFailed(f"{self.sender.unacked_bytes:,} bytes still "
                                             f"unacknowledged after {self.timeout_s:g} s")
                    break
                self._cond.wait(left)
        self._raise()

    def done(self, mark: int) -> bool:
        """True when every record before ``mark`` is acknowledged; raises OutputFailed once
        any failed, or one waited longer than the delivery timeout (until ``reset``)."""
        with self._cond:
            self._raise()
            unacked = self.sender.unacked
            if not unacked:
                return True
            oldest = min(unacked)
            sent = unacked[oldest].first_sent
            if sent is not None and time.monotonic() - sent > self.delivery_s:
                self._error = SendFailed(f"records not acknowledged within {self.delivery_s:g} s "
                                         "of their first send (timed out)")
                self._raise()
            return oldest >= mark

    def wait(self, mark: int, timeout_s: float) -> None:
        """Block until ``done(mark)``; OutputFailed after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self.done(mark):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OutputFailed(f"records not acknowledged within {timeout_s:g} s "
                                       "(timed out)")
                self._cond.wait(min(left, 1.0))

    def reset(self) -> None:
        """Forget everything unsent and in flight (recovery: it is all replayed): fresh
        metadata, a fresh producer id (a new epoch of the transactional one aborts the open
        transaction)."""
        if self._in_txn:
            self.aborts += 1
        self.sender.reset()
        self._drop_unsent()
        with self._cond:
            self._error = None
        wait_s = max(self.timeout_s, 10.0)  # a broker just back may take a moment
        self._refresh_metadata(wait_s)
        try:
            self._init_producer(wait_s)
        except SendFailed as exc:
            raise OutputFailed(str(exc), exc.cause) from exc
        except Errors.KafkaError as exc:
            raise OutputFailed(f"no transactional producer: {exc}",
                               getattr(exc, "cause", exc)) from exc

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the I/O thread and close the connections (nothing is flushed)."""
        self._net.stop(int(timeout_s * 1000))
        self._client.close()

    # --- failures ---------------------------------------------------------------------------

    def _failed(self, failure: SendFailed) -> None:
        """The sender gave up (on its I/O thread)."""
        with self._cond:
            if self._error is None:
                self._error = failure
            self._cond.notify_all()

    def _raise(self) -> None:
        error = self._error
        if error is not None:
            raise OutputFailed(str(error), error.cause)

    def _refresh_metadata(self, timeout_s: float) -> None:
        """Fresh metadata of our topics (their leaders), trying for at most ``timeout_s`` (a
        refresh that fails at once, the broker not back yet, is asked for again)."""
        cluster = self._manager.cluster
        deadline = time.monotonic() + timeout_s
        future = cluster.set_topics(self.topics)
        while True:
            if future.is_done:  # known topics, or a refresh that failed: ask again
                future = cluster.request_update()
            left = deadline - time.monotonic()
            try:
                self._net.run(self._manager.wait_for, future, int(max(left, 0.1) * 1000))
                return
            except Errors.KafkaError as exc:
                if time.monotonic() + 0.2 >= deadline:
                    raise OutputFailed(f"no metadata for {', '.join(self.topics)}: {exc}",
                                       exc) from exc
                time.sleep(0.2)


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
