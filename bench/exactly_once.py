"""What exactly-once costs against at-least-once on Apache Kafka: throughput and the latency a
read_committed consumer sees (issue 33).

    python bench/exactly_once.py [--events 100000] [--streams 1000] [--rounds 4]
                                 [--rate 1000] [--latency-seconds 30]

Throughput: one input topic of ``--events`` events is written once; then detector processes
read all of it, at-least-once and exactly-once alternating (the order swapped every round, so
the machine's drift falls on both), each with a group and outputs of its own; the rate is from
its first processed event to its last. Latency: a detector of each mode under a steady
``--rate``, and a consumer reading its flags live, read_committed (as downstream consumers of
exactly-once outputs must): receipt time minus the event's ``ts``. Under exactly-once a flag is
visible once its checkpoint's transaction commits, so the target is p99 <= the checkpoint
interval (2 s) + 500 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from kafka import TopicPartition

from detector.kafka import clients, topics
from detector.settings.kafka import KafkaSettings

from common import broker_name, fmt_rate, save, say, start_broker, table
from pipeline_measures import fill, percentiles, start_detector, wait_processed, wait_ready

MODES = ("at-least-once", "exactly-once")
CHECKPOINT_MS = 2000  # the detector's default --checkpoint-interval-ms


def throughput(kafka: KafkaSettings, topic: str, mode: str, events: int, tag: str) -> float:
    """Events/s of one detector process of ``mode`` over the whole input topic."""
    det = start_detector(kafka, f"eos-{tag}", DETECTOR_INPUT_TOPIC=topic,
                         DETECTOR_PROCESSING_GUARANTEE=mode)
    try:
        first, last = wait_processed(det, events, timeout=900)
    finally:
        det.terminate()
        det.close()
    return events / (last - first)


def live_latency(kafka: KafkaSettings, mode: str, rate: float, seconds: float, streams: int
                 ) -> dict:
    """p50/p99 of (receipt by a read_committed consumer) - ts over every flag, at ``rate``."""
    group = f"eos-latency-{mode}"
    topic = f"{group}.in"
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6),
                                 topics.TopicSpec(f"{group}.flags", 6)])
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC=topic,
                         DETECTOR_PROCESSING_GUARANTEE=mode)
    latencies: list[float] = []
    stop = threading.Event()

    def read() -> None:
        consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed", fetch_max_wait_ms=10)
        tps = [TopicPartition(f"{group}.flags", p) for p in range(6)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            for recs in consumer.poll(timeout_ms=100).values():
                now = time.time()
                latencies.extend(now - json.loads(r.value)["ts"] for r in recs)
        consumer.close()

    reader = threading.Thread(target=read, daemon=True)
    try:
        wait_ready(det)
        reader.start()
        events = int(rate * seconds)
        say(f"  {mode}: steady {rate:,.0f} events/s for {seconds:.0f} s ({events:,} events) ...")
        fill(kafka, topic, events, streams, rate=rate)
        wait_processed(det, events, timeout=seconds + 120)
        time.sleep(2 * CHECKPOINT_MS / 1000 + 1)  # the last transaction commits
    finally:
        stop.set()
        reader.join(10)
        det.terminate()
        det.close()
    return {"mode": mode, "rate": rate, **percentiles(latencies)}


def compare(rounds: int, events: int, streams: int, rate: float, seconds: float
            ) -> tuple[list[list[str]], dict]:
    """Both measures on a fresh Apache Kafka node: the table's rows and the JSON payload."""
    say(f"exactly-once against at-least-once on {broker_name('kafka')}")
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    with start_broker("kafka") as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        fill(kafka, "eos.in", events, streams)
        for r in range(rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                got = throughput(kafka, "eos.in", mode, events, f"{mode}-{r}")
                rates[mode].append(got)
                say(f"  round {r + 1}, {mode}: {fmt_rate(got)} events/s")
        latency = {m: live_latency(kafka, m, rate, seconds, streams) for m in MODES}
    mean = {m: statistics.mean(v) for m, v in rates.items()}
    ratio = mean["exactly-once"] / mean["at-least-once"]
    paired = [e / a for a, e in zip(rates["at-least-once"], rates["exactly-once"], strict=True)]
    rows = [[f"throughput, {m} (mean of {rounds})", fmt_rate(mean[m]),
             ", ".join(fmt_rate(x) for x in rates[m]), ""] for m in MODES]
    rows.append(["exactly-once / at-least-once", f"{ratio:.2f}",
                 "per round: " + ", ".join(f"{x:.2f}" for x in paired), ">= 0.7"])
    for m in MODES:
        lat = latency[m]
        rows.append([f"latency to a read_committed reader, {m}, {rate:,.0f} events/s",
                     f"p99 {lat['p99_ms']:,.0f} ms", f"p50 {lat['p50_ms']:,.0f} ms, max "
                     f"{lat['max_ms']:,.0f} ms, {lat['events']:,} flags",
                     f"<= {CHECKPOINT_MS + 500} ms" if m == "exactly-once" else ""])
    return rows, {"broker": broker_name("kafka"), "events": events, "streams": streams,
                  "throughput": rates, "ratio": ratio, "ratio_per_round": paired,
                  "latency": latency}


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4, help="alternating runs of each mode")
    p.add_argument("--rate", type=float, default=1000, help="events/s of the latency runs")
    p.add_argument("--latency-seconds", type=float, default=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(p)
    args = p.parse_args()
    rows, payload = compare(args.rounds, args.events, args.streams, args.rate,
                            args.latency_seconds)
    say("\n" + table(["measure", "value", "detail", "target"], rows))
    save("latest-exactly-once", payload,
         "python bench/exactly_once.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
