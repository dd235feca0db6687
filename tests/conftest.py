"""Fixtures: Apache Kafka (one node per test worker, a three-node cluster for broker faults),
each test with topic and group names of its own; the bundled Tansu broker where a test is
about Tansu itself; settings pointing at them; loaded models."""

from __future__ import annotations

import contextlib
import itertools
import os
import re

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from detector.settings.kafka import KafkaSettings
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.local_broker import LocalBroker

_tests = itertools.count(1)


def scope_for(cluster: KafkaCluster, request: pytest.FixtureRequest):
    """A ``ScopedKafka`` on ``cluster`` named after the test; its topics go when it ends."""
    from tests.support import ScopedKafka, drop_topics

    slug = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name.removeprefix("test_"))[:40]
    kafka = ScopedKafka(bootstrap_servers=cluster.bootstrap, connect_timeout_s=10,
                        prefix=f"{next(_tests):03d}-{slug.strip('-')}-")
    yield kafka
    drop_topics(kafka)


#: The log cleaner looks for work every second (default 15 s): compaction tests see it soon.
BROKER_CONFIG = {"log.cleaner.backoff.ms": "1000"}


@pytest.fixture(scope="session")
def kafka_node():
    """One Apache Kafka node (combined broker and controller) per test worker."""
    with KafkaCluster(config=BROKER_CONFIG) as node:
        yield node


@pytest.fixture
def kafka(kafka_node, request):
    """The worker's Kafka node, with names of this test's own (``support.ScopedKafka``)."""
    yield from scope_for(kafka_node, request)


@pytest.fixture(scope="session")
def kafka_cluster():
    """Three combined nodes: replication factor 3, ``min.insync.replicas`` 2, for broker
    faults. Started by the first test of a worker that asks for it."""
    # a dead node loses its leaderships after 3 s, not 9 (broker.session.timeout.ms)
    config = {**BROKER_CONFIG, "broker.session.timeout.ms": "3000",
              "broker.heartbeat.interval.ms": "1000"}
    with KafkaCluster(nodes=3, config=config) as cluster:
        yield cluster


@pytest.fixture
def kafka3(kafka_cluster, request):
    """The three-node cluster with names of this test's own; every node running again after
    it (a test may kill, pause or restart nodes)."""
    yield from scope_for(kafka_cluster, request)
    for node in kafka_cluster.members:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            if node.paused:
                kafka_cluster.resume(node.node_id)
        if not node.running:
            kafka_cluster.start_node(node.node_id)


@pytest.fixture
def tansu():
    """A fresh bundled Tansu broker: only for what is about Tansu itself (its workaround,
    the demo's embedded broker); Kafka behaviour is tested on Apache Kafka."""
    with LocalBroker() as b:
        yield KafkaSettings(bootstrap_servers=b.bootstrap, connect_timeout_s=10)


@pytest.fixture(scope="session")
def steps():
    """Shipped models, loaded once per session: ``steps('seed')``."""
    from detector.model.serving import ModelStep

    cache: dict[str, ModelStep] = {}

    def get(name: str) -> ModelStep:
        if name not in cache:
            cache[name] = ModelStep.load(name)
        return cache[name]

    return get


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager whose one receiver is a webhook this test runs: ``(am, webhook)``."""
    from tests.support import AlertmanagerProcess, Webhook

    webhook = Webhook()
    am = AlertmanagerProcess(webhook.url, tmp_path)
    try:
        yield am, webhook
    finally:
        am.close()
        webhook.close()


@pytest.fixture(scope="session")
def dip_model(tmp_path_factory):
    """A window model of the battery's ``dip`` pattern (``tests.pattern_models``): ``(model
    path, labeled CSV path)``."""
    from tests.pattern_models import pattern_model

    return pattern_model(tmp_path_factory, "dip", window=True)[:2]
