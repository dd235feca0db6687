"""A long-history pattern model (``long``, 12 values) through the engine: it reads what training
read, in polls of any shape; its stream state keeps as many values as it reads; and at a model
swap to it, from it, or after it shadowed, its flags are the documented ones exactly."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from detector.model.features import advance, long_input, stream_inputs, windows
from detector.model.files import ModelError
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine
from detector.stream.rebuild import rebuild
from detector.stream.shadow import Shadow
from detector.stream.state import HISTORY, decode_state
from detector.training.evaluation import battery, run_streams
from tests.pattern_models import pattern_model
from tests.stream.test_engine import assert_same, ragged

#: Training the model and measuring its two runtimes takes minutes on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LENGTH = 400


@pytest.fixture(scope="module")
def long_step(tmp_path_factory) -> ModelStep:
    model, _, _ = pattern_model(tmp_path_factory, "new_high12")
    return ModelStep.load(str(model))


@pytest.fixture(scope="module")
def window_step(dip_model) -> ModelStep:
    return ModelStep.load(str(dip_model[0]))


def streams(n: int = 12) -> list[np.ndarray]:
    """Real series and generated shapes of the battery, ties and float dust included."""
    parts = battery()
    real = [v for v in parts["real"].values() if len(v) >= LENGTH]
    named = real[:n // 2] + [*parts["generated"].values()][::6][:n // 2]
    return [v[:LENGTH] for v in named]


def flags_of(step: ModelStep, x: np.ndarray) -> np.ndarray:
    return (step(x)[0] > 0.5).astype(np.int8)


def poll(values: list[np.ndarray], lo: int, hi: int) -> Batch:
    """Events ``lo .. hi-1`` of every stream, in one poll."""
    live = [i for i, v in enumerate(values) if lo < len(v)]
    ids = [f"s{i}" for i in live for _ in range(lo, min(hi, len(values[i])))]
    return Batch.of(ids, np.concatenate([values[i][lo:hi] for i in live]),
                    seq=np.concatenate([np.arange(lo, min(hi, len(values[i]))) for i in live]))


def by_stream(values: list[np.ndarray], res, lo: int) -> list[np.ndarray]:
    """The flags of ``poll(values, lo, ...)`` split per stream."""
    sizes = [max(0, len(v) - lo) for v in values]
    return np.split(res.flag, np.cumsum(sizes)[:-1])


def test_the_engine_feeds_the_model_what_training_built(long_step):
    """Interleaved in polls, each event's flag is the model's on ``stream_inputs``, the
    function training builds its inputs with."""
    values = streams()
    flags, _ = run_streams(long_step, values, np.random.default_rng(3), batch=500)
    for v, got in zip(values, flags, strict=True):
        np.testing.assert_array_equal(got, flags_of(long_step, stream_inputs("long", v, 12)[0]))
    assert long_step.features == "long" and long_step.history == 12


@pytest.mark.parametrize("seed", range(2))
def test_ragged_polls_equal_one_event_at_a_time(long_step, seed):
    rng = np.random.default_rng(seed)
    assert_same(long_step, [ragged(rng, 500, 30, 0.5), ragged(rng, 300, 30, 0, 100)])


def test_the_state_keeps_and_restores_as_many_values_as_the_model_reads(long_step):
    """A store serving the long model keeps 12 values a stream and writes them all; a store
    restoring those records continues every stream exactly as if nothing had happened."""
    values = streams()
    whole = Engine(long_step)
    whole.process(poll(values, 0, 150))
    want = by_stream(values, whole.process(poll(values, 150, LENGTH)), 150)
    first = Engine(long_step)
    first.process(poll(values, 0, 150))
    assert first.store.history == 12
    slots = np.array([first.store.slot_of(f"s{i}") for i in range(len(values))])
    records = first.store.snapshot(slots, long_step.fingerprint).records(0, len(slots))
    rows, lstms = zip(*[decode_state(data)[:2] for _, data, _ in records], strict=True)
    second = Engine(long_step)
    second.store.put([f"s{i}" for i in range(len(values))], list(rows), list(lstms))
    got = by_stream(values, second.process(poll(values, 150, LENGTH)), 150)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def cold_start(step: ModelStep, v: np.ndarray, cut: int, kept: int) -> np.ndarray:
    """The long model's flags from ``cut`` on, computed apart from the engine: each event's
    window holds only values from ``cut - kept`` on (those before are absent), in units of the
    stream's typical step over its whole past."""
    first = np.arange(len(v)) == 0
    zero = np.zeros(len(v))
    _, _, _, unit = advance(v, zero, zero, zero.astype(np.int64), first)
    window = windows(v[cut - kept:], step.history)[kept:]
    return flags_of(step, long_input(window, unit[cut:]))


CUT = 150


def test_a_swap_to_the_long_model_flags_from_the_values_kept(window_step, long_step):
    """The window model kept 8 values a stream: from the swap, the long model reads those and
    the new ones, the older as absent (its cold start), until the stream has 12 again; from
    then on its flags are those of an uninterrupted run."""
    values = streams()
    engine = Engine(window_step)
    engine.process(poll(values, 0, CUT))
    assert engine.store.history == HISTORY
    got = by_stream(values, engine.process(poll(values, CUT, LENGTH), long_step), CUT)
    for v, g in zip(values, got, strict=True):
        np.testing.assert_array_equal(g, cold_start(long_step, v, CUT, HISTORY))
        uninterrupted = flags_of(long_step, stream_inputs("long", v, 12)[0])[CUT:]
        np.testing.assert_array_equal(g[12 - HISTORY:], uninterrupted[12 - HISTORY:])
    assert engine.store.history == 12


def test_after_shadowing_a_promotion_is_an_uninterrupted_run(window_step, long_step):
    """While the long model shadows the window model, the live state keeps 12 values: promoted
    after that, its flags are an uninterrupted run's from the first event."""
    values = streams()
    engine = Engine(window_step)
    engine.process(poll(values, 0, CUT - 20))
    shadow = Shadow(long_step, 3)
    batch = poll(values, CUT - 20, CUT)
    shadow.seed(engine.store, batch.streams)
    shadow.process(batch, engine.process(batch))
    got = by_stream(values, engine.process(poll(values, CUT, LENGTH), long_step), CUT)
    for v, g in zip(values, got, strict=True):
        np.testing.assert_array_equal(g, flags_of(long_step, stream_inputs("long", v, 12)[0])
                                      [CUT:])


def test_a_swap_back_from_the_long_model_is_exact(window_step, long_step):
    values = streams()
    engine = Engine(long_step)
    engine.process(poll(values, 0, CUT))
    got = by_stream(values, engine.process(poll(values, CUT, LENGTH), window_step), CUT)
    for v, g in zip(values, got, strict=True):
        np.testing.assert_array_equal(g, flags_of(window_step, stream_inputs("window", v)[0])
                                      [CUT:])


def test_a_stateful_model_rebuilds_exactly_from_a_longer_history(steps, long_step):
    """``pair``'s state rebuilt at a swap from a store that keeps 12 values (a long model
    served before): burned in over the values its flags depend on, exact as from 8."""
    values = streams()
    pair = steps("pair")
    whole = Engine(pair)
    whole.process(poll(values, 0, CUT))
    want = whole.process(poll(values, CUT, LENGTH))
    engine = Engine(long_step)
    engine.process(poll(values, 0, CUT))
    slots = engine.store.index.find([f"s{i}" for i in range(len(values))], engine.store.keys)
    rebuild(engine.store, slots, pair)
    got = engine.process(poll(values, CUT, LENGTH), pair)
    np.testing.assert_array_equal(got.flag, want.flag)
    np.testing.assert_array_equal(got.flag, got.rule_flag)


def test_a_long_card_must_declare_the_history_its_step_reads(long_step):
    """The registry's check of a version: a long model's width depends on its history, so a
    card without one, or with another, is refused in one line."""
    content = long_step.path.with_suffix(".tflite").read_bytes()
    card = json.loads(long_step.path.with_suffix(".card.json").read_text())
    assert ModelStep.from_tflite(content, card, "high", 3).history == 12
    for history, says in ((None, "must declare its history"), (40, "must declare its history"),
                          (13, "its step takes 44 values per event (without carried state); "
                               "the long feature set gives 48")):
        with pytest.raises(ModelError, match=re.escape(says)):
            ModelStep.from_tflite(content, {**card, "history": history}, "high", 3)
