"""The model lifecycle in figures: throughput with a candidate shadowing against without, and the
time to rebuild 100,000 streams' LSTM state at a swap.

    python bench/rollout.py [--events 100000] [--streams 1000] [--rebuild-streams 100000]

In one run, on one input topic: (1) a detector process serving ``seed`` alone; (2) one
following the registry's ``trend`` (``seed`` live) with ``pair`` shadowing. Then (3) the
rebuild of ``pair``'s state for streams that each have a full history (``stream.rebuild``, in
this process, as a swap does it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from detector.kafka.registry import Registry
from detector.model.files import MODELS_DIR, sha256
from detector.model.serving import ModelStep
from detector.settings.kafka import KafkaSettings
from detector.stream.rebuild import rebuild
from detector.stream.state import HISTORY, StreamStore

from common import (
    add_broker_option,
    broker_name,
    fmt_rate,
    save,
    say,
    start_broker,
    table,
    use_broker,
)
from pipeline_measures import fill, start_detector, wait_for, wait_processed


def rate(kafka: KafkaSettings, group: str, model: str, events: int) -> float:
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC="values", DETECTOR_MODEL=model)
    try:
        first, last = wait_processed(det, events)
        if model == "trend":  # the shadow counts a batch after the live model has
            wait_for(lambda: det.metrics().get("detector_shadow_events_total", 0)
                     >= events * 0.99, 10, what="the candidate's answers to every event")
        return events / (last - first)
    finally:
        det.terminate()
        det.close()


def rebuild_seconds(streams: int) -> float:
    """Rebuild ``pair``'s state for ``streams`` streams with a full history, as a swap does."""
    step = ModelStep.load("pair")
    store = StreamStore(0)
    slots = store.lookup([f"s-{i}".encode() for i in range(streams)], np.arange(streams) % 6)
    rng = np.random.default_rng(0)
    store.hist[slots] = rng.random((streams, HISTORY))
    store.seen[slots], store.scale[slots] = 100, 0.3
    rebuild(store, slots[:10], step)  # the first call's allocations, not what a swap costs
    started = time.perf_counter()
    rebuild(store, slots, step)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rebuild-streams", type=int, default=100_000)
    add_broker_option(p)
    args = p.parse_args()
    use_broker(args.broker)
    say(f"on {broker_name()}")
    results: dict = {"events": args.events, "streams": args.streams}
    with start_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        fill(kafka, "values", args.events, args.streams)
        registry = Registry(kafka, "detector-models")
        for model in ("seed", "pair"):
            path = MODELS_DIR / f"{model}.keras"
            registry.push("trend", path.with_suffix(".tflite").read_bytes(),
                          json.loads(path.with_suffix(".card.json").read_text()), sha256(path))
        registry.change("trend", "shadow", 2)
        registry.close()
        say("(1) seed alone")
        results["alone_eps"] = rate(kafka, "alone", "seed", args.events)
        say(f"  {fmt_rate(results['alone_eps'])} events/s")
        say("(2) seed live, pair shadowing")
        results["shadow_eps"] = rate(kafka, "shadow", "trend", args.events)
        say(f"  {fmt_rate(results['shadow_eps'])} events/s")
    results["shadow_vs_alone"] = results["shadow_eps"] / results["alone_eps"]
    say(f"(3) rebuilding pair's state of {args.rebuild_streams:,} streams")
    results["rebuild_streams"] = args.rebuild_streams
    results["rebuild_s"] = rebuild_seconds(args.rebuild_streams)
    rows = [["(1) detector, seed alone", fmt_rate(results["alone_eps"]), ""],
            ["(2) detector, seed live and pair shadowing", fmt_rate(results["shadow_eps"]), ""],
            ["(2) / (1)", f"{results['shadow_vs_alone']:.2f}", ">= 0.6"],
            [f"(3) state of {args.rebuild_streams:,} streams rebuilt for pair",
             f"{results['rebuild_s']:.2f} s", "<= 2 s"]]
    say("\n" + table(["measure", "value", "target"], rows))
    save("rollout", results, "python bench/rollout.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
