"""Accuracy on fresh streams through the serving step, and the picture of a flagged stream.

Streams are interleaved and cut into poll-sized batches the way the pipeline sees them, and go
through the same ``Engine`` (waves, carried state, compiled step), so the accuracy reported
here is the pipeline's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from detector.engine import Batch, Engine, occurrence_rank
from detector.rule import exact_flags, near_tie, uniform_streams
from detector.serving import ModelStep

#: Records per poll in evaluation, as ``--max-poll-records`` gives the pipeline.
EVAL_BATCH = 2000


@dataclass(frozen=True)
class Evaluation:
    model: str
    features: str
    events: int
    streams: int
    seed: int
    accuracy: float
    errors: int
    errors_near_tie: int
    false_alerts: int
    missed_alerts: int
    seconds: float
    events_per_second: float

    def as_dict(self) -> dict:
        return asdict(self)


def interleave(n_streams: int, length: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """A random arrival order of every stream's events that keeps each stream in order.

    Returns ``(stream_index, position)`` per arrival.
    """
    arrivals = np.repeat(np.arange(n_streams), length)
    rng.shuffle(arrivals)
    return arrivals, occurrence_rank(arrivals)


def run_streams(step: ModelStep, values: np.ndarray, rng: np.random.Generator,
                batch: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Model flags and probabilities for ``values`` (streams x length), interleaved and batched."""
    n_streams, length = values.shape
    arrivals, position = interleave(n_streams, length, rng)
    names = [f"eval-{s}" for s in range(n_streams)]
    engine = Engine(step)
    flags = np.zeros(values.shape, np.int8)
    probs = np.zeros(values.shape, np.float32)
    for start in range(0, len(arrivals), batch):
        a = arrivals[start : start + batch]
        pos = position[start : start + batch]
        res = engine.process(Batch.of([names[s] for s in a], values[a, pos], seq=pos))
        flags[a, pos] = res.flag
        probs[a, pos] = res.probability
    return flags, probs


def evaluate(step: ModelStep, events: int, streams: int, seed: int) -> Evaluation:
    """Accuracy against the exact rule on ``events`` fresh uniform events over ``streams``."""
    rng = np.random.default_rng(seed)
    length = max(1, events // streams)
    values = uniform_streams(streams, length, rng)
    started = time.perf_counter()
    flags, _ = run_streams(step, values, rng)
    seconds = time.perf_counter() - started
    truth = np.stack([exact_flags(v) for v in values])
    ties = np.stack([near_tie(v) for v in values])
    wrong = flags != truth
    n = values.size
    return Evaluation(
        model=step.name,
        features=step.features,
        events=n,
        streams=streams,
        seed=seed,
        accuracy=float(1 - wrong.mean()),
        errors=int(wrong.sum()),
        errors_near_tie=int((wrong & ties).sum()),
        false_alerts=int((wrong & (flags == 1)).sum()),
        missed_alerts=int((wrong & (flags == 0)).sum()),
        seconds=seconds,
        events_per_second=n / seconds,
    )


def plot_stream(step: ModelStep, events: int, seed: int, out: str) -> dict:
    """Draw one fresh stream with the model's and the rule's flags; mark disagreements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    values = uniform_streams(1, events, rng)
    flags, probs = run_streams(step, values, rng)
    v, f, p = values[0], flags[0], probs[0]
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
    top.set_title(f"model {step.name} ({step.features}): {events} fresh events, "
                  f"{len(wrong)} disagreement(s) with the exact rule (yellow), "
                  f"agreement {agree:.2%}")
    top.legend(loc="upper right", fontsize=8, ncol=3)
    bottom.plot(t, p, color="tab:red", lw=1)
    bottom.axhline(0.5, color="0.5", ls="--", lw=0.8)
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("probability")
    bottom.set_xlabel("event")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"out": out, "events": events, "disagreements": len(wrong), "agreement": agree}
