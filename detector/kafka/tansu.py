"""The bundled broker (Tansu), recognised where its costs need other defaults.

Tansu's memory engine answers every fetch by listing every record batch the partition holds
(twice for a partition that has new records), and stops listing when the fetch's wait is up:
a fetch then comes back empty, and a consumer at the end of a large partition gets nothing,
ever (``bench/broker_soak.py``; on this machine 16,000 batches outlast a 10 ms wait and
50,000 a 100 ms one). A partition only grows there (no retention, no compaction), so what a
long run on it needs is fewer, larger batches: on Tansu the producer and the detector let
their records gather for ``TANSU_LINGER_MS`` unless ``--linger-ms`` says otherwise. Apache
Kafka has none of this (``python -m detector broker --engine kafka``).
"""

from __future__ import annotations

from kafka.errors import KafkaError

from detector.kafka import clients
from detector.settings.kafka import KafkaSettings

#: How long records gather into one batch per partition on Tansu, unless set: at the README's
#: 200 events/s a partition then gains at most 4 batches a second, about 14,400 an hour.
TANSU_LINGER_MS = 250
#: Tansu's cluster id begins so (its default is ``tansu_cluster``); Apache Kafka's is a UUID.
TANSU_CLUSTER_PREFIX = "tansu"


def is_tansu(kafka: KafkaSettings) -> bool:
    """Whether the cluster is Tansu (by its cluster id); False when it cannot tell."""
    admin = clients.admin(kafka)
    try:
        cluster_id = admin.describe_cluster().get("cluster_id") or ""
    except KafkaError:  # a broker without DescribeCluster (before Kafka 2.8) is not Tansu
        return False
    finally:
        admin.close()
    return cluster_id.startswith(TANSU_CLUSTER_PREFIX)


def linger_ms(given: int | None, default: int, kafka: KafkaSettings) -> tuple[int, str]:
    """``--linger-ms`` when given, else ``TANSU_LINGER_MS`` on Tansu, else ``default``; and
    the sentence that says why, on Tansu ("" otherwise)."""
    if given is not None or not is_tansu(kafka):
        return (default if given is None else given), ""
    return TANSU_LINGER_MS, (
        f"the broker is Tansu, whose fetches slow down with every batch a partition holds: "
        f"records gather {TANSU_LINGER_MS} ms into one batch per partition (--linger-ms sets "
        "it)")
