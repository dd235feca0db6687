"""The ACLs each program needs (``detector.kafka.acl``, the README's table), on Apache Kafka with
SASL/SCRAM and the StandardAuthorizer: every program works with exactly its documented ACLs,
and a missing one is one line naming the operation and the resource, at start or when it is
removed while the program runs.

One node for the module: a SASL_PLAINTEXT listener with a SCRAM user per program, and the
PLAINTEXT listener, whose ANONYMOUS principal is a super user: the test's own clients (topics,
input, ACLs through kafka-python's admin client) go there. The topics exist before a program
starts, as on a managed cluster that denies Create, unless a test says otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kafka import TopicPartition

from detector.alerts.bridge import Bridge
from detector.cli.main import main as detector_main
from detector.kafka import acl, clients, topics
from detector.kafka.group_requests import describe_group
from detector.kafka.registry import Registry
from detector.ops.metrics import BridgeMetrics
from detector.settings.bridge import BridgeSettings
from detector.settings.detector import DetectorSettings
from detector.settings.producer import ProducerSettings
from detector.settings.registry import RegistrySettings
from detector.stream.codec import encode_run
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.local_broker import free_port
from producer.cli import main as producer_main
from producer.publish import publish
from tests.acl_support import PROGRAMS, USERS, Cluster, StubAlertmanager
from tests.support import (
    ROOT,
    DetectorProcess,
    DetectorThread,
    ScopedKafka,
    read_topic,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def node():
    config = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
              "super.users": "User:admin;User:ANONYMOUS"}
    with KafkaCluster(config=config, listeners={"SASL_PLAINTEXT": free_port()},
                      scram_users=USERS) as cluster:
        yield cluster


@pytest.fixture
def cluster(node):
    c = Cluster(node)
    yield c
    c.close()


# --- each program's settings, and its command line --------------------------------------


def detector_settings(kafka: ScopedKafka) -> DetectorSettings:
    return settings(kafka)


def registry_settings(kafka: ScopedKafka) -> RegistrySettings:
    return RegistrySettings(kafka=kafka, models_topic=kafka.models)


def bridge_settings(kafka: ScopedKafka, url: str = "http://127.0.0.1:9") -> BridgeSettings:
    return BridgeSettings(kafka=kafka, url=url, group_id=kafka.name("trend-alertmanager"),
                          alert_topic=kafka.alerts, metrics_port=0, session_timeout_ms=6000,
                          heartbeat_interval_ms=2000)


def login_args(kafka: ScopedKafka) -> list[str]:
    return ["--bootstrap-servers", kafka.bootstrap_servers, "--security-protocol",
            kafka.security_protocol, "--sasl-mechanism", kafka.sasl_mechanism,
            "--sasl-username", kafka.sasl_username or "", "--sasl-password",
            kafka.sasl_password or "", "--connect-timeout-s", "10"]


def command(program: str, kafka: ScopedKafka) -> tuple[Callable[[list[str]], int], list[str]]:
    """The main function and arguments that run ``program`` as ``kafka``'s user (``models``:
    a push)."""
    if program == "detector":
        names = [f"--{k.replace('_', '-')}={v}" for k, v in kafka.topics().items()]
        return detector_main, ["run", *names, "--metrics-port", "0",
                               "--session-timeout-ms", "6000", "--heartbeat-interval-ms",
                               "2000", *login_args(kafka)]
    if program == "models":
        return detector_main, ["models", "push", "seed", "--name", "seed", "--models-topic",
                               kafka.models, *login_args(kafka)]
    if program == "bridge":
        s = bridge_settings(kafka)
        return detector_main, ["alertmanager", "--url", s.url or "", "--group-id", s.group_id,
                               "--alert-topic", s.alert_topic, "--metrics-port", "0",
                               *login_args(kafka)]
    if program == "producer":
        return producer_main, ["--topic", kafka.values, "--count", "20", "--rate", "0",
                               *login_args(kafka)]
    return detector_main, ["tail", "--topic", kafka.flags, "--from-beginning", "--limit", "1",
                           *login_args(kafka)]


def needs(program: str, kafka: ScopedKafka) -> list[acl.Need]:
    """What the README documents for ``program`` under the test's names."""
    return {"detector": lambda: acl.detector(detector_settings(kafka)),
            "models": lambda: acl.registry(registry_settings(kafka), writes=True),
            "bridge": lambda: acl.bridge(bridge_settings(kafka)),
            "producer": lambda: acl.producer(ProducerSettings(kafka=kafka, topic=kafka.values)),
            "tail": lambda: acl.tail(kafka.flags)}[program]()


def existing_topics(cluster: Cluster) -> None:
    """Every topic the programs use, made by the operator (the super user)."""
    k = cluster.admin
    cluster.create(*(topics.TopicSpec(t, 2) for t in (k.values, k.flags, k.alerts, k.dlq)),
                   topics.changelog(k.state, 2, "state"), topics.changelog(k.models, 1, "models"))


def fails_in_one_line(capsys, main: Callable[[list[str]], int], argv: list[str]) -> str:
    """``main(argv)`` exits 1 with one error line and no traceback; that line."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# --- each program works with exactly its documented ACLs ----------------------------------


def test_exactly_once_works_with_exactly_its_documented_acls(cluster, steps):
    """The default transactional ids (prefixed by the group) and the probe's topic: with
    exactly those added, every event's flag is committed; without the transactional ids it
    stops with one line naming the missing ACL."""
    existing_topics(cluster)
    kafka = cluster.login("detector")
    s = dataclasses.replace(detector_settings(kafka), processing_guarantee="exactly-once")
    cluster.allow("detector", acl.detector(s))
    cluster.create(topics.TopicSpec(s.probe_topic, 1))
    events = uniform_events(streams=4, per_stream=20)
    send(cluster.admin, kafka.values, events, partitions=2)
    det = DetectorThread(s, steps("seed")).start()
    try:
        wait_for(lambda: len(read_topic(cluster.admin, kafka.flags, settle=0.5)) >= len(events),
                 90, every=1, what="every flag committed")
        assert det.value("detector_transactions_total", {"outcome": "committed"}) >= 1
    finally:
        det.stop()
    cluster.allow("detector", [n for n in acl.detector(s) if n.kind != "transactional_id"])
    with pytest.raises(clients.KafkaRefused, match=f"Write on transactional-id "
                       f"{s.group_id}-.*-probe"):
        DetectorThread(s, steps("seed")).start()



def test_the_detector_works_with_exactly_its_documented_acls(cluster, steps, caplog):
    """Run as a process, killed, and run again: the second removes its dead predecessor from
    the group (DescribeGroups, LeaveGroup) and goes on. Its outbox gets an idempotent
    producer id from Write on its topics alone (Kafka 3.0+), and a DescribeConfigs it is
    not allowed is one warning naming it."""
    existing_topics(cluster)
    kafka = cluster.login("detector")
    cluster.allow("detector", acl.detector(detector_settings(kafka)))
    events = uniform_events(streams=4, per_stream=30)
    send(cluster.admin, kafka.values, events[:60], partitions=2)
    # a session long enough that the killed member is still in the group when the next starts
    first = DetectorProcess(kafka, DETECTOR_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                            DETECTOR_SASL_MECHANISM="SCRAM-SHA-512",
                            DETECTOR_SASL_USERNAME="detector",
                            DETECTOR_SASL_PASSWORD=USERS["detector"],
                            DETECTOR_SESSION_TIMEOUT_MS="30000").start()
    try:
        wait_for(lambda: first.processed() >= 60, 60, what=lambda: first.output()[-2000:])
        first.kill()
    finally:
        first.close()
    with caplog.at_level(logging.INFO):
        det = DetectorThread(detector_settings(kafka), steps("seed")).start()
        try:
            send(cluster.admin, kafka.values, events[60:], partitions=2)
            wait_for(lambda: det.value("detector_events_processed_total") >= 60, 60)
            assert det.pipeline.outbox.sender.idempotent
            as_detector = clients.admin(kafka)
            try:
                state, _ = describe_group(as_detector, kafka.group)
            finally:
                as_detector.close()
            assert state == "Stable"
        finally:
            det.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any(re.match(r"removed 1 dead member\(s\) of group", m) for m in said), said
    assert any(f"no ACL allows DescribeConfigs on topic {kafka.state}" in m for m in said)
    flags = read_topic(cluster.admin, kafka.flags, expect=len(events))
    assert {(r.key, json.loads(r.value)["seq"]) for r in flags} == {
        (k, json.loads(v)["seq"]) for k, v in events}


def test_models_work_with_exactly_their_documented_acls(cluster, capsys):
    """Push and promote with Read and Write on the registry; list with Read alone."""
    existing_topics(cluster)
    kafka = cluster.login("models")
    where = ["--models-topic", kafka.models, *login_args(kafka)]
    cluster.allow("models", acl.registry(registry_settings(kafka), writes=True))
    assert detector_main(["models", "push", "seed", "--name", "m", *where]) == 0
    assert detector_main(["models", "push", "pair", "--name", "m", *where]) == 0
    assert detector_main(["models", "promote", "m", "2", *where]) == 0
    capsys.readouterr()
    cluster.allow("models", acl.registry(registry_settings(kafka), writes=False))
    assert detector_main(["models", "list", "--json", *where]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["m"]["live"] == 2 and listed["m"]["previous"] == [1]


@contextlib.contextmanager
def running_bridge(s: BridgeSettings) -> Iterator[Bridge]:
    stop = threading.Event()
    bridge = Bridge(s, BridgeMetrics(), stop)
    bridge.connect()
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    try:
        yield bridge
    finally:
        stop.set()
        thread.join(30)


def test_the_alert_bridge_works_with_exactly_its_documented_acls(cluster):
    """It reads a run's records, posts its alert, and commits past them."""
    existing_topics(cluster)
    kafka = cluster.login("bridge")
    now = time.time()
    send(cluster.admin, kafka.alerts, [
        (b"s-1", encode_run("s-1", "firing", 1, 2, 2, 3, 0.5, "seed", now, now)),
        (b"s-1", encode_run("s-1", "resolved", 1, 2, 5, 4, 0.1, "seed", now, now))],
         partitions=2)
    stub = StubAlertmanager()
    s = bridge_settings(kafka, stub.url)
    cluster.allow("bridge", acl.bridge(s))
    try:
        with running_bridge(s):
            wait_for(lambda: any(a["labels"]["stream"] == "s-1" for a in stub.alerts), 60,
                     what="the run's alert posted")
            reader = clients.consumer(cluster.admin, group_id=s.group_id,
                                      enable_auto_commit=False)
            try:
                tps = [TopicPartition(s.alert_topic, p) for p in range(2)]
                wait_for(lambda: sum(reader.committed(tp) or 0 for tp in tps) == 2, 30,
                         what="the bridge's commit past both records")
            finally:
                reader.close()
    finally:
        stub.close()


def test_the_producer_and_tail_work_with_exactly_their_documented_acls(cluster, capsys):
    existing_topics(cluster)
    kafka = cluster.login("producer")
    s = ProducerSettings(kafka=kafka, topic=kafka.values, streams=5, count=50, seed=1)
    cluster.allow("producer", acl.producer(s))
    for rate in (500.0, 0.0):  # paced (KafkaProducer), then as fast as it goes (the outbox)
        assert publish(dataclasses.replace(s, rate=rate), threading.Event(),
                       progress=lambda _: None) == 50
    reader = cluster.login("tail")
    cluster.allow("tail", acl.tail(kafka.values))
    assert detector_main(["tail", "--topic", kafka.values, "--from-beginning", "--limit",
                          "100", *login_args(reader)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 100


def test_a_program_that_creates_its_topics_needs_create_on_them(cluster, capsys):
    """A missing topic: without Create, one line naming it; with Create, made."""
    kafka = cluster.login("producer")
    need = acl.producer(ProducerSettings(kafka=kafka, topic=kafka.values))
    cluster.allow("producer", need)
    main, argv = command("producer", kafka)
    line = fails_in_one_line(capsys, main, argv)
    assert line == (f"producer: error: Kafka refused: no ACL allows Create on topic "
                    f"{kafka.values} (it does not exist, or this principal may not Describe it)")
    cluster.allow("producer", [*need, acl.Need("Create", "topic", kafka.values)])
    assert main(argv) == 0
    assert len(read_topic(cluster.admin, kafka.values, expect=20)) == 20


# --- a missing ACL is one line naming the operation and the resource ----------------------


def missing_one(cluster: Cluster, capsys, program: str, index: int) -> tuple[acl.Need, str]:
    """``program`` run with every documented ACL but its ``index``-th: that ACL and the line."""
    existing_topics(cluster)
    kafka = cluster.login(program)
    documented = needs(program, kafka)
    left_out = documented[index]
    cluster.allow(program, [n for i, n in enumerate(documented) if i != index])
    main, argv = command(program, kafka)
    return left_out, fails_in_one_line(capsys, main, argv)


#: A few per program for ``make test``: (program, index into its documented ACLs).
SOME = [("detector", 5), ("detector", 7), ("models", 1), ("bridge", 1), ("producer", 0),
        ("tail", 0)]


@pytest.mark.parametrize(("program", "index"), SOME)
def test_a_missing_acl_is_one_line_naming_it(cluster, capsys, program, index):
    need, line = missing_one(cluster, capsys, program, index)
    assert f"Kafka refused: no ACL allows {need}" in line, line


@pytest.mark.faults
@pytest.mark.parametrize(("program", "index"), [
    (p, i) for p in PROGRAMS for i in range(len(needs(p, ScopedKafka(prefix="x-"))))])
def test_every_documented_acl_is_named_when_missing(cluster, capsys, program, index):
    need, line = missing_one(cluster, capsys, program, index)
    assert f"Kafka refused: no ACL allows {need}" in line, line


def removed_while_running(cluster: Cluster, steps, index: int) -> tuple[acl.Need, str]:
    """The detector's ``index``-th ACL, removed once it runs; then input (a dead letter
    among it): the ACL and the line the detector stops with."""
    existing_topics(cluster)
    kafka = cluster.login("detector")
    s = detector_settings(kafka)
    documented = acl.detector(s)
    cluster.allow("detector", documented)
    det = DetectorThread(s, steps("seed")).start()
    events = uniform_events(streams=3, per_stream=20)
    send(cluster.admin, kafka.values, events[:30], partitions=2)
    wait_for(lambda: det.value("detector_events_processed_total") >= 30, 60)
    cluster.remove("detector", documented[index])
    time.sleep(1)  # the authorizer applies the removal
    send(cluster.admin, kafka.values, [*events[30:], (b"s-0", b"not json")], partitions=2)
    det.thread.join(60)
    with pytest.raises(clients.KafkaRefused) as refused:
        det.stop()
    return documented[index], str(refused.value)


def test_an_acl_removed_while_the_detector_runs_is_one_line_naming_it(cluster, steps):
    """Write on the flags topic, revoked after the detector started: its next flush fails,
    and it stops with the line (not a retry loop)."""
    need, line = removed_while_running(cluster, steps, 1)
    assert line == (f"Kafka refused: no ACL allows {need} (TopicAuthorizationFailed)")


@pytest.mark.faults
@pytest.mark.parametrize("index", [0, 2, 3, 5, 6, 7])
def test_each_acl_the_detector_uses_while_it_runs_is_named_when_removed(cluster, steps, index):
    """Every documented ACL but Read on the state topic, which only a restore uses (at an
    assignment): removed while the detector runs, it is named where it shows (a fetch, a
    produce request, the registry's reader, a commit)."""
    need, line = removed_while_running(cluster, steps, index)
    assert line.startswith(f"Kafka refused: no ACL allows {need} ("), line


def test_a_write_the_start_check_did_not_see_is_named_too(cluster):
    """Where nothing was checked at start (a broker that does not report what is authorized)
    a write without Write is one line all the same; kafka-python's producer is refused its
    idempotent producer id first (Write on no topic at all)."""
    existing_topics(cluster)
    kafka = cluster.login("models")
    cluster.allow("models", acl.registry(registry_settings(kafka), writes=False))
    registry = Registry(kafka, kafka.models)
    try:
        with pytest.raises(clients.KafkaRefused) as refused:
            registry.push("m", b"\0" * 64, {"features": "seed"}, "0" * 64)
    finally:
        registry.close()
    assert str(refused.value) == (f"Kafka refused: no ACL allows Write on topic {kafka.models} "
                                  "(no producer id: ClusterAuthorizationFailed)")


@pytest.mark.faults
def test_write_removed_while_the_paced_producer_runs_is_one_line(cluster):
    """KafkaProducer's failed sends stop the run (they were lost without a word before)."""
    existing_topics(cluster)
    kafka = cluster.login("producer")
    s = ProducerSettings(kafka=kafka, topic=kafka.values, rate=200, count=4000)
    cluster.allow("producer", acl.producer(s))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            publish(s, threading.Event(), progress=lambda _: None)
        except clients.KafkaRefused as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(2)
    cluster.remove("producer", acl.producer(s)[0])
    thread.join(30)
    assert [str(e) for e in failed] == [
        f"Kafka refused: no ACL allows Write on topic {kafka.values} (TopicAuthorizationFailed)"]


def test_the_readme_lists_every_acl_each_program_needs():
    readme = (ROOT / "README.md").read_text()
    defaults = {"detector": acl.detector(DetectorSettings()),
                "detector, exactly-once": acl.transactions(
                    DetectorSettings(processing_guarantee="exactly-once")),
                "detector, its own transactional id": acl.transactions(DetectorSettings(
                    processing_guarantee="exactly-once", transactional_id="det-1")),
                "models": acl.registry(RegistrySettings(), writes=True),
                "bridge": acl.bridge(BridgeSettings(url="http://am:9093")),
                "producer": acl.producer(ProducerSettings()),
                "tail": acl.tail("trend-alerts")}
    for program, documented in defaults.items():
        for need in documented:
            row = f"| {need.operation} | {need.kind.replace('_', '-')} `{need.name}`"
            assert row in readme, f"README's ACL table lacks {program}'s {row}"
