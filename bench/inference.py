"""Events/s of the serving step against per-event model calls, for every shipped model.

    python bench/inference.py [--models seed pair] [--seconds 1.5]

``--models`` takes shipped names and ``.keras`` paths (pattern models: ``bench/pattern_models.py``).
For each model, in one run: ``model.predict`` on one event (what the seed's code does), one
compiled TensorFlow step call per event (the Keras runtime), one LiteRT call per event, and
the serving step (``Engine.process``: normalization, state gather and scatter, the model call
and runs) on batches of 1, 64, 1024 and 4096 events from as many streams, under LiteRT (the
default) and, at 4096, under Keras; and the serving step on polls of 5,000 events spread
unevenly: 5,000 streams with one event each, 50 with 100, one stream with all 5,000.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from detector.model.features import input_width
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine

from common import fmt_rate, save, say, table

BATCHES = (1, 64, 1024, 4096)
#: (streams, events of each) of a 5,000-event poll: from uniform to one hot stream.
SPREADS = ((5000, 1), (50, 100), (1, 5000))


def rate(fn, events_per_call: int, seconds: float, min_calls: int = 3) -> float:
    fn()  # warm-up: traces the compiled function for this shape
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return calls * events_per_call / (time.perf_counter() - started)


def bench_model(name: str, seconds: float) -> dict:
    step = ModelStep.load(name)
    keras_step = ModelStep.load(name, "keras")
    rng = np.random.default_rng(0)
    x1 = rng.random((1, input_width(step.features, step.history))).astype(np.float32)
    state1 = step.zero_state(1)
    shape = tuple(step.model.inputs[0].shape[1:])  # a stateful model's: (None, width)
    predict_input = x1[:, None, :] if shape[0] is None else x1.reshape((1, *shape))
    out: dict[str, float] = {}
    say(f"{name}: model.predict, one event per call ...")
    out["predict_per_event"] = rate(lambda: step.model.predict(predict_input, verbose=0), 1,
                                    seconds, min_calls=20)
    say(f"{name}: one compiled TensorFlow step call per event ...")
    out["compiled_per_event"] = rate(lambda: keras_step(x1, state1), 1, seconds)
    say(f"{name}: one LiteRT call per event ...")
    out["litert_per_event"] = rate(lambda: step(x1, state1), 1, seconds)
    for b in BATCHES:
        say(f"{name}: serving step, batch {b} ...")
        out[f"batch_{b}"] = serving_rate(step, b, seconds, rng)
    say(f"{name}: serving step under Keras, batch 4096 ...")
    out["keras_batch_4096"] = serving_rate(keras_step, 4096, seconds, rng)
    for streams, each in SPREADS:
        say(f"{name}: serving step, {streams} streams x {each} events ...")
        out[f"spread_{streams}x{each}"] = serving_rate(step, streams, seconds, rng, each)
    return out


def serving_rate(step: ModelStep, streams: int, seconds: float, rng: np.random.Generator,
                 each: int = 1) -> float:
    """The whole per-batch path: ``each`` events from each of ``streams`` streams."""
    engine = Engine(step)
    names = [f"s-{i}" for i in range(streams) for _ in range(each)]
    seq = np.tile(np.arange(each), streams)

    def one_batch() -> None:
        seq[:] += each
        engine.process(Batch.of(names, rng.random(len(names)), seq=seq))

    return rate(one_batch, len(names), seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["seed", "pair"])
    p.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = p.parse_args()
    results = {Path(name).stem: bench_model(name, args.seconds) for name in args.models}
    headers = ["model", "predict/event", "TF compiled call/event", "LiteRT call/event",
               *[f"step batch {b}" for b in BATCHES], "Keras step batch 4096",
               "4096 vs TF call/event", "4096 vs predict", "4096 LiteRT vs Keras"]
    rows = []
    for name, r in results.items():
        rows.append([name, fmt_rate(r["predict_per_event"]), fmt_rate(r["compiled_per_event"]),
                     fmt_rate(r["litert_per_event"]),
                     *[fmt_rate(r[f"batch_{b}"]) for b in BATCHES],
                     fmt_rate(r["keras_batch_4096"]),
                     f"{r['batch_4096'] / r['compiled_per_event']:,.0f}x",
                     f"{r['batch_4096'] / r['predict_per_event']:,.0f}x",
                     f"{r['batch_4096'] / r['keras_batch_4096']:.1f}x"])
    say("\nevents/s (higher is better)\n")
    say(table(headers, rows))
    say("\nserving step on a poll of 5,000 events, events/s\n")
    say(table(["model", *[f"{s:,} streams x {e:,}" for s, e in SPREADS],
                         "one stream vs 5,000"],
              [[name, *[fmt_rate(r[f"spread_{s}x{e}"]) for s, e in SPREADS],
                f"{r['spread_1x5000'] / r['spread_5000x1']:.2f}"] for name, r in results.items()]))
    command = "python bench/inference.py " + " ".join(
        ["--models", *args.models, "--seconds", str(args.seconds)])
    name = "inference" if args.models == ["seed", "pair"] else "-".join(["inference", *results])
    save(name, {"events_per_second": results}, command)


if __name__ == "__main__":
    main()
