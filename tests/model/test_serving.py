"""The serving step and the shipped models: batched equals one-at-a-time; the accuracy the
README states holds on uniform data, on the real battery and on every generated shape."""

import json

import numpy as np
import pytest

from detector.model.features import stream_inputs
from detector.model.files import MODELS_DIR, card_path
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine
from detector.task import shapes
from detector.task.rule import FLAT, TIE_SHARE, exact_flags
from detector.training.evaluation import (
    battery,
    evaluate,
    long_run_probe,
    near_tie_probe,
    run_streams,
    score,
    spike_probe,
)

MODELS = ("seed", "pair")
#: The figures the README states, per model, as thresholds: uniform [0, 1) events; each part
#: of the battery overall and on its worst stream (the generated part with its float-dust
#: shapes, ``shapes.COMPUTED``: the issue asked >= 99.9% on each of their streams).
UNIFORM_TARGET = {"seed": 0.99999, "pair": 0.99999}
BATTERY_TARGET = {(name, part): (1.0, 1.0) for name in MODELS for part in ("real", "generated")}
STREAM_TARGET = 0.999  # every form of the scale test


def interleaved(step, values):
    """All streams through one engine, interleaved in random-sized polls."""
    rng = np.random.default_rng(0)
    n, length = values.shape
    order = [(s, t) for t in range(length) for s in range(n)]
    rng.shuffle(order)
    order.sort(key=lambda st: st[1])  # keep each stream in order, mix streams within a step
    engine, probs = Engine(step), np.zeros(values.shape, np.float32)
    i = 0
    while i < len(order):
        chunk = order[i : i + int(rng.integers(1, 50))]
        res = engine.process(Batch.of([f"s{s}" for s, _ in chunk],
                                      np.array([values[s, t] for s, t in chunk]),
                                      seq=np.array([t for _, t in chunk])))
        for j, (s, t) in enumerate(chunk):
            probs[s, t] = res.probability[j]
        i += len(chunk)
    return probs


@pytest.mark.parametrize("name", MODELS)
def test_batched_serving_equals_one_stream_at_a_time(steps, name):
    step = steps(name)
    values = np.random.default_rng(1).random((8, 60))
    alone = np.zeros(values.shape, np.float32)
    for s in range(len(values)):
        engine = Engine(step)
        for t in range(values.shape[1]):
            alone[s, t] = engine.process(Batch.of(["x"], values[s, t : t + 1], seq=[t])
                                         ).probability[0]
    np.testing.assert_allclose(interleaved(step, values), alone, atol=1e-5)


def test_stepping_carried_state_equals_the_whole_sequence_model(steps):
    step = steps("pair")
    values = np.random.default_rng(2).random((3, 200))
    whole = step.model(stream_inputs("pair", values), training=False).numpy()[:, :, 0]
    np.testing.assert_allclose(interleaved(step, values), whole, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_accuracy_on_fresh_uniform_events(steps, name):
    result = evaluate(steps(name), events=50_000, streams=10, seed=2024)
    assert result.accuracy >= UNIFORM_TARGET[name], result


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("part", ["real", "generated"])
def test_shipped_model_accuracy_on_the_battery(steps, name, part):
    report = score(steps(name), battery()[part])
    overall, worst = BATTERY_TARGET[name, part]
    assert report.accuracy >= overall, report.summary()
    assert report.worst_accuracy >= worst, report.summary()


class Recording:
    """A model step that keeps what it is fed."""

    def __init__(self, step):
        self.step, self.inputs = step, []

    def __getattr__(self, name):
        return getattr(self.step, name)

    def __call__(self, x, state):
        self.inputs.append(np.array(x))
        return self.step(x, state)


def test_rule_flags_and_model_inputs_agree_on_dust(steps):
    """One stream through every float-dust shape: where the engine's direction is flat the
    model's step is exactly 0 and nowhere else, its previous direction is the engine's, and
    the rule flags in the records are the exact rule's."""
    rng = np.random.default_rng(25)
    values = np.concatenate([shapes.stream(kind, 300, rng) for kind in sorted(shapes.COMPUTED)])
    step = Recording(steps("seed"))
    res = Engine(step).process(Batch.of(["s"] * len(values), values,
                                        seq=np.arange(len(values))))
    x = np.concatenate(step.inputs)
    flat = res.direction == FLAT
    assert (flat[1:] & (values[1:] != values[:-1])).sum() > 50  # dust, not repeats
    assert (x[flat, 0] == 0).all() and (x[~flat, 0] != 0).all()
    assert (x[1:, 2] == res.direction[:-1]).all()
    assert res.rule_flag.tolist() == exact_flags(values).tolist()
    assert res.flag.tolist() == res.rule_flag.tolist()


def model_flags(step, values):
    return run_streams(step, [np.asarray(values, np.float64)], np.random.default_rng(0))[0][0]


@pytest.mark.parametrize("name", MODELS)
def test_ties_and_the_worked_example(steps, name):
    step = steps(name)
    assert model_flags(step, [0.1, 0.2, 0.3, 0.5, 0.3, 0.2]).tolist() == [0, 0, 1, 1, 0, 1]
    assert model_flags(step, [1, 2, 2, 3]).tolist() == [0, 0, 0, 0]
    assert not model_flags(step, [200.0] * 300).any()
    assert not model_flags(step, [-3e-9] * 300).any()


@pytest.mark.parametrize("name", MODELS)
def test_flags_follow_each_form_of_a_stream(steps, name):
    """Scaled 1e-9..1e12, offset, negated, rounded: each form gets the rule's flags of that
    form, and scaling or negating a stream does not change a single model flag."""
    base = shapes.stream("mixed", 3000, np.random.default_rng(11), rescale=False)
    scaled = {f"x{f:g}": base * f for f in (1e-9, 1e-4, 1.0, 1e3, 1e9, 1e12)} | {
        "negated": -base}
    forms = scaled | {"offset": base + 1e6, "rounded": np.round(base, 1),
                      "rounded-scaled": np.round(base) * 1e9}
    for form, s in score(steps(name), forms).streams.items():
        assert s.accuracy >= STREAM_TARGET, (form, s)
    flags = {form: model_flags(steps(name), v) for form, v in scaled.items()}
    for form, f in flags.items():
        assert (f == flags["x1"]).all(), form


#: Where each model stops being right, as the README states it: near-ties down to just above
#: the dust bound (``TIE_SHARE``, 1e-10 of the typical step) resolved, dust below it a tie,
#: spikes up to 1e200 of the typical step, and runs (however long) that end in a repeat.
NEAR_TIES = (1e-3, 1e-5, 1e-7, 1e-9, 2 * TIE_SHARE, TIE_SHARE / 10)
SPIKES = (1e6, 1e15, 1e30, 1e200)
LONG_RUNS = (30, 300, 3000)


@pytest.mark.parametrize("name", MODELS)
def test_where_the_models_stop_being_right(steps, name):
    for eps in NEAR_TIES:
        assert near_tie_probe(steps(name), eps) >= 0.97, eps
    for size in SPIKES:
        assert spike_probe(steps(name), size) >= 0.97, size
    for length in LONG_RUNS:
        assert long_run_probe(steps(name), length) == 1.0, length


def independent_set_shapes(seed: int = 5) -> dict[str, np.ndarray]:
    """Columns shaped like the ones an independent real set broke the models on: sums taken in
    float32 (-0.5000001 after -0.5), ISBNs with neighbours of one publisher among many, and
    physical constants over 70 orders of magnitude: hundreds of real steps 1e-10..1e-3 of
    their stream's typical step."""
    rng = np.random.default_rng(seed)
    change = np.round(rng.normal(0, 0.3, 1000), 1)  # repeats often
    level = np.round(rng.uniform(2, 8, 1000), 1).astype(np.float32)
    isbn = rng.integers(9_780_000_000_000, 9_790_000_000_000, 1000).astype(np.float64)
    near = np.nonzero(rng.random(1000) < 0.3)[0][1:]
    isbn[near] = isbn[near - 1] + rng.integers(-500, 500, len(near))
    return {"float32": ((level + change.astype(np.float32)) - level).astype(np.float64),
            "isbn": isbn,
            "constants": 10 ** rng.uniform(-40, 30, 1000) * rng.uniform(1, 10, 1000)}


@pytest.mark.parametrize("name", MODELS)
def test_real_steps_far_below_the_typical_one_are_right(steps, name):
    for column, s in score(steps(name), independent_set_shapes()).streams.items():
        assert s.accuracy == 1.0, (column, s)


def test_extreme_values_get_an_answer_that_is_a_number(steps):
    values = [0.0, 1e300, -1e300, 1.7e308, -1.7e308, 5e-324, 1e-320, 7.0, 7.0, 1e15]
    for name in MODELS:
        flags, probs = run_streams(steps(name), [np.array(values)], np.random.default_rng(0))
        assert np.isfinite(probs[0]).all() and len(flags[0]) == len(values)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_models_are_package_data_with_cards(name):
    assert (MODELS_DIR / f"{name}.keras").is_file()
    assert (MODELS_DIR / f"{name}.curves.png").is_file()
    card = json.loads(card_path(MODELS_DIR / f"{name}.keras").read_text())
    for field in ("features", "architecture", "recipe", "random_seed", "training_seconds",
                  "fresh_evaluation", "command"):
        assert field in card, field
    assert card["features"] == name


def test_seed_model_is_the_seeds_architecture(steps):
    layers = [(type(layer).__name__, layer.get_config()) for layer in steps("seed").model.layers]
    assert [name for name, _ in layers] == ["LSTM", "Dropout", "LSTM", "Dropout", "Dense"]
    assert [c.get("units") for _, c in layers] == [50, None, 50, None, 1]
    assert layers[0][1]["activation"] == layers[2][1]["activation"] == "relu"
    assert layers[0][1]["return_sequences"] and not layers[2][1]["return_sequences"]
    assert layers[1][1]["rate"] == layers[3][1]["rate"] == 0.2
    assert layers[4][1]["activation"] == "sigmoid"
    assert tuple(steps("seed").model.inputs[0].shape) == (None, 3, 1)


def test_model_by_path_matches_model_by_name(steps):
    by_path = ModelStep.load(str(MODELS_DIR / "pair.keras"))
    assert by_path.features == "pair" and by_path.fingerprint == steps("pair").fingerprint
    x = np.random.default_rng(3).random((5, 2)).astype(np.float32)
    state = np.zeros((5, by_path.state_size), np.float32)
    np.testing.assert_allclose(by_path(x, state)[0], steps("pair")(x, state)[0], atol=1e-6)
