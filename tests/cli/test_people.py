"""What people run: tail prints readable lines; the demo shows alerts and cleans up after itself."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from detector.cli.tail import describe, tail
from tests.support import ROOT, DetectorThread, send, settings, uniform_events, wait_for

pytestmark = pytest.mark.broker


def test_tail_prints_one_readable_line_per_alert(kafka, steps):
    send(kafka, "values", uniform_events(streams=3, per_stream=40, seed=2))
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 120, 60)
    finally:
        det.stop()
    alerts = int(sum(det.value("detector_run_alerts_total", {"status": s})
                     for s in ("firing", "resolved")))
    lines: list[str] = []
    shown = tail(kafka, "trend-alerts", True, threading.Event(), limit=alerts, out=lines.append)
    assert shown == alerts == len(lines) > 0
    assert all(re.search(r"(FIRING   s-\d [↑↓] run from seq \d+, 3 values so far|"
                         r"RESOLVED s-\d [↑↓] run of \d+ values from seq \d+, ended at seq \d+)",
                         line) for line in lines), lines


def test_describe_dead_letters_and_foreign_text():
    line = describe(b"{oops", [("dlq.reason", b"not_json"), ("dlq.source.topic", b"values"),
                               ("dlq.source.partition", b"1"), ("dlq.source.offset", b"9")])
    assert line.startswith("DEAD LETTER not_json from values:1@9")
    line = describe(b"m f=x", [("dlq.reason", b"bad_line"), ("dlq.source.topic", b"values"),
                               ("dlq.source.partition", b"1"), ("dlq.source.offset", b"9"),
                               ("dlq.source.line", b"3")])
    assert line == "DEAD LETTER bad_line from values:1@9 line 3: 'm f=x'"
    assert describe(b"plain text") == "plain text"


def test_describe_run_records_firing_and_resolved():
    def run(status: str, seq: int, length: int, direction: str = "up",
            ts: float | None = 1764179401.123) -> bytes:
        return json.dumps({"status": status, "stream": "s-17", "direction": direction,
                           "start_seq": 40, "seq": seq, "length": length, "value": 0.734,
                           "model": "seed", "ts": ts, "detected_at": 1764179402.5}).encode()

    clock = time.strftime("%H:%M:%S", time.localtime(1764179401))
    assert describe(run("firing", 42, 3)) == \
        f"{clock}.123 FIRING   s-17 ↑ run from seq 40, 3 values so far (value 0.7340)"
    assert describe(run("resolved", 47, 7, "down")) == \
        f"{clock}.123 RESOLVED s-17 ↓ run of 7 values from seq 40, ended at seq 47"
    # Without an event time, the detection time.
    later = time.strftime("%H:%M:%S", time.localtime(1764179402))
    assert describe(run("firing", 42, 3, ts=None)).startswith(f"{later}.500 FIRING ")
    # A flag record stays a flag line.
    flag = {"stream": "s-1", "seq": 4, "value": 0.5, "flag": 1, "probability": 0.99,
            "direction": "up", "rule_flag": 1, "model": "seed", "ts": 1764179401.0,
            "detected_at": 1764179401.1}
    assert re.search(r"ALERT +s-1 seq 4 ", describe(json.dumps(flag).encode()))


def test_demo_shows_alerts_and_stats_then_stops_everything_on_ctrl_c():
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", "demo", "--metrics-port", "0", "--rate", "200"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("[stats]") for line in lines), 90,
                 what="a stats line")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    port = re.search(r"broker ready at 127\.0\.0\.1:(\d+)", text).group(1)
    assert "FIRING" in text
    stats = next(line for line in lines if line.startswith("[stats]"))
    assert re.search(r"events/s .* runs fired .* agreement with exact rule \d+\.\d+% .* "
                     r"p99 latency (\d+ ms|n/a) .* http://127\.0\.0\.1:\d+/metrics", stats), stats
    assert "stopped" in lines[-1]
    leftover = subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{port}"], capture_output=True)
    assert leftover.returncode == 1, "the demo's broker is still running"
