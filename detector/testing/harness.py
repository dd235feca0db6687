"""Run detectors as real processes and audit what they wrote: for the tests and benchmarks.

``audit`` is the check every fault scenario ends with: each valid input event has an output,
duplicates agree with each other, and the flags equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kafka import TopicPartition

from detector.kafka import clients, topics
from detector.settings.kafka import KafkaSettings
from detector.stream.codec import Event
from detector.stream.mapping import decode_event
from detector.testing.apache_kafka import die_with_parent
from detector.testing.local_broker import free_port

ROOT = Path(__file__).resolve().parents[2]

#: Short group timings: the local broker makes a join wait about half the session timeout.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = -1  # the record's time in ms (-1: none)

    def json(self) -> dict:
        return json.loads(self.value)


def read_topic(kafka: KafkaSettings, topic: str, expect: int | None = None,
               timeout: float = 30.0, settle: float = 1.0) -> list[Record]:
    """Every committed record of ``topic`` (read_committed, as consumers of exactly-once
    outputs read): until ``expect`` arrived, or nothing new for ``settle`` s (before the first
    record, at least 5 s: joining and the first fetch can take longer)."""
    n = topics.partition_count(kafka, topic)
    if n is None:
        return []
    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                                 max_partition_fetch_bytes=8 << 20, fetch_max_wait_ms=20,
                                 isolation_level="read_committed")
    tps = [TopicPartition(topic, p) for p in range(n)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=200, max_records=50_000)
            for tp, recs in got.items():
                out += [Record(topic, tp.partition, r.offset, r.key, r.value, list(r.headers),
                               r.timestamp) for r in recs]
            if got:
                last_new = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            quiet = settle if out else max(settle, 5.0)
            if expect is None and time.monotonic() - last_new > quiet:
                break
    finally:
        consumer.close(autocommit=False)
    return out


def expected_flags(step, records: list[tuple[bytes | None, bytes | None]]
                   ) -> dict[tuple[str, int], int]:
    """What an uninterrupted detector gives: each stream's valid events in order, one engine."""
    from detector.stream.engine import Batch, Engine

    events = [e for e in (decode_event(k, v) for k, v in records) if isinstance(e, Event)]
    res = Engine(step).process(Batch.of([e.stream for e in events], [e.value for e in events],
                                        seq=[e.seq for e in events],
                                        epoch=[e.epoch for e in events]))
    seqs = res.seq.tolist()
    return {(e.stream, seqs[i]): int(res.flag[i]) for i, e in enumerate(events)
            if res.processed[i]}


@dataclass(frozen=True)
class Audit:
    expected: int  # valid input events
    outputs: int  # output records read
    lost: int  # valid events without an output
    duplicates: int  # outputs beyond the first per (stream, seq)
    conflicting: int  # (stream, seq) whose duplicates disagree on the flag
    mismatched: int  # (stream, seq) whose flag differs from the uninterrupted run
    unexpected: int  # outputs for events that were not valid input

    @property
    def clean(self) -> bool:
        return not (self.lost or self.conflicting or self.mismatched or self.unexpected)


def audit(outputs: list[Record], expected: dict[tuple[str, int], int]) -> Audit:
    flags: dict[tuple[str, int], set[int]] = {}
    for r in outputs:
        rec = r.json()
        flags.setdefault((rec["stream"], rec["seq"]), set()).add(rec["flag"])
    return Audit(
        expected=len(expected),
        outputs=len(outputs),
        lost=len(set(expected) - set(flags)),
        duplicates=len(outputs) - len(flags),
        conflicting=sum(1 for f in flags.values() if len(f) > 1),
        mismatched=sum(1 for key, f in flags.items() if key in expected and f != {expected[key]}),
        unexpected=len(set(flags) - set(expected)),
    )


def covered(kafka: KafkaSettings, topic: str, expected: dict[tuple[str, int], int]
            ) -> list[Record] | None:
    """The records of ``topic`` once every expected (stream, seq) has one; else None. Counting
    records or processed events would pass early: after a recovery, replays count again."""
    outputs = read_topic(kafka, topic, settle=0.5)
    return outputs if events_of(outputs) >= expected.keys() else None


def events_of(outputs: list[Record]) -> set[tuple[str, int]]:
    """The (stream, seq) that ``outputs`` (flag records) are of."""
    return {(rec["stream"], rec["seq"]) for rec in (r.json() for r in outputs)}


def uncovered(kafka: KafkaSettings, topic: str, expected: dict[tuple[str, int], int]) -> str:
    """Why ``covered`` is not yet true, for a timeout's message: how many expected (stream,
    seq) have no committed output, a few of them, and each partition's last stable offset
    against its high watermark (a transaction left open holds readers back)."""
    missing = sorted(expected.keys() - events_of(read_topic(kafka, topic, settle=0.5)))
    ends = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                                    isolation_level=isolation)
        try:
            tps = [TopicPartition(topic, p) for p in range(topics.partition_count(kafka, topic)
                                                           or 0)]
            ends[isolation] = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
        finally:
            consumer.close(autocommit=False)
    return (f"{len(missing)} expected outputs missing on {topic} (first: {missing[:8]}); "
            f"last stable offsets {ends['read_committed']}, high watermarks "
            f"{ends['read_uncommitted']}")


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, every: float = 0.2,
             what: str | Callable[[], str] = "condition") -> object:
    """The predicate's first true value; else TimeoutError saying ``what`` (a call: read late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for "
                       f"{what() if callable(what) else what}")


class DetectorProcess:
    """``python -m detector run`` (or another ``command`` with a metrics endpoint, such as
    ``alertmanager``) as a real process, configured only through its environment."""

    def __init__(self, kafka: KafkaSettings, model: str = "seed", command: str = "run",
                 **env: str):
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "DETECTOR_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DETECTOR_MODEL": model,
            "DETECTOR_METRICS_PORT": str(self.metrics_port),
            "DETECTOR_SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
            "DETECTOR_HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
            **env,
        }
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._log = tempfile.NamedTemporaryFile(prefix="detector-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self) -> DetectorProcess:
        self.started = time.monotonic()
        # gone with the test that started it, even when a failure skips its close()
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", self.command], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     preexec_fn=die_with_parent)
        return self

    def metrics(self) -> dict[str, float]:
        """Every sample of the live /metrics endpoint (empty while it is not up)."""
        try:
            text = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def metric(self, name: str) -> float | None:
        return self.metrics().get(name)

    def processed(self) -> float:
        return self.metrics().get("detector_events_processed_total", 0.0)

    def healthz(self) -> int | None:
        try:
            return urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return None

    def rss_bytes(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
