"""A swap to a long-history model and back, in a running group under load, against the real
local broker, with the replica that swapped SIGKILLed right after each swap: nothing lost,
duplicates identical, and every flag the one the swap documents: the long model's from the
values the stream kept (8, or up to its 12 where the detector already kept more for it)."""

from __future__ import annotations

import contextlib
import itertools
import json

import numpy as np
import pytest

from detector.kafka.registry import Registry
from detector.model.files import sha256
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine
from detector.stream.state import HISTORY
from tests.kafka.test_rollout import by_stream, feed_slowly
from tests.pattern_models import pattern_model
from tests.support import DetectorProcess, read_topic, uniform_events, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900)]


def push(registry: Registry, name: str, model) -> int:
    card = json.loads(model.with_suffix(".card.json").read_text())
    version, _ = registry.push(name, model.with_suffix(".tflite").read_bytes(), card,
                               sha256(model))
    return version.version


def documented(steps: dict[int, ModelStep], values: np.ndarray, versions: list[int],
               kept: int) -> np.ndarray:
    """A stream's flags as the swaps document them: one engine, each event through the model
    version that served it. At the swap to the long model the stream has the ``kept`` values
    its detector kept: the window model's 8, more where the detector already served the long
    model to other partitions (its store keeps as many as any model it serves reads). The long
    model starts from those (its cold start); at the swap back the window model has every
    value it reads."""
    engine = Engine(steps[versions[0]])
    engine.store.ensure_history(kept)
    flags = np.zeros(len(values), np.int8)
    cuts = [0, *[i for i in range(1, len(versions)) if versions[i] != versions[i - 1]],
            len(values)]
    for lo, hi in itertools.pairwise(cuts):
        res = engine.process(Batch.of(["s"] * (hi - lo), values[lo:hi], seq=np.arange(lo, hi)),
                             steps[versions[lo]])
        flags[lo:hi] = res.flag
    return flags


def swap_and_kill(registry: Registry, dets: list[DetectorProcess], stack: contextlib.ExitStack,
                  change: tuple, kafka) -> None:
    """Ask the registry for ``change``; SIGKILL the first replica that swaps for it, start a
    new one in its place (closed with ``stack``)."""
    before = {id(d): d.metric("detector_model_swaps_total") or 0 for d in dets}
    registry.change(*change)
    victim = wait_for(lambda: next((d for d in dets if (d.metric(
        "detector_model_swaps_total") or 0) > before[id(d)]), None), 60, every=0.05,
        what=f"a replica to swap for {change}")
    victim.kill()
    dets.remove(victim)
    dets.append(DetectorProcess(kafka, model="pat").start())
    stack.callback(dets[-1].close)


def every_output(kafka, events: int) -> list[dict]:
    """The flag records once every event has one (duplicates identical: checked here)."""
    def complete() -> list[dict] | None:
        outputs = [r.json() for r in read_topic(kafka, kafka.flags, settle=0.5)]
        return outputs if len({(o["stream"], o["seq"]) for o in outputs}) >= events else None

    outputs = wait_for(complete, 240, every=1, what="every event to have an output")
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for rec in outputs:
        key, value = (rec["stream"], rec["seq"]), (rec["flag"], rec["model_version"])
        assert seen.setdefault(key, value) == value, f"duplicates differ at {key}"
    assert len(seen) == events  # nothing lost, nothing else
    return outputs


def test_a_swap_to_a_long_model_and_back_under_load_with_kills(kafka, dip_model,
                                                              tmp_path_factory):
    window, _ = dip_model
    long_model, _, _ = pattern_model(tmp_path_factory, "new_high12")
    registry = Registry(kafka, kafka.models)
    assert push(registry, "pat", window) == 1
    assert push(registry, "pat", long_model) == 2
    records = uniform_events(80, 200, seed=11)
    dets = [DetectorProcess(kafka, model="pat").start() for _ in range(2)]
    with contextlib.ExitStack() as stack:  # closes every replica ever started, and the registry
        stack.callback(registry.close)
        for d in dets:
            stack.callback(d.close)
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two replicas ready")
        feeder = feed_slowly(kafka, records, 40, 0.4)
        wait_for(lambda: sum(d.processed() for d in dets) > len(records) // 4, 90,
                 what="a quarter processed")
        swap_and_kill(registry, dets, stack, ("pat", "promote", 2), kafka)
        wait_for(lambda: sum(d.processed() for d in dets) > len(records) // 2, 120,
                 what="half processed")
        swap_and_kill(registry, dets, stack, ("pat", "rollback"), kafka)
        feeder.join()
        outputs = every_output(kafka, len(records))
        assert all(d.terminate() == 0 for d in dets)
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
        got = np.array([first[seq]["flag"] for seq in range(len(values[stream]))])
        runs = {kept: documented(steps, np.array(values[stream]), versions, kept)
                for kept in range(HISTORY, steps[2].history + 1)}
        assert any((got == want).all() for want in runs.values()), (
            stream, versions, {k: np.nonzero(got != w)[0][:5] for k, w in runs.items()})
    assert swapped > 0.9 * len(values)  # the streams saw both swaps while events came in
