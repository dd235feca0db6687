"""The detector beside a Quix Streams application doing its job, on the same input, one run.

    python bench/quix.py --quix-python /tmp/quix/bin/python [--events 100000] [--streams 1000]

Quix Streams is not a dependency of this project: install it in a venv of its own,
``python -m venv /tmp/quix && /tmp/quix/bin/pip install quixstreams numpy ai-edge-litert``, and
pass that venv's python. The application is ``bench/quix_app.py``: the ``seed`` model's job
event by event, with the converted step through LiteRT (so the comparison is of the streaming
path, not of TensorFlow against LiteRT), its state in Quix's state store without a changelog
topic (the detector writes its state topic), at-least-once. The detector is ``python -m
detector run`` with ``seed``, as (b) in ``bench/pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pipeline import detector_rate, fill

from detector.kafka import topics
from detector.settings.kafka import KafkaSettings
from detector.testing.local_broker import LocalBroker

from common import fmt_rate, save, say, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quix-python", required=True, help="python of a venv with quixstreams")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    args = p.parse_args()
    with LocalBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        topics.ensure_topics(kafka, [topics.TopicSpec("values", 6),
                                       topics.TopicSpec("quix.flags", 6)])
        fill(kafka, "values", args.events, args.streams)
        say("Quix Streams application (bench/quix_app.py) ...")
        app = subprocess.run(
            [args.quix_python, str(Path(__file__).with_name("quix_app.py")), broker.bootstrap,
             "values", "quix.flags", str(args.events)],
            capture_output=True, text=True, timeout=3600, check=False)
        lines = [line for line in app.stdout.splitlines() if line.startswith("{")]
        if app.returncode or not lines:
            sys.exit(f"the Quix application failed (exit {app.returncode}): "
                     f"{(app.stderr.strip().splitlines() or ['no output'])[-1]}")
        quix = json.loads(lines[-1])
        say(f"  {fmt_rate(quix['events_per_s'])} events/s")
        say("the detector (seed) ...")
        detector, _ = detector_rate(kafka, "bench-quix", "values", "seed", args.events)
        say(f"  {fmt_rate(detector)} events/s")
    results = {"events": args.events, "streams": args.streams, "quix": quix,
               "detector_eps": detector, "ratio": detector / quix["events_per_s"]}
    say("\n" + table(["measure", "events/s"], [
        ["Quix Streams application, LiteRT step per event", fmt_rate(quix["events_per_s"])],
        ["the detector (seed)", fmt_rate(detector)],
        ["detector / Quix", f"{results['ratio']:.2f}"]]))
    save("quix", results, "python bench/quix.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
