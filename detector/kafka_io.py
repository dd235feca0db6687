"""Kafka clients, topics and readable connection errors, shared by the detector and the producer.

kafka-python reports a missing broker, a refused TLS handshake or a wrong password as one of
many exception types, sometimes after a long retry loop; everything here turns those into
``KafkaUnavailable`` with one line that says what to check, within the connect timeout.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError

from detector.config import KafkaSettings
from detector.errors import DetectorError

log = logging.getLogger(__name__)


class KafkaUnavailable(DetectorError):
    """The cluster cannot be used; the message is one readable line."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def describe_failure(kafka: KafkaSettings, exc: BaseException) -> str:
    """One line for a failure to reach or authenticate with the cluster."""
    where = kafka.bootstrap_servers
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, ssl.SSLError) or "SSL" in name or "certificate" in text.lower():
        return f"TLS handshake with Kafka at {where} failed ({text}); check --ssl-cafile"
    if "Authentication" in name or "SASL" in text or "authenticat" in text.lower():
        return f"Kafka at {where} refused the credentials ({text}); check --sasl-username/password"
    if name in ("NoBrokersAvailable", "KafkaTimeoutError", "KafkaConnectionError"):
        return (
            f"cannot reach Kafka at {where} within {kafka.connect_timeout_s:g} s; "
            "is the broker running and is --bootstrap-servers right?"
        )
    return f"Kafka at {where}: {name}: {text}"


def _guard(kafka: KafkaSettings, what: str, make: Any, **options: Any) -> Any:
    try:
        return make(**kafka.client_options(), **options)
    except (KafkaError, OSError, ValueError) as exc:
        raise KafkaUnavailable(describe_failure(kafka, exc)) from exc


def admin(kafka: KafkaSettings) -> KafkaAdminClient:
    """An admin client, or KafkaUnavailable within ``connect_timeout_s``."""
    timeout = int(kafka.connect_timeout_s * 1000)
    return _guard(
        kafka, "admin", KafkaAdminClient,
        bootstrap_timeout_ms=timeout, request_timeout_ms=max(timeout, 5000),
    )


def producer(kafka: KafkaSettings, **options: Any) -> KafkaProducer:
    return _guard(kafka, "producer", KafkaProducer, **options)


def consumer(kafka: KafkaSettings, **options: Any) -> KafkaConsumer:
    return _guard(kafka, "consumer", KafkaConsumer, **options)


def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec]) -> dict[str, int]:
    """Create the topics that are missing; return every topic's partition count.

    Lists topics first and describes only existing ones: a metadata request for a missing
    topic makes some brokers auto-create it with their default partition count.
    """
    client = admin(kafka)
    try:
        existing = set(client.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = {
                s.name: {"num_partitions": s.partitions, "replication_factor": -1,
                         "configs": s.configs}
                for s in missing
            }
            with contextlib.suppress(TopicAlreadyExistsError):  # another member was first
                client.create_topics(new, wait_for_metadata=True)
            for s in missing:
                log.info("created topic %s (%d partitions)", s.name, s.partitions)
        described = client.describe_topics([s.name for s in specs])
    except KafkaError as exc:
        raise KafkaUnavailable(describe_failure(kafka, exc)) from exc
    finally:
        client.close()
    counts = {t["name"]: len(t["partitions"]) for t in described}
    for s in specs:
        if not counts.get(s.name):
            raise KafkaUnavailable(f"topic {s.name} has no partitions on {kafka.bootstrap_servers}")
    return counts


def partition_count(kafka: KafkaSettings, topic: str) -> int | None:
    """Partitions of ``topic``, or None when it does not exist (without auto-creating it)."""
    client = admin(kafka)
    try:
        if topic not in client.list_topics():
            return None
        return len(client.describe_topics([topic])[0]["partitions"])
    except KafkaError as exc:
        raise KafkaUnavailable(describe_failure(kafka, exc)) from exc
    finally:
        client.close()
