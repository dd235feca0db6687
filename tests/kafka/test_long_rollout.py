"""A swap to a long-history model and back, in a running group under load, against the real
local broker, with the replica that swapped SIGKILLed right after each swap: nothing lost,
duplicates identical, and every flag the one the swap documents."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from detector.kafka.registry import Registry
from detector.model.files import sha256
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine
from detector.testing.harness import DetectorProcess
from tests.kafka.test_rollout import by_stream, feed_slowly
from tests.pattern_models import pattern_model
from tests.support import read_topic, uniform_events, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900)]


def push(registry: Registry, name: str, model) -> int:
    card = json.loads(model.with_suffix(".card.json").read_text())
    version, _ = registry.push(name, model.with_suffix(".tflite").read_bytes(), card,
                               sha256(model))
    return version.version


def documented(steps: dict[int, ModelStep], values: np.ndarray, versions: list[int]
               ) -> np.ndarray:
    """A stream's flags as the swaps document them: one engine, each event through the model
    version that served it. At the swap to the long model the stream has the 8 values the
    window model kept, so the long model starts from those (its cold start); at the swap back
    the window model has every value it reads."""
    engine = Engine(steps[versions[0]])
    flags = np.zeros(len(values), np.int8)
    cuts = [0, *[i for i in range(1, len(versions)) if versions[i] != versions[i - 1]],
            len(values)]
    for lo, hi in itertools.pairwise(cuts):
        res = engine.process(Batch.of(["s"] * (hi - lo), values[lo:hi], seq=np.arange(lo, hi)),
                             steps[versions[lo]])
        flags[lo:hi] = res.flag
    return flags


def swap_and_kill(registry: Registry, dets: list[DetectorProcess], started: list,
                  change: tuple, kafka) -> None:
    """Ask the registry for ``change``; SIGKILL the first replica that swaps for it, start a
    new one in its place."""
    before = {id(d): d.metric("detector_model_swaps_total") or 0 for d in dets}
    registry.change(*change)
    victim = wait_for(lambda: next((d for d in dets if (d.metric(
        "detector_model_swaps_total") or 0) > before[id(d)]), None), 60, every=0.05,
        what=f"a replica to swap for {change}")
    victim.kill()
    dets.remove(victim)
    dets.append(DetectorProcess(kafka, model="pat").start())
    started.append(dets[-1])


def test_a_swap_to_a_long_model_and_back_under_load_with_kills(kafka, dip_model,
                                                              tmp_path_factory):
    window, _ = dip_model
    long_model, _, _ = pattern_model(tmp_path_factory, "new_high12")
    registry = Registry(kafka, "detector-models")
    assert push(registry, "pat", window) == 1
    assert push(registry, "pat", long_model) == 2
    records = uniform_events(80, 200, seed=11)
    dets = [DetectorProcess(kafka, model="pat").start() for _ in range(2)]
    started = list(dets)
    try:
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two replicas ready")
        feeder = feed_slowly(kafka, records, 40, 0.4)
        wait_for(lambda: sum(d.processed() for d in dets) > len(records) // 4, 90,
                 what="a quarter processed")
        swap_and_kill(registry, dets, started, ("pat", "promote", 2), kafka)
        wait_for(lambda: sum(d.processed() for d in dets) > len(records) // 2, 120,
                 what="half processed")
        swap_and_kill(registry, dets, started, ("pat", "rollback"), kafka)
        feeder.join()
        wait_for(lambda: len({(r.json()["stream"], r.json()["seq"]) for r in
                              read_topic(kafka, "trend-flags", settle=0.5)}) >= len(records),
                 240, every=1, what="every event to have an output")
        for d in dets:
            assert d.terminate() == 0
    finally:
        for d in started:
            d.close()
        registry.close()
    outputs = [r.json() for r in read_topic(kafka, "trend-flags")]
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for rec in outputs:
        key, value = (rec["stream"], rec["seq"]), (rec["flag"], rec["model_version"])
        assert seen.setdefault(key, value) == value, f"duplicates differ at {key}"
    assert len(seen) == len(records)  # nothing lost
    values: dict[str, list[float]] = {}
    for _, raw in records:
        event = json.loads(raw)
        values.setdefault(event["stream"], []).append(event["value"])
    steps = {1: ModelStep.load(str(window)), 2: ModelStep.load(str(long_model))}
    swapped = 0
    for stream, recs in by_stream(outputs).items():
        first = {r["seq"]: r for r in reversed(recs)}  # the first output of each event
        versions = [first[seq]["model_version"] for seq in range(len(values[stream]))]
        changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert changes == [1, 2, 1][:len(changes)], (stream, changes)
        swapped += changes == [1, 2, 1]
        want = documented(steps, np.array(values[stream]), versions)
        got = np.array([first[seq]["flag"] for seq in range(len(values[stream]))])
        assert (got == want).all(), (stream, np.nonzero(got != want)[0][:10], versions)
    assert swapped > 0.9 * len(values)  # the streams saw both swaps while events came in
