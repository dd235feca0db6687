"""Pictures: a model's training curves, and a stream with its model and rule flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.model.serving import ModelStep
from detector.task.rule import exact_flags
from detector.training.evaluation import run_streams


def plot_history(history: dict[str, list[float]], out: Path, title: str,
                 data: tuple[str, str] = ("training streams, near-ties stressed",
                                          "generated shapes, held out")) -> None:
    """Loss, accuracy and val_accuracy as the seed plots them, and the error rate on a log scale;
    ``data`` says what the training and the validation figures are measured on."""
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
    floor = 1e-6  # an epoch without a single error still gets a point on the log scale
    right.semilogy(np.maximum(1 - np.asarray(history[acc]), floor),
                   label=f"1 - acc ({data[0]})")
    right.semilogy(np.maximum(1 - np.asarray(history[val]), floor),
                   label=f"1 - val_acc ({data[1]}; floor {floor:g})")
    right.set_xlabel("epoch")
    right.set_title("error rate (log scale)")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)



def plot_stream(step: ModelStep, v: np.ndarray, out: str, source: str, seed: int = 7) -> dict:
    """Draw one stream with the model's and the rule's flags; mark disagreements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = len(v)
    flags, probs = run_streams(step, [v], np.random.default_rng(seed))
    f, p = flags[0], probs[0]
    truth = exact_flags(v)
    t = np.arange(events)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(10, events / 12), 6), sharex=True, height_ratios=(3, 1)
    )
    top.plot(t, v, color="0.35", lw=1, marker="o", ms=3, label="value")
    for i in np.nonzero(f)[0]:
        top.plot(t[i - 2 : i + 1], v[i - 2 : i + 1], color="tab:red", lw=2.5, alpha=0.7)
    top.scatter(t[f == 1], v[f == 1], color="tab:red", s=30, zorder=3,
                label="model flag 1 (run of three drawn red)")
    top.scatter(t[truth == 1], v[truth == 1], facecolors="none", edgecolors="tab:blue", s=90,
                zorder=3, label="exact rule flag 1")
    wrong = np.nonzero(f != truth)[0]
    for i in wrong:
        top.axvspan(i - 0.5, i + 0.5, color="gold", alpha=0.5)
    top.set_ylabel("value")
    agree = 1 - len(wrong) / events
    top.set_title(f"model {step.name} ({step.features}): {events} events of {source}, "
                  f"{len(wrong)} disagreement(s) with the exact rule (yellow), "
                  f"agreement {agree:.2%}")
    _finish(fig, top, bottom, t, p, out)
    return {"out": out, "events": events, "disagreements": len(wrong), "agreement": agree}


def plot_labeled(step: ModelStep, values: np.ndarray, labels: np.ndarray, start: int,
                 events: int, out: str, source: str) -> dict:
    """Draw ``events`` values of a labeled stream from ``start``: its labels, the model's flags
    (the whole stream run through the serving step, so state and window are the pipeline's)
    and where they differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flags, probs = run_streams(step, [values], np.random.default_rng(0))
    cut = slice(start, start + events)
    v, y, f, p = values[cut], np.asarray(labels)[cut], flags[0][cut], probs[0][cut]
    t = np.arange(start, start + len(v))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10, len(v) / 12), 6), sharex=True,
                                      height_ratios=(3, 1))
    top.plot(t, v, color="0.35", lw=1, marker="o", ms=3, label="value")
    top.scatter(t[y == 1], v[y == 1], facecolors="none", edgecolors="tab:blue", s=90,
                zorder=3, label="label 1")
    top.scatter(t[f == 1], v[f == 1], color="tab:red", s=30, zorder=3,
                label=f"model flag 1 ({step.pattern or step.name})")
    wrong = np.nonzero(f != y)[0]
    for i in wrong:
        top.axvspan(t[i] - 0.5, t[i] + 0.5, color="gold", alpha=0.5)
    top.set_ylabel("value")
    top.set_title(f"model {step.name}: {len(v)} events of {source}, {len(wrong)} flag(s) "
                  "differ from the labels (yellow)", fontsize=10)
    _finish(fig, top, bottom, t, p, out)
    return {"out": out, "events": len(v), "wrong": len(wrong)}


def _finish(fig: Any, top: Any, bottom: Any, t: np.ndarray, p: np.ndarray, out: str) -> None:
    """The stream plots' common end: the legend, the model's probability below, the file."""
    import matplotlib.pyplot as plt

    top.legend(loc="upper right", fontsize=8, ncol=3)
    bottom.plot(t, p, color="tab:red", lw=1)
    bottom.axhline(0.5, color="0.5", ls="--", lw=0.8)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("probability")
    bottom.set_xlabel("event")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
