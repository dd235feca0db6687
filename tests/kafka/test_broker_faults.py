"""Broker faults on a three-node Apache Kafka cluster (replication factor 3,
``min.insync.replicas`` 2), under live input: the broker leading the input and output
partitions SIGKILLed, a broker stopped (SIGSTOP) for 20 s, a rolling restart of all three.
Nothing is lost, every flag equals an uninterrupted run, duplicates are identical; a leader
killed sends no detector through a recovery (the outbox retries, idempotent) and keeps every
stream's flags in order. Once each in ``make test``, five times each in ``make test-faults``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from detector.kafka import clients, topics
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.harness import Audit, audit, covered, uncovered
from tests.support import (
    DetectorProcess,
    ScopedKafka,
    all_closed,
    expected_flags,
    read_topic,
    uniform_events,
    wait_for,
)

# make test-faults runs the three-node tests one at a time, on one worker (xdist_group)
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.xdist_group("three-nodes")]

STREAMS, PER_STREAM, RATE = 48, 400, 400.0  # 19,200 events over about 48 s


def feed_acked(kafka: ScopedKafka, records: list[tuple[bytes, bytes]], rate: float) -> None:
    """Live input that survives the faults itself: acks=all, idempotent, retried."""
    producer: KafkaProducer = clients.producer(kafka, acks="all", enable_idempotence=True,
                                               linger_ms=5, delivery_timeout_ms=180_000)
    started = time.monotonic()
    for i, (key, value) in enumerate(records):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        producer.send(kafka.values, key=key, value=value)
    producer.flush(180)
    producer.close()


def leaders(kafka: ScopedKafka) -> Counter[int]:
    """How many input and output partitions each node leads."""
    client = clients.admin(kafka)
    try:
        described = client.describe_topics([kafka.values, kafka.flags])
    finally:
        client.close()
    return Counter(p["leader_id"] for t in described for p in t["partitions"])


def fault_round(kafka: ScopedKafka, cluster: KafkaCluster, step,
                fault: Callable[[ScopedKafka, KafkaCluster], None], seed: int
                ) -> tuple[Audit, float, list]:
    """Two detectors under live input, ``fault`` in the middle: the audit of every flag (it
    must be clean), the detectors' recoveries and the output records."""
    records = uniform_events(STREAMS, PER_STREAM, seed=seed)
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6)])
    dets = [DetectorProcess(kafka).start() for _ in range(2)]
    feeder = threading.Thread(target=feed_acked, args=(kafka, records, RATE), daemon=True)
    with all_closed(dets):
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two members ready")
        feeder.start()
        wait_for(lambda: sum(d.processed() for d in dets) > 3000, 60, what="progress")
        fault(kafka, cluster)
        feeder.join(240)
        expected = expected_flags(step, records)
        wait_for(lambda: covered(kafka, kafka.flags, expected), 240, every=2,
                 what=lambda: uncovered(kafka, kafka.flags, expected))
        recoveries = sum(v for d in dets for k, v in d.metrics().items()
                         if k.startswith("detector_broker_errors_total"))
        retries = sum(d.metric("detector_produce_retries_total") or 0 for d in dets)
    outputs = read_topic(kafka, kafka.flags, settle=2.0, timeout=120)
    result = audit(outputs, expected)
    print(f"{fault.__name__} round {seed}: {result}; recoveries {recoveries:g}, produce "
          f"retries {retries:g}")
    assert result.clean, result
    return result, recoveries, outputs


def kill_the_leader(kafka: ScopedKafka, cluster: KafkaCluster) -> None:
    """SIGKILL the node leading most input and output partitions; back after 10 s."""
    node = leaders(kafka).most_common(1)[0][0]
    cluster.kill(node)
    time.sleep(10)
    cluster.start_node(node)


def stop_a_broker(kafka: ScopedKafka, cluster: KafkaCluster) -> None:
    """SIGSTOP the node leading most input and output partitions for 20 s."""
    node = leaders(kafka).most_common(1)[0][0]
    cluster.pause(node)
    try:
        time.sleep(20)
    finally:
        cluster.resume(node)


def rolling_restart(kafka: ScopedKafka, cluster: KafkaCluster) -> None:
    """Each node in turn: a controlled shutdown, a start, its replicas in sync again."""
    for member in cluster.members:
        cluster.restart(member.node_id)
        wait_for(lambda: in_sync(kafka), 90, what="every replica back in sync")


def in_sync(kafka: ScopedKafka) -> bool:
    client = clients.admin(kafka)
    try:
        described = client.describe_topics([kafka.values, kafka.flags, kafka.state])
    finally:
        client.close()
    return all(len(p["isr_nodes"]) == 3 for t in described for p in t["partitions"])


def in_order(outputs: list) -> bool:
    """Each stream's flags came out in seq order (per partition, offsets in order)."""
    last: dict[str, int] = {}
    for r in sorted(outputs, key=lambda r: (r.partition, r.offset)):
        rec = r.json()
        if rec["seq"] <= last.get(rec["stream"], -1):
            return False
        last[rec["stream"]] = rec["seq"]
    return True


def test_the_leader_killed_under_load_loses_nothing_and_recovers_nothing(kafka3, kafka_cluster,
                                                                         steps):
    result, recoveries, outputs = fault_round(kafka3, kafka_cluster, steps("seed"),
                                              kill_the_leader, seed=1)
    assert recoveries == 0 and result.duplicates == 0 and in_order(outputs)


def test_a_broker_stopped_for_20_s_loses_nothing(kafka3, kafka_cluster, steps):
    fault_round(kafka3, kafka_cluster, steps("seed"), stop_a_broker, seed=2)


def test_a_rolling_restart_loses_nothing(kafka3, kafka_cluster, steps):
    fault_round(kafka3, kafka_cluster, steps("seed"), rolling_restart, seed=3)


@pytest.mark.faults
@pytest.mark.parametrize("round_no", range(4, 9))
@pytest.mark.parametrize("fault", [kill_the_leader, stop_a_broker, rolling_restart],
                         ids=["kill", "stop", "rolling"])
def test_broker_fault_rounds(kafka3, kafka_cluster, steps, fault, round_no):
    _, recoveries, outputs = fault_round(kafka3, kafka_cluster, steps("seed"), fault,
                                         seed=round_no)
    if fault is kill_the_leader:
        assert recoveries == 0 and in_order(outputs)
