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
from detector.settings.kafka import KafkaSettings
from detector.testing.local_broker import free_port
from tests.support import (
    ROOT,
    DetectorThread,
    copy_model,
    event,
    read_topic,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker


def test_tail_prints_one_readable_line_per_alert(kafka, steps):
    # Two streams whose runs are known: "k" goes 1..6 at seq 1..6 (its first flag at seq 3),
    # "g" goes 1..5 over seq 0, 1, 2, 5, 6 (a gap in its seqs), each broken at seq 7.
    known = [event("k", t, v) for t, v in enumerate([5, 1, 2, 3, 4, 5, 6, 2])]
    known += [event("g", t, v) for t, v in zip([0, 1, 2, 5, 6, 7], [1, 2, 3, 4, 5, 1],
                                                strict=True)]
    send(kafka, kafka.values, uniform_events(streams=3, per_stream=40, seed=2) + known)
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 134, 60)
    finally:
        det.stop()
    alerts = int(sum(det.value("detector_run_alerts_total", {"status": s})
                     for s in ("firing", "resolved")))
    lines: list[str] = []
    shown = tail(kafka, kafka.alerts, True, threading.Event(), limit=alerts, out=lines.append)
    assert shown == alerts == len(lines) > 0
    random = [line for line in lines if re.search(r" s-\d ", line)]
    assert all(re.search(r"(FIRING   s-\d [↑↓] run of 3 values so far, seq (\d+)\.\.(\d+), "
                         r"last value \d\.\d{4}$|"
                         r"RESOLVED s-\d [↑↓] run of (\d+) values, seq (\d+)\.\.(\d+), "
                         r"ended by seq (\d+)$)", line) for line in random), random
    own = [line.split(" ", 1)[1] for line in lines if not re.search(r" s-\d ", line)]
    assert sorted(own) == sorted([  # streams in other partitions: no order between them
        "FIRING   k ↑ run of 3 values so far, seq 1..3, last value 3.0000",
        "RESOLVED k ↑ run of 6 values, seq 1..6, ended by seq 7",
        "FIRING   g ↑ run of 3 values so far, seq 0..2, last value 3.0000",
        "RESOLVED g ↑ run of 5 values, from its 3rd at seq 2 (seqs have gaps), ended by seq 7",
    ]), own


def test_describe_dead_letters_and_foreign_text():
    line = describe(b"{oops", [("dlq.reason", b"not_json"), ("dlq.source.topic", b"values"),
                               ("dlq.source.partition", b"1"), ("dlq.source.offset", b"9")])
    assert line.startswith("DEAD LETTER not_json from values:1@9")
    line = describe(b"m f=x", [("dlq.reason", b"bad_line"), ("dlq.source.topic", b"values"),
                               ("dlq.source.partition", b"1"), ("dlq.source.offset", b"9"),
                               ("dlq.source.line", b"3")])
    assert line == "DEAD LETTER bad_line from values:1@9 line 3: 'm f=x'"
    assert describe(b"plain text") == "plain text"
    # The reason's detail, as the detector wrote it, is shown too.
    line = describe(b'{"stream": "s-1", "seq": 1, "value": "x"}', [
        ("dlq.reason", b"bad_value"), ("dlq.error", b"value is not a finite number: 'x'"),
        ("dlq.source.topic", b"values"), ("dlq.source.partition", b"0"),
        ("dlq.source.offset", b"4")])
    assert line == ("DEAD LETTER bad_value from values:0@4: '{\"stream\": \"s-1\", \"seq\": 1, "
                    "\"value\": \"x\"}' (value is not a finite number: 'x')")


def test_describe_run_records_firing_and_resolved():
    def run(status: str, seq: int, length: int, direction: str = "up",
            ts: float | None = 1764179401.123) -> bytes:
        return json.dumps({"status": status, "stream": "s-17", "direction": direction,
                           "start_seq": 40, "seq": seq, "length": length, "value": 0.734,
                           "model": "seed", "ts": ts, "detected_at": 1764179402.5}).encode()

    clock = time.strftime("%H:%M:%S", time.localtime(1764179401))
    # start_seq is the run's first flag, its third value: the run began two events before.
    assert describe(run("firing", 40, 3)) == \
        f"{clock}.123 FIRING   s-17 ↑ run of 3 values so far, seq 38..40, last value 0.7340"
    assert describe(run("firing", 42, 5)) == \
        f"{clock}.123 FIRING   s-17 ↑ run of 5 values so far, seq 38..42, last value 0.7340"
    assert describe(run("resolved", 47, 9, "down")) == \
        f"{clock}.123 RESOLVED s-17 ↓ run of 9 values, seq 38..46, ended by seq 47"
    # A gap in the seqs: the first value's seq is not in the record, so it is not guessed.
    assert describe(run("firing", 44, 5)).endswith(
        "run of 5 values so far, up to seq 44 (its 3rd at seq 40; seqs have gaps), "
        "last value 0.7340")
    assert describe(run("resolved", 52, 9)).endswith(
        "run of 9 values, from its 3rd at seq 40 (seqs have gaps), ended by seq 52")
    # A run another model ended: no event ended it, its seq is its last value's.
    swap = {**json.loads(run("resolved", 46, 9)), "reason": "model_swap", "ts": None}
    assert describe(json.dumps(swap).encode()).endswith(
        "RESOLVED s-17 ↑ run of 9 values, seq 38..46, ended by a model swap (the next model's "
        "runs start afresh)")
    # Without an event time, the detection time.
    later = time.strftime("%H:%M:%S", time.localtime(1764179402))
    assert describe(run("firing", 42, 3, ts=None)).startswith(f"{later}.500 FIRING ")
    # A flag record stays a flag line, marked by its flag: an alert is a run record.
    flag = {"stream": "s-1", "seq": 4, "value": 0.5, "flag": 1, "probability": 0.99,
            "direction": "up", "rule_flag": 1, "model": "seed", "ts": 1764179401.0,
            "detected_at": 1764179401.1}
    assert re.search(r"FLAG 1 +s-1 seq 4 ", describe(json.dumps(flag).encode()))
    flag["flag"] = flag["rule_flag"] = 0
    assert re.search(r"flag 0 +s-1 seq 4 ", describe(json.dumps(flag).encode()))
    assert "ALERT" not in describe(json.dumps(flag).encode())
    # A pattern model's flag names the pattern (no direction, no rule to compare with).
    pattern = {**flag, "flag": 1, "pattern": "rebound_high"}
    del pattern["rule_flag"]
    assert re.search(r"FLAG 1 +s-1 seq 4 +value 0\.5000 rebound_high p=0\.990$",
                     describe(json.dumps(pattern).encode()))


def test_describe_a_pattern_run_counts_flags_in_the_singular_too():
    def run(status: str, seq: int, length: int) -> bytes:
        return json.dumps({"status": status, "stream": "p-3", "pattern": "rebound_high",
                           "start_seq": 40, "seq": seq, "length": length, "value": 2.5,
                           "model": "rebound_high", "model_version": 2, "ts": 1764179401.0,
                           "detected_at": 1764179402.5}).encode()

    assert describe(run("firing", 40, 1)).endswith(
        "FIRING   p-3 rebound_high run of 1 flag so far, seq 40..40, last value 2.5000 "
        "[rebound_high v2]")
    assert describe(run("resolved", 42, 2)).endswith(
        "RESOLVED p-3 rebound_high run of 2 flags, seq 40..41, ended by seq 42 "
        "[rebound_high v2]")


def test_tail_waits_for_its_topic_and_with_a_limit_ends_at_the_end_of_the_topic(kafka):
    """Started before the detector: the topic does not exist yet, which is said once, and
    tail waits for it. From the beginning with a limit above what the topic holds, it ends
    at the topic's end instead of waiting for more."""
    notes: list[str] = []
    lines: list[str] = []
    stop = threading.Event()
    reader = threading.Thread(target=lambda: tail(kafka, kafka.alerts, True, stop, limit=10,
                                                  out=lines.append, note=notes.append))
    reader.start()
    wait_for(lambda: notes, 30, what="the note that the topic does not exist yet")
    assert notes == [f"tail: topic {kafka.alerts} does not exist yet on "
                     f"{kafka.bootstrap_servers}; waiting for it (Ctrl-C stops)"]
    send(kafka, kafka.alerts, [(b"k", f"line {i}".encode()) for i in range(3)], partitions=2)
    reader.join(60)
    try:
        assert not reader.is_alive(), "tail did not end at the end of the topic"
    finally:
        stop.set()
    assert sorted(lines) == ["line 0", "line 1", "line 2"] and len(notes) == 1


def test_demo_shows_runs_says_how_to_see_every_record_then_stops_everything_on_ctrl_c():
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
        # The tail command the demo prints reaches its broker and shows the records it skips.
        command = re.search(r"python -m detector tail --bootstrap-servers 127\.0\.0\.1:\d+",
                            "".join(lines)).group(0)
        shown = subprocess.run([sys.executable, *command.split()[1:], "--from-beginning",
                                "--limit", "1"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert re.fullmatch(r"\S+ (FIRING|RESOLVED) +s-\d+ [↑↓] run of \d+ values.*\n",
                            shown.stdout), shown.stdout
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    port = re.search(r"is ready at 127\.0\.0\.1:(\d+)", text).group(1)
    assert f"python -m producer --bootstrap-servers 127.0.0.1:{port} " in text
    assert f"tail --bootstrap-servers 127.0.0.1:{port}" in command
    assert "runs of 5 or more values" in text and "(+N not shown) counts" in text
    firing = [line for line in lines if " FIRING " in line]
    assert firing and all("run of 5 values so far" in line for line in firing), firing
    stats = next(line for line in lines if line.startswith("[stats]"))
    assert re.search(r"events/s .* runs fired .* agreement with exact rule \d+\.\d+% .* "
                     r"p99 latency (\d+ ms|n/a) .* http://127\.0\.0\.1:\d+/metrics", stats), stats
    assert "stopped" in lines[-1]
    leftover = subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{port}"], capture_output=True)
    assert leftover.returncode == 1, "the demo's broker is still running"


def test_broker_alone_serves_the_commands_it_prints_until_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "detector", "broker", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) >= 5, 30, what="the broker's commands")
        assert f"listening on 127.0.0.1:{port}" in lines[0]
        commands = [line.split() for line in lines[2:5]]
        assert [c[:4] for c in commands] == [["python", "-m", "producer", "--bootstrap-servers"],
                                             ["python", "-m", "detector", "run"],
                                             ["python", "-m", "detector", "tail"]]
        assert all(c[-1] == f"127.0.0.1:{port}" for c in commands), commands
        sent = subprocess.run([sys.executable, *commands[0][1:], "--count", "20", "--rate", "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
        assert len(read_topic(kafka, "values", expect=20)) == 20
        # The port is taken now: a second broker says so in one line.
        taken = subprocess.run([sys.executable, "-m", "detector", "broker", "--port", str(port)],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1 and taken.stderr.splitlines() == [
            f"detector: error: cannot start the local broker on 127.0.0.1:{port}: Address "
            "already in use (another broker?)"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert lines[-1] == "broker: stopped\n"
    leftover = subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{port}"], capture_output=True)
    assert leftover.returncode == 1, "the broker is still running"


def test_the_demo_of_your_own_pattern_shows_its_runs_and_no_rule(tmp_path):
    """A pattern model (here pair's step under a card naming the pattern "climb") on a
    long-format file: the banner names the pattern, its runs fire at one flag (the card's
    default), and the stats line counts its flags instead of agreeing with the trend rule."""
    model = copy_model(tmp_path, "pair", "climb", pattern="climb")
    rows = ["sensor,value,label"] + [f"p-{t % 3},{(t // 3) % 7},0" for t in range(600)]
    (tmp_path / "long.csv").write_text("\n".join(rows) + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "detector", "demo", "--model", model, "--csv",
         str(tmp_path / "long.csv"), "--stream-column", "sensor", "--value-column", "value",
         "--rate", "200", "--duration", "30", "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert any("long.csv: 3 stream(s), 600 values" in line for line in lines), lines
    assert any("runs of the pattern 'climb' (1 or more flags in a row, as its card says)" in
               line for line in lines), lines
    firing = [line for line in lines if " FIRING " in line]
    assert firing and all(" climb run of 1 flag so far" in line for line in firing), firing
    stats = [line for line in lines if line.startswith("[stats]")]
    assert stats and all("flags of climb" in s and "agreement" not in s for s in stats), stats
