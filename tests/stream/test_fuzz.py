"""Property-based fuzz of the input decoder: no exception escapes, every payload is classified."""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.stream.codec import MAX_STREAM_CHARS, REASONS, BadInput, Event
from detector.stream.mapping import decode_event

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    json_values, st.integers(min_value=-5, max_value=2**64), st.floats(),
    st.text(min_size=0, max_size=400), st.just(float("nan")), st.just(math.inf),
)
shaped = st.fixed_dictionaries(
    {},
    optional={"stream": st.one_of(st.text(max_size=300), field_values),
              "seq": field_values, "value": field_values, "ts": field_values,
              "extra": json_values},
)


def payloads():
    as_json = st.one_of(shaped, json_values).map(
        lambda obj: json.dumps(obj, allow_nan=True).encode())
    return st.one_of(
        st.binary(max_size=400),  # random bytes
        as_json,  # JSON of every shape
        st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.integers(1, 5000).map(lambda n: b"[" * n),  # deep nesting
        st.integers(1, 5000).map(lambda n: b'{"a":' * n),
        st.just(b'{"stream":"s","seq":1,"value":' + b"9" * 5000 + b"}"),  # a huge number
    )


@settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.one_of(st.none(), st.binary(max_size=300), st.text(max_size=20).map(str.encode)),
       value=st.one_of(st.none(), payloads()))
def test_decoder_classifies_every_payload(key, value):
    got = decode_event(key, value)
    assert isinstance(got, Event | BadInput)
    if isinstance(got, BadInput):
        assert got.reason in REASONS and got.detail
        return
    assert isinstance(got.stream, str) and 0 < len(got.stream) <= MAX_STREAM_CHARS
    assert key == got.stream.encode()
    assert isinstance(got.seq, int) and 0 <= got.seq < 2**63
    assert isinstance(got.value, float) and math.isfinite(got.value)
    assert got.ts is None or math.isfinite(got.ts)


@settings(max_examples=2_000, deadline=None)
@given(stream=st.text(min_size=1, max_size=MAX_STREAM_CHARS),
       seq=st.integers(0, 2**63 - 1),
       value=st.floats(allow_nan=False, allow_infinity=False),
       ts=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)))
def test_every_valid_event_is_accepted_unchanged(stream, seq, value, ts):
    body = {"stream": stream, "seq": seq, "value": value}
    if ts is not None:
        body["ts"] = ts
    got = decode_event(stream.encode("utf-8", "surrogatepass"), json.dumps(body).encode(
        "utf-8", "surrogatepass"))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in stream):
        assert isinstance(got, BadInput)  # lone surrogates are not valid UTF-8
    else:
        assert got == Event(stream, seq, value, ts)
