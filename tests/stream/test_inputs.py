"""Input as real producers send it: the mapping's shapes, producer restarts and CSV replays.

Unit tests of the mapping need no broker. The end-to-end tests run a detector against the real
local broker, read the input topic back and check every record: each has its outputs (with the
exact rule's flags and the model's flags of an uninterrupted run) or its dead letter.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from detector.errors import UsageError
from detector.settings.detector import DetectorSettings
from detector.settings.fields import ConfigError, add_options, build
from detector.settings.input import InputSettings
from detector.settings.producer import ProducerSettings
from detector.stream.codec import REASONS, BadInput, Event, encode_event
from detector.stream.csv_columns import json_number, read_columns
from detector.stream.mapping import InputMapping, decode_event
from detector.task.rule import exact_flags
from producer.csv_source import CsvSource, LongCsvSource
from producer.publish import open_source
from tests.support import (
    ROOT,
    DetectorThread,
    read_topic,
    send,
    settings,
    wait_for,
)

#: The engine numbers the events of an input without seq and tells a restarted producer apart
#: by its epoch: until engine.py has both, these cannot pass here (the integrator's change).

TELEGRAF = InputSettings(stream_id="{name}.{tags.host}.{tags.cpu}.{field}",
                         value_path="fields.*", seq_path="", time_path="timestamp")


def telegraf(host: str, cpu: str, idle: float, user: float, t: int) -> bytes:
    return json.dumps({"name": "cpu", "tags": {"host": host, "cpu": cpu},
                       "fields": {"usage_idle": idle, "usage_user": user, "note": "x"},
                       "timestamp": t}).encode()


# --- the mapping, no broker ------------------------------------------------------------------


def test_telegraf_record_is_one_event_per_numeric_field():
    mapping = InputMapping(TELEGRAF)
    got = mapping.decode(b"web-1", telegraf("web-1", "cpu0", 97.5, 1.2, 1764179385))
    assert got == [Event("cpu.web-1.cpu0.usage_idle", -1, 97.5, 1764179385.0),
                   Event("cpu.web-1.cpu0.usage_user", -1, 1.2, 1764179385.0)]
    assert mapping.skipped == 1  # "note" is text
    missing = mapping.decode(None, json.dumps({"name": "cpu", "tags": {"host": "h"},
                                               "fields": {"a": 1}}).encode())
    assert missing == BadInput("missing_field",
                               "missing field(s): tags.cpu (--stream-id "
                               "{name}.{tags.host}.{tags.cpu}.{field})")
    text_only = mapping.decode(None, json.dumps({"name": "cpu", "tags": {"host": "h", "cpu": "c"},
                                                 "fields": {"a": "up"}}).encode())
    assert text_only.reason == "bad_value" and "--value-path fields.*" in text_only.detail
    not_string = mapping.decode(None, json.dumps({"name": "cpu", "tags": {"host": 7, "cpu": "c"},
                                                  "fields": {"a": 1}}).encode())
    assert not_string.reason == "bad_stream" and "tags.host is not a string" in not_string.detail


@fuzz_settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.one_of(st.text(max_size=300), st.integers(), st.none()),
       host=st.one_of(st.text(max_size=40), st.booleans()),
       fields=st.dictionaries(st.text(max_size=300), st.one_of(
           st.floats(), st.integers(-(2**70), 2**70), st.text(max_size=5), st.booleans(),
           st.none()), max_size=5),
       timestamp=st.one_of(st.floats(), st.integers(), st.text(max_size=30)))
def test_telegraf_mapping_classifies_every_record(name, host, fields, timestamp):
    body = {"name": name, "tags": {"host": host, "cpu": "c"}, "fields": fields,
            "timestamp": timestamp}
    raw = json.dumps(body).encode("utf-8", "surrogatepass")
    got = InputMapping(TELEGRAF).decode(b"k", raw)
    if isinstance(got, BadInput):
        assert got.reason in REASONS and got.detail
        return
    assert got and len({e.stream for e in got}) == len(got)
    for e in got:
        assert 0 < len(e.stream) <= 256 and e.stream.encode()
        assert math.isfinite(e.value) and e.seq == -1 and math.isfinite(e.ts)


def test_bare_numbers_keyed_by_stream():
    mapping = InputMapping(InputSettings(input_format="number"))
    assert mapping.decode(b"sensor-1", b" 23.5\n") == [Event("sensor-1", -1, 23.5, None)]
    assert mapping.decode(b"sensor-1", b"-7") == [Event("sensor-1", -1, -7.0, None)]
    for value in (b"abc", b"NaN", b"1e999", b'"23.5"', b"[1]", b"true", b""):
        assert mapping.decode(b"sensor-1", value).reason == "bad_value", value
    assert mapping.decode(None, b"1").reason == "bad_stream"
    assert mapping.decode(b"\xff", b"1").reason == "bad_stream"
    assert mapping.decode(b"k", b"\xff").reason == "not_utf8"
    device = InputMapping(InputSettings(stream_id="{device}"))
    lone = device.decode(None, b'{"device":"\\ud800","seq":0,"value":1}')
    assert lone.reason == "bad_stream" and "not valid Unicode" in lone.detail
    assert mapping.decode(b"x" * 257, b"1").reason == "bad_stream"
    prefixed = InputMapping(InputSettings(input_format="number", stream_id="plant/{key}"))
    assert prefixed.decode(b"p1", b"3")[0].stream == "plant/p1"


def test_custom_paths_and_times():
    mapping = InputMapping(InputSettings(stream_id="dev-{device}", value_path="reading.celsius",
                                         seq_path="n", time_path="at", time_unit="ms",
                                         epoch_path=""))
    body = {"device": "a", "n": 4, "reading": {"celsius": 21.5}, "at": 1764179385123,
            "epoch": "ignored"}
    assert mapping.decode(None, json.dumps(body).encode()) == [
        Event("dev-a", 4, 21.5, 1764179385.123)]
    iso = mapping.decode(None, json.dumps(body | {"at": "2025-11-26T17:49:45.5Z"}).encode())
    assert iso[0].ts == datetime(2025, 11, 26, 17, 49, 45, 500000, UTC).timestamp()
    naive = mapping.decode(None, json.dumps(body | {"at": "2025-11-26T17:49:45"}).encode())
    assert naive[0].ts == datetime(2025, 11, 26, 17, 49, 45, tzinfo=UTC).timestamp()
    for at in ("yesterday", True, [1], "1764179385"):
        assert mapping.decode(None, json.dumps(body | {"at": at}).encode()).reason == "bad_ts"
    gone = mapping.decode(None, json.dumps({"device": "a", "n": 1}).encode())
    assert gone == BadInput("missing_field",
                            "missing field(s): reading.celsius (--value-path)")
    assert mapping.decode(None, json.dumps(body | {"n": -1}).encode()).reason == "bad_seq"
    units = {"s": 1764179385.0, "ms": 1764179.385, "us": 1764.179385, "ns": 1.764179385}
    for unit, want in units.items():
        m = InputMapping(InputSettings(time_unit=unit))
        got = m.decode(b"s", b'{"stream":"s","seq":0,"value":1,"ts":1764179385}')
        assert got[0].ts == pytest.approx(want, rel=1e-12)


def test_epoch_is_read_by_default_and_checked():
    mapping = InputMapping(InputSettings())
    body = {"stream": "s", "seq": 0, "value": 0.5}
    assert mapping.decode(b"s", json.dumps(body | {"epoch": 17}).encode())[0].epoch == 17
    assert mapping.decode(b"s", json.dumps(body).encode())[0].epoch == -1
    for epoch in (-1, 1.5, "7", True, 2**63):
        got = mapping.decode(b"s", json.dumps(body | {"epoch": epoch}).encode())
        assert got.reason == "bad_epoch" and "--epoch-path epoch" in got.detail
    assert "bad_epoch" in REASONS
    assert decode_event(b"s", encode_event("s", 1, 0.5, None, 9)) == Event("s", 1, 0.5, None, 9)


def test_the_random_producer_writes_its_start_as_epoch():
    before = int(time.time() * 1000)
    source = open_source(ProducerSettings(streams=2, seed=1))
    source.next_round()
    event = decode_event(b"s-1", source.record(1, 5.0))
    assert event.stream == "s-1" and event.seq == 0 and event.ts == 5.0
    assert before <= event.epoch <= int(time.time() * 1000)
    assert decode_event(b"s-1", source.record(1, 5.0)).epoch == event.epoch  # one per start


@pytest.mark.parametrize(("overrides", "says"), [
    ({"stream_id": "{name"}, "--stream-id '{name'"),
    ({"stream_id": "{}"}, "a placeholder is"),
    ({"stream_id": "{a!r}"}, "a placeholder is"),
    ({"stream_id": "{name}.{field}"}, "{field} and a --value-path OBJECT.* go together"),
    ({"value_path": "fields.*"}, "{field} and a --value-path OBJECT.* go together"),
    ({"input_format": "number", "stream_id": "{name}"}, "may use {key} only"),
    ({"value_path": "a..b"}, "--value-path 'a..b'"),
    ({"seq_path": "x.*"}, "--seq-path 'x.*'"),
    ({"stream_id": ""}, "--stream-id is empty"),
])
def test_settings_that_cannot_work_are_one_line_errors(overrides, says):
    with pytest.raises(ConfigError) as info:
        InputSettings(**overrides)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_a_wrong_mapping_in_one_line():
    run = subprocess.run([sys.executable, "-m", "detector", "run", "--stream-id", "{tags.host",
                          "--bootstrap-servers", "127.0.0.1:1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "detector: error: --stream-id '{tags.host': expected '}' before end of string"]


def test_empty_paths_come_from_flags_and_environment():
    import argparse

    p = argparse.ArgumentParser()
    add_options(p, DetectorSettings, "DETECTOR")
    env = {"DETECTOR_SEQ_PATH": "", "DETECTOR_TIME_UNIT": "ms", "DETECTOR_STATE_TOPIC": ""}
    s = build(DetectorSettings, p.parse_args(["--epoch-path", ""]), "DETECTOR", env)
    assert (s.mapping.seq_path, s.mapping.epoch_path, s.mapping.time_unit) == ("", "", "ms")
    assert s.state_topic == "trend-detector.state"  # an empty variable is still "unset" there
    assert build(DetectorSettings, p.parse_args([]), "DETECTOR", {}).mapping.seq_path == "seq"
    p = argparse.ArgumentParser()
    add_options(p, ProducerSettings, "PRODUCER")
    cli = build(ProducerSettings, p.parse_args(["--from-csv", "f.csv", "--column", "a,b",
                                                "--column", "c"]), "PRODUCER", {})
    assert cli.column == ("a,b", "c")  # a flag is one column, whatever its name holds
    env = build(ProducerSettings, p.parse_args([]), "PRODUCER",
                {"PRODUCER_FROM_CSV": "f.csv", "PRODUCER_COLUMN": "a, b"})
    assert (env.from_csv, env.column, env.stream_prefix) == ("f.csv", ("a", "b"), None)


# --- CSV replay, no broker --------------------------------------------------------------------


def test_csv_cells_are_sent_as_written(tmp_path):
    assert [json_number(c) for c in ("23.50", " 7 ", "-0", "1e-9", "+5", ".5", "1_0")] == [
        "23.50", "7", "-0", "1e-9", "5.0", "0.5", "10.0"]
    assert [json_number(c) for c in ("nan", "inf", "1e999", "x", "1,5")] == [None] * 5
    f = tmp_path / "d.csv"
    f.write_text("t,a,b\n0,1,2.50\n1,,3\n2,1,3\n")
    source = CsvSource(str(f), ("a", "b"))
    assert source.ids == ["a", "b"] and source.events == 5
    rounds = []
    while (streams := source.next_round()) is not None:
        rounds.append([source.record(i, 1.0) for i in streams])
    assert [[(r["stream"], r["seq"], r["value"]) for r in map(json.loads, row)]
            for row in rounds] == [[("a", 0, 1), ("b", 0, 2.5)], [("b", 1, 3)],
                                   [("a", 2, 1), ("b", 2, 3)]]
    assert b'"value":2.50,' in rounds[0][1]  # the cell's text, not 2.5
    assert CsvSource(str(f), ("b",), "x-").ids == ["x-b"]


def test_a_long_format_csv_is_replayed_a_row_an_event_each_stream_counting_its_own(tmp_path):
    """The file train and evaluate read: each row one event of its stream, in file order;
    seq counts each stream's rows; the label is not sent."""
    f = tmp_path / "long.csv"
    f.write_text("sensor,value,label\np-1,1.50,0\np-2,7,0\n\np-1,2,1\np-1,3,0\np-2,6,1\n")
    source = LongCsvSource(str(f), "value", "sensor", "x-")
    assert source.ids == ["x-p-1", "x-p-2"] and source.events == 5 and source.skipped == []
    sent = []
    while (streams := source.next_round()) is not None:
        sent += [json.loads(source.record(i, 1.0)) for i in streams]
    assert [(r["stream"], r["seq"], r["value"]) for r in sent] == [
        ("x-p-1", 0, 1.5), ("x-p-2", 0, 7), ("x-p-1", 1, 2), ("x-p-1", 2, 3), ("x-p-2", 1, 6)]
    assert all("label" not in r for r in sent)
    one = LongCsvSource(str(f), "value", None)  # no stream column: one stream
    assert one.ids == ["value"] and one.events == 5
    for text, says in (("sensor,value\np-1,x\n", "row 2, column 'value': 'x' is not a finite"),
                       ("sensor,value\n,1\n", "row 2, column 'sensor': no stream id"),
                       ("sensor,reading\np-1,1\n", "no column 'value'")):
        f.write_text(text)
        with pytest.raises(UsageError, match=re.escape(says)):
            LongCsvSource(str(f), "value", "sensor")


def test_a_wide_replay_without_columns_sends_every_numeric_one_and_says_what_it_leaves(tmp_path):
    """As evaluate reads it: every numeric column; the others named. A column of text ids
    next to the values is said to look like the long format."""
    f = tmp_path / "wide.csv"
    f.write_text("when,a,b,note\n2024-01-01,1,2,x\n2024-01-02,2,3,y\n")
    notes: list[str] = []
    source = open_source(ProducerSettings(from_csv=str(f)), note=notes.append)
    assert source.ids == ["a", "b"]
    assert notes == ["producer: column 'when' skipped: data row 1 has '2024-01-01'",
                     "producer: column 'note' skipped: data row 1 has 'x'"]
    f.write_text("sensor,value,label\n" + "".join(f"p-{i % 3},{i},0\n" for i in range(12)))
    notes.clear()
    source = open_source(ProducerSettings(from_csv=str(f), column=("value",)),
                         note=notes.append)
    assert source.ids == ["value"] and notes == [
        "producer: note: column 'sensor' looks like stream ids; each column is replayed as "
        "one stream (value). For one row an event: --stream-column sensor --value-column NAME"]


@pytest.mark.parametrize(("settings", "says"), [
    ({"value_column": "v"}, "--value-column needs --from-csv FILE"),
    ({"from_csv": "f.csv", "stream_column": "s"}, "--stream-column needs --value-column"),
    ({"from_csv": "f.csv", "column": ("a",), "value_column": "v"}, "two layouts of a CSV"),
    ({"from_csv": "f.csv", "value_column": "v", "stream_column": "v"}, "a column has one role"),
])
def test_producer_csv_options_that_do_not_fit_are_refused(settings, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        ProducerSettings(**settings)


@pytest.mark.parametrize(("text", "columns", "says"), [
    ("t,a\n0,1\n", ("z",), "no column 'z' (columns: t, a)"),
    ("t,a\n0,1\n1,high\n", ("a",), "column 'a' is not numeric: data row 2 has 'high'"),
    ("t,a\n0,\n", ("a",), "column 'a' has no values"),
    ("", ("a",), "is empty"),
])
def test_csv_column_errors_are_one_line_before_anything_is_sent(tmp_path, text, columns, says):
    f = tmp_path / "d.csv"
    f.write_text(text)
    with pytest.raises(UsageError) as info:
        read_columns(str(f), columns)
    assert says in str(info.value)
    args = [arg for c in columns for arg in ("--column", c)]
    # An unreachable broker: the CSV is checked before any connection is tried.
    run = subprocess.run([sys.executable, "-m", "producer", "--from-csv", str(f), *args,
                          "--bootstrap-servers", "127.0.0.1:1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("producer: error: ")


# --- end to end, against the real local broker ----------------------------------------------


def expectation(step, mapping: InputSettings, inputs) -> dict[tuple[str, int, int], tuple]:
    """What an uninterrupted detector writes for the input topic's records, read back:
    ``(stream, partition, offset) -> (seq, value, model flag, exact rule flag)``.

    Each stream's events in offset order (a stream lives in one partition); a stream without
    seq counts its own events from 0. Every event is new (a restarted producer's too), so the
    engine is given each stream's arrival count as its seq.
    """
    from detector.stream.engine import Batch, Engine

    decoder = InputMapping(mapping)
    events: list[tuple[Event, int, int]] = []
    for r in sorted(inputs, key=lambda r: (r.partition, r.offset)):
        got = decoder.decode(r.key, r.value)
        if not isinstance(got, BadInput):
            events += [(e, r.partition, r.offset) for e in got]
    count: dict[str, int] = {}
    arrival = []
    for e, _, _ in events:
        arrival.append(count.get(e.stream, 0))
        count[e.stream] = arrival[-1] + 1
    res = Engine(step).process(Batch.of([e.stream for e, _, _ in events],
                                        np.array([e.value for e, _, _ in events]),
                                        seq=np.array(arrival, np.int64)))
    assert res.processed.all()
    by_stream: dict[str, list[int]] = {}
    for i, (e, _, _) in enumerate(events):
        by_stream.setdefault(e.stream, []).append(i)
    rule = np.zeros(len(events), np.int64)
    for idx in by_stream.values():
        rule[idx] = exact_flags(np.array([events[i][0].value for i in idx]))
    return {(e.stream, p, o): (e.seq if e.seq >= 0 else arrival[i], e.value, int(res.flag[i]),
                               int(rule[i]))
            for i, (e, p, o) in enumerate(events)}


def check_every_record(kafka, step, mapping: InputSettings) -> tuple[list[dict], list]:
    """Every input record has its outputs, with exact flags, or its dead letter; returns the
    outputs and the dead letters."""
    inputs = read_topic(kafka, kafka.values)
    want = expectation(step, mapping, inputs)
    outputs = [r.json() for r in read_topic(kafka, kafka.flags, expect=len(want))]
    got = {(o["stream"], o["source"]["partition"], o["source"]["offset"]):
           (o["seq"], o["value"], o["flag"], o["rule_flag"]) for o in outputs}
    assert len(got) == len(outputs)  # no duplicates in an uninterrupted run
    assert got == want
    dlq = read_topic(kafka, kafka.dlq)
    sources = [dict(r.headers) for r in dlq]
    dead = {(int(h["dlq.source.partition"]), int(h["dlq.source.offset"])) for h in sources}
    answered = {(p, o) for _, p, o in got} | dead
    assert answered == {(r.partition, r.offset) for r in inputs}
    assert not dead & {(p, o) for _, p, o in got}
    return outputs, dlq


def run_detector(kafka, step, mapping: InputSettings, records) -> DetectorThread:
    send(kafka, kafka.values, records)
    det = DetectorThread(settings(kafka, mapping=mapping), step).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= len(records), 90,
                 what="every record consumed")
    finally:
        det.stop()
    return det


def reasons(dlq) -> list[str]:
    return sorted(dict(r.headers)["dlq.reason"].decode() for r in dlq)


@pytest.mark.broker
def test_telegraf_json_end_to_end(kafka, steps):
    rng = np.random.default_rng(3)
    records = []
    for t in range(25):
        for host in ("web-1", "web-2"):
            for cpu in ("cpu0", "cpu1"):
                idle, user = (float(v) for v in np.round(rng.random(2) * 100, 1))
                # Telegraf's routing_tag = "host": a host's streams share a partition.
                records.append((host.encode(), telegraf(host, cpu, idle, user, 1764179385 + t)))
    records.append((b"web-1", b'{"name":"cpu","tags":{"host":"web-1"},"fields":{"a":1}}'))
    records.append((b"web-1", b'{"name":"cpu","tags":{"host":"web-1","cpu":"c"},'
                              b'"fields":{"a":"x"},"timestamp":1}'))
    det = run_detector(kafka, steps("seed"), TELEGRAF, records)
    outputs, dlq = check_every_record(kafka, steps("seed"), TELEGRAF)
    assert len(outputs) == 25 * 4 * 2 and reasons(dlq) == ["bad_value", "missing_field"]
    assert {o["stream"] for o in outputs} == {
        f"cpu.{h}.{c}.{f}" for h in ("web-1", "web-2") for c in ("cpu0", "cpu1")
        for f in ("usage_idle", "usage_user")}
    assert sorted({o["seq"] for o in outputs}) == list(range(25))
    assert {o["ts"] for o in outputs} == {1764179385.0 + t for t in range(25)}
    assert det.value("detector_skipped_fields_total") == 25 * 4 + 1
    detail = [dict(r.headers)["dlq.error"].decode() for r in dlq]
    assert any("tags.cpu (--stream-id {name}.{tags.host}.{tags.cpu}.{field})" in d
               for d in detail)


@pytest.mark.broker
def test_bare_numbers_end_to_end(kafka, steps):
    rng = np.random.default_rng(4)
    records = [(f"sensor-{i % 3}".encode(), f"{rng.random() * 40 - 10:.3f}".encode())
               for i in range(90)]
    records += [(b"sensor-0", b"warm"), (None, b"1.5")]
    mapping = InputSettings(input_format="number")
    run_detector(kafka, steps("seed"), mapping, records)
    outputs, dlq = check_every_record(kafka, steps("seed"), mapping)
    assert len(outputs) == 90 and reasons(dlq) == ["bad_stream", "bad_value"]
    assert all(o["ts"] is None for o in outputs)


@pytest.mark.broker
def test_no_seq_with_millisecond_times_end_to_end(kafka, steps):
    rng = np.random.default_rng(5)
    records = [(f"s-{i % 4}".encode(), json.dumps(
        {"stream": f"s-{i % 4}", "value": float(rng.random()), "ts": 1764179385000 + i}).encode())
        for i in range(120)]
    mapping = InputSettings(seq_path="", time_unit="ms")
    run_detector(kafka, steps("seed"), mapping, records)
    outputs, dlq = check_every_record(kafka, steps("seed"), mapping)
    assert len(outputs) == 120 and not dlq
    assert sorted(o["ts"] for o in outputs) == [1764179385 + i / 1000 for i in range(120)]


@pytest.mark.broker
def test_custom_field_names_with_millisecond_and_iso_times_end_to_end(kafka, steps):
    mapping = InputSettings(stream_id="dev-{device}", value_path="reading.celsius",
                            seq_path="n", time_path="at", time_unit="ms")
    rng = np.random.default_rng(6)
    records = []
    for n in range(40):
        for device in ("a", "b", "c"):
            at: int | str = 1764179385000 + n * 1000
            if n % 2:  # every other record an ISO-8601 time with an offset
                at = datetime.fromtimestamp(at / 1000, UTC).astimezone().isoformat()
            body = {"device": device, "n": n, "reading": {"celsius": round(rng.random() * 30, 2)},
                    "at": at}
            records.append((f"dev-{device}".encode(), json.dumps(body).encode()))
    records.append((b"dev-a", json.dumps({"device": "a", "n": 99, "reading": {}}).encode()))
    records.append((b"dev-a", json.dumps({"device": "a", "n": 99, "reading": {"celsius": 1},
                                          "at": "yesterday"}).encode()))
    run_detector(kafka, steps("seed"), mapping, records)
    outputs, dlq = check_every_record(kafka, steps("seed"), mapping)
    assert len(outputs) == 120 and reasons(dlq) == ["bad_ts", "missing_field"]
    assert sorted({o["ts"] for o in outputs}) == [1764179385.0 + n for n in range(40)]
    assert {o["stream"] for o in outputs} == {"dev-a", "dev-b", "dev-c"}
    detail = {dict(r.headers)["dlq.reason"]: dict(r.headers)["dlq.error"].decode() for r in dlq}
    assert detail[b"missing_field"] == "missing field(s): reading.celsius (--value-path)"
    assert "--time-path at" in detail[b"bad_ts"]


def producer_cmd(kafka, *args: str) -> list[str]:
    return [sys.executable, "-m", "producer", "--bootstrap-servers", kafka.bootstrap_servers,
            "--topic", kafka.values, *args]


@pytest.mark.broker
def test_producer_killed_and_restarted_loses_nothing(kafka, steps):
    """SIGKILL the producer mid-run and start it again with the same arguments: its seq starts
    at 0 again, its epoch is newer, and every event it sends after the restart has its output."""
    args = ("--seed", "7", "--streams", "8", "--count", "1000000", "--rate", "400",
            "--linger-ms", "0")
    send(kafka, kafka.values, [])  # the topic, created with the detector's partition count
    det = DetectorThread(settings(kafka), steps("seed")).start()
    procs = []
    try:
        for _ in range(2):
            before = det.value("detector_events_consumed_total")
            procs.append(subprocess.Popen(producer_cmd(kafka, *args), cwd=ROOT,
                                          stderr=subprocess.DEVNULL))
            wait_for(lambda b=before: det.value("detector_events_consumed_total") >= b + 400,
                     90, what="events from the producer")
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait(10)
        sent = len(read_topic(kafka, kafka.values))
        wait_for(lambda: det.value("detector_events_consumed_total") >= sent, 60,
                 what="every record consumed")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        det.stop()
    inputs = read_topic(kafka, kafka.values)
    epochs = sorted({json.loads(r.value)["epoch"] for r in inputs})
    assert len(epochs) == 2  # two producer runs, the second one newer
    restarted = [r for r in inputs if json.loads(r.value)["epoch"] == epochs[1]]
    assert min(json.loads(r.value)["seq"] for r in restarted) == 0
    outputs, dlq = check_every_record(kafka, steps("seed"), InputSettings())
    assert not dlq and len(outputs) == len(inputs)


def replay(kafka, steps, expect: int, *args: str) -> tuple[list, list[dict], DetectorThread]:
    """The producer's replay (``args``, as fast as it goes) into the test's input topic, then a
    detector over all of it: the input records, the flag records (every one checked against
    an uninterrupted run; no dead letter) and the stopped detector."""
    run = subprocess.run(producer_cmd(kafka, *args, "--rate", "0"), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    inputs = read_topic(kafka, kafka.values, expect=expect)
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= expect, 90)
    finally:
        det.stop()
    outputs, dlq = check_every_record(kafka, steps("seed"), InputSettings())
    assert not dlq
    return inputs, outputs, det


@pytest.mark.broker
def test_csv_replay_end_to_end(kafka, steps, tmp_path):
    rows = ["t,load,queue,label"]
    rng = np.random.default_rng(8)
    for t in range(60):
        load = int(rng.integers(0, 4))  # few distinct integers: exact repeats are frequent
        queue = "" if t == 17 else str(int(rng.integers(100, 103)))
        rows.append(f"{t},{load},{queue},row{t}")
    csv = tmp_path / "replay.csv"
    csv.write_text("\n".join(rows) + "\n")
    inputs, outputs, det = replay(kafka, steps, 119, "--from-csv", str(csv), "--column", "load",
                                  "--column", "queue")
    assert len(inputs) == 119  # the empty cell is skipped
    assert all("epoch" not in json.loads(r.value) for r in inputs)
    by_stream: dict[str, list[dict]] = {}
    for o in sorted(outputs, key=lambda o: o["seq"]):
        by_stream.setdefault(o["stream"], []).append(o)
    assert set(by_stream) == {"load", "queue"}  # the column names, no s- prefix
    assert [o["seq"] for o in by_stream["load"]] == list(range(60))
    assert [o["seq"] for o in by_stream["queue"]] == [t for t in range(60) if t != 17]
    columns = {c.name: c for c in read_columns(str(csv), ("load", "queue")).columns}
    for name, recs in by_stream.items():
        assert [o["value"] for o in recs] == columns[name].values()
    assert det.value("detector_seq_gaps_total") == 1  # row 17 of "queue"


@pytest.mark.broker
def test_long_format_replay_end_to_end(kafka, steps, tmp_path):
    """The labeled file of your own pattern replayed as it is: a stream per sensor, keyed by
    it, each with seq 0.. in its rows' order; every flag the detector gives is the rule's on
    that stream's own values."""
    rng = np.random.default_rng(9)
    rows, values = ["sensor,value,label"], {f"p-{i}": [] for i in range(3)}
    for _ in range(90):
        sensor = f"p-{rng.integers(0, 3)}"
        value = round(float(rng.random()), 4)
        values[sensor].append(value)
        rows.append(f"{sensor},{value},{int(value > 0.5)}")
    csv = tmp_path / "long.csv"
    csv.write_text("\n".join(rows) + "\n")
    inputs, outputs, _ = replay(kafka, steps, 90, "--from-csv", str(csv), "--stream-column",
                                "sensor", "--value-column", "value")
    assert len(inputs) == 90 and {r.key for r in inputs} == {s.encode() for s in values}
    for sensor, vs in values.items():
        mine = sorted((o for o in outputs if o["stream"] == sensor), key=lambda o: o["seq"])
        assert [o["seq"] for o in mine] == list(range(len(vs)))
        assert [o["value"] for o in mine] == vs
        assert [o["flag"] for o in mine] == exact_flags(np.array(vs)).tolist()
