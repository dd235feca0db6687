"""The real battery through Kafka: every output read back and scored against the exact rule,
with a SIGKILL and restart in the middle of the replay; the run alerts survive it too."""

import json
import random

import numpy as np
import pytest

from detector.stream.codec import DIRECTIONS
from detector.stream.engine import Batch, Engine
from detector.task.rule import exact_flags
from detector.testing.harness import audit
from detector.training.evaluation import battery
from tests.support import (
    expected_flags,
    kill_after,
    read_topic,
    run_until_every_output,
    send,
)

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
    send(kafka, kafka.values, records)
    kill_after(kafka, "pair", random.Random(7).uniform(5_000, 20_000),
               DETECTOR_MAX_POLL_RECORDS="500")
    run_until_every_output(kafka, "pair", len(records), timeout=180)
    outputs = read_topic(kafka, kafka.flags, settle=2.0, timeout=90)
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
    assert_same_run_lifecycle(kafka, steps("pair"), records)


def assert_same_run_lifecycle(kafka, step, records) -> None:
    """The alert topic after the kill holds what an uninterrupted run writes: each firing and
    resolution, duplicates only identical ones (never a second firing with other contents)."""
    events = [json.loads(v) for _, v in records]
    res = Engine(step).process(Batch.of([e["stream"] for e in events],
                                        [e["value"] for e in events],
                                        seq=[e["seq"] for e in events]))
    want = {(events[r.index]["stream"], r.status, r.start_seq, int(res.seq[r.index]), r.length,
             DIRECTIONS[r.direction]) for r in res.runs}
    got = [r.json() for r in read_topic(kafka, kafka.alerts, settle=2.0, timeout=60)]
    keys = [(a["stream"], a["status"], a["start_seq"], a["seq"], a["length"], a["direction"])
            for a in got]
    assert set(keys) == want and len(want) > 1000
    one_per_run = {(k[0], k[1], k[2]) for k in keys}
    assert len(one_per_run) == len(want)  # no run fired or resolved twice with other contents
