"""The outbox against Apache Kafka: what goes in comes out, per partition and in
order; a request that fails or is never acknowledged is an OutputFailed."""

import time

import kafka.errors as Errors
import pytest
from kafka.protocol.producer import ProduceResponse

from detector.kafka import clients
from detector.kafka.outbox import Outbox, OutputFailed, produce_error
from tests.support import read_topic


@pytest.mark.broker
def test_records_come_back_per_partition_in_order_with_headers(kafka):
    A, B = kafka.name("a"), kafka.name("b")
    clients.ensure_topics(kafka, [clients.TopicSpec(A, 3), clients.TopicSpec(B, 2)])
    # Small batches and requests: several batches per partition, several requests per flush.
    outbox = Outbox(kafka, [A, B], batch_bytes=2_000, max_request_bytes=5_000)
    want: dict[tuple[str, int], list[tuple]] = {}
    try:
        marks = []
        for round_ in range(3):
            for i in range(400):
                topic, p = (A, i % 3) if i % 4 else (B, i % 2)
                key = None if i % 50 == 7 else f"k{round_}-{i}".encode()
                value = None if i % 70 == 3 else f'{{"n":{round_}-{i}}}'.encode() * (1 + i % 5)
                headers = [("dlq.reason", b"not_json"), ("i", str(i).encode())] if i % 9 == 0 \
                    else []
                outbox.append(topic, p, key, value, headers)
                want.setdefault((topic, p), []).append((key, value, headers))
            marks.append(outbox.flush())
        outbox.wait(marks[-1], 30)
        assert all(outbox.done(m) for m in marks)
        assert marks == sorted(marks) and marks[0] > 1  # more than one request per flush
    finally:
        outbox.close()
    got: dict[tuple[str, int], list[tuple]] = {}
    for topic in (A, B):
        for r in sorted(read_topic(kafka, topic, expect=sum(
                len(v) for (t, _), v in want.items() if t == topic)),
                key=lambda r: (r.partition, r.offset)):
            got.setdefault((topic, r.partition), []).append((r.key, r.value, r.headers))
    assert got == want


def test_an_error_code_in_a_response_is_an_error_that_asks_for_metadata():
    """The local broker accepts what it is sent, so the answer of one that does not (a leader
    moved) is built here."""
    partition = ProduceResponse.TopicProduceResponse.PartitionProduceResponse
    ok = partition(index=0, error_code=0, base_offset=7)
    moved = partition(index=3, error_code=6, base_offset=-1)
    response = ProduceResponse(responses=[
        ProduceResponse.TopicProduceResponse(name="a", partition_responses=[ok]),
        ProduceResponse.TopicProduceResponse(name="b", partition_responses=[ok, moved])])
    error = produce_error(response)
    assert isinstance(error, Errors.NotLeaderForPartitionError) and error.invalid_metadata
    assert "b-3" in str(error)
    assert produce_error(ProduceResponse(responses=[
        ProduceResponse.TopicProduceResponse(name="a", partition_responses=[ok])])) is None


@pytest.mark.broker
def test_a_partition_without_a_known_leader_fails_until_reset(kafka):
    A = kafka.name("a")
    clients.ensure_topics(kafka, [clients.TopicSpec(A, 2)])
    outbox = Outbox(kafka, [A])
    try:
        with pytest.raises(OutputFailed, match=f"no leader known for {A}-5"):
            _one(outbox, 5)
        with pytest.raises(OutputFailed):  # the failure stays until a reset
            outbox.done(outbox.flush())
        outbox.reset()  # with fresh metadata: partition 5 still has no leader, the others do
        outbox.wait(_one(outbox, 1), 10)
    finally:
        outbox.close()
    assert [(r.partition, r.value) for r in read_topic(kafka, A, expect=1)] == [(1, b"v")]


@pytest.mark.broker
def test_an_unacknowledged_request_fails_until_reset(kafka_node, kafka):
    A = kafka.name("a")
    clients.ensure_topics(kafka, [clients.TopicSpec(A, 1)])
    outbox = Outbox(kafka, [A], request_timeout_ms=1500)
    try:
        outbox.wait(_one(outbox, 0), 10)
        kafka_node.pause(1)
        time.sleep(0.2)
        try:
            mark = _one(outbox, 0)
            started = time.monotonic()
            with pytest.raises(OutputFailed, match="timed out"):
                outbox.wait(mark, 30)
            assert time.monotonic() - started < 5
            with pytest.raises(OutputFailed):  # the failure stays until a reset
                outbox.done(outbox.flush())
        finally:
            kafka_node.resume(1)
        outbox.reset()
        outbox.wait(_one(outbox, 0), 20)
    finally:
        outbox.close()


def _one(outbox: Outbox, partition: int) -> int:
    outbox.append(outbox.topics[0], partition, b"k", b"v")
    return outbox.flush()
