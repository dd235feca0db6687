"""Faults and bad input, in figures: kills, broker pauses, rebalances, garbage, soak.

    python bench/chaos.py [--scenarios kills pause rebalance garbage soak] [--model seed]

Every scenario runs the producer and real detector processes against a fresh local broker,
then reads every output record and compares with the exact expectation: each valid input
event has an output, duplicates agree, and the flags equal an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from detector.model.serving import ModelStep
from detector.ops.metrics import LATENCY_BUCKETS, histogram_quantile
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.testing.harness import (
    Audit,
    DetectorProcess,
    audit,
    expected_flags,
    read_topic,
    wait_for,
)
from producer.publish import publish

from common import add_broker_option, broker_name, save, say, start_broker, table, use_broker

_steps: dict[str, ModelStep] = {}


def step_for(model: str) -> ModelStep:
    if model not in _steps:
        _steps[model] = ModelStep.load(model)
    return _steps[model]


class Feed:
    """The producer in a thread: ``events`` over ``streams`` at ``rate`` events/s."""

    def __init__(self, kafka: KafkaSettings, events: int, streams: int, rate: float, seed: int,
                 linger_ms: int = 5):
        self.stop = threading.Event()
        self.settings = ProducerSettings(kafka=kafka, streams=streams, rate=rate, count=events,
                                         seed=seed, linger_ms=linger_ms)
        self.thread = threading.Thread(target=lambda: publish(self.settings, self.stop,
                                                              progress=lambda _: None))

    def start(self) -> Feed:
        self.thread.start()
        return self

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()


def check(kafka: KafkaSettings, model: str) -> Audit:
    """Audit trend-flags against an uninterrupted run over everything in the input topic."""
    inputs = [(r.key, r.value) for r in read_topic(kafka, "values", settle=2, timeout=300)]
    want = expected_flags(step_for(model), inputs)
    outputs = read_topic(kafka, "trend-flags", settle=3, timeout=600)
    return audit(outputs, want)


def drain(kafka: KafkaSettings, detectors: list[DetectorProcess], total: int,
          timeout: float = 600, by_count: bool = False) -> None:
    """Wait until the output topic holds at least one record per input event; ``by_count``
    (one detector that never restarted) asks it instead of rereading millions of records."""
    if by_count:
        wait_for(lambda: sum(d.processed() for d in detectors) >= total, timeout, every=2,
                 what="every event to be processed")
    else:
        wait_for(lambda: len(read_topic(kafka, "trend-flags", settle=0.5)) >= total, timeout,
                 every=2, what="every event to have an output")
    for det in detectors:
        if det.proc and det.proc.poll() is None:
            det.terminate()
        det.close()


def finish(kafka: KafkaSettings, feed: Feed, detectors: list[DetectorProcess], events: int,
           model: str, by_count: bool = False) -> Audit:
    """The feed done, every event answered, the detectors stopped: the audit."""
    feed.join()
    drain(kafka, detectors, events, by_count=by_count)
    return check(kafka, model)


@contextmanager
def fed(model: str, events: int, streams: int, rate: float, seed: int, detectors: int = 1,
        linger_ms: int = 5, **env: str) -> Iterator[tuple[Any, KafkaSettings,
                                              list[DetectorProcess], Feed]]:
    """A fresh broker, ``detectors`` ready detector processes, and the producer started."""
    with start_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        dets = [DetectorProcess(kafka, model=model, **env).start() for _ in range(detectors)]
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 120, what="ready")
        yield broker, kafka, dets, Feed(kafka, events, streams, rate, seed, linger_ms).start()


def scenario_kills(model: str, events: int, streams: int, kills: int, rate: float) -> dict:
    say(f"kills: {events:,} events over {streams:,} streams at {rate:,.0f}/s, {kills} SIGKILLs")
    rng = random.Random(1)
    with fed(model, events, streams, rate, seed=11) as (_, kafka, [det], feed):
        duration = events / rate
        moments = sorted(rng.uniform(0.05, 0.95) * duration for _ in range(kills))
        started = time.monotonic()
        recover = []
        for i, at in enumerate(moments):
            time.sleep(max(0.0, started + at - time.monotonic()))
            det.kill()
            det.close()
            det = DetectorProcess(kafka, model=model).start()
            wait_for(lambda d=det: d.processed() > 0, 120, every=0.05, what="recovery")
            recover.append(time.monotonic() - det.started)
            say(f"  kill {i + 1}/{kills} at {at:.1f} s: processing again after "
                f"{recover[-1]:.1f} s")
        result = finish(kafka, feed, [det], events, model)
    say(f"  {result}")
    return {"events": events, "kills": kills, "audit": result.__dict__,
            "recover_s": recover, "recover_mean_s": float(np.mean(recover)),
            "recover_max_s": float(np.max(recover))}


def scenario_pause(model: str, events: int, streams: int, rate: float, pauses: int,
                   pause_s: float) -> dict:
    say(f"pause: {events:,} events at {rate:,.0f}/s, the broker SIGSTOPped {pauses}x {pause_s:g} s")
    with fed(model, events, streams, rate, seed=12) as (broker, kafka, [det], feed):
        duration = events / rate
        gap = duration / (pauses + 1)
        back = []
        not_ready = []
        for i in range(pauses):
            time.sleep(gap * 0.5)
            broker.pause()
            paused_at = time.monotonic()
            saw_not_ready = False
            while time.monotonic() - paused_at < pause_s:
                saw_not_ready |= det.healthz() == 503
                time.sleep(0.5)
            broker.resume()
            resumed = time.monotonic()
            wait_for(lambda: det.healthz() == 200, 180, every=0.1, what="ready again")
            back.append(time.monotonic() - resumed)
            not_ready.append(saw_not_ready)
            say(f"  pause {i + 1}/{pauses}: reported not ready: {saw_not_ready}; ready again "
                f"{back[-1]:.1f} s after the broker resumed")
        result = finish(kafka, feed, [det], events, model)
    say(f"  {result}")
    return {"events": events, "pauses": pauses, "pause_s": pause_s, "audit": result.__dict__,
            "ready_again_s": back, "reported_not_ready": not_ready}


def scenario_rebalance(model: str, events: int, streams: int, rate: float) -> dict:
    say(f"rebalance: three detectors, one killed, a fourth joins; {events:,} events")
    with fed(model, events, streams, rate, seed=13, detectors=3) as (_, kafka, dets, feed):
        duration = events / rate
        time.sleep(duration * 0.3)
        restores = []
        victim = dets.pop(0)
        m = victim.metrics()
        restores.append((m.get("detector_state_restore_seconds_count", 0),
                         m.get("detector_state_restore_seconds_sum", 0)))
        victim.kill()
        victim.close()
        say("  killed one of three")
        time.sleep(duration * 0.3)
        dets.append(DetectorProcess(kafka, model=model).start())
        say("  a fourth joined")
        feed.join()
        wait_for(lambda: len(read_topic(kafka, "trend-flags", settle=0.5)) >= events, 600,
                 every=2, what="every event to have an output")
        for d in dets:
            m = d.metrics()
            restores.append((m.get("detector_state_restore_seconds_count", 0),
                             m.get("detector_state_restore_seconds_sum", 0)))
        drain(kafka, dets, events)
        result = check(kafka, model)
    count = sum(c for c, _ in restores)
    seconds = sum(s for _, s in restores)
    say(f"  {result}; {count:.0f} restores, {seconds / max(count, 1):.3f} s each on average")
    return {"events": events, "audit": result.__dict__, "restores": count,
            "restore_mean_s": seconds / max(count, 1), "processed_twice": result.duplicates}


GARBAGE = [
    (b"\xc3\x28 not utf-8", "not_utf8"), (b"{nope", "not_json"), (b"[1, 2]", "not_object"),
    (b'{"seq": 1, "value": 0.5}', "missing_field"), (b'{"stream":"STREAM","seq":"x","value":1}',
                                                    "bad_seq"),
    (b'{"stream":"STREAM","seq":1,"value":NaN}', "bad_value"),
    (b'{"stream":"STREAM","seq":1,"value":"0.3"}', "bad_value"),
    (b'{"stream":"STREAM","seq":-1,"value":0.3}', "bad_seq"),
    (b'{"stream":"other","seq":1,"value":0.3}', "key_mismatch"),
    (b'{"stream":"STREAM","seq":1,"value":true}', "bad_value"),
]


def scenario_garbage(model: str, events: int, streams: int, share: float) -> dict:
    say(f"garbage: {share:.0%} garbage among {events:,} valid events")
    from detector.kafka import clients, topics
    from producer.source import StreamSource

    rng = random.Random(5)
    source = StreamSource(streams, "uniform", 14)
    records: list[tuple[bytes, bytes]] = []
    bad: list[tuple[bytes, bytes, str]] = []
    while len(records) - len(bad) < events:
        source.next_round()
        for i in range(streams):
            if len(records) - len(bad) >= events:
                break
            records.append((source.keys[i], source.record(i, time.time())))
            if rng.random() < share / (1 - share):
                body, reason = rng.choice(GARBAGE)
                key = source.keys[rng.randrange(streams)]
                body = body.replace(b"STREAM", key)
                records.append((key, body))
                bad.append((key, body, reason))
    with start_broker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        topics.ensure_topics(kafka, [topics.TopicSpec("values", 6)])
        producer = clients.producer(kafka, linger_ms=5, batch_size=256 * 1024)
        for key, value in records:
            producer.send("values", key=key, value=value)
        producer.flush()
        producer.close()
        det = DetectorProcess(kafka, model=model).start()
        drain(kafka, [det], events)
        result = check(kafka, model)
        dlq = read_topic(kafka, "values.dlq", settle=2)
    got = sorted((r.key, r.value, dict(r.headers)["dlq.reason"].decode()) for r in dlq)
    want = sorted(bad)
    say(f"  {result}; dead letters {len(dlq)} of {len(bad)} garbage records, "
        f"all with the right reason: {got == want}")
    return {"events": events, "garbage": len(bad), "dead_letters": len(dlq),
            "dead_letters_match": got == want, "audit": result.__dict__}


def scenario_soak(model: str, streams: int, rate: float, minutes: float, linger_ms: int) -> dict:
    say(f"soak: {minutes:g} minutes at {rate:,.0f} events/s over {streams:,} streams, "
        f"producer and detector linger {linger_ms} ms")
    events = int(rate * minutes * 60)
    # Both the producer and the detector batch for linger_ms: the broker then holds fewer,
    # larger batches, which it serves much faster (see README, "Long runs on the local broker").
    with fed(model, events, streams, rate, 15, linger_ms=linger_ms,
             DETECTOR_LINGER_MS=str(linger_ms)) as (_, kafka, [det], feed):
        samples = []
        started = time.monotonic()
        before = None
        while not feed.done():
            time.sleep(min(60.0, minutes * 60 / 10))
            m = det.metrics()
            buckets = [(b, m.get(f'detector_end_to_end_latency_seconds_bucket{{le="{b}"}}', 0))
                       for b in LATENCY_BUCKETS]
            buckets.append((float("inf"), m.get(
                'detector_end_to_end_latency_seconds_bucket{le="+Inf"}', 0)))
            p99 = histogram_quantile(0.99, before, buckets) if before else None
            lag = sum(v for k, v in m.items() if k.startswith("detector_consumer_lag"))
            samples.append({"t_s": time.monotonic() - started, "rss_mb": det.rss_bytes() / 2**20,
                            "lag": lag, "p99_ms": None if p99 is None else p99 * 1000,
                            "processed": m.get("detector_events_processed_total", 0)})
            before = buckets
            s = samples[-1]
            p99_text = "n/a" if p99 is None else f"{p99 * 1000:.0f} ms"
            say(f"  {s['t_s']:6.0f} s: RSS {s['rss_mb']:.0f} MiB, lag {lag:.0f}, p99 {p99_text}")
        result = finish(kafka, feed, [det], events, model, by_count=True)
    first = samples[0]["rss_mb"]
    last = samples[-1]["rss_mb"]
    say(f"  {result}; RSS {first:.0f} -> {last:.0f} MiB ({(last - first) / first:+.1%})")
    return {"events": events, "rate": rate, "minutes": minutes, "linger_ms": linger_ms,
            "samples": samples,
            "rss_start_mb": first, "rss_end_mb": last, "rss_growth": (last - first) / first,
            "max_lag": max(s["lag"] for s in samples), "audit": result.__dict__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+",
                   default=["kills", "pause", "rebalance", "garbage", "soak"])
    p.add_argument("--model", default="seed")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=float, default=2000, help="feed rate of the fault scenarios")
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--soak-rate", type=float, default=0,
                   help="0: half the detector rate in bench/results/pipeline.json")
    p.add_argument("--soak-minutes", type=float, default=10)
    p.add_argument("--soak-linger-ms", type=int, default=100,
                   help="the soak's producer and detector linger: the local broker's fetches "
                        "slow down with the number of record batches a partition holds")
    add_broker_option(p)
    args = p.parse_args()
    use_broker(args.broker)
    say(f"on {broker_name()}")
    command = "python bench/chaos.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items())
    # Scenarios not run this time keep their figures from an earlier run of the same model.
    out: dict = {**_earlier(args.model), "model": args.model}
    for name in args.scenarios:
        if name == "kills":
            out[name] = scenario_kills(args.model, args.events, args.streams, args.kills,
                                       args.rate)
        elif name == "pause":
            out[name] = scenario_pause(args.model, args.events // 2, args.streams, args.rate,
                                       3, 15.0)
        elif name == "rebalance":
            out[name] = scenario_rebalance(args.model, args.events // 2, args.streams,
                                           args.rate)
        elif name == "garbage":
            out[name] = scenario_garbage(args.model, args.events // 5, args.streams, 0.05)
        elif name == "soak":
            rate = args.soak_rate or _half_max_rate()
            out[name] = scenario_soak(args.model, args.streams, rate, args.soak_minutes,
                                      args.soak_linger_ms)
        out[name]["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        save("chaos", out, command)  # after each scenario: a later failure keeps these figures
    rows = []
    for name, r in out.items():
        if name == "model":
            continue
        a = r["audit"]
        extra = {
            "kills": lambda r: f"{r['kills']} kills; recovered in {r['recover_mean_s']:.1f} s "
                               f"on average (max {r['recover_max_s']:.1f} s)",
            "pause": lambda r: f"{r['pauses']} x {r['pause_s']:g} s; not ready reported "
                               f"{sum(r['reported_not_ready'])}/{r['pauses']}; ready again in "
                               + ", ".join(f"{x:.1f}" for x in r["ready_again_s"]) + " s",
            "rebalance": lambda r: f"{r['restores']:.0f} state restores, "
                                   f"{r['restore_mean_s'] * 1000:.0f} ms each on average",
            "garbage": lambda r: f"{r['dead_letters']}/{r['garbage']} garbage records in the "
                                 f"DLQ, reasons right: {r['dead_letters_match']}",
            "soak": lambda r: f"{r['minutes']:g} min at {r['rate']:,.0f}/s (both linger "
                              f"{r['linger_ms']} ms); RSS "
                              f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} MiB "
                              f"({r['rss_growth']:+.1%}); max lag {r['max_lag']:.0f}; p99 "
                              + "/".join(f"{s['p99_ms']:.0f}" for s in r["samples"]
                                         if s["p99_ms"] is not None) + " ms",
        }[name](r)
        rows.append([name, f"{a['expected']:,}", a["lost"], f"{a['duplicates']:,}",
                     a["mismatched"] + a["conflicting"], extra])
    say("\n" + table(["scenario", "valid events", "lost", "duplicates", "mismatched flags",
                      "figures"], rows))
    say(f"\nrerun with: {command}")


def _earlier(model: str) -> dict:
    from common import RESULTS

    path = RESULTS / "chaos.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    if earlier.get("model") != model:
        return {}
    return {k: v for k, v in earlier.items() if isinstance(v, dict) and "audit" in v}


def _half_max_rate() -> float:
    from common import RESULTS

    path = RESULTS / "pipeline.json"
    if path.exists():
        return json.loads(path.read_text())["detector_eps"] / 2
    raise SystemExit("no bench/results/pipeline.json: run bench/pipeline.py or pass --soak-rate")


if __name__ == "__main__":
    main()
