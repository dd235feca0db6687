"""The README's pieces by hand, left running: ``broker`` + ``producer --streams 20 --rate 200``
+ ``run``, each the command a person types, for an hour; every partition's lag over time.

    PYTHONPATH=. python bench/broker_soak.py [--engine tansu|kafka] [--minutes 60]

Every ``--sample-s`` seconds, from outside the three programs: each input partition's end
offset two ways (ListOffsets ``latest``, and the high watermark of a fetch), the group's
committed offset and the records waiting past it, and whether a plain consumer (kafka-python's
defaults) fetching from that committed offset gets records within ``--probe-s`` seconds; from
the detector, ``/healthz``, its lag per partition and its end-to-end latency since the last
sample; the broker's CPU share. A partition is *stalled* at a sample when its committed offset
has not moved since the one before while records wait past it. The table shows every
``--table-every-min`` minutes; the JSON holds every sample.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from detector.testing.local_broker import free_port

from common import ROOT, save, say, table

TOPIC, GROUP = "values", "trend-detector"


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m ...`` as a person runs it, its output to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)


def wait_listening(bootstrap: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000).close()
            return
        except Exception:  # not up yet
            time.sleep(1)
    raise SystemExit(f"broker not reachable at {bootstrap} after {timeout:.0f} s")


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def detector_lag(metrics_text: str) -> dict[int, float]:
    return {int(p): float(v) for p, v in re.findall(
        r'^detector_consumer_lag\{partition="(\d+)"\} (\S+)$', metrics_text, re.M)}


def latency_buckets(metrics_text: str) -> list[tuple[float, float]]:
    """The detector's end-to-end latency histogram: cumulative (upper bound, count) pairs."""
    return [(float(le), float(n)) for le, n in re.findall(
        r'^detector_end_to_end_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', metrics_text,
        re.M)]


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by a process and all its descendants (the broker command and
    what it starts: Tansu's binary, or Kafka's JVM, each in a session of its own)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)  # after the name: state, ppid, ..., utime (12), stime (13)
        parent[pid], used[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo += [child for child, p in parent.items() if p == pid]
    return total


def sample(bootstrap: str, partitions: list[TopicPartition], probe_s: float,
           metrics_url: str) -> dict:
    """One look at every partition from outside, and at the detector from its endpoint."""
    # The group's id, to read its commits; assigned, not subscribed: it never joins.
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP,
                          enable_auto_commit=False,
                          request_timeout_ms=max(30_000, int(probe_s * 2000)))
    try:
        committed = {tp.partition: probe.committed(tp) for tp in partitions}
        listed = {tp.partition: off for tp, off in probe.end_offsets(partitions).items()}
        probe.assign(partitions)
        for tp in partitions:
            probe.seek(tp, committed.get(tp.partition) or 0)
        got: dict[int, int] = {}
        deadline = time.monotonic() + probe_s
        while time.monotonic() < deadline and len(got) < len(partitions):
            for tp, recs in probe.poll(timeout_ms=200, max_records=500).items():
                got[tp.partition] = got.get(tp.partition, 0) + len(recs)
        high = {tp.partition: probe.highwater(tp) for tp in partitions}
    finally:
        probe.close()
    status, health = http(f"{metrics_url}/healthz")
    _, text = http(f"{metrics_url}/metrics")
    lag = detector_lag(text)
    rows = {}
    for tp in partitions:
        q = tp.partition
        end = max(x for x in (listed.get(q), high.get(q), 0) if x is not None)
        rows[q] = {"committed": committed.get(q), "end_listed": listed.get(q),
                   "end_fetched": high.get(q), "waiting": end - (committed.get(q) or 0),
                   "probe_records": got.get(q, 0), "detector_lag": lag.get(q)}
    return {"partitions": rows, "healthz": health.strip().splitlines()[0] if health else "",
            "healthz_status": status, "latency": latency_buckets(text)}


def mark_stalls(samples: list[dict]) -> None:
    """A partition is stalled at a sample when its committed offset has not moved since the
    sample before while records wait past it."""
    s = samples[-1]
    before = samples[-2]["partitions"] if len(samples) > 1 else {}
    for q, row in s["partitions"].items():
        prev = before.get(q, {}).get("committed")
        row["stalled"] = bool(before) and row["waiting"] > 0 and row["committed"] == prev


def interval_latency(samples: list[dict]) -> tuple[float | None, float | None]:
    """p50 and p99 of the detector's end-to-end latency between the last two samples."""
    from detector.ops.metrics import histogram_quantile

    if len(samples) < 2 or not samples[-1]["latency"]:
        return None, None
    before, now = samples[-2]["latency"], samples[-1]["latency"]
    return (histogram_quantile(0.5, before, now), histogram_quantile(0.99, before, now))


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, wait: float = 30) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("tansu", "kafka"), default="tansu")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--sample-s", type=float, default=30)
    p.add_argument("--probe-s", type=float, default=5)
    p.add_argument("--table-every-min", type=float, default=5)
    p.add_argument("--producer-args", default="", help="more options for the producer, such "
                   "as the earlier defaults: '--linger-ms 5'")
    p.add_argument("--run-args", default="", help="more options for run, such as the earlier "
                   "defaults: '--fetch-max-wait-ms 10 --linger-ms 0'")
    p.add_argument("--tag", default="", help="suffix of the results file's name")
    p.add_argument("--logs", help="keep the programs' logs here (default: a temporary dir)")
    args = p.parse_args()
    port, metrics_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{port}"
    logs = Path(args.logs or tempfile.mkdtemp(prefix="soak-"))
    logs.mkdir(parents=True, exist_ok=True)
    where = ["--bootstrap-servers", bootstrap]
    say(f"broker ({args.engine}) on {bootstrap}; logs in {logs}")
    broker = start(["detector", "broker", "--engine", args.engine, "--port", str(port)],
                   logs / "broker.log")
    procs = [broker]
    samples: list[dict] = []
    started = time.monotonic()
    try:
        wait_listening(bootstrap, 180)
        producer = start(["producer", *where, "--streams", str(args.streams), "--rate",
                          str(args.rate), *shlex.split(args.producer_args)],
                         logs / "producer.log")
        detector = start(["detector", "run", *where, "--metrics-port", str(metrics_port),
                          *shlex.split(args.run_args)], logs / "detector.log")
        procs += [producer, detector]
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        time.sleep(min(args.sample_s, 20))
        count = len(admin.describe_topics([TOPIC])[0]["partitions"])
        partitions = [TopicPartition(TOPIC, q) for q in range(count)]
        started = time.monotonic()
        next_at, cpu_before = started, tree_cpu_s(broker.pid)
        while time.monotonic() - started < args.minutes * 60:
            dead = [name for name, proc in (("broker", broker), ("producer", producer),
                                            ("detector", detector)) if proc.poll() is not None]
            if dead:
                say(f"stopped early: {', '.join(dead)} exited")
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += args.sample_s
            at = time.monotonic() - started
            s = sample(bootstrap, partitions, args.probe_s, metrics_url)
            cpu = tree_cpu_s(broker.pid)
            s["minute"] = round(at / 60, 2)
            s["broker_cpu"] = (cpu - cpu_before) / args.sample_s if samples else None
            cpu_before = cpu
            samples.append(s)
            mark_stalls(samples)
            s["latency_p50"], s["latency_p99"] = interval_latency(samples)
            lags = " ".join(f"{q}:{r['waiting']}" + ("!" if r["stalled"] else "")
                            for q, r in s["partitions"].items())
            p99, cpu_share = s["latency_p99"], s["broker_cpu"]
            say(f"{at / 60:6.1f} min  waiting {lags}  p99 "
                + ("-" if p99 is None else f"{p99 * 1000:.0f} ms")
                + "  broker CPU " + ("-" if cpu_share is None else f"{cpu_share:.0%}")
                + f"  healthz {s['healthz']}")
        admin.close()
    finally:
        for proc in reversed(procs):
            stop(proc)
    report(args, samples, logs)


def compact(s: dict, parts: list[int]) -> dict:
    """A sample as the results file keeps it: per partition, in order, the records waiting;
    which partitions were stalled, and which the plain consumer got nothing from."""
    rows = [s["partitions"][q] for q in parts]
    p50, p99 = s.get("latency_p50"), s.get("latency_p99")
    return {"minute": s["minute"], "waiting": [r["waiting"] for r in rows],
            "stalled": [q for q, r in zip(parts, rows, strict=True) if r["stalled"]],
            "probe_empty": [q for q, r in zip(parts, rows, strict=True)
                            if r["waiting"] > 0 and not r["probe_records"]],
            "healthz": s["healthz"], "healthz_status": s["healthz_status"],
            "latency_p50_ms": None if p50 is None else round(p50 * 1000),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000),
            "broker_cpu": None if s["broker_cpu"] is None else round(s["broker_cpu"], 3)}


def report(args: argparse.Namespace, samples: list[dict], logs: Path) -> None:
    if not samples:
        raise SystemExit("no samples taken")
    parts = sorted(samples[0]["partitions"])
    rows, last_shown = [], -1e9
    for s in samples:
        if s["minute"] - last_shown < args.table_every_min and s is not samples[-1]:
            continue
        last_shown = s["minute"]
        p99, cpu_share = s.get("latency_p99"), s.get("broker_cpu")
        rows.append([f"{s['minute']:.1f}"]
                    + [f"{s['partitions'][q]['waiting']:,}"
                       + (" STALLED" if s["partitions"][q]["stalled"] else "") for q in parts]
                    + ["-" if p99 is None else f"{p99 * 1000:.0f} ms",
                       "-" if cpu_share is None else f"{cpu_share:.0%}", s["healthz"]])
    say("\nrecords waiting past the group's committed offset, per partition (STALLED: the "
        "committed offset has not moved since the sample before); the detector's p99 "
        "end-to-end latency since the sample before; the broker's CPU share\n")
    say(table(["minute", *[f"p{q}" for q in parts], "p99 latency", "broker CPU", "/healthz"],
              rows))
    stalled = {q: [s["minute"] for s in samples if s["partitions"][q]["stalled"]] for q in parts}
    first = {q: m[0] for q, m in stalled.items() if m}
    worst = {q: max(s["partitions"][q]["waiting"] for s in samples) for q in parts}
    short = {q: max((s["partitions"][q]["end_fetched"] or 0) - (s["partitions"][q]["end_listed"]
                                                                  or 0) for s in samples)
             for q in parts}
    ready_while_stalled = sum(1 for s in samples if s["healthz_status"] == 200 and any(
        s["partitions"][q]["stalled"] for q in parts))
    probe_empty = sum(1 for s in samples for q in parts
                      if s["partitions"][q]["waiting"] > 0
                      and not s["partitions"][q]["probe_records"])
    say(f"\nmost records waiting per partition: {worst}")
    say(f"first stalled sample per partition (minute): {first or 'none'}")
    say(f"largest shortfall of ListOffsets(latest) against a fetch's high watermark: {short}")
    say(f"samples where /healthz said ready while a partition was stalled: "
        f"{ready_while_stalled} of {len(samples)}")
    say(f"partition samples with records waiting where a plain consumer fetched none of them in "
        f"{args.probe_s:g} s: {probe_empty}")
    result = {"engine": args.engine, "minutes": args.minutes, "streams": args.streams,
              "rate": args.rate, "producer_args": args.producer_args,
              "run_args": args.run_args, "sample_s": args.sample_s, "probe_s": args.probe_s,
              "samples_taken": len(samples), "max_waiting": worst, "first_stalled": first,
              "listoffsets_shortfall": short, "ready_while_stalled": ready_while_stalled,
              "probe_empty": probe_empty,
              "logs": str(logs), "samples": [compact(s, parts) for s in samples]}
    command = "PYTHONPATH=. python bench/broker_soak.py " + shlex.join(sys.argv[1:])
    save(f"latest-broker-soak-{args.engine}{args.tag}", result, command)


if __name__ == "__main__":
    main()
