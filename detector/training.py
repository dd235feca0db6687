"""Model building and training: the seed's model kept exact, and the stateful models.

``train`` writes ``<features>.keras``, its model card (``<features>.card.json``) and the
training curves (``<features>.curves.png``); the shipped models in ``detector/models`` were
made by it (their cards say with which command). ``reproduce`` reruns the seed's own
experiment, as written, for comparison.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from detector.rule import (
    FEATURE_WIDTH,
    FeatureSet,
    exact_flags,
    seed_generator,
    sequence_features,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model, written into its card."""

    features: FeatureSet
    events: int  # training events per epoch (seed: samples, drawn once; stateful: fresh each epoch)
    epochs: int
    batch_size: int
    learning_rate: float  # peak of a cosine decay (after a short warm-up for stateful models)
    near_tie_share: float  # share of steps drawn right next to the previous value
    walk_share: float = 0.0  # per step: chance a slow-walk segment (ramp .. zigzag) starts
    units: int = 50  # LSTM units (stateful models: one layer)
    pre_units: int = 0  # linear Dense before the LSTM (pair)
    post_units: int = 0  # relu Dense after the LSTM
    init: str = ""  # "difference" (pair) or "delay-line" (raw): a head start, see _head_start
    init_gain: float = 0.0
    seq_len: int = 100
    clipnorm: float | None = None


RECIPES: dict[FeatureSet, Recipe] = {
    # The seed's architecture, exactly: more data, near-tie samples and a decaying rate.
    "seed": Recipe("seed", events=300_000, epochs=36, batch_size=256, learning_rate=2e-3,
                   near_tie_share=0.3),
    # 16 units are as accurate as 32 or 50 here and carry 32 floats per stream.
    "pair": Recipe("pair", events=800_000, epochs=40, batch_size=128, learning_rate=3e-3,
                   near_tie_share=0.2, walk_share=0.03, units=16, pre_units=16, post_units=16,
                   init="difference", init_gain=30.0, clipnorm=1.0),
    # One layer of 32 matches two of 50 at half the state (64 floats per stream).
    "raw": Recipe("raw", events=800_000, epochs=120, batch_size=128, learning_rate=3e-3,
                  near_tie_share=0.2, walk_share=0.03, units=32, post_units=16,
                  init="delay-line", init_gain=20.0, clipnorm=1.0),
}


# --- models ----------------------------------------------------------------------------------


def build_seed_model(input_length: int = 3) -> keras.Model:
    """The seed's ``create_model``, layer for layer."""
    model = keras.Sequential([
        keras.Input((input_length, 1)),
        keras.layers.LSTM(50, activation="relu", return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.LSTM(50, activation="relu", return_sequences=False),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def build_stateful_model(recipe: Recipe) -> keras.Model:
    """One flag per step from an LSTM whose ``[h, c]`` the pipeline carries per stream.

    Values are centred to [-1, 1) inside the model, so serving passes them as they come.
    """
    layers: list[keras.layers.Layer] = [
        keras.Input((None, FEATURE_WIDTH[recipe.features])),
        keras.layers.Rescaling(2.0, offset=-1.0),
    ]
    if recipe.pre_units:
        layers.append(keras.layers.Dense(recipe.pre_units))
    layers.append(keras.layers.LSTM(recipe.units, activation="relu", return_sequences=True))
    if recipe.post_units:
        layers.append(keras.layers.Dense(recipe.post_units, activation="relu"))
    layers.append(keras.layers.Dense(1, activation="sigmoid"))
    model = keras.Sequential(layers)
    _head_start(model, recipe)
    return model


def _head_start(model: keras.Model, recipe: Recipe) -> None:
    """Set a few units to compute ``x_t - x_{t-1}`` before training; every weight stays trainable.

    The flag turns on the sign of a difference of two values that can be 1e-4 apart; from
    Keras's default initialisation gradient descent finds that sharp comparison slowly (the
    same models reach 99.85% (pair) and ~97% (raw) instead of 99.99% and 99.95%).
    - ``difference`` (pair): two units of the first Dense give ``±gain·(z_t - z_{t-1})``.
    - ``delay-line`` (raw): LSTM unit 0 stores the current value, units 1 and 2 compute
      ``relu(±2·gain·(x_t - x_{t-1}))`` from it on the next step (gates saturated open/shut).
    """
    if recipe.init == "difference":
        dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
        w, b = dense.get_weights()
        w[:, 0] = [recipe.init_gain, -recipe.init_gain]
        w[:, 1] = [-recipe.init_gain, recipe.init_gain]
        dense.set_weights([w, b])
    elif recipe.init == "delay-line":
        lstm = next(layer for layer in model.layers if isinstance(layer, keras.layers.LSTM))
        w, u, b = (x.copy() for x in lstm.get_weights())
        n, k, gate = lstm.units, recipe.init_gain, 10.0
        gi, gf, gc, go = 0, n, 2 * n, 3 * n  # Keras gate order: input, forget, cell, output
        for j in range(3):
            for g in (gi, gf, gc, go):
                w[:, g + j] = 0.0
                u[:, g + j] = 0.0
            b[gi + j], b[gf + j], b[go + j], b[gc + j] = gate, -gate, gate, 0.0
        u[0:3, :] = 0.0  # these three feed no other recurrent path at first
        boost = (1 + np.exp(-gate)) ** 2  # undo i * o < 1 on the stored value
        w[0, gc] = 1.0
        b[gc] = 1.0  # centred input z = 2x - 1: unit 0 stores relu(z + 1) = 2x
        w[0, gc + 1], u[0, gc + 1], b[gc + 1] = k, -k * boost, k
        w[0, gc + 2], u[0, gc + 2], b[gc + 2] = -k, k * boost, -k
        lstm.set_weights([w, u, b])


# --- data ------------------------------------------------------------------------------------


def _near(prev: np.ndarray, rng: np.random.Generator, low: float = -5.0, high: float = -1.0
          ) -> np.ndarray:
    """Values ``10^U(low, high)`` away from ``prev``, either side, reflected into [0, 1)."""
    step = 10 ** rng.uniform(low, high, prev.shape) * rng.choice([-1.0, 1.0], prev.shape)
    out = prev + step
    return np.where((out < 0) | (out >= 1), prev - step, out)


def seed_data(n: int, near_share: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """``[x3, x2, x2 > x1]`` samples (as a length-3 sequence) with exact labels.

    A share of the samples put x3 right next to x2: the near-ties the model has to get right.
    """
    x1, x2, x3 = rng.random(n), rng.random(n), rng.random(n)
    near = rng.random(n) < near_share
    x3[near] = _near(x2[near], rng)
    x = np.stack([x3, x2, (x2 > x1).astype(np.float64)], axis=1)[..., None]
    y = ((x3 > x2) == (x2 > x1)).astype(np.float32)
    return x.astype(np.float32), y


def training_streams(n: int, length: int, near_share: float, walk_share: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Uniform streams with near-tie steps and slow-walk segments mixed in.

    A walk segment (3..30 steps of ``10^U(-5, -1.5)``, direction flipping with a per-segment
    chance drawn from U(0, 1)) teaches slow ramps and small zigzags, which uniform values almost
    never show and which a model trained on them alone gets wrong every time.
    """
    x = rng.random((n, length))
    left = np.zeros(n, int)
    size = np.zeros(n)
    sign = np.ones(n)
    flip_p = np.zeros(n)
    for t in range(1, length):
        start = (left == 0) & (rng.random(n) < walk_share)
        k = int(start.sum())
        left[start] = rng.integers(3, 31, k)
        size[start] = 10.0 ** rng.uniform(-5, -1.5, k)
        sign[start] = rng.choice([-1.0, 1.0], k)
        flip_p[start] = rng.random(k)
        walking = left > 0
        sign[walking & (rng.random(n) < flip_p)] *= -1
        tie = ~walking & (rng.random(n) < near_share)
        step = np.where(walking, size * rng.uniform(0.5, 1.5, n),
                        10.0 ** rng.uniform(-5, -1, n))
        step *= np.where(walking, sign, rng.choice([-1.0, 1.0], n))
        prev = x[:, t - 1]
        nxt = prev + step
        bounce = (nxt < 0) | (nxt >= 1)
        nxt[bounce] = prev[bounce] - step[bounce]
        sign[bounce & walking] *= -1
        use = walking | tie
        x[use, t] = nxt[use]
        left[walking] -= 1
    return x


class StreamBatches(keras.utils.PyDataset):
    """Fresh training streams every epoch (features, exact flags, weights that skip t < 2)."""

    def __init__(self, recipe: Recipe, rng: np.random.Generator):
        super().__init__()
        self.recipe, self.rng = recipe, rng
        self.n = max(recipe.batch_size, recipe.events // recipe.seq_len)
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        r = self.recipe
        values = training_streams(self.n, r.seq_len, r.near_tie_share, r.walk_share, self.rng)
        self.x, self.y, self.w = stream_arrays(r.features, values, self.rng)

    def __len__(self) -> int:
        return int(np.ceil(self.n / self.recipe.batch_size))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = slice(i * self.recipe.batch_size, (i + 1) * self.recipe.batch_size)
        return self.x[part], self.y[part], self.w[part]


def stream_arrays(features: FeatureSet, values: np.ndarray, rng: np.random.Generator | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step features as serving builds them, exact flags, and weights that ignore t < 2.

    With ``rng``, half the ``pair`` streams start from ``x_{-1} = x_0`` instead of 0, so the
    model does not lean on the zero a fresh stream starts from.
    """
    x = np.stack([sequence_features(features, v) for v in values])
    if rng is not None and features == "pair":
        half = rng.random(len(values)) < 0.5
        x[half, 0, 1] = x[half, 0, 0]
    y = np.stack([exact_flags(v) for v in values]).astype(np.float32)[..., None]
    w = np.ones(values.shape, np.float32)
    w[:, :2] = 0.0
    return x, y, w


# --- training --------------------------------------------------------------------------------


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
    if features == "seed":
        model = build_seed_model()
        x, y = seed_data(recipe.events, recipe.near_tie_share, rng)
        held_out = np.random.default_rng(seed + 555).random((1, 50_000))
        xv = sequence_features("seed", held_out[0])[2:, :, None]
        yv = exact_flags(held_out[0])[2:].astype(np.float32)
        _compile(model, recipe, recipe.epochs * int(np.ceil(len(x) / recipe.batch_size)))
        history = model.fit(x, y, batch_size=recipe.batch_size, epochs=recipe.epochs,
                            validation_data=(xv, yv), verbose=verbose)
    else:
        model = build_stateful_model(recipe)
        batches = StreamBatches(recipe, rng)
        held_out = np.random.default_rng(seed + 4242).random((64, 1000))
        _compile(model, recipe, recipe.epochs * len(batches))
        history = model.fit(batches, epochs=recipe.epochs,
                            validation_data=stream_arrays(features, held_out, None),
                            verbose=verbose)
    seconds = time.perf_counter() - started
    path = out / f"{features}.keras"
    model.save(path)
    curves = out / f"{features}.curves.png"
    plot_history(history.history, curves, f"{features} model")

    from detector.evaluation import evaluate
    from detector.serving import ModelStep

    print(f"train {features}: evaluating on {eval_events:,} fresh events through the serving "
          "step", flush=True)
    result = evaluate(ModelStep.load(str(path)), eval_events, 10, seed + 1_000_003)
    card = {
        "name": features,
        "features": features,
        "feature_description": {
            "seed": "[x3, x2, x2 > x1] as a length-3 sequence of one feature (the seed's)",
            "pair": "[x_t, x_{t-1}] one step per event, LSTM state carried per stream",
            "raw": "[x_t] one step per event, LSTM state carried per stream",
        }[features],
        "architecture": [_describe(layer) for layer in model.layers],
        "parameters": model.count_params(),
        "state_floats_per_stream": 0 if features == "seed" else 2 * recipe.units,
        "loss": "binary_crossentropy",
        "optimizer": f"adam, cosine-decayed learning rate from {recipe.learning_rate:g}",
        "recipe": asdict(recipe),
        "random_seed": seed,
        "training_seconds": round(seconds, 1),
        "final": {k: float(v[-1]) for k, v in history.history.items()},
        "fresh_evaluation": result.as_dict(),
        "known_limits": KNOWN_LIMITS[features],
        "command": f"python -m detector train --features {features} --seed {seed}"
                   + (f" --epochs {epochs}" if epochs else "")
                   + (f" --events {events}" if events else ""),
        "versions": {"keras": keras.__version__, "tensorflow": _tf_version(),
                     "python": platform.python_version()},
    }
    (out / f"{features}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"train {features}: accuracy {result.accuracy:.4%} on {result.events:,} fresh events "
          f"({result.errors} errors, {result.errors_near_tie} on near-ties); {seconds:.0f} s of "
          f"training; wrote {path}, {curves.name}, {features}.card.json", flush=True)
    return card


KNOWN_LIMITS = {
    "seed": "Errors sit on near-ties (|x3 - x2| or |x2 - x1| below ~1e-4). Exact repeats "
            "(x3 == x2), which uniform values never produce, are not trained for.",
    "pair": "Errors sit on near-ties. Slow ramps are right down to steps of ~1e-4. Exact "
            "repeats (x_t == x_{t-1}) are not trained for: next to one, about half the flags "
            "are wrong; a constant stream is wrong throughout.",
    "raw": "Errors sit on near-ties. Slow ramps are right down to steps of ~1e-3 (at 1e-4 most "
           "flags of a ramp are wrong: the precision of a value kept in the LSTM state). "
           "Exact repeats are not trained for, as with pair.",
}


def _describe(layer: keras.layers.Layer) -> str:
    cfg = layer.get_config()
    name = type(layer).__name__
    if name == "LSTM":
        return (f"LSTM({cfg['units']}, activation={cfg['activation']}, "
                f"return_sequences={cfg['return_sequences']})")
    if name == "Dropout":
        return f"Dropout({cfg['rate']})"
    if name == "Dense":
        return f"Dense({cfg['units']}, activation={cfg['activation']})"
    if name == "Rescaling":
        return f"Rescaling(x * {cfg['scale']:g} + {cfg['offset']:g})"
    return name


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def plot_history(history: dict[str, list[float]], out: Path, title: str) -> None:
    """Loss, accuracy and val_accuracy as the seed plots them, and the error rate on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = "weighted_accuracy" if "weighted_accuracy" in history else "accuracy"
    val = f"val_{acc}"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(history["loss"], label="loss")
    left.plot(history[acc], label="acc")
    left.plot(history[val], label="val_acc")
    left.set_xlabel("epoch")
    left.set_title(f"{title}: as the seed plots it")
    left.legend()
    right.semilogy(1 - np.asarray(history[acc]), label="1 - acc (train, with near-ties)")
    right.semilogy(1 - np.asarray(history[val]), label="1 - val_acc (uniform)")
    right.set_xlabel("epoch")
    right.set_title("error rate (log scale)")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --- the seed's experiment -------------------------------------------------------------------


SEED_REPORTED = {"[x3, x2, x2>x1]": "val_acc ~1.0 (y_val and yVal 'almost the same')",
                 "[x3, x2]": "accuracy stalls near 0.8"}


def reproduce(seeds: int = 3, epochs: int = 200, fresh: int = 20_000) -> str:
    """The seed's training as written (1000 samples, batch 64, validation split 0.2, 200 epochs,
    no shuffling) for both feature sets; returns a Markdown table with the shipped models."""
    rows = []
    for label, columns in (("[x3, x2, x2>x1]", [0, 1, 2]), ("[x3, x2]", [0, 1])):
        vals, accs = [], []
        for s in range(seeds):
            keras.utils.set_random_seed(s)
            rng = np.random.default_rng(s)
            x, y = seed_generator(1000, rng)
            x = x[:, columns, None]
            model = build_seed_model(len(columns))
            started = time.perf_counter()
            hist = model.fit(x, y, batch_size=64, validation_split=0.2, epochs=epochs,
                             shuffle=False, verbose=0)
            xf, yf = seed_generator(fresh, np.random.default_rng(10_000 + s))
            prob = keras.ops.convert_to_numpy(model(xf[:, columns, None], training=False))[:, 0]
            vals.append(hist.history["val_accuracy"][-1])
            accs.append(float(((prob > 0.5) == yf).mean()))
            print(f"reproduce {label} seed {s}: val_accuracy {vals[-1]:.3f}, fresh {accs[-1]:.4f}"
                  f" ({time.perf_counter() - started:.0f} s)", flush=True)
        rows.append((label, SEED_REPORTED[label], " / ".join(f"{v:.3f}" for v in vals),
                     " / ".join(f"{a:.4f}" for a in accs)))
    shipped = _shipped_accuracy()
    lines = [
        f"| features | the seed reports | our val_accuracy ({seeds} seeds) | our accuracy on "
        f"{fresh:,} fresh events | shipped model (100,000 fresh events, 10 streams) |",
        "|---|---|---|---|---|",
    ]
    lines.append(f"| {rows[0][0]} | {rows[0][1]} | {rows[0][2]} | {rows[0][3]} | "
                 f"`seed`: {shipped['seed']} |")
    lines.append(f"| {rows[1][0]} | {rows[1][1]} | {rows[1][2]} | {rows[1][3]} | "
                 f"`pair` ([x_t, x_t-1] + carried state): {shipped['pair']}; "
                 f"`raw` ([x_t] alone): {shipped['raw']} |")
    return "\n".join(lines)


def _shipped_accuracy() -> dict[str, str]:
    from detector.evaluation import evaluate
    from detector.serving import ModelError, ModelStep

    out = {}
    for name in ("seed", "pair", "raw"):
        try:
            out[name] = f"{evaluate(ModelStep.load(name), 100_000, 10, 12345).accuracy:.4%}"
        except ModelError as exc:
            out[name] = f"n/a ({exc})"
    return out
