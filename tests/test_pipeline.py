"""The detector against the real local broker: flags, alerts, metrics, health."""

import json
import urllib.request

import pytest

from detector.rule import exact_flags
from tests.support import DetectorThread, read_topic, send, settings, uniform_events, wait_for

pytestmark = pytest.mark.broker


def test_end_to_end_flags_alerts_and_metrics(kafka, steps):
    records = uniform_events(streams=20, per_stream=250, seed=11)  # 5,000 events
    send(kafka, "values", records)
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
    outputs = [r.json() for r in read_topic(kafka, "trend-flags", expect=5000)]
    alerts = read_topic(kafka, "trend-alerts")
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
    flagged = sorted((r["stream"], r["seq"]) for r in outputs if r["flag"] == 1)
    assert sorted((a.json()["stream"], a.json()["seq"]) for a in alerts) == flagged
    assert all(a.key == a.json()["stream"].encode() for a in alerts)
    sample = outputs[0]
    assert set(sample) == {"stream", "seq", "value", "flag", "probability", "direction",
                           "rule_flag", "model", "source", "ts", "detected_at"}
    assert sample["model"] == "seed" and sample["direction"] in ("up", "down")
    assert det.value("detector_alerts_total") == len(flagged)
    assert det.value("detector_flags_total", {"flag": "1"}) == len(flagged)
    assert det.value("detector_rule_disagreements_total") == 5000 - agree
    assert det.value("detector_end_to_end_latency_seconds_count") == 5000
    assert det.value("detector_batch_size_sum") == 5000
    assert det.value("detector_active_streams") == 0  # partitions given back on the way out


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
    send(kafka, "values", [(b"solo", json.dumps({"stream": "solo", "seq": s, "value": v}).encode())
                           for s, v in enumerate([0.1, 0.2, 0.3, 0.5])])
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 4, 60)
    finally:
        det.stop()
    recs = sorted((r.json() for r in read_topic(kafka, "trend-flags", expect=4)),
                  key=lambda r: r["seq"])
    assert [r["rule_flag"] for r in recs] == [0, 0, 1, 1]
    assert [r["direction"] for r in recs] == ["up", "up", "up", "up"]
    assert recs[2]["ts"] is None  # no ts in the input: no latency either
    assert det.value("detector_end_to_end_latency_seconds_count") == 0
