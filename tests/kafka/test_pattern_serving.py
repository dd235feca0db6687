"""A model trained on someone's labels, served through Kafka like a shipped one: the same flags
``evaluate`` gives, records that name the model and its pattern, runs of consecutive flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.model.serving import ModelStep
from detector.training.evaluation import run_streams
from detector.training.labeled import read_labeled
from tests.support import DetectorProcess, event, read_topic, send, wait_for

pytestmark = pytest.mark.broker


def runs_of(flags: list[int]) -> list[tuple[int, int]]:
    """(first seq, length) of each maximal stretch of flags 1."""
    out, start = [], None
    for seq, f in enumerate([*flags, 0]):
        if f and start is None:
            start = seq
        elif not f and start is not None:
            out.append((start, seq - start))
            start = None
    return out


@pytest.mark.slow
def test_a_pattern_model_through_kafka_flags_as_evaluate_does(kafka, dip_model):
    model, csv_path = dip_model
    data = read_labeled(csv_path, "value", "label", "stream")
    names = ["real/co2_weekly:co2_ppm", "real/sunspots_yearly:sunspots",
             "generated/zigzag-0", "generated/plateaus-1", "generated/counts-2"]
    streams = {n: data.streams[n][0] for n in names}
    # What evaluate gives: the serving step over the streams interleaved in polls.
    want, _ = run_streams(ModelStep.load(str(model)), list(streams.values()),
                          np.random.default_rng(0))
    longest = max(len(v) for v in streams.values())
    records = [event(n, t, float(v[t])) for t in range(longest)
               for n, v in streams.items() if t < len(v)]
    send(kafka, kafka.values, records)
    det = DetectorProcess(kafka, model=str(model)).start()
    try:
        wait_for(lambda: len(read_topic(kafka, kafka.flags, settle=0.5)) >= len(records),
                 120, every=1, what="every event to have an output")
        assert det.terminate() == 0
    finally:
        det.close()
    got: dict[str, dict[int, int]] = {n: {} for n in names}
    for r in read_topic(kafka, kafka.flags):
        rec = r.json()
        assert rec["pattern"] == "dip" and rec["model"] == "dip" and rec["model_version"] == 0
        assert "rule_flag" not in rec
        got[rec["stream"]][rec["seq"]] = rec["flag"]
    for n, flags in zip(names, want, strict=True):
        assert [got[n][t] for t in range(len(flags))] == flags.tolist(), n
    # Runs: each maximal stretch of flags 1 fires at its first flag and resolves after it.
    alerts = [r.json() for r in read_topic(kafka, kafka.alerts)]
    assert alerts and all(a["pattern"] == "dip" and "direction" not in a for a in alerts)
    for n, flags in zip(names, want, strict=True):
        runs = runs_of(flags.tolist())
        fired = [(a["start_seq"], a["length"]) for a in alerts
                 if a["stream"] == n and a["status"] == "firing"]
        resolved = {(a["start_seq"], a["length"]) for a in alerts
                    if a["stream"] == n and a["status"] == "resolved"}
        assert fired == [(start, 1) for start, _ in runs], n
        closed = [run for run in runs if run[0] + run[1] < len(flags)]  # the last may be open
        assert resolved == set(closed), n
    assert json.loads(model.with_suffix(".card.json").read_text())["pattern"] == "dip"
