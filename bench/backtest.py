"""The backtest's speed against the detector's, on the same events (issue 35: >= 0.5x).

    python bench/backtest.py [--events 100000] [--streams 1000] [--repeat 3]

On Apache Kafka (one node, as the tests run it), the input topic is filled once and labels are
written for a fifth of the streams. Then, alternating ``--repeat`` times: (1) a detector
process following ``trend`` in the registry (v1: the shipped ``seed``), events/s from its first
processed event to its last; (2) the same with v2 (``pair``) shadowing, so that it too runs both
versions; (3) ``python -m detector models backtest trend 2 --against 1`` (``pair`` against
``seed``, both from cold state) over the same events: events/s of its reading, decoding, both
models and the join, as its ``--json`` reports them, and the command's wall time (start-up,
registry and labels included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from detector.kafka.registry import Registry
from detector.labels import topic
from detector.labels.codec import RangeLabel
from detector.model.files import MODELS_DIR, sha256
from detector.settings.kafka import KafkaSettings
from detector.settings.labels import LabelTopicSettings
from detector.testing.apache_kafka import KafkaCluster, kafka_version

from common import ROOT, fmt_rate, save, say, table
from pipeline_measures import fill, start_detector, wait_for, wait_processed


def detector_rate(kafka: KafkaSettings, group: str, events: int, shadow: bool) -> float:
    registry = Registry(kafka, "detector-models")
    if shadow != (registry.state().pointers["trend"].candidate is not None):
        registry.change("trend", "shadow" if shadow else "unshadow", 2 if shadow else None)
    registry.close()
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC="values", DETECTOR_MODEL="trend")
    try:
        first, last = wait_processed(det, events)
        if shadow:  # the shadow counts a batch after the live model has
            wait_for(lambda: det.metrics().get("detector_shadow_events_total", 0)
                     >= events * 0.99, 30, what="the candidate's answers to every event")
            last = time.monotonic()
        return events / (last - first)
    finally:
        det.terminate()
        det.close()


def backtest(kafka: KafkaSettings) -> tuple[dict, float]:
    """The backtest's --json and the command's wall time."""
    env = {**os.environ, "DETECTOR_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "detector", "models", "backtest", "trend", "2",
                          "--against", "1", "--since", "1h", "--json"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    results: dict = {"events": args.events, "streams": args.streams,
                     "broker": f"Apache Kafka {kafka_version()}, one node",
                     "detector_eps": [], "shadow_eps": [], "backtest_eps": [],
                     "backtest_wall_s": []}
    with KafkaCluster() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, connect_timeout_s=30)
        fill(kafka, "values", args.events, args.streams)
        registry = Registry(kafka, "detector-models")
        for model in ("seed", "pair"):
            path = MODELS_DIR / f"{model}.keras"
            registry.push("trend", path.with_suffix(".tflite").read_bytes(),
                          json.loads(path.with_suffix(".card.json").read_text()), sha256(path))
        registry.close()
        per_stream = args.events // args.streams
        topic.write(kafka, LabelTopicSettings(), [
            RangeLabel(f"l-{s}-{k}", f"s-{s}", kind, start, start + per_stream // 4)
            for s in range(0, args.streams, 5)
            for k, (kind, start) in enumerate((("pattern", 0), ("no_pattern", per_stream // 2)))])
        for run in range(args.repeat):
            say(f"run {run + 1}/{args.repeat}: (1) the detector, seed alone")
            results["detector_eps"].append(detector_rate(kafka, f"alone-{run}", args.events,
                                                         shadow=False))
            say(f"  {fmt_rate(results['detector_eps'][-1])} events/s")
            say(f"run {run + 1}/{args.repeat}: (2) the detector, seed live and pair shadowing")
            results["shadow_eps"].append(detector_rate(kafka, f"shadow-{run}", args.events,
                                                       shadow=True))
            say(f"  {fmt_rate(results['shadow_eps'][-1])} events/s")
            say(f"run {run + 1}/{args.repeat}: (3) the backtest, pair against seed")
            report, wall = backtest(kafka)
            assert report["events"] == args.events, report
            results["backtest_eps"].append(report["events_per_second"])
            results["backtest_wall_s"].append(wall)
            results["backtest_labeled_events"] = report["candidate"]["events"]
            say(f"  {fmt_rate(report['events_per_second'])} events/s ({wall:.1f} s in all)")
    mean = {k: sum(results[k]) / len(results[k])
            for k in ("detector_eps", "shadow_eps", "backtest_eps", "backtest_wall_s")}
    results["ratio"] = mean["backtest_eps"] / mean["detector_eps"]
    results["ratio_shadow"] = mean["backtest_eps"] / mean["shadow_eps"]
    results["ratio_wall"] = args.events / mean["backtest_wall_s"] / mean["detector_eps"]
    rows = [["(1) detector, seed alone: events/s (mean of runs)",
             fmt_rate(mean["detector_eps"]), ""],
            ["(2) detector, seed live and pair shadowing: events/s",
             fmt_rate(mean["shadow_eps"]), ""],
            ["(3) backtest, pair and seed from cold state: events/s",
             fmt_rate(mean["backtest_eps"]), ""],
            ["(3) / (1)", f"{results['ratio']:.2f}", ">= 0.5"],
            ["(3) / (2)", f"{results['ratio_shadow']:.2f}", ">= 0.5"],
            ["(3) counting its start-up, registry and labels: / (1)",
             f"{results['ratio_wall']:.2f}", ""]]
    say("\n" + table(["measure", "value", "target"], rows))
    save("backtest", results, "python bench/backtest.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
