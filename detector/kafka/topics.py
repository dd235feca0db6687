"""The topics the programs use: created where missing, checked where they exist.

Managed clusters often deny CREATE, so operators create topics themselves, with the cluster's
defaults: ``cleanup.policy=delete`` and seven days of retention. A state topic or a model
registry like that loses quiet streams' state and the registry's versions after a week; so an
existing topic whose settings break what it is for is refused at start with one line naming
the topic and the setting (``required``). Where the settings cannot be read (the bundled Tansu
answers nothing; a cluster may deny DescribeConfigs) one warning says so, and the program goes
on. A replication factor below ``min.insync.replicas`` + 1 is warned about: one broker down
then stops writes (or, at 1, loses the data).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from detector.errors import UsageError
from detector.kafka import acl, clients
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: A changelog, as Kafka Streams makes them: compacted, and segments that roll often enough
#: for compaction to keep the log near its live set (Kafka never compacts the active segment,
#: which rolls at 1 GiB or 7 days by default).
CHANGELOG = {"cleanup.policy": "compact", "segment.bytes": str(64 << 20),
             "segment.ms": str(3_600_000), "min.compaction.lag.ms": "0"}


class TopicMisconfigured(UsageError):
    """An existing topic's settings break what the program uses it for."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    #: settings an existing topic must have (value), with what breaks otherwise
    required: dict[str, tuple[str, str]] = field(default_factory=dict)


def changelog(name: str, partitions: int, what: str) -> TopicSpec:
    """A compacted topic (the state topic, the model registry); ``what`` it holds, for the
    line that refuses a topic deleting it."""
    return TopicSpec(name, partitions, CHANGELOG,
                     {"cleanup.policy": ("compact", f"{what} would be deleted by retention")})


def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec],
                  replication_factor: int = -1) -> dict[str, int]:
    """Create the topics that are missing, check the existing ones; every topic's partition
    count. ``replication_factor`` -1: the broker's default.

    Lists topics first and describes only existing ones: a metadata request for a missing
    topic makes some brokers auto-create it with their default partition count. A topic just
    created (here or by another member starting at the same moment) may show no partitions
    for a moment: it is described again until it does, within the connect timeout.
    """
    client = clients.admin(kafka)
    try:
        existing = set(client.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = {s.name: {"num_partitions": s.partitions,
                            "replication_factor": replication_factor, "configs": s.configs}
                   for s in missing}
            acl.create_topics(client, new)  # another member may have been first
            for s in missing:
                log.info("created topic %s (%d partitions)", s.name, s.partitions)
        counts, replicas = _described(client, kafka, [s.name for s in specs])
        checked = [s for s in specs if s.name in existing and s.required]
        thin = [s for s in specs if replicas[s.name] < 3]
        configs = _configs(client, [s.name for s in checked + thin]) if checked or thin \
            else None
        if configs is not None:
            _check(checked, configs)
        _warn_replication(thin, replicas, configs or {})
    except KafkaError as exc:
        raise clients.KafkaUnavailable(clients.describe_failure(kafka, exc, [])) from exc
    finally:
        clients.close_bounded(client.close, "the admin client")
    return counts


def _described(client: KafkaAdminClient, kafka: KafkaSettings, names: list[str]
               ) -> tuple[dict[str, int], dict[str, int]]:
    """Partition and replica counts of ``names``, waiting while a new one shows none."""
    deadline = time.monotonic() + kafka.connect_timeout_s
    while True:
        described = client.describe_topics(names)
        acl.visible(described)
        counts = {t["name"]: len(t["partitions"]) for t in described}
        replicas = {t["name"]: min((len(p["replica_nodes"]) for p in t["partitions"]),
                                   default=0) for t in described}
        empty = [n for n in names if not counts.get(n)]
        if not empty:
            return counts, replicas
        if time.monotonic() > deadline:
            raise clients.KafkaUnavailable(f"topic {empty[0]} has no partitions on "
                                           f"{kafka.bootstrap_servers}")
        time.sleep(0.2)


def _configs(client: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]] | None:
    """Every config of each topic (defaults included), {} for a topic the broker answers
    nothing for; None where they cannot be read (one warning)."""
    names = list(dict.fromkeys(names))
    try:
        found = acl.describe_configs(client, names)
    except (KafkaError, ValueError, KeyError) as exc:
        log.warning("cannot read the settings of %s (%s: %s); not checking them",
                    ", ".join(names), type(exc).__name__, exc)
        return None
    topics = found.get("topic") or {}
    return {n: {k: v["value"] for k, v in topics.get(n, {}).items()} for n in names}


def _check(specs: list[TopicSpec], configs: dict[str, dict[str, str]]) -> None:
    """TopicMisconfigured for the first required setting an existing topic lacks; one warning
    for those the broker answers nothing for."""
    silent = [s.name for s in specs if not configs.get(s.name)]
    if silent:
        log.warning("the broker answers no settings for %s (the bundled Tansu answers none "
                    "for a topic created without them); not checking them", ", ".join(silent))
    for s in specs:
        for name, (want, breaks) in s.required.items():
            have = configs[s.name].get(name)
            if have is not None and have != want:
                raise TopicMisconfigured(
                    f"topic {s.name} has {name}={have}, but it must be {want}: {breaks} "
                    f"(kafka-configs.sh --alter --entity-type topics --entity-name {s.name} "
                    f"--add-config {name}={want})")


def _warn_replication(specs: list[TopicSpec], replicas: dict[str, int],
                      configs: dict[str, dict[str, str]]) -> None:
    """One warning for the topics whose replicas leave no room for a broker down."""
    thin = {}
    for s in specs:
        floor = int(configs.get(s.name, {}).get("min.insync.replicas", "1"))
        if replicas[s.name] < floor + 1:
            thin[s.name] = (replicas[s.name], floor)
    if thin:
        have, floor = min(thin.values())
        log.warning("%s: replication factor %d, below min.insync.replicas (%d) + 1: one broker "
                    "down %s (--replication-factor, or the broker's default.replication."
                    "factor)", ", ".join(sorted(thin)), have, floor,
                    "loses data" if have == 1 else "stops writes")


def partition_count(kafka: KafkaSettings, topic: str) -> int | None:
    """Partitions of ``topic``, or None when it does not exist (without auto-creating it)."""
    client = clients.admin(kafka)
    try:
        if topic not in client.list_topics():
            return None
        return len(client.describe_topics([topic])[0]["partitions"])
    except KafkaError as exc:
        raise clients.KafkaUnavailable(clients.describe_failure(kafka, exc, [])) from exc
    finally:
        clients.close_bounded(client.close, "the admin client")
