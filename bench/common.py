"""Shared by the benchmark scripts: machine description, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split()[1]
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu,
            "memory_gb": round(int(mem) / 1024 / 1024, 1) if mem else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (it reads in a terminal and pastes into the README)."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def save(name: str, payload: dict, command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"command": command, "machine": machine(),
               **({"broker": broker_name()} if "chosen" in BROKER else {}), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}; rerun with: {command}")
    return path


def say(line: str) -> None:
    print(line, flush=True)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


BROKERS = ("kafka", "tansu")


def add_broker_option(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--broker", choices=BROKERS, default="kafka",
                        help="the broker to measure on: Apache Kafka (the reference, one KRaft "
                        "node) or the bundled Tansu")


#: The broker ``start_broker()`` starts when not told: a script's ``--broker`` sets it.
BROKER = {"kind": "kafka"}


def use_broker(kind: str) -> None:
    """The broker of this run (``--broker``): ``start_broker()`` starts it, ``save`` names it."""
    BROKER["kind"] = kind
    BROKER["chosen"] = kind


def start_broker(kind: str | None = None):  # type: ignore[no-untyped-def]
    """A fresh broker of ``kind`` (default: ``--broker``'s), started; use as a context manager
    (``.bootstrap``; ``.pause()`` and ``.resume()`` stop and continue all of it)."""
    kind = kind or BROKER["kind"]
    if kind == "kafka":
        from detector.testing.apache_kafka import KafkaCluster

        return KafkaCluster().start()
    from detector.testing.local_broker import LocalBroker

    return LocalBroker().start()


def broker_name(kind: str | None = None) -> str:
    kind = kind or BROKER["kind"]
    if kind == "kafka":
        from detector.testing.apache_kafka import kafka_version

        return f"Apache Kafka {kafka_version()} (one KRaft node)"
    return "Tansu (bundled)"
