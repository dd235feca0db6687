"""Crashes, restarts, rebalances, shutdown and broker outages, on Apache Kafka."""

import random
import subprocess
import sys
import threading
import time

import pytest

from detector.settings.kafka import KafkaSettings
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.harness import Audit, audit
from tests.support import (
    ROOT,
    DetectorProcess,
    DetectorThread,
    ScopedKafka,
    covered,
    expected_flags,
    feed,
    kill_after,
    read_topic,
    run_until_every_output,
    send,
    settings,
    uncovered,
    uniform_events,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def check_outputs(kafka: KafkaSettings, step, records, at_least: int) -> Audit:
    """Every valid event has an output; duplicates agree; flags equal an uninterrupted run."""
    result = audit(read_topic(kafka, kafka.flags, settle=2.0, timeout=60),
                   expected_flags(step, records))
    assert result.outputs >= at_least
    assert result.clean, result
    return result


def test_sigkill_at_random_moments_loses_nothing(kafka, steps):
    """The stateful ``pair`` model: its LSTM state must survive the kills, not restart."""
    records = uniform_events(streams=40, per_stream=300, seed=21)  # 12,000 events
    send(kafka, kafka.values, records)
    rng = random.Random(4)
    env = {"DETECTOR_MAX_POLL_RECORDS": "200"}
    for _ in range(3):
        kill_after(kafka, "pair", rng.uniform(300, 2500), **env)
    run_until_every_output(kafka, "pair", len(records), **env)
    check_outputs(kafka, steps("pair"), records, at_least=len(records))


def test_sigterm_finishes_commits_and_leaves(kafka, steps):
    records = uniform_events(streams=10, per_stream=200, seed=3)
    send(kafka, kafka.values, records)
    det = DetectorProcess(kafka).start()
    try:
        wait_for(lambda: (det.metric("detector_events_processed_total") or 0) >= len(records), 90)
        assert det.terminate() == 0
        assert "stopped cleanly" in det.output()
    finally:
        det.close()
    first = len(read_topic(kafka, kafka.flags, expect=len(records)))
    assert first == len(records)
    # A new member starts from the committed offsets: nothing is processed twice.
    again = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: again.pipeline.ready, 60, what="the restarted detector to be ready")
        time.sleep(1)
        assert again.value("detector_events_processed_total") == 0
        assert again.value("detector_active_streams") == 10  # state restored
    finally:
        again.stop()
    assert len(read_topic(kafka, kafka.flags)) == first



def test_sigterm_with_the_broker_gone_exits_in_bounded_time():
    """A shutdown cannot wait for a broker that is not there: it gives up on the final
    checkpoint (the next owner replays that input) and exits 0, within a bound."""
    with KafkaCluster() as node:  # its own node: this test kills it
        kafka = ScopedKafka(bootstrap_servers=node.bootstrap)
        send(kafka, kafka.values, uniform_events(streams=100, per_stream=1500, seed=8))
        det = DetectorProcess(kafka).start()
        try:
            wait_for(lambda: (det.metric("detector_events_processed_total") or 0) >= 20_000, 90,
                     every=0.05, what="the detector to be busy")
            node.kill(1)  # mid-stream: outputs in flight, never to be acknowledged
            time.sleep(2)
            started = time.monotonic()
            assert det.terminate(timeout=60) == 0
            assert time.monotonic() - started < 40
            assert "final checkpoint failed" in det.output()
        finally:
            det.close()

def test_two_detectors_split_partitions_and_hand_over(kafka, steps):
    records = uniform_events(streams=24, per_stream=300, seed=8)  # 7,200 events
    send(kafka, kafka.values, [])  # the topic, with 6 partitions
    a = DetectorProcess(kafka).start()
    b = DetectorProcess(kafka).start()
    done = threading.Event()
    feeder = threading.Thread(target=feed, args=(kafka, records, 600.0, done), daemon=True)
    try:
        wait_for(lambda: a.healthz() == 200 and b.healthz() == 200, 90, what="both ready")
        feeder.start()
        wait_for(lambda: (a.metric("detector_events_processed_total") or 0) > 200
                 and (b.metric("detector_events_processed_total") or 0) > 200, 60,
                 what="both detectors processing")
        def split() -> bool:  # the work is split: each owns some streams, together all 24
            owned = [a.metric("detector_active_streams"), b.metric("detector_active_streams")]
            return all(owned) and sum(owned) == 24

        wait_for(split, 30, what="the partitions split between the two")
        assert a.terminate() == 0  # a leaves; b takes its partitions and their state
        done.wait(60)
        wait_for(lambda: b.metric("detector_active_streams") == 24, 60, what="b owns all")
        want = expected_flags(steps("seed"), records)
        wait_for(lambda: covered(kafka, kafka.flags, want), 60,
                 what=lambda: uncovered(kafka, kafka.flags, want))
        assert b.terminate() == 0
    finally:
        a.close()
        b.close()
    check_outputs(kafka, steps("seed"), records, at_least=len(records))


def test_broker_pause_turns_not_ready_then_resumes_losing_nothing(kafka_node, kafka, steps):
    records = uniform_events(streams=12, per_stream=300, seed=13)
    send(kafka, kafka.values, [])
    det = DetectorThread(settings(kafka), steps("seed"), serve_metrics=True).start()
    done = threading.Event()
    feeder = threading.Thread(target=feed, args=(kafka, records, 400.0, done), daemon=True)
    try:
        wait_for(lambda: det.pipeline.ready, 60, what="ready")
        feeder.start()
        wait_for(lambda: det.value("detector_events_processed_total") > 500, 60)
        kafka_node.pause(1)
        try:
            wait_for(lambda: not det.pipeline.ready, 30, what="not ready while paused")
            assert det.value("detector_ready") == 0
        finally:
            kafka_node.resume(1)
        wait_for(lambda: det.pipeline.ready, 90, what="ready again after the broker is back")
        done.wait(60)
        want = expected_flags(steps("seed"), records)
        wait_for(lambda: covered(kafka, kafka.flags, want), 90,
                 what=lambda: uncovered(kafka, kafka.flags, want))
    finally:
        det.stop()
    check_outputs(kafka, steps("seed"), records, at_least=len(records))


def run_cli(*args: str, env: dict | None = None, timeout: float = 60):
    import os

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    return proc, time.monotonic() - started


def test_unreachable_broker_is_one_line_and_non_zero():
    from detector.testing.local_broker import free_port

    port = free_port()  # nothing listens there
    proc, seconds = run_cli("run", "--bootstrap-servers", f"127.0.0.1:{port}",
                            "--connect-timeout-s", "3", "--metrics-port", "0")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if "detector: error" in line]
    assert len(lines) == 1 and "cannot reach Kafka" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert seconds < 45


def test_sigkill_on_input_without_seq_gives_the_same_seq_and_flags(kafka, steps):
    """Bare numbers keyed by stream, no seq: the engine numbers each stream's events, so a
    replayed event after a crash must come out with the seq and flag its first output had."""
    rng = random.Random(9)
    records = [(f"n-{s}".encode(), f"{rng.randint(0, 9) / 2}".encode())  # repeats on purpose
               for _ in range(200) for s in range(30)]
    send(kafka, kafka.values, records)
    env = {"DETECTOR_INPUT_FORMAT": "number", "DETECTOR_STREAM_ID": "{key}",
           "DETECTOR_SEQ_PATH": "", "DETECTOR_MAX_POLL_RECORDS": "200"}
    kill_after(kafka, "pair", rng.uniform(1000, 4000), **env)
    run_until_every_output(kafka, "pair", len(records), **env)
    from detector.stream.engine import Batch, Engine

    res = Engine(steps("pair")).process(Batch.of([k.decode() for k, _ in records],
                                                 [float(v) for _, v in records]))
    want = {(k.decode(), int(res.seq[i])): int(res.flag[i]) for i, (k, _) in enumerate(records)}
    by_source: dict[tuple[int, int], set[tuple[str, int, int]]] = {}
    for r in read_topic(kafka, kafka.flags, settle=2.0, timeout=60):
        rec = r.json()
        by_source.setdefault((rec["source"]["partition"], rec["source"]["offset"]), set()).add(
            (rec["stream"], rec["seq"], rec["flag"]))
    assert len(by_source) == len(records)  # every input event has an output
    assert all(len(outs) == 1 for outs in by_source.values())  # duplicates identical, seq too
    got = {(stream, seq): flag for (stream, seq, flag), in by_source.values()}
    assert got == want
