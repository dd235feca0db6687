"""Kafka transactions for exactly-once (KIP-98, with KIP-447's fencing of stale members).

The outbox writes transactional record batches itself (``produce.Sender``); this module sends
the transaction's own requests over the same network client: ``InitProducerId`` under the
member's transactional id (which also aborts whatever its previous incarnation left open),
``AddPartitionsToTxn`` before a partition's first batch in a transaction, and at a checkpoint
``AddOffsetsToTxn``, ``TxnOffsetCommit`` (with the consumer's group metadata: a member the
group has moved on from is refused, so its writes never become visible) and ``EndTxn``. An
abort is a new epoch (``init`` again): it also fences this producer's requests still in flight,
which an EndTxn abort would let into the next transaction.

Requests go as transaction version 1 (EndTxn up to v3): the producer epoch stays the same from
one transaction to the next, as every broker since 2.5 takes it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kafka.errors as Errors
from kafka.net.manager import KafkaConnectionManager
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.protocol.producer import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
    TxnOffsetCommitRequest,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

#: Waits between tries of a request the coordinator is not ready for (a transaction's
#: markers still being written: CONCURRENT_TRANSACTIONS, or a coordinator moving).
RETRY_S = 0.02
RETRY_MAX_S = 0.5

_AddTopic = AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
_OffsetTopic = TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
_OffsetPartition = _OffsetTopic.TxnOffsetCommitRequestPartition


class TransactionFailed(Errors.KafkaError):
    """The open transaction is aborted or cannot commit; ``cause`` says why. A fenced producer
    (another process took the transactional id) is fatal (``clients.fatal``)."""

    retriable = True

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class Transactions:
    """One transactional id's requests, each retried until ``timeout_s`` where that helps."""

    def __init__(self, manager: KafkaConnectionManager, transactional_id: str,
                 transaction_timeout_ms: int, timeout_s: float):
        self.manager = manager
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.timeout_s = timeout_s
        self.producer_id, self.epoch = -1, -1
        self._coordinators: dict[tuple[int, str], int] = {}  # (key type, key) -> node

    # --- requests ---------------------------------------------------------------------------

    def init(self) -> tuple[int, int]:
        """The producer id and a new epoch for the transactional id (fencing any older
        holder of it, aborting its open transaction)."""
        response = self._call(1, self.transactional_id, lambda: InitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.transaction_timeout_ms, producer_id=-1,
            producer_epoch=-1, max_version=4))
        self.producer_id, self.epoch = response.producer_id, response.producer_epoch
        return self.producer_id, self.epoch

    def add_partitions(self, partitions: list[tuple[str, int]]) -> None:
        by_topic: dict[str, list[int]] = {}
        for topic, p in partitions:
            by_topic.setdefault(topic, []).append(p)
        self._call(1, self.transactional_id, lambda: AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=self.transactional_id,
            v3_and_below_producer_id=self.producer_id,
            v3_and_below_producer_epoch=self.epoch,
            v3_and_below_topics=[_AddTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
            max_version=3), errors=_partition_errors("results_by_topic_v3_and_below"))

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], group: Any) -> None:
        """The input offsets into the transaction, then its commit. ``group``: the consumer's
        ``group_metadata()`` (KIP-447: a stale generation is refused)."""
        if offsets:
            if group.generation_id < 0 or not group.member_id:
                # Without a generation the broker would take the offsets unchecked: a member
                # the group dropped (its partitions already another's) would commit them.
                raise TransactionFailed("not a member of the group (dropped from it): the "
                                        "offsets cannot be committed")
            self._call(1, self.transactional_id, lambda: AddOffsetsToTxnRequest(
                transactional_id=self.transactional_id, producer_id=self.producer_id,
                producer_epoch=self.epoch, group_id=group.group_id, max_version=3))
            by_topic: dict[str, list[Any]] = {}
            for tp, om in offsets.items():
                by_topic.setdefault(tp.topic, []).append(_OffsetPartition(
                    partition_index=tp.partition, committed_offset=om.offset,
                    committed_leader_epoch=-1, committed_metadata=om.metadata or ""))
            self._call(0, group.group_id, lambda: TxnOffsetCommitRequest(
                transactional_id=self.transactional_id, group_id=group.group_id,
                producer_id=self.producer_id, producer_epoch=self.epoch,
                generation_id=group.generation_id, member_id=group.member_id,
                group_instance_id=group.group_instance_id,
                topics=[_OffsetTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
                max_version=3), errors=_partition_errors("topics"))
        self._call(1, self.transactional_id, lambda: EndTxnRequest(
            transactional_id=self.transactional_id, producer_id=self.producer_id,
            producer_epoch=self.epoch, committed=True, max_version=3))

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, key_type: int, key: str, make: Any, errors: Any = None) -> Any:
        """Send ``make()`` to the coordinator of ``key`` until it is taken; TransactionFailed
        for an error a retry does not cure."""
        deadline = time.monotonic() + self.timeout_s
        wait = RETRY_S
        while True:
            try:
                node = self._coordinator(key_type, key)
                response = self._send(make(), node)
                for error in (errors or _top_error)(response):
                    raise error
                return response
            except Errors.KafkaError as exc:
                moved = (Errors.NotCoordinatorError, Errors.CoordinatorNotAvailableError,
                         Errors.UnknownBrokerIdError, Errors.KafkaConnectionError,
                         Errors.NodeNotReadyError, Errors.KafkaTimeoutError)
                if isinstance(exc, moved):  # a broker gone or restarted: ask again where
                    self._coordinators.pop((key_type, key), None)
                retriable = exc.retriable or isinstance(
                    exc, (Errors.ConcurrentTransactionsError, *moved))
                if not retriable or time.monotonic() > deadline:
                    raise TransactionFailed(f"{type(make()).__name__[:-7]} failed: "
                                            f"{type(exc).__name__}", exc) from exc
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_S)

    def _coordinator(self, key_type: int, key: str) -> int:
        node = self._coordinators.get((key_type, key))
        if node is None:
            response = self._send(FindCoordinatorRequest(
                key=key, key_type=key_type, coordinator_keys=[key]), None)
            found = response.coordinators[0] if getattr(response, "coordinators", None) \
                else response
            error = Errors.for_code(found.error_code)
            if error is not Errors.NoError:
                raise error()
            node = self._coordinators[(key_type, key)] = found.node_id
        return node

    def _send(self, request: Any, node: int | None) -> Any:
        async def call() -> Any:
            return await self.manager.send(request, node_id=node)

        return self.manager.run(self.manager.wait_for, self.manager.call_soon(call),
                                int(self.timeout_s * 1000))


def _top_error(response: Any) -> list[BaseException]:
    error = Errors.for_code(response.error_code)
    return [] if error is Errors.NoError else [error()]


def _partition_errors(field: str) -> Any:
    """The first per-partition error of a response listing (topic, [(partition, error)])."""
    def errors(response: Any) -> list[BaseException]:
        for topic, partitions in getattr(response, field):
            for partition, code in partitions:
                if code:
                    return [Errors.for_code(code)(f"{topic}-{partition}")]
        return []
    return errors

