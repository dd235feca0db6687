"""``--input-format influx``: Telegraf's default output (InfluxDB line protocol) as input.

The mapping without a broker; then end to end against the real local broker: Telegraf-style
records of several lines with several tags and fields, integer and float fields, escaped
names, lines without a timestamp and broken lines among good ones. Every field is accounted
for (an event with the exact rule's flag, a skipped non-number, or a dead-lettered line), a
SIGKILLed detector's restart gives the flags of an uninterrupted run, and a stream arriving on
two partitions is counted and logged once.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field

import numpy as np
import pytest

from detector.kafka import clients, topics
from detector.settings.detector import DetectorSettings
from detector.settings.fields import ConfigError, add_options, build
from detector.settings.input import InputSettings
from detector.settings.kafka import KafkaSettings
from detector.stream.codec import BadInput, Event, dead_letter
from detector.stream.mapping import InputMapping
from detector.task.rule import exact_flags
from tests.support import (
    DetectorProcess,
    DetectorThread,
    read_topic,
    run_until_every_output,
    settings,
    wait_for,
)

INFLUX = InputSettings(input_format="influx")
T0 = 1_764_179_385_000_000_000  # ns


# --- the mapping, no broker ------------------------------------------------------------------


def test_every_numeric_field_of_every_line_is_an_event():
    mapping = InputMapping(INFLUX)
    got = mapping.decode(b"web-1", b"cpu,host=web-1,cpu=cpu0 usage_idle=97.5,procs=3i,"
                         b'state="ok" 1764179385000000000\n'
                         b"cpu,cpu=cpu1,host=web-1 usage_idle=1u,up=true\n", 1764179390123)
    assert got == [Event("cpu,cpu=cpu0,host=web-1 usage_idle", -1, 97.5, 1764179385.0),
                   Event("cpu,cpu=cpu0,host=web-1 procs", -1, 3.0, 1764179385.0),
                   Event("cpu,cpu=cpu1,host=web-1 usage_idle", -1, 1.0, 1764179390.123)]
    assert mapping.skipped == 2 and mapping.bad_lines == []
    assert mapping.decode(None, b"m f=1")[0].ts is None  # no time in the line nor the record
    seconds = InputMapping(InputSettings(input_format="influx", time_unit="ms"))
    assert seconds.decode(None, b"m f=1 1764179385123")[0].ts == 1764179385.123
    assert InputMapping(INFLUX).decode(None, b"m f=1 1764179385123456789")[0].ts == (
        1764179385123456789 / 10**9)  # as exact as a float can be


def test_a_bad_line_is_its_own_dead_letter_and_the_others_still_count():
    mapping = InputMapping(InputSettings(input_format="influx",
                                         stream_id="{measurement}.{tags.host}.{field}"))
    value = (b"m,host=a f=1\n# comment\nm,host=a f=oops 5\n\nm,host=b f=2\nm g=3\n"
             b"m,host=\xff f=4\n")
    got = mapping.decode(b"k", value)
    assert got == [Event("m.a.f", -1, 1.0, None), Event("m.b.f", -1, 2.0, None)]
    assert mapping.bad_lines == [
        BadInput("bad_line", "line 3, column 12: expected a number (1.5, 2i, 3u), a string or "
                 "a boolean", b"m,host=a f=oops 5", 3),
        BadInput("missing_field", "line 6: missing tag(s): host (--stream-id "
                 "{measurement}.{tags.host}.{field})", b"m g=3", 6),
        BadInput("not_utf8", "line 7, column 8: bytes that are not UTF-8", b"m,host=\xff f=4",
                 7)]
    body, headers = dead_letter(mapping.bad_lines[0], b"k", value, "values", 2, 40)
    assert body == b"m,host=a f=oops 5"
    assert dict(headers)["dlq.source.line"] == b"3" and dict(headers)["dlq.source.offset"] == b"40"
    assert dict(headers)["dlq.original.size"] == b"17"
    assert mapping.decode(b"k", b"m,host=a f=1")  # the next record starts afresh
    assert mapping.bad_lines == []


def test_records_and_ids_that_do_not_fit():
    mapping = InputMapping(INFLUX)
    assert mapping.decode(None, b"# nothing\n\n").reason == "empty"
    assert mapping.decode(None, None).reason == "empty"
    assert mapping.decode(None, b"m s=\"text\"") == [] and mapping.skipped == 1
    long = mapping.decode(None, b"m f=1,g=2\nm," + b"t=" + b"x" * 300 + b" f=1")
    assert long == [Event("m f", -1, 1.0, None), Event("m g", -1, 2.0, None)]
    (too_long,) = mapping.bad_lines
    assert too_long.reason == "bad_stream" and too_long.detail.endswith("chars, got 306")
    keyed = InputMapping(InputSettings(input_format="influx", stream_id="{key}/{field}"))
    assert keyed.decode(b"dev-1", b"m f=1")[0].stream == "dev-1/f"
    assert keyed.decode(None, b"m f=1") == [] and keyed.bad_lines[0].reason == "bad_stream"
    dotted = InputMapping(InputSettings(input_format="influx",
                                        stream_id="{tags.k8s.io/app}:{field}"))
    assert dotted.decode(None, b"m,k8s.io/app=web f=1")[0].stream == "web:f"


@pytest.mark.parametrize(("overrides", "says"), [
    ({"stream_id": "{measurement}.{tags.host}"}, "the id needs {field}"),
    ({"stream_id": "{name}.{field}"}, "a placeholder is {measurement}, {tags}, {tags.NAME}"),
    ({"stream_id": "{tags.}{field}"}, "a placeholder is {measurement}"),
    # The JSON paths do not apply to line protocol: refused, not silently ignored.
    ({"value_path": "fields.*"}, "--value-path does not apply with --input-format influx"),
    ({"seq_path": ""}, "--seq-path does not apply"),
    ({"time_path": "timestamp"}, "--time-path does not apply"),
    ({"epoch_path": ""}, "--epoch-path does not apply"),
])
def test_influx_settings_that_cannot_work(overrides, says):
    with pytest.raises(ConfigError) as info:
        InputSettings(input_format="influx", **overrides)
    assert says in str(info.value)


def test_the_time_unit_defaults_to_the_formats_own():
    def parsed(env: dict) -> InputSettings:
        p = argparse.ArgumentParser()
        add_options(p, DetectorSettings, "DETECTOR")
        return build(DetectorSettings, p.parse_args([]), "DETECTOR", env).mapping

    assert parsed({}).time_unit == "s" and InputSettings().time_unit == "s"
    assert parsed({"DETECTOR_INPUT_FORMAT": "influx"}).time_unit == "ns"
    assert parsed({"DETECTOR_INPUT_FORMAT": "influx", "DETECTOR_TIME_UNIT": "s"}).time_unit == "s"
    assert parsed({"DETECTOR_TIME_UNIT": ""}).time_unit == "s"  # empty: the default


# --- end to end, against the real local broker ----------------------------------------------


@dataclass
class Truth:
    """What the records hold: each stream's values in order, fields by fate."""

    records: list[tuple[bytes, bytes, int]] = field(default_factory=list)  # key, value, ms
    values: dict[str, list[float]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    skipped: int = 0
    bad: list[tuple[int, int, bytes]] = field(default_factory=list)  # record, line, text
    fields: int = 0  # every field written
    per_record: list[int] = field(default_factory=list)  # events in each record

    def event(self, stream: str, value: float, ts: float) -> None:
        self.values.setdefault(stream, []).append(value)
        self.times.setdefault(stream, []).append(ts)

    @property
    def events(self) -> int:
        return sum(len(v) for v in self.values.values())


def telegraf_records(rounds: int, seed: int) -> Truth:
    """Per round and host one record of several lines, as Telegraf and gateways write them:
    tags in any order, floats, integers, unsigned, strings and booleans, escaped names, a line
    without timestamp, one series twice in a record, comments; every fifth a broken line."""
    rng = random.Random(seed)
    truth = Truth()
    for r in range(rounds):
        for host in ("web-1", "web-2", "db-1"):
            ts, ms = T0 + r * 10**9, 1764179400000 + r * 1000
            idle, user = round(rng.uniform(0, 100), 1), rng.choice((1.2, 1.25, 3.0))
            procs, used = rng.randint(0, 5), [rng.randint(0, 3) / 4 for _ in range(2)]
            cpu1 = rng.uniform(-1, 1)
            read, ops = rng.randint(0, 2**64 - 1) // 2**40, rng.randint(-3, 3)
            lines = [
                "# telegraf",
                f'cpu,cpu=cpu0,host={host} usage_idle={idle},usage_user={user},procs={procs}i,'
                f'state="ok, \\"up\\"" {ts}',
                f"cpu,host={host},cpu=cpu1 usage_idle={cpu1!r},up=true",  # no time, unsorted
                f"disk\\ io,host={host},path=/var\\,log,label=a\\=b read\\ bytes={read}u,"
                f"write\\=ops={ops}i {ts}",
                "",
                f"mem,host={host} used={used[0]} {ts}",
                f"mem,host={host} used={used[1]} {ts + 5 * 10**8}",  # a series twice
            ]
            truth.event(f"cpu,cpu=cpu0,host={host} usage_idle", idle, ts / 1e9)
            truth.event(f"cpu,cpu=cpu0,host={host} usage_user", user, ts / 1e9)
            truth.event(f"cpu,cpu=cpu0,host={host} procs", procs, ts / 1e9)
            truth.event(f"cpu,cpu=cpu1,host={host} usage_idle", cpu1, ms / 1000)
            disk = f"disk io,host={host},label=a\\=b,path=/var\\,log"
            truth.event(f"{disk} read bytes", float(read), ts / 1e9)
            truth.event(f"{disk} write=ops", ops, ts / 1e9)
            truth.event(f"mem,host={host} used", used[0], ts / 1e9)
            truth.event(f"mem,host={host} used", used[1], (ts + 5 * 10**8) / 1e9)
            truth.skipped += 2  # state, up
            truth.fields += 10
            if r % 5 == 2:
                broken = f"cpu,cpu=cpu2,host={host} usage_idle=97.5.1,usage_user=2 {ts}"
                lines.insert(3, broken)
                truth.bad.append((len(truth.records), 4, broken.encode()))
                truth.fields += 2
            truth.records.append((host.encode(), "\n".join(lines).encode(), ms))
            truth.per_record.append(8)
    return truth


def send_timed(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes, int]],
               partitions: list[int] | None = None) -> None:
    """Write records with their own timestamps (ms), each to its partition if given."""
    topics.ensure_topics(kafka, [topics.TopicSpec(topic, 6)])
    producer = clients.producer(kafka, linger_ms=5)
    for i, (key, value, ms) in enumerate(records):
        producer.send(topic, key=key, value=value, timestamp_ms=ms,
                      partition=None if partitions is None else partitions[i])
    producer.flush()
    producer.close()


def uninterrupted_flags(step, truth: Truth) -> dict[str, list[int]]:
    """Each stream's model flags in an uninterrupted run (its events in order)."""
    from detector.stream.engine import Batch, Engine

    names = [s for s, values in truth.values.items() for _ in values]
    values = np.array([v for vs in truth.values.values() for v in vs])
    res = Engine(step).process(Batch.of(names, values))
    flags: dict[str, list[int]] = {}
    for name, flag in zip(names, res.flag.tolist(), strict=True):
        flags.setdefault(name, []).append(flag)
    return flags


@pytest.mark.broker
def test_telegraf_line_protocol_end_to_end(kafka, steps):
    truth = telegraf_records(rounds=15, seed=1)
    send_timed(kafka, kafka.values, truth.records)
    det = DetectorThread(settings(kafka, mapping=INFLUX), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= len(truth.records), 90,
                 what="every record consumed")
    finally:
        det.stop()
    outputs = [r.json() for r in read_topic(kafka, kafka.flags, expect=truth.events)]
    by_stream: dict[str, list[dict]] = {}
    for o in sorted(outputs, key=lambda o: o["seq"]):
        by_stream.setdefault(o["stream"], []).append(o)
    assert set(by_stream) == set(truth.values)
    flags = uninterrupted_flags(steps("seed"), truth)
    for stream, outs in by_stream.items():
        values = truth.values[stream]
        assert [o["seq"] for o in outs] == list(range(len(values))), stream
        assert [o["value"] for o in outs] == values, stream
        assert [o["ts"] for o in outs] == truth.times[stream], stream
        assert [o["rule_flag"] for o in outs] == exact_flags(np.array(values)).tolist(), stream
        assert [o["flag"] for o in outs] == flags[stream], stream
    inputs = read_topic(kafka, kafka.values)
    offsets = {(r.key, r.value): (r.partition, r.offset) for r in inputs}
    dlq = read_topic(kafka, kafka.dlq, expect=len(truth.bad))
    assert sorted((dict(r.headers)["dlq.source.offset"], r.value) for r in dlq) == sorted(
        (str(offsets[truth.records[i][:2]][1]).encode(), text) for i, _, text in truth.bad)
    for r in dlq:
        h, column = dict(r.headers), r.value.index(b"=97.5.1") + 2
        assert h["dlq.reason"] == b"bad_line" and h["dlq.source.line"] == b"4"
        assert h["dlq.error"].decode() == (f"line 4, column {column}: expected a number (1.5, "
                                           "2i, 3u), a string or a boolean")
    # Every field is accounted for: an event, a skipped non-number or a dead-lettered line.
    skipped = det.value("detector_skipped_fields_total")
    assert (len(outputs), skipped) == (truth.events, truth.skipped)
    dead = sum(len(r.value.split(b" ")[1].split(b",")) for r in dlq)
    assert len(outputs) + skipped + dead == truth.fields
    assert det.value("detector_dlq_messages_total", {"reason": "bad_line"}) == len(truth.bad)
    assert det.value("detector_stream_partition_conflicts_total") == 0
    assert {o["ts"] for o in outputs} >= {1764179400.0, T0 / 1e9}


@pytest.mark.broker
@pytest.mark.slow
def test_sigkill_and_restart_give_the_flags_of_an_uninterrupted_run(kafka, steps):
    """The stateful ``pair`` model over line protocol without seq: a detector SIGKILLed after
    a checkpoint, with records processed since, is started again: it restores its streams,
    replays those records (two lines of one series in a record included) and gives every
    event its output, duplicates identical, flags exact."""
    truth = telegraf_records(rounds=60, seed=2)
    env = {"DETECTOR_INPUT_FORMAT": "influx", "DETECTOR_MAX_POLL_RECORDS": "20",
           "DETECTOR_CHECKPOINT_INTERVAL_MS": "3000"}
    half = len(truth.records) // 2
    send_timed(kafka, kafka.values, truth.records[:half])
    det = DetectorProcess(kafka, model="pair", **env).start()
    try:
        wait_for(lambda: read_topic(kafka, kafka.state, settle=0.3), 60,
                 what="a checkpoint")
        send_timed(kafka, kafka.values, truth.records[half:])
        wait_for(lambda: det.processed() > sum(truth.per_record[:half]), 60, every=0.02,
                 what="records processed after the checkpoint")
        det.kill()
    finally:
        det.close()
    run_until_every_output(kafka, "pair", truth.events, **env)
    outputs = read_topic(kafka, kafka.flags, settle=2.0, timeout=60)
    # records processed after the last checkpoint are replayed (identical duplicates), unless
    # the kill came right after a checkpoint that covered them all (a loaded machine)
    assert len(outputs) >= truth.events
    seen: dict[tuple[str, int], set[tuple[float, int, int]]] = {}
    for r in outputs:
        o = r.json()
        seen.setdefault((o["stream"], o["seq"]), set()).add((o["value"], o["flag"],
                                                             o["rule_flag"]))
    flags = uninterrupted_flags(steps("pair"), truth)
    want = {(stream, i): (value, flags[stream][i], int(rule))
            for stream, values in truth.values.items()
            for i, (value, rule) in enumerate(zip(values, exact_flags(np.array(values)),
                                                  strict=True))}
    assert all(len(outs) == 1 for outs in seen.values())  # duplicates identical
    assert {key: next(iter(outs)) for key, outs in seen.items()} == want
    dlq = read_topic(kafka, kafka.dlq)  # at least once: a replay may send one again
    assert len({(dict(r.headers)["dlq.source.offset"], r.value) for r in dlq}) == len(truth.bad)


@pytest.mark.broker
def test_a_stream_on_two_partitions_is_counted_and_logged_once(kafka, steps, caplog):
    """A producer that does not key by host: one series lands on partitions 0 and 1."""
    records = [(None, f"cpu,host=web-1 usage={i % 3}".encode(), 1764179400000 + i)
               for i in range(12)]
    send_timed(kafka, kafka.values, records, partitions=[i % 2 for i in range(12)])
    det = DetectorThread(settings(kafka, mapping=INFLUX), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= 12, 90)
    finally:
        det.stop()
    assert det.value("detector_stream_partition_conflicts_total") >= 1
    lines = [r.getMessage() for r in caplog.records if "arrives on input partitions" in
             r.getMessage()]
    assert len(lines) == 1 and "'cpu,host=web-1 usage'" in lines[0], lines
    assert json.loads(read_topic(kafka, kafka.flags)[0].value)["stream"] == (
        "cpu,host=web-1 usage")
