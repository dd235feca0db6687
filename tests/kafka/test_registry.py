"""The model registry on Apache Kafka with its default limits (``message.max.bytes`` 1 MiB): a
model goes in chunks, comes back byte for byte, and old versions can be pruned; a detector
holds only the versions it serves."""

from __future__ import annotations

import json
import os

import pytest

from detector.cli.main import main
from detector.errors import UsageError
from detector.kafka import registry as registry_module
from detector.kafka.registry import MAX_MODEL_BYTES, Registry
from detector.model.files import MODELS_DIR, sha256
from tests.support import DetectorThread, read_topic, send, settings, uniform_events, wait_for

pytestmark = pytest.mark.broker


def test_a_20_mb_model_goes_to_kafka_with_default_limits_and_comes_back(kafka):
    model = os.urandom(20 << 20)
    registry = Registry(kafka, kafka.models)
    try:
        version, live = registry.push("big", model, {"features": "seed"}, "0" * 64)
        assert live and version.chunks == 40 and version.size == len(model)
    finally:
        registry.close()
    fresh = Registry(kafka, kafka.models)  # another process reads it back from the topic
    try:
        state = fresh.state()
        assert fresh.reader.tflite(state.version("big", 1)) == model
        assert state.chunks[("big", 1)].keys() == set(range(40))
    finally:
        fresh.close()
    # every record on the topic is far below the broker's limit
    assert max(len(r.value) for r in read_topic(kafka, kafka.models)) <= 600 * 1024


def test_a_model_over_the_maximum_is_refused_before_anything_is_written(kafka):
    registry = Registry(kafka, kafka.models)
    try:
        with pytest.raises(UsageError, match=f"registry takes at most {MAX_MODEL_BYTES >> 20} MiB"):
            registry.push("huge", b"\0" * (MAX_MODEL_BYTES + 1), {}, "0" * 64)
    finally:
        registry.close()
    assert read_topic(kafka, kafka.models, settle=0.5) == []


def test_prune_keeps_what_serves_or_can_serve_again(kafka, capsys):
    registry = Registry(kafka, kafka.models)
    try:
        for i in range(6):
            registry.push("m", f"model {i}".encode(), {}, "0" * 64)  # v1 live at once
        registry.change("m", "promote", 4)  # previous: [1]
        registry.change("m", "shadow", 3)
    finally:
        registry.close()
    base = ["--bootstrap-servers", kafka.bootstrap_servers, "--models-topic", kafka.models]
    assert main(["models", "prune", "m", "--keep", "1", *base]) == 0
    assert "deleted 2 version(s) (v2, v5)" in capsys.readouterr().out
    registry = Registry(kafka, kafka.models)
    try:
        state = registry.state()
        assert sorted(v for n, v in state.versions if n == "m") == [1, 3, 4, 6]
        assert not state.chunks.get(("m", 2)) and not state.chunks.get(("m", 5))
        assert registry.reader.tflite(state.version("m", 6)) == b"model 5"
    finally:
        registry.close()


def test_a_detector_loads_a_version_from_its_chunks_and_holds_only_what_serves(
        kafka, steps, monkeypatch):
    monkeypatch.setattr(registry_module, "CHUNK_BYTES", 2048)  # the models cut in several
    registry = Registry(kafka, kafka.models)
    shipped = {}
    for name in ("seed", "pair"):
        path = MODELS_DIR / f"{name}.keras"
        content = path.with_suffix(".tflite").read_bytes()
        version, _ = registry.push("trend", content, json.loads(
            path.with_suffix(".card.json").read_text()), sha256(path))
        assert version.chunks > 1
        shipped[version.version] = name
    det = DetectorThread(settings(kafka, model="trend"), None).start()
    rollout = det.pipeline.rollout

    def role(version: int, role: str) -> bool:
        return det.value("detector_model_info", {"name": "trend", "version": str(version),
                                                 "role": role}) == 1

    try:
        send(kafka, kafka.values, uniform_events(10, 30))
        wait_for(lambda: det.value("detector_events_processed_total") >= 300, 120)
        registry.change("trend", "promote", 2)
        wait_for(lambda: role(2, "live") and not rollout.pending(), 30, what="v2 serving")
        registry.change("trend", "shadow", 1)
        wait_for(lambda: role(1, "candidate"), 30, what="v1 shadowing")
        assert set(rollout._loaded) == {("trend", 1), ("trend", 2)}
        registry.change("trend", "unshadow")
        wait_for(lambda: set(rollout._loaded) == {("trend", 2)}, 30,
                 what="only the live version held")
    finally:
        det.stop()
        registry.close()
