"""A training smoke run writes the model, its card and its curves; evaluate speaks JSON."""

import json

import pytest

from detector.cli.main import main
from detector.model.files import MODELS_DIR
from detector.model.serving import ModelStep
from detector.training.evaluation import battery, evaluate


@pytest.mark.parametrize("features", ["seed", "pair"])
def test_training_smoke_run_writes_model_card_and_png(tmp_path, features, capsys):
    assert main(["train", "--features", features, "--epochs", "1", "--events", "2000",
                 "--out", str(tmp_path)]) == 0
    for suffix in (".keras", ".card.json", ".curves.png"):
        assert (tmp_path / f"{features}{suffix}").stat().st_size > 0
    card = json.loads((tmp_path / f"{features}.card.json").read_text())
    assert card["features"] == features and card["recipe"]["epochs"] == 1
    assert (tmp_path / f"{features}.curves.png").read_bytes()[:4] == b"\x89PNG"
    step = ModelStep.load(str(tmp_path / f"{features}.keras"))
    assert step.features == features
    # The card states what the written model does, measured again here.
    fresh = card["fresh_evaluation"]
    again = evaluate(step, fresh["events"], fresh["streams"], fresh["seed"])
    assert again.accuracy == fresh["accuracy"]
    assert set(card["battery_evaluation"]) == {"real", "generated"}
    assert card["battery_evaluation"]["generated"]["events"] == sum(
        map(len, battery()["generated"].values()))
    if features == "pair":  # trained with its forget gate pinned, saved without custom objects
        assert_forget_gate_shut(step.model, card["recipe"]["forget_shut"])


def assert_forget_gate_shut(model, shut):
    import keras

    lstm = next(layer for layer in model.layers if isinstance(layer, keras.layers.LSTM))
    units = lstm.units
    kernel, recurrent, bias = lstm.get_weights()
    assert not kernel[:, units:2 * units].any() and not recurrent[:, units:2 * units].any()
    assert (bias[units:2 * units] == -shut).all()
    assert (bias[:units] != -shut).any()  # only the forget slice


def test_the_shipped_pair_model_has_its_forget_gate_shut():
    card = json.loads((MODELS_DIR / "pair.card.json").read_text())
    assert_forget_gate_shut(ModelStep.load("pair", runtime="keras").model,
                            card["recipe"]["forget_shut"])


def test_evaluate_json(capsys):
    assert main(["evaluate", "--model", "seed", "--events", "3000", "--streams", "3",
                 "--seed", "9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"model", "features", "events", "accuracy"} <= set(result)
    assert result["events"] == 3000 and result["model"] == "seed"


def test_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "stream.png"
    assert main(["plot", "--model", "seed", "--events", "80", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
