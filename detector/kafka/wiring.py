"""What a detector connects to: its topics (checked, created where missing), its outbox (plain
or transactional, under which transactional id) and its consumer in the group."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from typing import Any

import kafka.errors as Errors
from kafka import KafkaConsumer, TopicPartition

from detector.errors import UsageError
from detector.kafka import acl, clients, tansu, topics, versions
from detector.kafka.outbox import Outbox
from detector.kafka.predecessors import claim_slot
from detector.settings.detector import DetectorSettings
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)


def detector_topics(s: DetectorSettings) -> dict[str, int]:
    """Every topic's partition count, after the checks (request versions, existing topics'
    settings) and the creation of the missing ones."""
    kafka = s.kafka
    versions.check(kafka)
    n_in = topics.partition_count(kafka, s.input_topic) or s.partitions
    specs = [
        topics.TopicSpec(s.input_topic, n_in),
        topics.TopicSpec(s.output_topic, n_in),
        topics.TopicSpec(s.alert_topic, n_in),
        topics.TopicSpec(s.dlq_topic, n_in),
        topics.changelog(s.state_topic, n_in, "quiet streams' state"),
        *([topics.TopicSpec(s.candidate_topic, n_in)] if s.candidate_topic else []),
    ]
    counts = topics.ensure_topics(kafka, specs, s.replication_factor)
    if counts[s.state_topic] < counts[s.input_topic]:
        raise clients.KafkaUnavailable(
            f"state topic {s.state_topic} has {counts[s.state_topic]} partitions, fewer than "
            f"input topic {s.input_topic} ({counts[s.input_topic]})")
    return counts


def transactional_id(s: DetectorSettings) -> tuple[str, Any]:
    """This member's transactional id (exactly-once), and what holds it for the process's
    life: ``--transactional-id``; else the group and the static member id; else the group,
    the host and the lowest number free among this host's members of the group, so that a
    restarted member takes its predecessor's id (and aborts what it left open)."""
    if s.transactional_id:
        return s.transactional_id, None
    if s.group_instance_id:
        return f"{s.group_id}-{s.group_instance_id}", None
    slot, lock = claim_slot(s.member_dir, s.group_id)
    return f"{s.group_id}-{socket.gethostname()}-{slot}", lock


def probe(kafka: KafkaSettings, topic: str, transactional_id: str) -> None:
    """Refuse a broker that cannot do exactly-once: one record written in a transaction that
    is aborted must stay invisible to a read_committed reader. The bundled Tansu answers the
    transaction requests but shows aborted records; a broker without transactions fails them.
    UsageError (exit 2) with one line either way: never a silent at-least-once."""
    refuse = (f"--processing-guarantee exactly-once needs a broker that does transactions "
              f"(Apache Kafka); the one at {kafka.bootstrap_servers}")
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 1, {"retention.ms": "3600000"})])
    marker = secrets.token_hex(8).encode()
    try:
        producer = clients.producer(kafka, transactional_id=f"{transactional_id}-probe",
                                    acks="all", max_block_ms=int(kafka.connect_timeout_s * 1000))
    except clients.KafkaUnavailable as exc:
        raise UsageError(f"{refuse} does not give a transactional producer ({exc})") from exc
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, key=b"probe", value=marker, partition=0)
        producer.flush()
        producer.abort_transaction()
    except Errors.TransactionalIdAuthorizationFailedError as exc:
        raise acl.refused([acl.Need("Write", "transactional_id", f"{transactional_id}-probe")],
                          exc) from exc
    except Errors.KafkaError as exc:
        raise UsageError(f"{refuse} failed a transaction: {type(exc).__name__}") from exc
    finally:
        clients.close_bounded(producer.close, "the probe's producer")
    tp = TopicPartition(topic, 0)
    reader = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                              isolation_level="read_committed", fetch_max_wait_ms=20)
    try:
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        deadline = time.monotonic() + kafka.connect_timeout_s
        end = reader.end_offsets([tp])[tp]
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                if any(r.value == marker for r in records):
                    raise UsageError(f"{refuse} shows records of an aborted transaction to "
                                     "read_committed readers (the bundled Tansu does): use "
                                     "--processing-guarantee at-least-once there")
            if (clients.position(reader, tp) or 0) >= end:
                return
        raise UsageError(f"{refuse}: its probe topic {topic} could not be read to its end")
    finally:
        clients.close_bounded(reader.close, "the probe's reader")


def outbox(s: DetectorSettings, transactional: str | None) -> Outbox:
    """The outbox for every output and state record; transactional (after a probe that the
    broker does transactions) under ``transactional``."""
    outputs = [s.output_topic, s.alert_topic, s.dlq_topic, s.state_topic,
               *([s.candidate_topic] if s.candidate_topic else [])]
    if transactional:
        probe(s.kafka, s.probe_topic, transactional)
    linger_ms, why = tansu.linger_ms(s.linger_ms, 0, s.kafka)
    if why:
        log.info("outputs: %s", why)
    return Outbox(s.kafka, outputs, linger_ms=linger_ms, transactional_id=transactional,
                  transaction_timeout_ms=s.transaction_timeout_ms)


def consumer(s: DetectorSettings) -> KafkaConsumer:
    """A member of the group (not yet subscribed)."""
    return clients.consumer(
        s.kafka,
        group_id=s.group_id,
        group_instance_id=s.group_instance_id or None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=s.max_poll_records,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        max_poll_interval_ms=s.max_poll_interval_ms,
        isolation_level=s.isolation_level,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        request_timeout_ms=max(30_000, s.session_timeout_ms + 5_000),
    )
