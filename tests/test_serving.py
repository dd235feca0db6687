"""The serving step and the shipped models: batched equals one-at-a-time; accuracy holds."""

import json

import numpy as np
import pytest

from detector.engine import Batch, Engine
from detector.evaluation import evaluate
from detector.rule import sequence_features
from detector.serving import MODELS_DIR, ModelStep, card_path

MODELS = ("seed", "pair", "raw")


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


@pytest.mark.parametrize("name", ["pair", "raw"])
def test_stepping_carried_state_equals_the_whole_sequence_model(steps, name):
    step = steps(name)
    values = np.random.default_rng(2).random((3, 200))
    whole = np.stack([
        step.model(sequence_features(step.features, v)[None], training=False).numpy()[0, :, 0]
        for v in values
    ])
    np.testing.assert_allclose(interleaved(step, values), whole, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_accuracy_on_fresh_events(steps, name):
    result = evaluate(steps(name), events=20_000, streams=10, seed=2024)
    assert result.accuracy >= 0.995, result


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
