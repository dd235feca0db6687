"""Your own pattern: a model trained on your labeled streams, reported on streams it never
saw, written in the shipped models' layout (``.keras``, ``.tflite``, card, curves). A pattern
of the last 8 values gets the ``window`` model (every order relation among them); one that
looks further back, up to ``LONGEST`` values (``history``), the ``long`` model (the event's
value against each value before it, and every step between them, as sign and size).

Whole streams (about a fifth) are held out and scored through the serving step after
training; the card records the data (file, sha256, streams, events, label rate), the held-out
figures, the history the model's flags depend on and what the feature set cannot express.
Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from detector.model.features import (
    COMPRESSION,
    LONGEST,
    WINDOW,
    FeatureSet,
    input_width,
    stream_inputs,
)
from detector.model.serving import ModelStep
from detector.training.architectures import (
    LONG_GAIN,
    WINDOW_GAINS,
    build_long_model,
    build_window_model,
)
from detector.training.export import export_tflite
from detector.training.labeled import Figures, Labeled, LabeledFile, score_labeled, split
from detector.training.plots import plot_history
from detector.training.train import describe_layer, tf_version

#: What every order pattern of the battery reaches on streams held out (tests hold it).
TARGET = {"accuracy": 0.999, "f1": 0.99}
EPOCHS, BATCH, LEARNING_RATE = 20, 256, 3e-3
#: A run of the pattern fires at its first flag: a pattern often holds at one event at a time
#: (a dip, a new high), and a detector can ask for more (--alert-min-flags).
ALERT_MIN_FLAGS = 1

_UNITS = ("absolute levels and units (the inputs are differences in units of the stream's own "
          "typical step, so 'above 100 degrees' or 'below 0' cannot be learned)")
_ALSO = ("time between events; other streams; steps within the dust bound of the rule (a tie: "
         "exactly 0)")
_TYPICAL = (f"the stream's typical step s (geometric running mean, weight 0.1, of its |steps| "
            f"that are not ties), then compressed ({COMPRESSION}), a tie (a repeat or float "
            f"dust) exactly 0; a value before the stream's start is absent (0, and a presence "
            f"flag)")


def can_express(features: FeatureSet, history: int) -> str:
    """What a pattern model of ``history`` values can learn, for its card."""
    if features == "window":
        return ("patterns defined by the order and the relative size of a stream's last 8 "
                "values (the event's own and the 7 before): rises, falls, dips, peaks, runs, new "
                "highs or lows, a value above or below any other of the window, a step large or "
                "small against the stream's typical step; a tie is exactly 0 and never passes "
                "for a rise or a fall")
    return (f"patterns over a stream's last {history} values defined by where the event's value "
            f"stands against each of the {history - 1} before it, by the directions of the "
            f"steps between them and by their sizes against each other: new highs or lows of "
            f"the last n, breakouts above the highest of the last n, recoveries to an earlier "
            f"level, counts of steps up or down, a step large against the recent ones; a tie "
            f"is exactly 0 and never passes for a rise or a fall")


def cannot_express(features: FeatureSet, history: int) -> str:
    if features == "window":
        return (f"{_UNITS}; anything further back than 8 values (the model is stateless between "
                f"events); {_ALSO}")
    return (f"{_UNITS}; anything further back than {history} values (stateless between "
            f"events); the order of two earlier values that are not neighbours (x[t-3] against "
            f"x[t-9]) other than through the steps between them; {_ALSO}")


def normalization(features: FeatureSet) -> str:
    if features == "window":
        return ("per event, in float64 before any cast: every value of the window minus every "
                f"other, divided by {_TYPICAL}")
    return ("per event, in float64 before any cast: the event's value minus each value before "
            "it, and each step between them, divided by " + _TYPICAL + "; each step's size also "
            "as log2(|step| / s) (0 for a tie)")


DESCRIPTION: dict[str, str] = {
    "window": "an LSTM over the stream's last 8 values, one step a value, each compared with "
              "every value of the window",
    "long": "Dense layers over the stream's last {history} values: the event's value against "
            "each value before it, each step between them, its log-size, and whether the value "
            "exists (stateless between events)",
}
HEAD_START: dict[str, str] = {
    "window": f"the first layer's units start as tanh(g * difference) for g in "
              f"{list(WINDOW_GAINS)}, one per comparison of a step (trainable)",
    "long": f"the first layer's units start as tanh({LONG_GAIN:g} * (x - h)) for h in 0 and "
            f"+-half the smallest input a real step gives, per comparison: its sign, above and "
            f"not below (trainable)",
}


def _arrays(streams: Labeled, names: list[str], features: FeatureSet, history: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs ``(events, steps, values per step)`` and labels of these streams'
    labeled events (the others are only their context)."""
    known = [streams[n][1] >= 0 for n in names]
    x = [stream_inputs(features, streams[n][0], history)[0][k]
         for n, k in zip(names, known, strict=True)]
    y = [streams[n][1][k] for n, k in zip(names, known, strict=True)]
    flat = (np.concatenate(x) if x else
            np.zeros((0, input_width(features, history)), np.float32))
    return (flat.reshape(len(flat), history - (features == "long"), -1),
            np.concatenate(y).astype(np.float32) if y else np.zeros(0, np.float32))


class _Progress(keras.callbacks.Callback):
    """One line an epoch: loss, held-out accuracy and F1, time spent and left."""

    def __init__(self, held: tuple[np.ndarray, np.ndarray], epochs: int, name: str):
        super().__init__()
        self.x, self.y = held
        self.epochs, self.name = epochs, name
        self.history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_accuracy": [],
                                                "val_f1": []}
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.history["loss"].append(float(logs.get("loss", np.nan)))
        self.history["accuracy"].append(float(logs.get("accuracy", np.nan)))
        text = ""
        if len(self.y):
            flags = self.model.predict(self.x, batch_size=4096, verbose=0)[:, 0] > 0.5
            fig = Figures.of(self.y, flags)
            self.history["val_accuracy"].append(fig.accuracy)
            self.history["val_f1"].append(fig.f1)
            text = f", held out: accuracy {fig.accuracy:.4%}, F1 {fig.f1:.4f}"
        spent = time.perf_counter() - self.started
        left = spent / (epoch + 1) * (self.epochs - epoch - 1)
        print(f"train {self.name}: epoch {epoch + 1}/{self.epochs}, loss "
              f"{self.history['loss'][-1]:.5f}{text}; {spent:.0f} s, about {left:.0f} s left",
              flush=True)


def train_labeled(data: LabeledFile, name: str, out_dir: str | Path, epochs: int = EPOCHS,
                  seed: int = 0, command: str = "", history: int = WINDOW) -> dict:
    """Train, export and report; return the card (also written beside the model).
    ``history``: how many of a stream's last values the pattern may look at (up to
    ``LONGEST``): up to 8 the ``window`` model, beyond it the ``long`` one."""
    if not 2 <= history <= LONGEST:
        raise ValueError(f"history {history}: a pattern model reads 2 .. {LONGEST} values")
    features: FeatureSet = "window" if history <= WINDOW else "long"
    history = max(history, WINDOW)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    train_names, held_names = split(list(data.streams), seed)
    print(f"train {name}: {data.events:,} events in {len(data.streams)} stream(s) of "
          f"{data.path.name} (label rate {data.label_rate:.2%}); {len(held_names)} stream(s) "
          f"held out; the {features} model over the last {history} values; {epochs} epochs "
          f"(random seed {seed})", flush=True)
    if len(data.streams) == 1:
        print(f"train {name}: one stream only: nothing can be held out, so the figures below "
              "are on the training data; give --stream-column and several streams for an "
              "honest report", flush=True)
        held_names = train_names
    x, y = _arrays(data.streams, train_names, features, history)
    held = _arrays(data.streams, held_names, features, history)
    model = build_window_model() if features == "window" else build_long_model(history)
    steps = epochs * int(np.ceil(len(x) / BATCH))
    model.compile(loss="binary_crossentropy", metrics=["accuracy"],
                  optimizer=keras.optimizers.Adam(
                      keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps, alpha=1e-2)))
    progress = _Progress(held, epochs, name)
    started = time.perf_counter()
    model.fit(x, y, batch_size=BATCH,
              epochs=epochs, shuffle=True, verbose=0, callbacks=[progress])
    seconds = time.perf_counter() - started
    path = out / f"{name}.keras"
    model.save(path)
    plot_history(progress.history, out / f"{name}.curves.png", f"{name} (your labels)",
                 ("your training streams", "your streams held out"))
    card = {
        "name": name, "pattern": name, "features": features, "history": history,
        "alert_min_flags": ALERT_MIN_FLAGS,
        "feature_description": DESCRIPTION[features].format(history=history),
        "normalization": normalization(features),
        "can_express": can_express(features, history),
        "cannot_express": cannot_express(features, history),
        "data": data.describe() | {"training_streams": len(train_names),
                                   "held_out_streams": held_names},
        "architecture": [describe_layer(layer) for layer in model.layers],
        "head_start": HEAD_START[features],
        "parameters": model.count_params(), "state_floats_per_stream": 0,
        "loss": "binary_crossentropy",
        "optimizer": f"adam, cosine-decayed learning rate from {LEARNING_RATE:g}, batch {BATCH}",
        "epochs": epochs, "random_seed": seed, "training_seconds": round(seconds, 1),
        "command": command,
        "versions": {"keras": keras.__version__, "tensorflow": tf_version(),
                     "python": platform.python_version()},
    }
    card_file = out / f"{name}.card.json"
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    export_tflite(path, series=[data.streams[n][0] for n in held_names],
                  series_label="the held-out streams")
    report = score_labeled(ModelStep.load(str(path)), {n: data.streams[n] for n in held_names},
                           seed)
    o = report.overall
    reached = o.accuracy >= TARGET["accuracy"] and o.f1 >= TARGET["f1"]
    card = json.loads(card_file.read_text())  # with the export's entry
    card["held_out"] = {"through": "the serving step (LiteRT), streams interleaved in polls",
                        **report.as_dict()}
    card["target"] = {**TARGET, "reached": reached}
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    print(f"train {name}: held out ({len(held_names)} stream(s), {o.events:,} events): accuracy "
          f"{o.accuracy:.4%}, precision {o.precision:.4f}, recall {o.recall:.4f}, F1 "
          f"{o.f1:.4f}, {o.false_alarms_per_1000:.2f} false alarms per 1,000 events, "
          f"{o.missed} missed", flush=True)
    verdict = ("reaches the target" if reached else
               "DOES NOT reach the target (the model is written all the same)")
    print(f"train {name}: {verdict} (accuracy >= {TARGET['accuracy']:.1%}, F1 >= "
          f"{TARGET['f1']}); {seconds:.0f} s of training", file=sys.stdout, flush=True)
    return card
