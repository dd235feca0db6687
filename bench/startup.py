"""What a detector process costs to start and to hold, LiteRT against Keras; static membership.

    python bench/startup.py [--sections rss restart static step] [--model seed]

- ``rss``: resident memory of a detector that has processed 100,000 events over 1,000 streams.
- ``restart``: a detector SIGKILLed while input flows and started again once its old session
  has expired: seconds from the new process's start to its first processed event, and when its
  metrics endpoint came up (the model loaded) and it was assigned its partitions.
- ``static``: two detectors; one SIGKILLed and started again at once, with dynamic membership
  and with ``--group-instance-id``: seconds until it processes again, and whether the other
  member went through a rebalance (its restore count and assignment log lines).
- ``gc``: garbage-collector pauses in a LiteRT detector with Python's defaults and after
  ``settle_garbage_collector`` (freeze, larger young generation).
- ``step``: events/s of the serving step alone (one call for 4,096 streams) and of the whole
  engine path at batch 4,096, per runtime, in one process (LiteRT measured before TensorFlow
  is imported).

Each runs real detector processes against a fresh local broker.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time

import numpy as np

from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.testing.harness import DetectorProcess, wait_for
from producer.publish import publish

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

RUNTIMES = ("litert", "keras")
MB = 1 << 20


def produce(kafka: KafkaSettings, events: int, streams: int, rate: float, seed: int,
            stop: threading.Event | None = None) -> threading.Thread:
    """The producer in a thread (``rate`` 0: as fast as it goes)."""
    settings = ProducerSettings(kafka=kafka, streams=streams, rate=rate, count=events, seed=seed,
                                linger_ms=20)
    thread = threading.Thread(target=publish, daemon=True,
                              args=(settings, stop or threading.Event(), lambda _: None))
    thread.start()
    return thread


def rss(model: str, events: int, streams: int) -> dict:
    out = {}
    for runtime in RUNTIMES:
        with start_broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            produce(kafka, events, streams, 0, seed=1).join()
            det = DetectorProcess(kafka, model=model, DETECTOR_RUNTIME=runtime).start()
            try:
                wait_for(lambda d=det: d.processed() >= events, 600, every=0.5,
                         what="every event processed")
                out[runtime] = {"rss_mb": det.rss_bytes() / MB,
                                "seconds_to_process": time.monotonic() - det.started}
            finally:
                det.terminate()
                det.close()
        say(f"  rss {runtime}: {out[runtime]['rss_mb']:.0f} MB after {events:,} events over "
            f"{streams:,} streams")
    return out


def restart(model: str, streams: int, rate: float, runs: int) -> dict:
    out = {}
    for runtime in RUNTIMES:
        times = []
        with start_broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            stop = threading.Event()
            produce(kafka, 0, streams, rate, seed=2, stop=stop)
            det = DetectorProcess(kafka, model=model, DETECTOR_RUNTIME=runtime).start()
            try:
                for _ in range(runs):
                    wait_for(lambda d=det: d.processed() > 0, 120, what="processing")
                    session_s = int(det.env["DETECTOR_SESSION_TIMEOUT_MS"]) / 1000
                    det.kill()
                    det.close()
                    time.sleep(session_s + 1)  # the old member's session has expired
                    det = DetectorProcess(kafka, model=model, DETECTOR_RUNTIME=runtime).start()
                    up = wait_for(lambda d=det: d.metrics() and time.monotonic() - d.started,
                                  60, every=0.02, what="metrics endpoint")
                    first = wait_for(lambda d=det: d.processed() > 0 and
                                     time.monotonic() - d.started, 60, every=0.02,
                                     what="first output")
                    times.append({"model_loaded_s": up, "first_output_s": first})
                    say(f"  restart {runtime}: metrics up (model loaded) {up:.2f} s, first "
                        f"output {first:.2f} s after the process started")
            finally:
                stop.set()
                det.close()
        out[runtime] = {"runs": times,
                        "first_output_mean_s": float(np.mean([t["first_output_s"]
                                                              for t in times])),
                        "model_loaded_mean_s": float(np.mean([t["model_loaded_s"]
                                                              for t in times]))}
    return out


def static(model: str, streams: int, rate: float, session_ms: int) -> dict:
    """Kill one of two members and restart it at once, dynamic and static membership."""
    return {label: _kill_one_of_two(model, streams, rate, session_ms, label == "static")
            for label in ("dynamic", "static")}


def _kill_one_of_two(model: str, streams: int, rate: float, session_ms: int,
                     static_ids: bool) -> dict:
    with start_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        stop = threading.Event()
        produce(kafka, 0, streams, rate, seed=3, stop=stop)

        def start(name: str) -> DetectorProcess:
            env = {"DETECTOR_SESSION_TIMEOUT_MS": str(session_ms),
                   "DETECTOR_HEARTBEAT_INTERVAL_MS": str(session_ms // 3)}
            if static_ids:
                env["DETECTOR_GROUP_INSTANCE_ID"] = name
            return DetectorProcess(kafka, model=model, **env).start()

        a, b = start("a"), start("b")
        try:
            wait_for(lambda: a.processed() > 0 and b.processed() > 0, 120,
                     what="both members processing")
            time.sleep(2 * session_ms / 1000)  # settled: no join in flight
            b_assigned = b.output().count("assigned partitions")
            b_restores = b.metric("detector_state_restore_seconds_count") or 0
            a.kill()
            a.close()
            restarted = a = start("a")
            back = wait_for(lambda: restarted.processed() > 0
                            and time.monotonic() - restarted.started,
                            120, every=0.05, what="the restarted member processing")
            time.sleep(2 * session_ms / 1000)
            out = {
                "back_s": back,
                "other_member_assignments": b.output().count("assigned partitions") - b_assigned,
                "other_member_restores": (b.metric("detector_state_restore_seconds_count")
                                          or 0) - b_restores,
                "restarted_assignment": re.findall(r"assigned partitions \[[^\]]*\]",
                                                   a.output()),
                "other_member_log": [line for line in b.output().splitlines()
                                     if "assigned" in line or "Kafka" in line][-6:],
            }
            say(f"  {'static' if static_ids else 'dynamic'}: restarted member processing after "
                f"{back:.1f} s; the other member was assigned {out['other_member_assignments']} "
                f"more time(s), restored {out['other_member_restores']:.0f} more time(s)")
            return out
        finally:
            stop.set()
            for d in (a, b):
                if d.proc and d.proc.poll() is None:
                    d.terminate()
                d.close()


def gc_pauses(model: str, streams: int, rate: float, seconds: float) -> dict:
    """Garbage-collector pauses of a detector in this process (LiteRT), first with Python's
    defaults, then after ``settle_garbage_collector`` (a freeze cannot be undone: that order)."""
    import gc

    from detector.kafka.pipeline import Pipeline
    from detector.model.serving import ModelStep
    from detector.ops.metrics import Metrics
    from detector.ops.process_tuning import settle_garbage_collector
    from detector.settings.detector import DetectorSettings

    step = ModelStep.load(model)
    assert step.runtime == "litert"
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((info["generation"], time.perf_counter() - started.pop()))

    out = {}
    for label in ("default", "settled"):
        with start_broker() as broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
            stop = threading.Event()
            produce(kafka, 0, streams, rate, seed=4, stop=stop)
            settings = DetectorSettings(kafka=kafka, metrics_port=0, session_timeout_ms=6000,
                                        heartbeat_interval_ms=2000)
            pipeline = Pipeline(settings, step, Metrics(), threading.Event())
            pipeline.connect()
            if label == "settled":
                settle_garbage_collector()
            objects = len(gc.get_objects()) + gc.get_freeze_count()
            full = time.perf_counter()
            gc.collect()
            full = time.perf_counter() - full
            runner = threading.Thread(target=pipeline.run)
            runner.start()
            wait_for(lambda p=pipeline: p.ready, 60, what="ready")
            pauses.clear()
            gc.callbacks.append(record)
            time.sleep(seconds)
            gc.callbacks.remove(record)
            processed = pipeline.metrics.value("detector_events_processed_total")
            pipeline.stop_event.set()
            runner.join(60)
            stop.set()
        gen2 = [d for g, d in pauses if g == 2]
        out[label] = {"tracked_objects": objects, "full_collection_ms": full * 1000,
                      "collections": len(pauses), "full_collections": len(gen2),
                      "max_pause_ms": max((d for _, d in pauses), default=0) * 1000,
                      "total_pause_ms": sum(d for _, d in pauses) * 1000,
                      "events": processed, "seconds": seconds}
        say(f"  gc {label}: {objects:,} objects (tracked or frozen), a full collection "
            f"{full * 1000:.1f} ms; "
            f"in {seconds:g} s at {rate:,.0f} events/s: {len(pauses)} collections "
            f"({len(gen2)} full), longest {out[label]['max_pause_ms']:.1f} ms, total "
            f"{out[label]['total_pause_ms']:.0f} ms")
    return out


def step(models: list[str], seconds: float) -> dict:
    """Events/s at batch 4,096: the step call alone, and the whole engine path."""
    from inference import rate, serving_rate

    from detector.model.serving import ModelStep

    out: dict[str, dict] = {}
    for runtime in RUNTIMES:  # litert first: TensorFlow is not imported yet
        for name in models:
            s = ModelStep.load(name, runtime)
            assert s.runtime == runtime, f"{name} loaded under {s.runtime}"
            rng = np.random.default_rng(0)
            x = rng.random((4096, s._run.width)).astype(np.float32)
            state = s.zero_state(4096)
            out.setdefault(name, {})[runtime] = {
                "step_4096": rate(lambda s=s, x=x, st=state: s(x, st), 4096, seconds),
                "engine_4096": serving_rate(s, 4096, seconds, rng),
            }
            say(f"  step {name} {runtime}: {fmt_rate(out[name][runtime]['step_4096'])} events/s "
                f"(step call), {fmt_rate(out[name][runtime]['engine_4096'])} (engine)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", default=["rss", "restart", "static", "gc", "step"],
                   choices=["rss", "restart", "static", "gc", "step"])
    p.add_argument("--model", default="seed")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1_000)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--step-models", nargs="+", default=["seed", "pair"])
    p.add_argument("--seconds", type=float, default=2.0, help="time per step measurement")
    p.add_argument("--static-session-ms", type=int, default=10_000,
                   help="session timeout of the two members in the static section")
    add_broker_option(p)
    args = p.parse_args()
    use_broker(args.broker)
    say(f"on {broker_name()}")
    os.environ.pop("DETECTOR_RUNTIME", None)
    results: dict = {"model": args.model}
    rows = []
    if "rss" in args.sections:
        say(f"rss: {args.events:,} events over {args.streams:,} streams, model {args.model}")
        r = results["rss"] = rss(args.model, args.events, args.streams)
        rows += [[f"RSS after {args.events:,} events, {args.streams:,} streams (MB)",
                  *(f"{r[rt]['rss_mb']:.0f}" for rt in RUNTIMES)]]
    if "restart" in args.sections:
        say("restart: SIGKILL, wait out the session, start again; 200 events/s flowing")
        r = results["restart"] = restart(args.model, 100, 200, args.restarts)
        rows += [["restart: model loaded (s, mean)",
                  *(f"{r[rt]['model_loaded_mean_s']:.2f}" for rt in RUNTIMES)],
                 ["restart: first output (s, mean)",
                  *(f"{r[rt]['first_output_mean_s']:.2f}" for rt in RUNTIMES)]]
    if "static" in args.sections:
        say(f"static: two members, one SIGKILLed and restarted at once (session "
            f"{args.static_session_ms / 1000:g} s)")
        results["static"] = static(args.model, 100, 200, args.static_session_ms)
    if "gc" in args.sections:
        say("gc: collector pauses of a LiteRT detector, 1,000 streams at 5,000 events/s, 30 s")
        r = results["gc"] = gc_pauses(args.model, 1000, 5000, 30)
        rows += [[f"gc ({label}): full collections / longest pause (ms) in 30 s",
                  f"{r[label]['full_collections']} / {r[label]['max_pause_ms']:.1f}"]
                 for label in ("default", "settled")]
    if "step" in args.sections:
        say("step: batch 4,096")
        r = results["step"] = step(args.step_models, args.seconds)
        for name in args.step_models:
            for kind in ("step", "engine"):
                k = f"{kind}_4096"
                rows.append([f"{name}: {kind} at batch 4,096 (events/s)",
                             *(fmt_rate(r[name][rt][k]) for rt in RUNTIMES),
                             f"{r[name]['litert'][k] / r[name]['keras'][k]:.1f}x"])
    say("\n" + table(["measure", *RUNTIMES, "litert/keras"],
                     [row + [""] * (4 - len(row)) for row in rows]))
    if "static" in results:
        say("\n" + table(["membership", "restarted member processing after (s)",
                          "other member: new assignments", "other member: restores"],
                         [[k, f"{v['back_s']:.1f}", v["other_member_assignments"],
                           f"{v['other_member_restores']:.0f}"]
                          for k, v in results["static"].items()]))
    command = ("python bench/startup.py --sections " + " ".join(args.sections)
               + f" --model {args.model} --events {args.events} --streams {args.streams}"
               + f" --restarts {args.restarts} --step-models {' '.join(args.step_models)}"
               + f" --seconds {args.seconds} --static-session-ms {args.static_session_ms}")
    save("startup", results, command)


if __name__ == "__main__":
    main()
