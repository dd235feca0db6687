"""Training a shipped model's feature set: ``train`` writes ``<features>.keras``, its model card
(``<features>.card.json``) and its training curves (``<features>.curves.png``). The shipped
models in ``detector/model/shipped`` were made by it (their cards say with which command).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import keras
import numpy as np

from detector.model.features import COMPRESSION, FeatureSet, stream_inputs
from detector.model.serving import ModelStep
from detector.task import shapes
from detector.task.rule import exact_flags
from detector.training.architectures import (
    RECIPES,
    Recipe,
    build_seed_model,
    build_stateful_model,
)
from detector.training.data import StreamBatches, seed_data, stream_arrays
from detector.training.evaluation import battery as evaluation_battery
from detector.training.evaluation import evaluate, evaluate_battery
from detector.training.export import export_tflite
from detector.training.plots import plot_history


def _compile(model: keras.Model, recipe: Recipe, steps: int) -> None:
    warm = int(0.03 * steps) if recipe.features != "seed" else 0
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate * (0.1 if warm else 1.0), steps - warm, alpha=1e-3,
        warmup_target=recipe.learning_rate if warm else None, warmup_steps=warm)
    model.compile(loss="binary_crossentropy",
                  optimizer=keras.optimizers.Adam(schedule, clipnorm=recipe.clipnorm),
                  metrics=None if recipe.features != "seed" else ["accuracy"],
                  weighted_metrics=["accuracy"] if recipe.features != "seed" else None)


def train(features: FeatureSet, out_dir: str | Path = "models", epochs: int | None = None,
          events: int | None = None, seed: int = 0, verbose: int | None = None,
          eval_events: int = 100_000) -> dict:
    """Train one model from its recipe; write the model, its card and its curves."""
    recipe = RECIPES[features]
    recipe = replace(recipe, epochs=epochs or recipe.epochs, events=events or recipe.events)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    print(f"train {features}: {recipe.epochs} epochs of {recipe.events:,} training events "
          f"(random seed {seed})", flush=True)
    started = time.perf_counter()
    check = shapes.battery(length=400, per_kind=2, seed=seed + 555)  # validation: held out
    check_values = np.stack(list(check.values()))
    if features == "seed":
        model = build_seed_model()
        x, y = seed_data(recipe.events, recipe.near_tie_share, rng, recipe.near_tie_low)
        xv = stream_inputs("seed", check_values)[:, 2:].reshape(-1, 3, 1)
        yv = np.stack([exact_flags(v)[2:] for v in check_values]).reshape(-1).astype(np.float32)
        _compile(model, recipe, recipe.epochs * int(np.ceil(len(x) / recipe.batch_size)))
        history = model.fit(x, y, batch_size=recipe.batch_size, epochs=recipe.epochs,
                            validation_data=(xv, yv), verbose=verbose)
    else:
        model = build_stateful_model(recipe)
        batches = StreamBatches(recipe, rng)
        _compile(model, recipe, recipe.epochs * len(batches))
        history = model.fit(batches, epochs=recipe.epochs,
                            validation_data=stream_arrays(features, check_values),
                            verbose=verbose)
    seconds = time.perf_counter() - started
    path = out / f"{features}.keras"
    if features != "seed":
        plain = build_stateful_model(recipe, pinned=False)
        plain.set_weights(model.get_weights())
        model = plain
    model.save(path)
    curves = out / f"{features}.curves.png"
    plot_history(history.history, curves, f"{features} model")

    print(f"train {features}: evaluating on {eval_events:,} fresh uniform events and on the "
          "battery through the serving step", flush=True)
    step = ModelStep.load(str(path))
    result = evaluate(step, eval_events, 10, seed + 1_000_003)
    real = evaluate_battery(step)
    card = {
        "name": features,
        "features": features,
        "feature_description": FEATURE_DESCRIPTION[features],
        "normalization": NORMALIZATION,
        "training_data": TRAINING_DATA,
        "architecture": [describe_layer(layer) for layer in model.layers],
        "parameters": model.count_params(),
        "state_floats_per_stream": 0 if features == "seed" else 2 * recipe.units,
        "loss": "binary_crossentropy",
        "optimizer": f"adam, cosine-decayed learning rate from {recipe.learning_rate:g}",
        "recipe": asdict(recipe),
        "random_seed": seed,
        "training_seconds": round(seconds, 1),
        "final": {k: float(v[-1]) for k, v in history.history.items()},
        "fresh_evaluation": result.as_dict(),
        "battery_evaluation": {name: r.summary() for name, r in real.items()},
        "known_limits": KNOWN_LIMITS[features],
        "command": f"python -m detector train --features {features} --seed {seed}"
                   + (f" --epochs {epochs}" if epochs else "")
                   + (f" --events {events}" if events else ""),
        "versions": {"keras": keras.__version__, "tensorflow": tf_version(),
                     "python": platform.python_version()},
    }
    (out / f"{features}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    export_tflite(path, series=[v for part in evaluation_battery().values()
                                for v in part.values()], series_label="the battery")
    battery_text = "; ".join(f"{name} {r.accuracy:.4%} (worst stream {r.worst_accuracy:.2%})"
                             for name, r in real.items())
    print(f"train {features}: uniform {result.accuracy:.4%} on {result.events:,} fresh events; "
          f"battery: {battery_text}; {seconds:.0f} s of training; wrote {path}, "
          f"{curves.name}, {features}.card.json", flush=True)
    return card


FEATURE_DESCRIPTION = {
    "seed": "[x3, x2, direction of x2] as a length-3 sequence of one feature (the seed's "
            "layout): x3 and x2 normalized against the stream (x2's slot is 0 after "
            "centering on x2), direction +1 up, 0 flat, -1 down",
    "pair": "[x_t, x_{t-1}] normalized against the stream (x_{t-1}'s slot is 0 after "
            "centering on it), one step per event, LSTM state carried per stream",
}
NORMALIZATION = (
    "per stream, in float64 before any cast: u = compress((x_t - x_{t-1}) / s), s = geometric "
    "running mean (weight 0.1) of the stream's |steps| that are not ties; compress is "
    f"{COMPRESSION}; a tie (a repeat or float dust, detector/task/rule.py) gives exactly 0 "
    "(detector/model/features.py)"
)
TRAINING_DATA = (
    "generated streams of every shape in detector/task/shapes.py (uniform, walks, heavy-tailed "
    "walks, few-decimal readings, counts, plateaus, constants, slow ramps, spikes, level "
    "shifts, seasonal readings, prices, growth, zigzags, and mixes of these), at magnitudes "
    "1e-9 to 1e12 with offsets and either sign, a share of steps shrunk to 1e-7..1e-1 of "
    "themselves; no real series (those are the check battery)"
)


KNOWN_LIMITS = {
    "seed": "Every step above the dust bound reaches it at least 1e-4 from a tie: the near-tie "
            "probes (down to 2e-10 of the stream's typical step) and spikes up to 1e200 of it "
            "are all right. What errors are left sit on shapes of steps no training stream "
            "shows (see the battery evaluation and docs/models.md for real series).",
    "pair": "Every step above the dust bound reaches it at least 1e-4 from a tie: the near-tie "
            "probes (down to 2e-10 of the stream's typical step) and spikes up to 1e200 of it "
            "are all right. The forget gate is pinned shut, so the run length does not matter "
            "(runs of 10,000 steps measured).",
}


def describe_layer(layer: keras.layers.Layer) -> str:
    if isinstance(layer, keras.layers.TimeDistributed):
        return f"TimeDistributed({describe_layer(layer.layer)})"
    cfg = layer.get_config()
    name = type(layer).__name__
    if name == "LSTM":
        return (f"LSTM({cfg['units']}, activation={cfg['activation']}, "
                f"return_sequences={cfg['return_sequences']})")
    if name == "Dropout":
        return f"Dropout({cfg['rate']})"
    if name == "Dense":
        return f"Dense({cfg['units']}, activation={cfg['activation']})"
    return name


def tf_version() -> str:
    import tensorflow as tf

    return tf.__version__
