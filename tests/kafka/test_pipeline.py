"""The detector against the real local broker: flags, alerts, metrics, health."""

import json
import urllib.request

import pytest

from detector.task.rule import exact_flags
from tests.support import (
    DetectorProcess,
    DetectorThread,
    read_topic,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker


def test_end_to_end_flags_alerts_and_metrics(kafka, steps):
    records = uniform_events(streams=20, per_stream=250, seed=11)  # 5,000 events
    send(kafka, kafka.values, records)
    det = DetectorThread(settings(kafka), steps("seed"), serve_metrics=True).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 5000, 90,
                 what="5,000 events processed")
        wait_for(lambda: det.pipeline.ready, 10, what="a checkpoint")
        lag = det.metrics.registry.get_sample_value
        wait_for(lambda: all(lag("detector_consumer_lag", {"partition": str(p)}) == 0
                             for p in range(6)), 10, what="a checkpoint after the last event")
        url = f"http://127.0.0.1:{det.server.port}"
        assert urllib.request.urlopen(url + "/healthz").status == 200
        text = urllib.request.urlopen(url + "/metrics").read().decode()
        assert "detector_events_processed_total 5000.0" in text
        assert 'detector_consumer_lag{partition="0"} 0.0' in text
        assert det.value("detector_active_streams") == 20
    finally:
        det.stop()
    outputs = [r.json() for r in read_topic(kafka, kafka.flags, expect=5000)]
    alerts = read_topic(kafka, kafka.alerts)
    assert len(outputs) == 5000
    by_stream: dict[str, list[dict]] = {}
    for rec in outputs:
        by_stream.setdefault(rec["stream"], []).append(rec)
    agree = 0
    for recs in by_stream.values():
        recs.sort(key=lambda r: r["seq"])
        assert [r["seq"] for r in recs] == list(range(250))
        truth = exact_flags([r["value"] for r in recs])
        assert [r["rule_flag"] for r in recs] == truth.tolist()
        assert recs[0]["flag"] == recs[1]["flag"] == 0
        agree += sum(int(r["flag"] == t) for r, t in zip(recs, truth, strict=True))
    assert agree / 5000 >= 0.995
    flagged = sum(r["flag"] for r in outputs)
    want = sorted(rec for recs in by_stream.values() for rec in run_lifecycles(recs))
    got = sorted((a.json()["stream"], a.json()["seq"], a.json()["status"], a.json()["direction"],
                  a.json()["start_seq"], a.json()["length"]) for a in alerts)
    assert got == want and len(got) > 100
    assert all(a.key == a.json()["stream"].encode() for a in alerts)
    sample = outputs[0]
    assert set(sample) == {"stream", "seq", "value", "flag", "probability", "direction",
                           "rule_flag", "model", "model_version", "source", "ts", "detected_at"}
    assert sample["model"] == "seed" and sample["direction"] in ("up", "down", "flat")
    assert sample["model_version"] == 0  # a shipped model, not from the registry
    assert set(alerts[0].json()) == {"status", "stream", "direction", "start_seq", "seq",
                                     "length", "value", "model", "model_version", "ts",
                                     "detected_at"}
    assert det.value("detector_run_alerts_total", {"status": "firing"}) == sum(
        1 for w in want if w[2] == "firing")
    assert det.value("detector_flags_total", {"flag": "1"}) == flagged
    assert det.value("detector_rule_disagreements_total") == 5000 - agree
    assert det.value("detector_end_to_end_latency_seconds_count") == 5000
    assert det.value("detector_batch_size_sum") == 5000
    assert det.value("detector_active_streams") == 0  # partitions given back on the way out


def run_lifecycles(recs: list[dict], min_length: int = 3) -> list[tuple]:
    """The alert records one stream's flag records call for, written plainly as a reference:
    a run starts at a flag 1, goes on while flags stay 1 in its direction, fires at
    ``min_length`` values and is resolved at the first event that does not continue it."""
    out, run = [], None  # run: [direction, start_seq, length, fired]
    for r in recs:
        moving = r["flag"] == 1 and r["direction"] != "flat"
        if run and moving and r["direction"] == run[0]:
            run[2] += 1
        else:
            if run and run[3]:
                out.append((r["stream"], r["seq"], "resolved", run[0], run[1], run[2]))
            run = [r["direction"], r["seq"], 3, False] if moving else None
        if run and not run[3] and run[2] >= min_length:
            run[3] = True
            out.append((r["stream"], r["seq"], "firing", run[0], run[1], run[2]))
    return out


def test_healthz_is_503_before_the_first_checkpoint(kafka, steps):
    det = DetectorThread(settings(kafka, checkpoint_interval_ms=60_000), steps("seed"),
                         serve_metrics=True)
    det.server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{det.server.port}/healthz")
        assert err.value.code == 503
        body = urllib.request.urlopen(f"http://127.0.0.1:{det.server.port}/metrics").read()
        assert b"detector_ready 0.0" in body
    finally:
        det.server.stop()


def test_output_json_is_what_the_issue_says(kafka, steps):
    send(kafka, kafka.values,
         [(b"solo", json.dumps({"stream": "solo", "seq": s, "value": v}).encode())
          for s, v in enumerate([0.1, 0.2, 0.3, 0.5])])
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 4, 60)
    finally:
        det.stop()
    recs = sorted((r.json() for r in read_topic(kafka, kafka.flags, expect=4)),
                  key=lambda r: r["seq"])
    assert [r["rule_flag"] for r in recs] == [0, 0, 1, 1]
    assert [r["direction"] for r in recs] == ["flat", "up", "up", "up"]
    assert recs[2]["ts"] is None  # no ts in the input: no latency either
    assert det.value("detector_end_to_end_latency_seconds_count") == 0


@pytest.mark.slow
def test_four_detectors_started_at_once_on_fresh_topics_all_come_up(kafka):
    """They race to create the same topics: one creates each, the others find it (a topic
    just created may show no partitions for a moment: described again, not an exit)."""
    dets = [DetectorProcess(kafka) for _ in range(4)]
    for det in dets:
        det.start()
    try:
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 120, every=0.5,
                 what=lambda: "four ready: " + " | ".join(
                     d.output()[-300:] for d in dets if d.proc.poll() is not None))
        assert all(d.proc.poll() is None for d in dets)
        send(kafka, kafka.values, uniform_events(streams=12, per_stream=20))
        wait_for(lambda: sum(d.processed() for d in dets) >= 240, 60, what="the events")
    finally:
        for det in dets:
            det.close()
