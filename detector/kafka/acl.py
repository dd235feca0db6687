"""The ACLs each program needs, checked at its start, and a missing one named where it shows.

Each program's needs are listed here once (``detector``, ``registry``, ``bridge``, ``producer``,
``tail``): the README's ACL table documents them, the tests grant exactly them, and ``check``
compares them with what the broker says this principal may do on each topic (the authorized
operations of a Metadata answer, KIP-430) before the program does anything, so that a Write
missing on the dead-letter topic stops a detector at once rather than at its first bad record.
Group ACLs cannot be seen that way; a consumer's first request to its group tells.

Where a denial shows later (an ACL removed while a program runs, a Create, a write of
``models``), ``refusal`` and ``writing`` turn kafka-python's errors into one line naming the
operation and the resource. kafka-python's authorization errors say which topic or group, not
which operation: a write is one through the outbox (``OutputFailed``) or inside ``writing``;
every other topic error comes from a consumer, which needs Read (Read and Write each imply
Describe, the operation of a Metadata request).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import kafka.errors as Errors
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from detector.kafka import clients
from detector.kafka.outbox import OutputFailed
from detector.settings.bridge import BridgeSettings
from detector.settings.detector import DetectorSettings
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.settings.registry import RegistrySettings

DENIED = Errors.TopicAuthorizationFailedError.errno


@dataclass(frozen=True)
class Need:
    """One ACL: ``operation`` as ``kafka-acls.sh --operation`` names it, on a topic or group."""

    operation: str
    kind: str  # topic, group or transactional_id
    name: str
    prefixed: bool = False  # every resource whose name starts with ``name``

    def __str__(self) -> str:
        kind = self.kind.replace("_", "-")
        return (f"{self.operation} on {kind}s prefixed {self.name}" if self.prefixed
                else f"{self.operation} on {kind} {self.name}")

    @property
    def authorized_as(self) -> str:
        """The operation as Kafka's authorized operations name it (DescribeConfigs:
        DESCRIBE_CONFIGS)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.operation).upper()


def detector(s: DetectorSettings) -> list[Need]:
    """``python -m detector run``."""
    writes = [s.output_topic, s.alert_topic, s.dlq_topic, *([s.candidate_topic]
                                                           if s.candidate_topic else [])]
    return [Need("Read", "topic", s.input_topic),
            *(Need("Write", "topic", t) for t in writes),
            Need("Read", "topic", s.state_topic), Need("Write", "topic", s.state_topic),
            Need("Read", "topic", s.models_topic), Need("Read", "group", s.group_id),
            *(transactions(s) if s.processing_guarantee == "exactly-once" else [])]


def transactions(s: DetectorSettings) -> list[Need]:
    """What exactly-once adds: its transactional ids (this member's and its probe's: the
    ``--transactional-id`` given, or every one the group's default scheme makes) and the
    probe's topic (``wiring.probe``)."""
    ids = ([Need("Write", "transactional_id", s.transactional_id),
            Need("Write", "transactional_id", f"{s.transactional_id}-probe")]
           if s.transactional_id else
           [Need("Write", "transactional_id", f"{s.group_id}-", prefixed=True)])
    return [*ids, Need("Read", "topic", s.probe_topic), Need("Write", "topic", s.probe_topic)]


def registry(s: RegistrySettings, writes: bool) -> list[Need]:
    """``python -m detector models``: ``list`` reads, the other actions write too."""
    return [Need("Read", "topic", s.models_topic),
            *([Need("Write", "topic", s.models_topic)] if writes else [])]


def bridge(s: BridgeSettings) -> list[Need]:
    """``python -m detector alertmanager``."""
    return [Need("Read", "topic", s.alert_topic), Need("Read", "group", s.group_id)]


def producer(s: ProducerSettings) -> list[Need]:
    """``python -m producer``."""
    return [Need("Write", "topic", s.topic)]


def tail(topic: str) -> list[Need]:
    """``python -m detector tail``."""
    return [Need("Read", "topic", topic)]


def refused(needs: Iterable[Need | str], because: BaseException | str | None = None
            ) -> clients.KafkaRefused:
    """The one line for ACLs that are missing."""
    why = because if isinstance(because, str) or because is None else _kind(because)
    return clients.KafkaRefused("Kafka refused: no ACL allows " + "; ".join(map(str, needs))
                                + (f" ({why})" if why else ""))


def _kind(exc: BaseException) -> str:
    return type(exc).__name__.removesuffix("Error")


# --- at the start -------------------------------------------------------------------------


def check(kafka: KafkaSettings, needs: list[Need]) -> None:
    """KafkaRefused naming every ACL of ``needs`` on a topic that the broker says this
    principal lacks. A topic that does not exist yet, or a broker that does not report what
    is authorized (Tansu, some managed authorizers), is not checked."""
    names = sorted({n.name for n in needs if n.kind == "topic"})
    if not names:
        return
    client = clients.admin(kafka)
    try:
        described = client.describe_topics(names)
    except Errors.KafkaError as exc:
        raise clients.KafkaUnavailable(clients.describe_failure(kafka, exc, [])) from exc
    finally:
        clients.close_bounded(client.close, "the admin client")
    allowed: dict[str, set[str]] = {}
    for topic in described:
        ops = topic.get("authorized_operations")
        if topic["error_code"] == DENIED:  # not even Describe: nothing at all
            allowed[topic["name"]] = set()
        elif topic["error_code"] == 0 and ops is not None:
            allowed[topic["name"]] = set(ops)
    missing = [n for n in needs if n.name in allowed and n.kind == "topic"
               and n.authorized_as not in allowed[n.name]]
    if missing:
        raise refused(missing)


# --- where it shows -----------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "cause", None) or current.__cause__


def _names(error: BaseException, writing: bool) -> list[str]:
    """The topics or group an authorization error names: a consumer's is a set of topics, a
    group's its id, the outbox's ``topic-partition: message``."""
    what = error.args[0] if error.args else None
    if isinstance(what, set | frozenset | list | tuple):
        return sorted(map(str, what))
    if not isinstance(what, str) or not what:
        return []
    if writing:  # the outbox's sender: "topic-partition" or "topic-partition: message"
        return [re.sub(r"-\d+$", "", what.split(": ", 1)[0])]
    return [what]


def refusal(exc: BaseException) -> str | None:
    """One line for an error no retry cures: a missing ACL named with its operation and
    resource, else ``clients.fatal``'s line; None for an error worth retrying."""
    writing = False
    for link in _chain(exc):
        if isinstance(link, clients.KafkaRefused):
            return str(link)
        writing = writing or isinstance(link, OutputFailed)
        kind = ("topic" if isinstance(link, Errors.TopicAuthorizationFailedError) else
                "group" if isinstance(link, Errors.GroupAuthorizationFailedError) else
                "transactional-id"
                if isinstance(link, Errors.TransactionalIdAuthorizationFailedError) else None)
        if kind:
            operation = ("Write" if (writing and kind == "topic") or kind == "transactional-id"
                         else "Read")
            names = _names(link, writing) or [f"(its {kind})"]
            return str(refused([f"{operation} on {kind} {', '.join(names)}"], link))
    return clients.fatal(exc)


@contextlib.contextmanager
def writing(topic: str) -> Iterator[None]:
    """Records go to ``topic`` in here (a KafkaProducer's or an outbox's): a denial is
    KafkaRefused naming Write on it. Without Write on any topic the producer id is refused
    first, which kafka-python reports as a plain KafkaError naming
    ClusterAuthorizationFailed."""
    try:
        yield
    except (Errors.KafkaError, OutputFailed) as exc:
        for link in _chain(exc):
            if isinstance(link, Errors.AuthorizationError):
                raise refused([Need("Write", "topic", topic)], link) from exc
            if isinstance(link, Errors.KafkaError) and "AuthorizationFailed" in str(link):
                raise refused([Need("Write", "topic", topic)],
                              "no producer id: ClusterAuthorizationFailed") from exc
        raise


def create_topics(client: KafkaAdminClient, new: dict[str, dict[str, Any]]) -> None:
    """Create ``new`` (kafka-python's create_topics form) and wait until they have leaders.
    KafkaRefused naming Create on those the broker refused; one another client created
    first is fine."""
    result = client.create_topics(new, raise_errors=False)
    denied = [t["name"] for t in result["topics"] if t["error_code"] == DENIED]
    if denied:
        raise refused([f"Create on topic {', '.join(denied)}"],
                      "it does not exist, or this principal may not Describe it")
    for t in result["topics"]:
        if t["error_code"] not in (0, Errors.TopicAlreadyExistsError.errno):
            raise Errors.for_code(t["error_code"])(f"{t['name']}: {t.get('error_message')}")
    client.wait_for_topics(list(new))


def visible(described: list[dict[str, Any]]) -> None:
    """KafkaRefused naming Describe on the topics a Metadata answer denies (one this
    principal just created without being allowed to see it)."""
    denied = [t["name"] for t in described if t["error_code"] == DENIED]
    if denied:
        raise refused([f"Describe on topic {', '.join(denied)}"], "Read or Write imply it")


def describe_configs(client: KafkaAdminClient, names: list[str]) -> dict[str, Any]:
    """kafka-python's describe_configs of topics (every config), but a topic whose configs
    the broker denies raises ``ConfigsDenied`` naming DescribeConfigs on it (kafka-python
    answers such a topic with no configs, as if it had none)."""
    request = client._describe_configs_request(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    response = client._manager.run(client._manager.send, request)
    denied = [r.resource_name for r in response.results if r.error_code == DENIED]
    if denied:
        raise ConfigsDenied(f"no ACL allows DescribeConfigs on topic {', '.join(denied)}")
    return client._describe_configs_process_responses([response], "all")


class ConfigsDenied(Errors.KafkaError):
    """The broker denies DescribeConfigs on a topic."""

    def __str__(self) -> str:
        return str(self.args[0])
