"""Fixtures: the real local broker (one per test), settings pointing at it, loaded models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from detector.settings.kafka import KafkaSettings
from detector.testing.local_broker import LocalBroker


@pytest.fixture
def broker():
    """A fresh Tansu broker on a free port, in its own temporary directory."""
    with LocalBroker() as b:
        yield b


@pytest.fixture
def kafka(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap, connect_timeout_s=10)


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
    """A model of the battery's ``dip`` pattern, trained once per session as the README's
    figures are (``PATTERN_EPOCHS``): ``(model path, labeled CSV path)``."""
    from detector.training.labeled import read_labeled
    from detector.training.own_pattern import train_labeled
    from tests.support import PATTERN_EPOCHS, labeled_battery

    out = tmp_path_factory.mktemp("dip")
    csv_path = labeled_battery(out / "dip.csv", "dip")
    data = read_labeled(csv_path, "value", "label", "stream", min_events=8)
    train_labeled(data, "dip", out, epochs=PATTERN_EPOCHS, seed=0)
    return out / "dip.keras", csv_path
