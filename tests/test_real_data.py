"""The real battery through Kafka: every output read back and scored against the exact rule,
with a SIGKILL and restart in the middle of the replay."""

import json
import random

import numpy as np
import pytest

from detector.evaluation import battery
from detector.harness import audit
from detector.rule import exact_flags
from tests.support import DetectorProcess, expected_flags, read_topic, send, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def replay_records(streams: dict[str, np.ndarray]) -> list[tuple[bytes, bytes]]:
    """Each column a stream, seq by row, values as their shortest repr (exact), interleaved."""
    per = [[(name.encode(), json.dumps({"stream": name, "seq": i, "value": float(v)}).encode())
            for i, v in enumerate(values)] for name, values in streams.items()]
    longest = max(map(len, per))
    return [recs[i] for i in range(longest) for recs in per if i < len(recs)]


def test_real_series_through_the_pipeline_survive_a_kill(kafka, steps):
    streams = battery()["real"]
    records = replay_records(streams)
    send(kafka, "values", records)
    det = DetectorProcess(kafka, model="pair", DETECTOR_MAX_POLL_RECORDS="500").start()
    try:
        target = random.Random(7).uniform(5_000, 20_000)
        wait_for(lambda: (det.metric("detector_events_processed_total") or 0) >= target, 120,
                 every=0.02, what="progress before the kill")
        det.kill()
    finally:
        det.close()
    det = DetectorProcess(kafka, model="pair").start()
    try:
        wait_for(lambda: len(read_topic(kafka, "trend-flags", settle=0.5)) >= len(records), 180,
                 every=2, what="every event to have an output")
        assert det.terminate() == 0
    finally:
        det.close()
    outputs = read_topic(kafka, "trend-flags", settle=2.0, timeout=90)
    result = audit(outputs, expected_flags(steps("pair"), records))
    assert result.clean and result.expected == len(records), result
    first = {}
    for r in outputs:
        rec = r.json()
        first.setdefault((rec["stream"], rec["seq"]), rec["flag"])
    wrong = {}
    for name, values in streams.items():
        truth = exact_flags(values)
        wrong[name] = sum(int(first[(name, i)] != t) for i, t in enumerate(truth))
    accuracy = 1 - sum(wrong.values()) / len(records)
    assert accuracy >= 0.9999, (accuracy, {k: v for k, v in wrong.items() if v})
    assert all(w / len(streams[n]) <= 0.001 for n, w in wrong.items()), wrong
