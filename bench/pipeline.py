"""The detector end to end against the local broker, beside the Kafka client's own ceiling.

    python bench/pipeline.py [--events 100000] [--streams 1000] [--skip-memory]
    python bench/pipeline.py --only-workloads   # (a) and (b) only: uniform and skewed input
    python bench/pipeline.py --only-workloads --models M.keras L.keras   # pattern models
    python bench/pipeline.py --only-memory --memory-model L.keras         # memory of one

In one run, on the same input topic:
  (a) ceiling: kafka-python consuming the input in a group and producing one record per event,
      with no decoding and no model (on the uniform and on the skewed input);
  (b) the detector (``python -m detector run``, a real process), for every model of
      ``--models`` (default: the shipped ones), on the uniform input and on a skewed one of the
      same size and streams where one stream carries ``--hot-share`` (90%) of the events: real
      streams are not equally busy; each model's rates against the first one's;
  (c) a naive detector that calls ``model.predict`` once per message, as the seed's code would
      (on a prefix of the input: it runs at tens of events per second).
Then: p50/p99 end-to-end latency at half of (b)'s rate, detector RSS per 1,000 streams at
1,000,000 streams (``--memory-model``, default ``seed``), time to restore 100,000 streams'
state, and time from start to first flag. ``bench/pattern_models.py`` trains pattern models
(window and long) to give ``--models`` and ``--memory-model``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from detector.kafka import clients, topics
from detector.model.files import SHIPPED
from detector.settings.kafka import KafkaSettings

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
from pipeline_measures import (
    fill,
    fill_skewed,
    first_flag,
    latency,
    latency_floor,
    memory,
    restore,
    start_detector,
    wait_processed,
)


def detector_rate(kafka: KafkaSettings, group: str, topic: str, model: str, events: int
                  ) -> tuple[float, float]:
    """(b): events/s of a detector process with ``model`` over ``events`` of ``topic``, and
    its RSS in MiB at the end."""
    det = start_detector(kafka, group, DETECTOR_INPUT_TOPIC=topic, DETECTOR_MODEL=model)
    try:
        first, last = wait_processed(det, events)
        return events / (last - first), det.rss_bytes() / 2**20
    finally:
        det.terminate()
        det.close()


def inputs_and_ceilings(kafka: KafkaSettings, args: argparse.Namespace, results: dict) -> None:
    """Both inputs (topics ``values`` and ``values-skewed``) and (a) on each."""
    fill(kafka, "values", args.events, args.streams)
    fill_skewed(kafka, "values-skewed", args.events, args.streams, args.hot_share)
    say("(a) ceiling: consume + produce one record per event, no decoding, no model")
    for key, topic in (("ceiling_eps", "values"), ("ceiling_skewed_eps", "values-skewed")):
        results[key] = ceiling(kafka, topic, args.events, key.removesuffix("_eps"))
        say(f"  {topic}: {fmt_rate(results[key])} events/s")


def model_name(model: str) -> str:
    """A shipped model's name, a file's stem."""
    return model if model in SHIPPED else Path(model).stem


def workloads(kafka: KafkaSettings, args: argparse.Namespace) -> dict:
    """(b) for every model of ``--models``: uniform input (topic ``values``) and skewed; each
    against the first model."""
    out: dict = {}
    for model in args.models:
        name, rates = model_name(model), {}
        for workload, topic in (("uniform", "values"), ("skewed", "values-skewed")):
            say(f"(b) the detector, {name}, {workload} input")
            rates[workload], rss = detector_rate(kafka, f"bench-{name}-{workload}", topic,
                                                 model, args.events)
            say(f"  {fmt_rate(rates[workload])} events/s")
        first = out[model_name(args.models[0])] if out else rates
        out[name] = {**rates, "skewed_vs_uniform": rates["skewed"] / rates["uniform"],
                     "rss_mb": rss, "uniform_vs_first": rates["uniform"] / first["uniform"],
                     "skewed_vs_first": rates["skewed"] / first["skewed"]}
    return out


def workload_rows(r: dict) -> list[list[str]]:
    """(a) and (b) on both inputs, and the ratio the skewed case is held to."""
    skewed = f"skewed ({r['hot_share']:.0%} of events in one stream)"
    rows = [["(a) ceiling: consume + produce, no decode, no model", fmt_rate(r["ceiling_eps"]),
             ""],
            [f"(a) ceiling, {skewed}", fmt_rate(r["ceiling_skewed_eps"]), ""]]
    first = next(iter(r["workloads"]))
    for model, w in r["workloads"].items():
        rows += [[f"(b) detector, {model}, uniform", fmt_rate(w["uniform"]), ""],
                 [f"(b) detector, {model}, {skewed}", fmt_rate(w["skewed"]), ""],
                 [f"{model}: skewed / uniform", f"{w['skewed_vs_uniform']:.2f}", ">= 0.5"]]
        if model != first:
            rows.append([f"{model} / {first}: uniform, skewed", f"{w['uniform_vs_first']:.2f}, "
                         f"{w['skewed_vs_first']:.2f}", ""])
    return rows


def ceiling(kafka: KafkaSettings, topic: str, events: int, group: str = "ceiling") -> float:
    """(a): consume in a group and produce one record per event, nothing else."""
    out_topic = f"{group}.out"
    n = topics.partition_count(kafka, topic)
    topics.ensure_topics(kafka, [topics.TopicSpec(out_topic, n)])
    consumer = clients.consumer(kafka, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_poll_records=2000,
                                 session_timeout_ms=6000, heartbeat_interval_ms=2000)
    producer = clients.producer(kafka, acks="all", linger_ms=5, batch_size=256 * 1024)
    consumer.subscribe([topic])
    seen, first = 0, None
    while seen < events:
        for tp, recs in consumer.poll(timeout_ms=100).items():
            first = first or time.monotonic()
            for r in recs:
                producer.send(out_topic, key=r.key, value=r.value, partition=tp.partition)
            seen += len(recs)
    producer.flush()
    consumer.commit()
    elapsed = time.monotonic() - first
    consumer.close()
    producer.close()
    return events / elapsed


def naive(kafka: KafkaSettings, topic: str, events: int) -> float:
    """(c): the seed's way, one ``model.predict`` per message."""
    from detector.model.serving import ModelStep
    from detector.stream.mapping import decode_event

    model = ModelStep.load("seed").model
    topics.ensure_topics(kafka, [topics.TopicSpec("naive.out",
                                                      topics.partition_count(kafka, topic))])
    consumer = clients.consumer(kafka, group_id="naive", enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_poll_records=200,
                                 session_timeout_ms=6000, heartbeat_interval_ms=2000)
    producer = clients.producer(kafka, acks="all", linger_ms=5)
    consumer.subscribe([topic])
    state: dict[str, tuple[float, float]] = {}
    seen, first = 0, None
    while seen < events:
        for tp, recs in consumer.poll(timeout_ms=100).items():
            first = first or time.monotonic()
            for r in recs[: events - seen]:
                e = decode_event(r.key, r.value)
                prev, prev_up = state.get(e.stream, (0.0, 0.0))
                x = np.array([[[e.value], [prev], [prev_up]]], np.float32)
                p = float(model.predict(x, verbose=0)[0, 0])
                state[e.stream] = (e.value, float(e.value > prev))
                producer.send("naive.out", key=r.key, value=json.dumps(
                    {"stream": e.stream, "seq": e.seq, "flag": int(p > 0.5)}).encode(),
                    partition=tp.partition)
                seen += 1
    producer.flush()
    elapsed = time.monotonic() - first
    consumer.close()
    producer.close()
    return seen / elapsed


def the_rest(kafka: KafkaSettings, args: argparse.Namespace, results: dict) -> None:
    """(c), latency, restore, start to first flag and memory: each with the seed model."""
    results["detector_eps"] = results["workloads"]["seed"]["uniform"]
    results["detector_rss_mb"] = results["workloads"]["seed"]["rss_mb"]
    say(f"(c) naive: model.predict per message, on the first {args.naive_events} events")
    results["naive_eps"] = naive(kafka, "values", args.naive_events)
    say(f"  {results['naive_eps']:,.1f} events/s")
    say("latency at half of (b)'s rate")
    results["latency"] = latency(kafka, results["detector_eps"] / 2, args.latency_seconds,
                                 args.streams)
    say(f"  p50 {results['latency']['p50_ms']:.1f} ms, p99 {results['latency']['p99_ms']:.1f}"
        " ms")
    say(f"restore of {args.restore_streams:,} streams")
    results["restore"] = restore(kafka, args.restore_streams)
    say(f"  {results['restore']['seconds']:.2f} s")
    say("start to first flag")
    results["first_flag_s"] = first_flag(kafka)
    say(f"  {results['first_flag_s']:.1f} s")
    if not args.skip_memory:
        say(f"memory at {args.memory_streams:,} streams")
        results["memory"] = memory(kafka, args.memory_streams, args.memory_model)
        say(f"  {results['memory']['bytes_per_stream']:.0f} bytes per stream")


def rest_rows(r: dict) -> list[list[str]]:
    rows = [
        ["(c) naive: model.predict per message", f"{r['naive_eps']:,.1f}", ""],
        ["b/a (seed, uniform)", f"{r['detector_eps'] / r['ceiling_eps']:.2f}", ">= 0.8"],
        ["b/c (seed, uniform)", f"{r['detector_eps'] / r['naive_eps']:,.0f}", ">= 15"],
        [f"latency p50 / p99 at {r['latency']['rate']:,.0f} events/s (half of b)",
         f"{r['latency']['p50_ms']:.1f} / {r['latency']['p99_ms']:.1f} ms", "p99 <= 100 ms"],
        [f"restore {r['restore']['streams']:,} streams", f"{r['restore']['seconds']:.2f} s",
         "<= 5 s"],
        ["start to first flag", f"{r['first_flag_s']:.1f} s", "<= 15 s"],
    ]
    if "memory" in r:
        m = r["memory"]
        rows.append([f"RSS growth per stream at {m['streams']:,} streams ({m['model']} model)",
                     f"{m['bytes_per_stream']:.0f} bytes ({m['kb_per_1000_streams']:.0f} KiB "
                     "per 1,000)", "<= 256 bytes"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--naive-events", type=int, default=300)
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--models", nargs="+", default=list(SHIPPED),
                   help="models of (b): shipped names or .keras paths (default: seed pair)")
    p.add_argument("--memory-streams", type=int, default=1_000_000)
    p.add_argument("--memory-model", default="seed", help="the model of the memory measure")
    p.add_argument("--restore-streams", type=int, default=100_000)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--only-memory", action="store_true", help="just the memory measurement")
    p.add_argument("--only-latency-floor", type=float, metavar="RATE",
                   help="just a plain consumer's latency at RATE events/s for --latency-seconds "
                        "(no detector): the local broker's and the client's own floor")
    p.add_argument("--hot-share", type=float, default=0.9,
                   help="share of the skewed input's events in its one hot stream")
    p.add_argument("--only-workloads", action="store_true",
                   help="just (a) and (b), on the uniform and the skewed input")
    p.add_argument("--only-guarantees", action="store_true",
                   help="just exactly-once against at-least-once on Apache Kafka "
                        "(bench/exactly_once.py, with its defaults)")
    add_broker_option(p)
    args = p.parse_args()
    use_broker(args.broker)
    say(f"on {broker_name()}")
    if args.only_guarantees:
        from exactly_once import main as guarantees

        sys.argv = [sys.argv[0]]
        guarantees()
        return
    if args.only_memory:
        with start_broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            mem = memory(kafka, args.memory_streams, args.memory_model)
        say(f"RSS growth per stream at {mem['streams']:,} streams ({mem['model']}): "
            f"{mem['bytes_per_stream']:.0f} bytes")
        name = "" if args.memory_model == "seed" else f"-{mem['model']}"
        save(f"pipeline-memory{name}", mem, "python bench/pipeline.py " + " ".join(sys.argv[1:]))
        return
    if args.only_latency_floor:
        with start_broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            floor = latency_floor(kafka, args.only_latency_floor, args.latency_seconds,
                                  args.streams)
        say(f"plain consumer at {floor['rate']:,.0f} events/s for {floor['seconds']:.0f} s: "
            f"p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms")
        save("pipeline-floor", floor, "python bench/pipeline.py " + " ".join(sys.argv[1:]))
        return
    results: dict = {"events": args.events, "streams": args.streams,
                     "hot_share": args.hot_share}
    with start_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        inputs_and_ceilings(kafka, args, results)
        results["workloads"] = workloads(kafka, args)
        if not args.only_workloads:
            the_rest(kafka, args, results)
    rows = workload_rows(results)
    if not args.only_workloads:
        rows += rest_rows(results)
    say("\n" + table(["measure", "value", "target"], rows))
    command = "python bench/pipeline.py " + " ".join(sys.argv[1:])
    name = "pipeline-workloads" if args.only_workloads else "pipeline"
    if args.models != list(SHIPPED):
        name += "-" + "-".join(model_name(m) for m in args.models)
    save(name, results, command.strip())


if __name__ == "__main__":
    main()
