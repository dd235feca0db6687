"""The message codec: every bad-input kind gets its reason, valid events pass, outputs parse."""

import json
import math

import pytest

from detector.stream.codec import (
    DLQ_MAX_VALUE_BYTES,
    MAX_VALUE_BYTES,
    REASONS,
    BadInput,
    Event,
    dead_letter,
    decode_run,
    encode_event,
    encode_flag,
    encode_run,
    model_fields,
)
from detector.stream.mapping import decode_event, parse_json


def ok(**fields):
    body = {"stream": "s-1", "seq": 3, "value": 0.25, "ts": 1764179385.5} | fields
    return json.dumps(body).encode()


def test_valid_event():
    assert decode_event(b"s-1", ok()) == Event("s-1", 3, 0.25, 1764179385.5)
    assert decode_event(b"s-1", ok(ts=None)) == Event("s-1", 3, 0.25, None)
    assert decode_event(b"s-1", ok(value=1)).value == 1.0
    assert decode_event(b"s-1", ok(extra={"x": 1})).seq == 3
    body = json.dumps({"stream": "s-1", "seq": 0, "value": -5e300}).encode()
    assert decode_event(b"s-1", body) == Event("s-1", 0, -5e300, None)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"s-1", None, "empty"),
        (b"s-1", b"x" * (MAX_VALUE_BYTES + 1), "too_large"),
        (b"s-1", b"\xff\xfe{}", "not_utf8"),
        (b"s-1", b"{not json", "not_json"),
        (b"s-1", b"", "not_json"),
        (b"s-1", b"[" * 100_000, "not_json"),  # deep nesting must not blow the stack
        (b"s-1", b"[1, 2]", "not_object"),
        (b"s-1", b'"text"', "not_object"),
        (b"s-1", b"null", "not_object"),
        (b"s-1", json.dumps({"seq": 1, "value": 0.1}).encode(), "missing_field"),
        (b"s-1", json.dumps({"stream": "s-1", "value": 0.1}).encode(), "missing_field"),
        (b"s-1", json.dumps({"stream": "s-1", "seq": 1}).encode(), "missing_field"),
        (b"", ok(stream=""), "bad_stream"),
        (b"s-1", ok(stream=17), "bad_stream"),
        (b"x" * 257, ok(stream="x" * 257), "bad_stream"),
        (b"s-2", ok(), "key_mismatch"),
        (None, ok(), "key_mismatch"),
        (b"\xff", ok(), "key_mismatch"),
        (b"s-1", ok(seq=-1), "bad_seq"),
        (b"s-1", ok(seq=1.5), "bad_seq"),
        (b"s-1", ok(seq=2.0), "bad_seq"),
        (b"s-1", ok(seq="4"), "bad_seq"),
        (b"s-1", ok(seq=True), "bad_seq"),
        (b"s-1", ok(seq=2**63), "bad_seq"),
        (b"s-1", ok(value="0.5"), "bad_value"),
        (b"s-1", ok(value=True), "bad_value"),
        (b"s-1", ok(value=None), "bad_value"),
        (b"s-1", ok(value=[0.5]), "bad_value"),
        (b"s-1", ok(value=10**400), "bad_value"),  # an int too big for a float
        (b"s-1", b'{"stream":"s-1","seq":1,"value":NaN}', "bad_value"),
        (b"s-1", b'{"stream":"s-1","seq":1,"value":Infinity}', "bad_value"),
        (b"s-1", b'{"stream":"s-1","seq":1,"value":-Infinity}', "bad_value"),
        (b"s-1", b'{"stream":"s-1","seq":1,"value":1e999}', "bad_value"),
        (b"s-1", ok(ts="yesterday"), "bad_ts"),
        (b"s-1", ok(ts=math.inf), "bad_ts"),
    ],
)
def test_bad_input_reasons(key, value, reason):
    got = decode_event(key, value)
    assert isinstance(got, BadInput), got
    assert got.reason == reason, got
    assert got.reason in REASONS
    assert got.detail


TRICKY_JSON = [
    b'{"a":1,"a":2}', b'{"v":1e400}', b'{"v":NaN}', b'{"v":-Infinity}', b'{"s":"\\ud800"}',
    b'{"n":123456789012345678901234567890}', b'{"n":-9223372036854775809}', b'{"v":-0.0}',
    b'{"v":2.5e-324}', b'\xef\xbb\xbf{"v":1}', b'{"v":1}x', b'{"s":"\xff"}', b'',
    b"  [1, 2.5, true, null]  ", b'{"v":01}', b"[" * 100_000 + b"]" * 100_000,
]


@pytest.mark.parametrize("value", TRICKY_JSON, ids=range(len(TRICKY_JSON)))
def test_fast_json_parses_as_the_standard_library_does(value):
    """msgspec parses; what it refuses the standard library decides, errors included."""
    def outcome(parse):
        try:
            return "ok", repr(parse(value))
        except (ValueError, RecursionError) as exc:
            return type(exc).__name__, str(exc)

    assert outcome(parse_json) == outcome(lambda v: json.loads(v.decode("utf-8")))


def test_encode_event_round_trips():
    assert decode_event(b"s-9", encode_event("s-9", 4, 0.5, None)) == Event("s-9", 4, 0.5, None)


def test_flag_record_is_json_with_every_field():
    raw = encode_flag(json.dumps('odd "name"'), 7, 0.125, 1, 0.99987, 1, 1,
                      model_fields("seed", 3), 3, 1234, None, "1764179385.25")
    rec = json.loads(raw)
    assert rec == {
        "stream": 'odd "name"', "seq": 7, "value": 0.125, "flag": 1, "probability": 0.99987,
        "direction": "up", "rule_flag": 1, "model": "seed", "model_version": 3,
        "source": {"partition": 3, "offset": 1234}, "ts": None, "detected_at": 1764179385.25,
    }
    m = model_fields("m", 0)
    rec = json.loads(encode_flag('"s"', 0, 1e-300, 0, 1e-9, -1, 0, m, 0, 0, 5.5, "6.0"))
    assert rec["value"] == 1e-300 and rec["direction"] == "down" and rec["ts"] == 5.5
    rec = json.loads(encode_flag('"s"', 1, -1.7e308, 0, 0.0, 0, 0, m, 0, 0, None, "6.0"))
    assert rec["value"] == -1.7e308 and rec["direction"] == "flat"


def test_a_pattern_models_flag_record_names_its_pattern_and_has_no_rule():
    raw = encode_flag('"s"', 4, 2.5, 1, 0.97, 1, None, model_fields("dip", 2, 'di"p'), 1, 9,
                      None, "6.0")
    rec = json.loads(raw)
    assert rec["pattern"] == 'di"p' and rec["model"] == "dip" and rec["model_version"] == 2
    assert "rule_flag" not in rec and rec["flag"] == 1


def test_run_record_is_json_with_every_field():
    rec = json.loads(encode_run("s-1", "resolved", -1, 40, 46, 7, 2.5, "seed", None, 6.0, 4))
    assert rec == {"status": "resolved", "stream": "s-1", "direction": "down", "start_seq": 40,
                   "seq": 46, "length": 7, "value": 2.5, "model": "seed", "model_version": 4,
                   "ts": None, "detected_at": 6.0}
    assert decode_run(json.dumps(rec).encode()).model_version == 4


def test_a_pattern_run_record_carries_the_pattern_where_a_trend_has_its_direction():
    raw = encode_run("s-1", "firing", 1, 40, 40, 1, 2.5, "dip", 7.0, 8.0, 1, "dip")
    rec = json.loads(raw)
    assert rec["pattern"] == "dip" and "direction" not in rec and rec["length"] == 1
    run = decode_run(raw)
    assert run.pattern == "dip" and run.direction == "" and run.model_version == 1
    assert decode_run(json.dumps({**rec, "pattern": ""}).encode()) is None


def test_a_run_resolved_at_a_change_of_model_says_why_and_only_gains_a_field():
    """The resolution of a run another model ends: the record of an event's resolution plus
    ``reason``; a reason on a firing, or one not known, is not a run record."""
    raw = encode_run("s-1", "resolved", 1, 40, 46, 9, 2.5, "seed", None, 6.0, 1,
                     reason="model_swap")
    rec = json.loads(raw)
    plain = json.loads(encode_run("s-1", "resolved", 1, 40, 46, 9, 2.5, "seed", None, 6.0, 1))
    assert rec == {**plain, "reason": "model_swap"}
    assert decode_run(raw).reason == "model_swap" and decode_run(json.dumps(plain).encode()
                                                                 ).reason == ""
    assert decode_run(json.dumps({**rec, "status": "firing"}).encode()) is None
    assert decode_run(json.dumps({**rec, "reason": "whim"}).encode()) is None


def test_dead_letter_keeps_bytes_and_says_when_cut():
    bad = BadInput("not_json", "boom")
    body, headers = dead_letter(bad, b"k", b"\x00abc", "values", 2, 77)
    meta = dict(headers)
    assert body == b"\x00abc"
    assert meta["dlq.reason"] == b"not_json"
    assert meta["dlq.source.partition"] == b"2" and meta["dlq.source.offset"] == b"77"
    assert meta["dlq.truncated"] == b"false"
    big = b"y" * (DLQ_MAX_VALUE_BYTES * 3)
    body, headers = dead_letter(BadInput("too_large", "big"), b"k", big, "values", 0, 1)
    meta = dict(headers)
    assert body == big[:DLQ_MAX_VALUE_BYTES]
    assert meta["dlq.truncated"] == b"true"
    assert meta["dlq.original.size"] == str(len(big)).encode()


@pytest.mark.parametrize("text", ["s-1", 'quote"d', "back\\slash", "é", "tab\there", "", "\u2028"])
def test_json_string_is_json_dumps(text):
    from detector.stream.codec import json_string

    assert json.loads(json_string(text)) == text
