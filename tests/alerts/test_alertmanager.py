"""The Alertmanager bridge against a real Alertmanager and the real local broker.

Run records are written straight to the alert topic; Alertmanager (Debian's binary) notifies a
webhook this test runs, with one notification group per run and one-second group timings.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from kafka import TopicPartition

from detector.alerts.bridge import Bridge, alert
from detector.kafka import clients, topics
from detector.ops.metrics import BridgeMetrics
from detector.ops.server import MetricsServer
from detector.settings.bridge import BridgeSettings
from detector.settings.fields import ConfigError
from detector.stream.codec import RunAlert, decode_run
from tests.support import FAST_GROUP, DetectorProcess, read_topic, send, wait_for


def record(status: str, stream: str, start_seq: int, seq: int, length: int,
           direction: str = "up", ts: float | None = None) -> tuple[bytes, bytes]:
    """A run record as the detector writes it (key: the stream)."""
    now = time.time()
    body = {"status": status, "stream": stream, "direction": direction, "start_seq": start_seq,
            "seq": seq, "length": length, "value": 0.5 + seq / 1000, "model": "seed",
            "ts": round(now if ts is None else ts, 3), "detected_at": now}
    return stream.encode(), json.dumps(body).encode()


def firing(stream: str, start: int, **kw) -> tuple[bytes, bytes]:
    return record("firing", stream, start, start + 2, 3, **kw)


def resolved(stream: str, start: int, length: int = 5, **kw) -> tuple[bytes, bytes]:
    return record("resolved", stream, start, start + length, length, **kw)


class BridgeThread:
    """The bridge in this process, with its own metrics and /healthz endpoint."""

    def __init__(self, kafka, url: str, **overrides):
        self.settings = BridgeSettings(
            url=url, kafka=kafka, metrics_port=0, timeout_s=1.0, retry_backoff_max_s=2.0,
            group_id=kafka.name("trend-alertmanager"), alert_topic=kafka.alerts,
            **{**FAST_GROUP, **overrides})
        self.metrics = BridgeMetrics()
        self.stop_event = threading.Event()
        self.bridge = Bridge(self.settings, self.metrics, self.stop_event)
        self.server = MetricsServer(self.metrics, "127.0.0.1", 0, self.bridge.not_ready_because)
        self.thread = threading.Thread(target=self.bridge.run, daemon=True)

    def start(self) -> BridgeThread:
        self.server.start()
        self.bridge.connect()
        self.thread.start()
        return self

    def value(self, name: str, labels: dict | None = None) -> float:
        return self.metrics.value(name, labels)

    def healthz(self) -> int:
        try:
            return urllib.request.urlopen(
                f"http://127.0.0.1:{self.server.port}/healthz", timeout=2).status
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        self.server.stop()
        assert not self.thread.is_alive(), "bridge did not stop"


def statuses(webhook, run: tuple[str, int]) -> list[str]:
    """The statuses Alertmanager notified for one run, in order, repeats folded."""
    out: list[str] = []
    for a in list(webhook.received):
        same_run = (a["labels"]["stream"], int(a["labels"]["start_seq"])) == run
        if same_run and (not out or out[-1] != a["status"]):
            out.append(a["status"])
    return out


def committed(kafka, group: str) -> dict[int, int]:
    """The group's committed offsets (read without joining it)."""
    consumer = clients.consumer(kafka, group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(kafka.alerts, p)
               for p in range(topics.partition_count(kafka, kafka.alerts))]
        got = {tp.partition: consumer.committed(tp, timeout_ms=10_000) for tp in tps}
    finally:
        consumer.close(autocommit=False)
    return {p: offset for p, offset in got.items() if offset is not None}


def ends_of_partitions(kafka) -> dict[int, int]:
    ends: dict[int, int] = {}
    for r in read_topic(kafka, kafka.alerts):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


# --- pure code ----------------------------------------------------------------------------


def test_alert_for_a_run_firing_and_resolved():
    from detector.alerts.bridge import Run

    fire = decode_run(firing("s-7", 40, ts=1764179385.123)[1])
    end = decode_run(resolved("s-7", 40, length=7, ts=1764179390.5)[1])
    assert isinstance(fire, RunAlert) and isinstance(end, RunAlert)
    run = Run(partition=0, offset=0, firing=fire)
    body = alert(run, now=1764179400.0, ttl_s=300, resolved=False)
    assert body["labels"] == {"alertname": "TrendRun", "stream": "s-7", "direction": "up",
                              "model": "seed", "start_seq": "40"}
    assert body["startsAt"] == "2025-11-26T17:49:45.123Z"
    assert body["endsAt"] == "2025-11-26T17:55:00.000Z"  # now + ttl
    assert "3 values so far" in body["annotations"]["summary"]
    run.resolved = end
    assert alert(run, now=1764179400.0, ttl_s=300, resolved=False)["endsAt"] == \
        "2025-11-26T17:55:00.000Z"  # a resolution held back: still firing
    body = alert(run, now=1764179400.0, ttl_s=300, resolved=True)
    assert body["labels"]["start_seq"] == "40"
    assert body["startsAt"] == "2025-11-26T17:49:45.123Z"
    assert body["endsAt"] == "2025-11-26T17:49:50.500Z"  # the resolution's time
    assert body["annotations"]["length"] == "7"
    assert body["annotations"]["summary"] == \
        "s-7 trended up for 7 values from seq 40; seq 47 (value 0.547) ended it"


def test_a_run_another_model_ended_resolves_the_same_alert_and_says_why():
    """Resolved at a model swap under the model that opened it: the same labels (so the same
    Alertmanager alert as its firing), and the summary does not name an event that ended it."""
    from detector.alerts.bridge import Run

    fire = decode_run(firing("s-7", 40, ts=1764179385.123)[1])
    end = decode_run(json.dumps({**json.loads(resolved("s-7", 40, length=7)[1]), "seq": 46,
                                 "ts": None, "reason": "model_swap"}).encode())
    run = Run(partition=0, offset=0, firing=fire)
    run.resolved = end
    body = alert(run, now=1764179400.0, ttl_s=300, resolved=True)
    assert body["labels"] == alert(Run(partition=0, offset=0, firing=fire), 1764179400.0, 300,
                                   False)["labels"]
    assert body["annotations"]["summary"] == ("s-7 trended up for 7 values from seq 40; the "
                                              "model serving it changed after seq 46 (value "
                                              "0.547)")
    assert body["annotations"]["ended_by"] == "model_swap"


@pytest.mark.parametrize("bad", [
    b"", b"{oops", b"[]", b'{"stream": "s-1", "seq": 4, "flag": 1}',
    json.dumps({**json.loads(firing("s", 1)[1]), "status": "pending"}).encode(),
    json.dumps({**json.loads(firing("s", 1)[1]), "start_seq": -1}).encode(),
    json.dumps({**json.loads(firing("s", 1)[1]), "length": True}).encode(),
    json.dumps({**json.loads(firing("s", 1)[1]), "ts": "now"}).encode(),
    json.dumps({**json.loads(firing("s", 1)[1]), "direction": "flat"}).encode(),
])
def test_what_is_not_a_run_record(bad):
    assert decode_run(bad) is None


def test_a_run_record_without_event_time_uses_the_detection_time():
    body = {**json.loads(firing("s", 1)[1]), "ts": None, "detected_at": 12.5}
    got = decode_run(json.dumps(body).encode())
    assert got is not None and got.ts is None and got.time == 12.5


@pytest.mark.parametrize("overrides, says", [
    ({}, "--url (DETECTOR_URL) is required"),
    ({"url": "alertmanager:9093"}, "is not an http:// or https:// URL"),
    ({"url": "http://am:9093", "firing_ttl_s": 60}, "--firing-ttl-s must exceed"),
    ({"url": "http://am:9093", "timeout_s": 0}, "--timeout-s must be positive"),
    ({"url": "http://am:9093", "min_firing_s": 300}, "--min-firing-s must be below"),
    ({"url": "http://am:9093", "metrics_port": 70000}, "not a port number"),
])
def test_wrong_bridge_settings_are_one_line(overrides, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        BridgeSettings(**overrides)


# --- against Alertmanager and the broker --------------------------------------------------


def parse_time(text: str) -> float:
    """Alertmanager's RFC 3339 time (nanoseconds) in epoch seconds, to the millisecond."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


@pytest.mark.broker
def test_each_run_is_notified_firing_then_resolved_once(kafka, alertmanager):
    am, webhook = alertmanager
    t0 = round(time.time() - 60, 3)
    first = [(f"s-{i}", 10) for i in range(4)]
    second = [(f"s-{i}", 30) for i in range(4)]
    send(kafka, kafka.alerts, [firing(s, n, ts=t0 + i) for i, (s, n) in enumerate(first)]
         + [firing("s-0", 10, ts=t0)]  # a detector's replay: an identical duplicate
         + [(b"s-9", json.dumps({"stream": "s-9", "seq": 4, "flag": 1}).encode())])
    bridge = BridgeThread(kafka, am.url).start()
    try:
        wait_for(lambda: webhook.runs("firing") >= set(first), 30,
                 what=lambda: f"firing notifications, got {webhook.received}")
        assert bridge.healthz() == 200 and bridge.value("alert_bridge_open_runs") == 4

        send(kafka, kafka.alerts, [resolved(s, n, ts=t0 + 20) for s, n in first]
             + [firing(s, n) for s, n in second])
        wait_for(lambda: webhook.runs("resolved") >= set(first)
                 and webhook.runs("firing") >= set(second), 30, what="the second step")

        # The runs end; a detector's crash replays a run's whole life, and a resolution.
        send(kafka, kafka.alerts, [resolved(s, n) for s, n in second]
             + [firing("s-0", 10, ts=t0), resolved("s-0", 10, ts=t0 + 20),
                resolved("s-1", 30)])
        wait_for(lambda: webhook.runs("resolved") >= set(second), 30, what="the resolutions")
        time.sleep(3)  # three group intervals: a duplicate firing would be notified by now
    finally:
        bridge.stop()

    runs = set(first) | set(second)
    assert webhook.runs("firing") == runs == webhook.runs("resolved")
    for run in runs:
        assert statuses(webhook, run) == ["firing", "resolved"], (run, statuses(webhook, run))
    # startsAt is the firing record's time, endsAt the resolution's.
    for i, run in enumerate(first):
        got = next(a for a in webhook.received if a["status"] == "resolved"
                   and (a["labels"]["stream"], int(a["labels"]["start_seq"])) == run)
        assert abs(parse_time(got["startsAt"]) - (t0 + i)) < 0.002, got
        assert abs(parse_time(got["endsAt"]) - (t0 + 20)) < 0.002, got
        assert got["labels"]["direction"] == "up" and got["labels"]["model"] == "seed"
        assert "5 values" in got["annotations"]["summary"]
    assert bridge.value("alert_bridge_records_skipped_total", {"reason": "duplicate"}) == 4
    assert bridge.value("alert_bridge_records_skipped_total",
                        {"reason": "not_a_run_record"}) == 1
    assert bridge.value("alert_bridge_open_runs") == 0
    assert bridge.value("alert_bridge_post_failures_total", {"reason": "timeout"}) == 0
    # Every run resolved and posted: the bridge committed every partition to its end.
    assert committed(kafka, bridge.settings.group_id) == ends_of_partitions(kafka)


@pytest.mark.broker
def test_alertmanager_stopped_for_30_s_loses_nothing(kafka, alertmanager):
    """Runs that fire before the outage and end in it, fire in it and end after it, or live
    only in it (a resolution held ``min_firing_s`` after its firing): each is notified."""
    am, webhook = alertmanager
    before = [(f"s-{i}", 10) for i in range(6)]
    during = [(f"s-{i}", 40) for i in range(6)]
    within = [(f"s-{i}", 20) for i in range(6)]
    send(kafka, kafka.alerts, [firing(s, n) for s, n in before])
    bridge = BridgeThread(kafka, am.url, min_firing_s=3.0).start()
    try:
        wait_for(lambda: webhook.runs("firing") >= set(before), 30, what="the first firings")
        wait_for(lambda: bridge.value("alert_bridge_pending_alerts") == 0, 10, what="posted")

        am.pause()
        paused_at = time.monotonic()
        ends = ends_of_partitions(kafka)
        for i in range(6):  # records keep coming, a few a second
            send(kafka, kafka.alerts, [resolved(*before[i]), firing(*within[i])])
            time.sleep(0.5)
            send(kafka, kafka.alerts, [resolved(*within[i]), firing(*during[i])])
            time.sleep(0.5)
        wait_for(lambda: bridge.value("alert_bridge_post_failures_total",
                                      {"reason": "timeout"}) >= 2, 20, what="failed posts")
        assert bridge.healthz() == 503 and bridge.value("alert_bridge_ready") == 0
        assert bridge.value("alert_bridge_pending_alerts") > 0
        # Nothing committed past a record whose alert Alertmanager has not taken.
        group = bridge.settings.group_id
        assert all(committed(kafka, group).get(p, 0) <= end for p, end in ends.items())
        time.sleep(max(0.0, 30 - (time.monotonic() - paused_at)))
        assert webhook.runs("resolved") == set() and webhook.runs("firing") == set(before)

        am.resume()
        wait_for(lambda: webhook.runs("resolved") >= set(before) | set(within)
                 and webhook.runs("firing") >= set(during), 30,
                 what=lambda: f"notifications after the outage: {webhook.received}")
        assert bridge.healthz() == 200
        send(kafka, kafka.alerts, [resolved(s, n) for s, n in during])
        wait_for(lambda: webhook.runs("resolved") >= set(during), 30, what="the last ones")
    finally:
        bridge.stop()
    runs = set(before) | set(during) | set(within)
    assert webhook.runs("firing") == runs == webhook.runs("resolved")
    for run in runs:
        assert statuses(webhook, run) == ["firing", "resolved"], (run, statuses(webhook, run))
    assert committed(kafka, bridge.settings.group_id) == ends_of_partitions(kafka)


def active_alerts(am) -> dict[tuple[str, int], dict]:
    body = json.loads(urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5).read())
    return {(a["labels"]["stream"], int(a["labels"]["start_seq"])): a for a in body}


def bridge_process(kafka, url: str, **env: str) -> DetectorProcess:
    """``python -m detector alertmanager`` as a real process, configured by its environment."""
    return DetectorProcess(kafka, command="alertmanager", DETECTOR_URL=url,
                           DETECTOR_TIMEOUT_S="1", **env).start()


@pytest.mark.broker
def test_a_bridge_killed_and_started_again_keeps_open_runs_alive_and_resolves_them(
        kafka, alertmanager, tmp_path):
    am, webhook = alertmanager
    runs = [("s-1", 5), ("s-2", 7)]
    send(kafka, kafka.alerts, [firing("s-3", 1)] + [firing(s, n) for s, n in runs])
    members = {"DETECTOR_MEMBER_DIR": str(tmp_path)}
    first = bridge_process(kafka, am.url, **members)
    try:
        wait_for(lambda: webhook.runs("firing") >= set(runs) | {("s-3", 1)}, 60,
                 what=lambda: f"the firings{first.output()}")
        send(kafka, kafka.alerts, [resolved("s-3", 1)])
        wait_for(lambda: webhook.runs("resolved") == {("s-3", 1)}, 30, what="a resolution")
        time.sleep(1.5)  # a commit interval: the commit stops at the open runs' firings
        assert first.healthz() == 200
        first.kill()
    finally:
        first.close()
    ends_before = {run: parse_time(a["endsAt"]) for run, a in active_alerts(am).items()}
    assert set(ends_before) == set(runs)

    # A new bridge in the same group reads the open runs' firing records again and re-posts
    # them, which moves their endsAt further out; then it resolves them.
    second = bridge_process(kafka, am.url, DETECTOR_RESEND_INTERVAL_S="1",
                            DETECTOR_FIRING_TTL_S="600", **members)
    try:
        wait_for(lambda: second.metric("alert_bridge_open_runs") == len(runs), 60,
                 what=lambda: f"the open runs rebuilt{second.output()}")
        # it removed the killed bridge from the group rather than wait out its session
        assert f"removed 1 dead member(s) of group {kafka.name('trend-alertmanager')}" in \
            second.output()
        wait_for(lambda: all(parse_time(a["endsAt"]) > ends_before[run] + 200
                             for run, a in active_alerts(am).items()), 15,
                 what="re-posts from the new bridge")
        send(kafka, kafka.alerts, [resolved(s, n) for s, n in runs])
        wait_for(lambda: webhook.runs("resolved") >= set(runs), 30, what="the resolutions")
        wait_for(lambda: not active_alerts(am), 10, what="no alert left firing")
        assert second.terminate(30) == 0
    finally:
        second.close()
    assert webhook.runs("firing") == set(runs) | {("s-3", 1)} == webhook.runs("resolved")
    for run in webhook.runs("firing"):
        assert statuses(webhook, run) == ["firing", "resolved"], (run, statuses(webhook, run))
    assert committed(kafka, kafka.name("trend-alertmanager")) == ends_of_partitions(kafka)
