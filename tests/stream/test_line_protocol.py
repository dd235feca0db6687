"""The line-protocol parser against the specification (influxdata/line-protocol's grammar, the
one Telegraf reads with): escapes, value types, timestamps, comments, and where a bad line
fails. No broker."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from detector.stream import line_protocol
from detector.stream.line_protocol import LineError, Point, decode_text, parse, tag_set


def points(text: str) -> list[Point | LineError]:
    return list(parse(text))


def one(text: str) -> Point:
    (got,) = points(text)
    assert isinstance(got, Point), got
    return got


def error(text: str) -> LineError:
    (got,) = [p for p in points(text) if isinstance(p, LineError)]
    return got


def test_a_telegraf_line():
    p = one("cpu,host=web-1,cpu=cpu0 usage_idle=97.5,usage_user=1.2 1764179385000000000\n")
    assert (p.measurement, p.tags, p.fields, p.time, p.line) == (
        "cpu", {"host": "web-1", "cpu": "cpu0"}, [("usage_idle", 97.5), ("usage_user", 1.2)],
        1764179385000000000, 1)
    assert tag_set(p) == ",cpu=cpu0,host=web-1"  # sorted by key


@pytest.mark.parametrize(("text", "measurement", "tags", "field"), [
    # The measurement escapes comma and space; "=" needs no escape there.
    (r"my\ cpu\,x,h=a f=1", "my cpu,x", {"h": "a"}, "f"),
    ("a=b f=1", "a=b", {}, "f"),
    # Tag keys, tag values and field keys escape comma, equals sign and space.
    (r"m,k\ 1\,\==v\ 1\,\= f\ 1\,\==1", "m", {"k 1,=": "v 1,="}, "f 1,="),
    # Any other backslash is itself: no "\\" escape outside strings.
    (r"m,path=C:\temp\x f=1", "m", {"path": r"C:\temp\x"}, "f"),
    (r"m,t=a\\b f=1", "m", {"t": r"a\\b"}, "f"),
    (r"m,t=a\\,b f=1", "m", {"t": r"a\,b"}, "f"),  # "\\," is a "\" and an escaped ","
    (r"\#m f=1", r"\#m", {}, "f"),
    ('m,t="x f=1', "m", {"t": '"x'}, "f"),  # a quote outside a field value is a character
    ("m,t=ünï f=1", "m", {"t": "ünï"}, "f"),
])
def test_escapes_in_names(text, measurement, tags, field):
    p = one(text)
    assert (p.measurement, p.tags, p.fields[0][0]) == (measurement, tags, field)


def test_strings_are_skipped_with_their_escapes_and_separators():
    p = one(r'm s="a \"quoted\", x=1 \\",n=2i,t="line 1' + '\nline 2",u=3u 5')
    assert p.fields == [("s", None), ("n", 2.0), ("t", None), ("u", 3.0)] and p.time == 5
    assert [x.line for x in points('m s="a\nb\nc" 1\nm f=2')] == [1, 4]


@pytest.mark.parametrize(("raw", "value"), [
    ("1", 1.0), ("-1.5", -1.5), ("1.", 1.0), (".5", 0.5), ("-.5e3", -500.0), ("1E+2", 100.0),
    ("2i", 2.0), ("-9223372036854775808i", -2.0**63), ("18446744073709551615u", 2.0**64),
    ("0u", 0.0), ("t", None), ("T", None), ("true", None), ("True", None), ("TRUE", None),
    ("f", None), ("F", None), ("false", None), ("False", None), ("FALSE", None),
    ('""', None),
])
def test_field_types(raw, value):
    assert one(f"m x={raw}").fields == [("x", value)]


@pytest.mark.parametrize(("raw", "why"), [
    ("1.5i", "expected a number"), ("-1u", "expected a number"), ("+1", "expected a number"),
    ("NaN", "expected a number"), ("inf", "expected a number"), ("0x10", "expected a number"),
    ("1_000", "expected a number"), ("tru", "expected a number"), ("1e", "expected a number"),
    ("1e400", "'x': 1e400 is out of range for a float"),
    ("9223372036854775808i", "out of range for an integer"),
    ("18446744073709551616u", "out of range for an unsigned"),
    ('"open', "string value without its closing"),
])
def test_bad_values_fail_the_line_at_the_value(raw, why):
    got = error(f"m,t=a x=1,x={raw} 5")
    assert why in got.message and got.column == len("m,t=a x=1,x=") + 1


def test_timestamps():
    assert one("m f=1").time is None
    assert one("m f=1 -5").time == -5
    assert one("m  f=1   123  ").time == 123  # runs of spaces between sections
    assert one("  m f=1").measurement == "m"  # and before the line
    got = error("m f=1 9223372036854775808")
    assert got.message == "timestamp 9223372036854775808 is out of range for int64"
    assert got.column == 7
    for text in ("m f=1 12a", "m f=1 1.5", "m f=1 -", "m f=1 1 2"):
        assert "integer timestamp or the end of the line" in error(text).message, text


def test_comments_blank_lines_and_crlf():
    got = points("# a comment\n\n   \n  # another\r\nm f=1\r\nm f=2\r\n#m f=3\n")
    assert [(p.line, p.fields) for p in got] == [(5, [("f", 1.0)]), (6, [("f", 2.0)])]
    assert points("") == [] and points("\n\n# x") == []


@pytest.mark.parametrize(("text", "column", "why"), [
    ("m", 2, "expected ',' and a tag or a space and the fields"),
    ("m,", 3, "expected a tag key after ','"),
    ("m, f=1", 3, "expected a tag key after ','"),
    ("m,t f=1", 4, "expected '=' after the tag key"),
    ("m,t= f=1", 5, "expected a tag value after '='"),
    ("m,t=1,t=2 f=1", 7, "tag key 't' given twice"),
    ("m f", 4, "expected '=' after the field key"),
    ("m f=1,", 7, "expected a field key"),
    ("m f=1,,g=2", 7, "expected a field key"),
    ("m\tx f=1", 2, "expected ',' and a tag or a space and the fields"),  # no control chars
    ("m,t=a\tb f=1", 6, "expected ',' and a tag or a space and the fields"),
    (",t=1 f=1", 1, "expected a measurement name"),
    (r"m\ f=1", 7, "expected ',' and a tag or a space and the fields"),  # "\ " is escaped
    ("m f=1\rx", 6, "expected ',' and a field, an integer timestamp or the end of the line"),
])
def test_where_a_bad_line_fails(text, column, why):
    got = error(text)
    assert (got.line, got.column, got.message, got.reason) == (1, column, why, "bad_line")
    assert got.text == text


def test_a_bad_line_among_good_ones():
    text = "m f=1\nm,x f=2\n\nm f=3\nm f=\"a\nb\" oops\nm f=4"
    got = points(text)
    assert [(type(p).__name__, p.line) for p in got] == [
        ("Point", 1), ("LineError", 2), ("Point", 4), ("LineError", 6), ("Point", 7)]
    assert (got[1].column, got[1].text) == (4, "m,x f=2")
    assert (got[3].column, got[3].text) == (4, 'm f="a\nb" oops')  # the point, to its line's end
    assert got[3].source() == b'm f="a\nb" oops'
    text = 'm f="never closed\nm f=5'
    assert [(type(p).__name__, p.line) for p in points(text)] == [("LineError", 1),
                                                                  ("Point", 2)]


def test_bytes_that_are_not_utf8_fail_their_line_only():
    text, lossy = decode_text(b"m f=1\nm,t=\xff\xfe f=2\r\nm f=3")
    got = list(parse(text, lossy))
    assert [type(p).__name__ for p in got] == ["Point", "LineError", "Point"]
    assert (got[1].reason, got[1].line, got[1].column) == ("not_utf8", 2, 5)
    assert got[1].source() == b"m,t=\xff\xfe f=2"
    text, lossy = decode_text(b"# \xff a comment\nm,t=\xff\nm f=1")
    got = list(parse(text, lossy))  # bad bytes in a line that would fail anyway: they say why
    assert [(type(p).__name__, p.line) for p in got] == [("LineError", 2), ("Point", 3)]
    assert (got[0].reason, got[0].column) == ("not_utf8", 5)
    assert decode_text("ü".encode()) == ("ü", False)


def test_the_tag_set_is_canonical():
    assert tag_set(one("m,b=1,a=2 f=1")) == ",a=2,b=1"
    assert tag_set(one(r"m,b\ x=1\,2,a=\=3 f=1")) == r",a=\=3,b\ x=1\,2"
    assert tag_set(one("m f=1")) == ""
    assert tag_set(one(r"m,b=1,a=2\=3 f=1")) == tag_set(one(r"m,a=2\=3,b=1 f=1"))


# --- generated points: what an encoder writes, the parser reads back ------------------------

_NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
                ).filter(lambda s: not s.endswith("\\"))  # unwritable in line protocol


def _escape(text: str, chars: str) -> str:
    return re.sub(f"[{re.escape(chars)}]", lambda m: "\\" + m.group(), text)


@fuzz_settings(max_examples=2_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(measurement=_NAME.filter(lambda s: not s.startswith("#")),
       tags=st.dictionaries(_NAME, _NAME, max_size=4),
       fields=st.lists(st.tuples(_NAME, st.one_of(
           st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1),
           st.integers(0, 2**64 - 1), st.booleans(), st.text(max_size=8))), min_size=1,
           max_size=4),
       time=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)))
def test_what_an_encoder_writes_is_read_back(measurement, tags, fields, time):
    written, want = [], []
    for i, (key, value) in enumerate(fields):
        if isinstance(value, bool):
            raw, number = ("true" if value else "F"), None
        elif isinstance(value, str):
            raw, number = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', None
        elif isinstance(value, int):
            unsigned = value >= 2**63 or (i % 2 and value >= 0)
            raw, number = f"{value}{'u' if unsigned else 'i'}", float(value)
        else:
            raw, number = repr(value), value
        written.append(f"{_escape(key, ', =')}={raw}")
        want.append((key, number))
    line = (_escape(measurement, ", ") + "".join(f",{_escape(k, ', =')}={_escape(v, ', =')}"
                                                  for k, v in tags.items())
            + " " + ",".join(written) + ("" if time is None else f" {time}"))
    p = one(line + "\n")
    assert (p.measurement, p.tags, p.fields, p.time) == (measurement, tags, want, time)


@fuzz_settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(st.sampled_from('ab =,\\"#\n\r\t.-0123456789iutfTF'), max_size=60))
def test_any_text_parses_or_says_where_it_fails(text):
    """Never raises; every line is a point, skipped, or an error with a place and a reason
    found by the section-by-section walk (which uses the same patterns as the whole match)."""
    last = 0
    for p in parse(text):
        assert p.line > last
        last = p.line
        if isinstance(p, LineError):
            assert p.message != "does not parse" and p.column >= 1 and p.text
            assert p.line <= text.count("\n") + 1
        else:  # the walk would find no fault either
            assert line_protocol._where(text, p.start)[1] == "does not parse"

