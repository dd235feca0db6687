"""The seed's own experiment, rerun as written, beside the shipped models (``reproduce``)."""

from __future__ import annotations

import time

import keras
import numpy as np

from detector.model.files import SHIPPED, ModelError
from detector.model.serving import ModelStep
from detector.task.rule import seed_generator
from detector.training.architectures import build_seed_model
from detector.training.evaluation import evaluate

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
                 f"`pair` ([x_t, x_t-1] + carried state): {shipped['pair']} |")
    return "\n".join(lines)


def _shipped_accuracy() -> dict[str, str]:
    out = {}
    for name in SHIPPED:
        try:
            out[name] = f"{evaluate(ModelStep.load(name), 100_000, 10, 12345).accuracy:.4%}"
        except ModelError as exc:
            out[name] = f"n/a ({exc})"
    return out
