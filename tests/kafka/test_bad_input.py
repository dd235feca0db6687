"""Bad input against the real broker: dead letters with bytes and reasons; state untouched."""

import json

import pytest

from detector.kafka import topics
from tests.support import (
    DetectorThread,
    event,
    expected_flags,
    read_topic,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker

BIG = b'{"stream":"s-0","seq":1,"value":0.5,"pad":"' + b"x" * (1 << 20) + b'"}'

#: (key, value, reason): one of each kind the issue lists.
GARBAGE = [
    (b"s-0", b"\xc3\x28 not utf-8", "not_utf8"),
    (b"s-0", b"{this is not json", "not_json"),
    (b"s-0", b"[1, 2, 3]", "not_object"),
    (b"s-0", json.dumps({"stream": "s-0", "value": 0.5}).encode(), "missing_field"),
    (b"s-0", json.dumps({"stream": "s-0", "seq": "7", "value": 0.5}).encode(), "bad_seq"),
    (b"s-0", b'{"stream":"s-0","seq":5,"value":NaN}', "bad_value"),
    (b"s-0", b'{"stream":"s-0","seq":5,"value":Infinity}', "bad_value"),
    (b"s-0", json.dumps({"stream": "s-0", "seq": 5, "value": True}).encode(), "bad_value"),
    (b"s-0", json.dumps({"stream": "s-0", "seq": 5, "value": "0.5"}).encode(), "bad_value"),
    (b"s-0", json.dumps({"stream": "s-0", "seq": -3, "value": 0.5}).encode(), "bad_seq"),
    (b"s-0", json.dumps({"stream": "s-0", "seq": 2.5, "value": 0.5}).encode(), "bad_seq"),
    (b"", json.dumps({"stream": "", "seq": 5, "value": 0.5}).encode(), "bad_stream"),
    (b"x" * 300, json.dumps({"stream": "x" * 300, "seq": 5, "value": 0.5}).encode(),
     "bad_stream"),
    (b"s-1", json.dumps({"stream": "s-0", "seq": 5, "value": 0.5}).encode(), "key_mismatch"),
    (b"s-0", BIG, "too_large"),
    (b"s-0", None, "empty"),
]


def test_garbage_goes_to_the_dead_letter_topic_and_flags_are_unchanged(kafka, steps):
    valid = uniform_events(streams=4, per_stream=40, seed=5)
    records = []
    for i, rec in enumerate(valid):  # garbage spread through the valid events
        records.append(rec)
        if i % 10 == 3 and GARBAGE[(i // 10) % len(GARBAGE)] not in records:
            key, value, _ = GARBAGE[(i // 10) % len(GARBAGE)]
            records.append((key, value))
    for key, value, _ in GARBAGE:
        if (key, value) not in records:
            records.append((key, value))
    # Kafka refuses a record over the topic's max.message.bytes (1 MiB by default): an input
    # topic that takes larger ones, as an operator may set it, lets one reach the detector.
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6,
                                                    {"max.message.bytes": str(4 << 20)})])
    send(kafka, kafka.values, records)
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= len(records), 90)
    finally:
        det.stop()
    dlq = read_topic(kafka, kafka.dlq, expect=len(GARBAGE))
    assert len(dlq) == len(GARBAGE)
    got = sorted((dict(r.headers)["dlq.reason"].decode(), r.key, r.value[:64] if r.value else None)
                 for r in dlq)
    want = sorted((reason, key if len(key) <= 1024 else key[:1024],
                   value[:64] if value else None) for key, value, reason in GARBAGE)
    assert got == want
    for r in dlq:
        meta = dict(r.headers)
        assert meta["dlq.source.topic"] == kafka.values.encode()
        assert int(meta["dlq.source.offset"]) >= 0
        if meta["dlq.reason"] == b"too_large":
            assert meta["dlq.truncated"] == b"true"
            assert int(meta["dlq.original.size"]) == len(BIG)
            assert BIG.startswith(r.value) and len(r.value) < len(BIG)
        else:
            assert meta["dlq.truncated"] == b"false"
    for _, _, reason in GARBAGE:
        want_n = sum(1 for g in GARBAGE if g[2] == reason)
        assert det.value("detector_dlq_messages_total", {"reason": reason}) == want_n
    outputs = {(r.json()["stream"], r.json()["seq"]): r.json()["flag"]
               for r in read_topic(kafka, kafka.flags, expect=len(valid))}
    assert outputs == expected_flags(steps("seed"), valid)


def test_duplicates_are_skipped_and_gaps_counted(kafka, steps):
    records = [event("a", 0, 0.1), event("a", 1, 0.2), event("a", 1, 0.9),  # duplicate seq
               event("a", 2, 0.3), event("a", 0, 0.05),  # an old seq again
               event("a", 5, 0.4),  # a gap: 3 and 4 never came
               event("a", 6, 0.6)]
    send(kafka, kafka.values, records, partitions=1)
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_consumed_total") >= len(records), 60)
    finally:
        det.stop()
    outputs = sorted((r.json()["seq"], r.json()["value"], r.json()["rule_flag"])
                     for r in read_topic(kafka, kafka.flags, expect=5))
    # The duplicates never touched the state: the rule sees 0.1 0.2 0.3 0.4 0.6, all up.
    assert outputs == [(0, 0.1, 0), (1, 0.2, 0), (2, 0.3, 1), (5, 0.4, 1), (6, 0.6, 1)]
    assert det.value("detector_duplicates_total") == 2
    assert det.value("detector_seq_gaps_total") == 1
    assert det.value("detector_dlq_messages_total", {"reason": "bad_seq"}) == 0
