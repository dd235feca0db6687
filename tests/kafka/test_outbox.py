"""The outbox against Apache Kafka: what goes in comes out, per partition and in
order; a request that fails for good or is never acknowledged is an OutputFailed; an abort
leaves nothing of its transaction visible."""

import time

import pytest

from detector.kafka import topics
from detector.kafka.outbox import Outbox, OutputFailed
from tests.support import read_topic


@pytest.mark.broker
def test_records_come_back_per_partition_in_order_with_headers(kafka):
    A, B = kafka.name("a"), kafka.name("b")
    topics.ensure_topics(kafka, [topics.TopicSpec(A, 3), topics.TopicSpec(B, 2)])
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


@pytest.mark.broker
def test_a_partition_that_does_not_exist_fails_until_reset(kafka):
    A = kafka.name("a")
    topics.ensure_topics(kafka, [topics.TopicSpec(A, 2)])
    outbox = Outbox(kafka, [A])
    try:
        assert outbox.sender.idempotent  # Apache Kafka gave it a producer id
        with pytest.raises(OutputFailed, match=f"{A}-5: no such partition"):
            outbox.wait(_one(outbox, 5), 10)
        with pytest.raises(OutputFailed):  # the failure stays until a reset
            outbox.done(outbox.flush())
        outbox.reset()
        outbox.wait(_one(outbox, 1), 10)
    finally:
        outbox.close()
    assert [(r.partition, r.value) for r in read_topic(kafka, A, expect=1)] == [(1, b"v")]


@pytest.mark.broker
def test_an_unacknowledged_request_fails_until_reset(kafka_node, kafka):
    """Requests time out and go again, until the delivery timeout fails the outbox."""
    A = kafka.name("a")
    topics.ensure_topics(kafka, [topics.TopicSpec(A, 1)])
    outbox = Outbox(kafka, [A], request_timeout_ms=1000, delivery_timeout_ms=2500)
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


@pytest.mark.broker
def test_an_abort_drops_everything_since_the_commit_sent_or_not(kafka):
    """Exactly-once: records in flight at an abort and records appended but not yet sent
    never become visible, also not with the next transaction's commit."""
    A = kafka.name("a")
    topics.ensure_topics(kafka, [topics.TopicSpec(A, 2)])
    outbox = Outbox(kafka, [A], transactional_id=kafka.name("txn"))
    try:
        for i in range(300):
            outbox.append(A, i % 2, b"k", b"aborted-sent-%d" % i)
        outbox.flush()  # in flight, or acknowledged: either way in the open transaction
        for i in range(50):
            outbox.append(A, i % 2, b"k", b"aborted-unsent-%d" % i)
        outbox.abort()
        assert not outbox.in_transaction
        for i in range(20):
            outbox.append(A, i % 2, b"k", b"committed-%d" % i)
        outbox.wait(outbox.flush(), 20)
        outbox.commit({}, None)
    finally:
        outbox.close()
    values = sorted(r.value for r in read_topic(kafka, A, expect=20, settle=2.0))
    assert values == sorted(b"committed-%d" % i for i in range(20))


def _one(outbox: Outbox, partition: int) -> int:
    outbox.append(outbox.topics[0], partition, b"k", b"v")
    return outbox.flush()
