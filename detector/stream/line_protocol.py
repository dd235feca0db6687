"""InfluxDB line protocol, parsed: what Telegraf's Kafka output writes unless told otherwise.

``cpu,host=web-1,cpu=cpu0 usage_idle=97.5,usage_user=1.2 1764179385000000000``: a measurement,
optional tags, one or more fields, an optional integer timestamp; one point a line, any number
of lines a record. The grammar is influxdata/line-protocol's (``line-protocol.ebnf``, the
parser Telegraf reads with): in the measurement a backslash escapes a comma or a space; in tag
keys, tag values and field keys a comma, an equals sign or a space; any other backslash is
itself (there is no ``\\\\`` outside strings). A string field value is double-quoted, a
backslash escaping the character after it (a newline may stand inside). Floats have no ``+``,
``NaN`` or ``Inf``; integers end in ``i`` (int64), unsigned integers in ``u`` (uint64);
booleans are t, T, true, True, TRUE and the same for false. Blank lines and lines whose first
non-space is ``#`` are skipped; a line may end in ``\\r\\n``. Names hold no control characters.
A tag key given twice, a number out of its type's range and a timestamp beyond int64 fail too.

Why a parser of our own: the maintained package (``line-protocol-parser``, C) parses one line
at a time, gives no position for an error (the dead-letter topic names line and column) and
follows InfluxDB 1.2's grammar (a tab passes inside a name, of a field given twice the second
is lost); ``pyilpp`` reads ``\\\\`` in a name as one backslash. Here one regular expression
matches a whole point (the scanning is the C engine's), its sections are cut by ``str.split``
or a plain pattern where no escape is in them, and only a line that fails is walked again, a
section at a time with the same patterns, to say where it fails (README, Input: the cost).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

_CTRL = r"\x00-\x1f\x7f"
#: A measurement; a key (tag key, tag value, field key): not empty; plain characters and
#: backslashes, a backslash taking the escapable character after it if there is one. Written
#: as runs (``[...]*+``), which the regular expression engine goes through fastest, and
#: possessive, so that an escape is never read again as a backslash before a separator.
_MEASUREMENT = rf"(?=[^ ,#{_CTRL}])[^\\ ,{_CTRL}]*+(?:\\[ ,]?+[^\\ ,{_CTRL}]*+)*+"  # "#": comment
_KEY = rf"(?=[^ ,={_CTRL}])[^\\ ,={_CTRL}]*+(?:\\[ ,=]?+[^\\ ,={_CTRL}]*+)*+"
_NUMBER = r"(?:-?\d++i|\d++u|-?(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?\d++)?+)"
_BOOLEAN = r"(?:[tT]|true|True|TRUE|[fF]|false|False|FALSE)"
_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_VALUE = rf"(?:{_NUMBER}|{_BOOLEAN}|{_STRING})(?=[ ,\r\n]|\Z)"
_SPACES = r"[ ]++"
_TIME = r"(?:[ ]++(-?\d++))?+[ ]*+"
_EOL = r"(?:\r?\n|\r?\Z)"

#: One point, to the end of its line: measurement, tags (",k=v" each), fields, timestamp.
_POINT = re.compile(rf"[ ]*+({_MEASUREMENT})((?:,{_KEY}={_KEY})*+){_SPACES}"
                    rf"({_KEY}={_VALUE}(?:,{_KEY}={_VALUE})*+){_TIME}{_EOL}", re.DOTALL)
#: A blank line or a comment.
_NOTHING = re.compile(rf"[ ]*+(?:#[^\n]*+)?+{_EOL}")
_TAG_PARTS = re.compile(rf",({_KEY})=({_KEY})")
_FIELD_PARTS = re.compile(rf"({_KEY})=({_VALUE})", re.DOTALL)
#: Cuts a field section that ``_POINT`` matched and that holds no backslash, so no escape:
#: its keys hold no "=", its strings no '"', its other values no ",". Twice as fast.
_PLAIN_FIELDS = re.compile(r'([^=]++)=("[^"]*+"|[^,]++),?+')
_MEASUREMENT_ESCAPE = re.compile(r"\\([ ,])")
_KEY_ESCAPE = re.compile(r"\\([ ,=])")
_KEY_SPECIAL = re.compile(r"[ ,=]")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what ``surrogateescape`` makes of a bad byte
#: The sections of a point one by one, to find where a line that ``_POINT`` refuses fails.
_STEPS = {name: re.compile(pattern, re.DOTALL) for name, pattern in (
    ("lead", r"[ ]*+"), ("measurement", _MEASUREMENT), ("key", _KEY), ("spaces", _SPACES),
    ("value", _VALUE), ("time", _TIME), ("eol", _EOL))}

INT64 = 1 << 63
UINT64 = 1 << 64
_INFINITIES = (math.inf, -math.inf)  # what float() makes of a number beyond a double's range


@dataclass(slots=True)  # not frozen: a frozen dataclass takes four times as long to make
class Point:
    """One parsed line. ``fields``: each field's key and value, a float for a number (integer
    fields converted), None for a string or a boolean (the detector skips those)."""

    line: int  # 1-based, in its record
    measurement: str
    tags: dict[str, str]
    fields: list[tuple[str, float | None]]
    time: int | None  # as written, in the producer's precision
    raw_tags: str  # the tag section as written: "" or ",k=v,..."
    start: int  # where the point's text starts and ends (its line ending included)
    end: int


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that fails: where (1-based; the column in characters), why, and the line's text
    (from the point's start to the end of the line where it fails). ``reason`` is ``bad_line``
    or ``not_utf8``."""

    line: int
    column: int
    message: str
    text: str
    reason: str = "bad_line"

    def source(self) -> bytes:
        """The line as it was in the record."""
        return self.text.encode("utf-8", "surrogateescape")


class _Invalid(Exception):
    """A point that matches the grammar but not its limits (a range, a tag twice)."""

    def __init__(self, at: int, message: str):
        super().__init__(message)
        self.at, self.message = at, message


def decode_text(value: bytes) -> tuple[str, bool]:
    """The record as text, and whether it has bytes that are not UTF-8 (kept as lone
    surrogates: only the lines holding them fail, and their bytes can be given back)."""
    try:
        return value.decode("utf-8"), False
    except UnicodeDecodeError:
        return value.decode("utf-8", "surrogateescape"), True


def parse(text: str, lossy: bool = False) -> Iterator[Point | LineError]:
    """Every point of ``text`` and every line that fails, in order. Never raises.

    ``lossy``: ``text`` came from ``decode_text`` with bytes that are not UTF-8.
    """
    pos, end, line = 0, len(text), 1
    while pos < end:
        if m := _POINT.match(text, pos):
            after = m.end()  # the point's line (lines, with a string over several) fails whole
            bad = _NOT_UTF8.search(text, pos, after) if lossy else None
            if bad is not None:
                yield _error(text, pos, line, after, bad.start(), "bytes that are not UTF-8",
                             "not_utf8")
            else:
                try:
                    yield _point(text, m, line)
                except _Invalid as exc:
                    yield _error(text, pos, line, after, exc.at, exc.message)
        elif m := _NOTHING.match(text, pos):
            after = m.end()
        else:
            at, message = _where(text, pos)
            after = text.find("\n", at) + 1 or end  # the line where it fails, to its end
            bad = _NOT_UTF8.search(text, pos, after) if lossy else None
            if bad is not None:
                at, message = bad.start(), "bytes that are not UTF-8"
            yield _error(text, pos, line, after, at, message,
                         "bad_line" if bad is None else "not_utf8")
        line += text.count("\n", pos, after)
        pos = after


def _error(text: str, pos: int, line: int, after: int, at: int, message: str,
           reason: str = "bad_line") -> LineError:
    """The failure at ``at`` of the line(s) from ``pos`` to ``after``, the first on ``line``."""
    start_of_line = max(pos, text.rfind("\n", pos, at) + 1)
    return LineError(line + text.count("\n", pos, at), at - start_of_line + 1, message,
                     text[pos:after].removesuffix("\n").removesuffix("\r"), reason)


def source(text: str, point: Point) -> bytes:
    """The point's line as it was in the record (without its line ending)."""
    return text[point.start:point.end].rstrip("\r\n").encode("utf-8", "surrogateescape")


def _unescape_key(text: str) -> str:
    return _KEY_ESCAPE.sub(r"\1", text) if "\\" in text else text


def _escape_key(text: str) -> str:
    return _KEY_SPECIAL.sub(r"\\\g<0>", text)


def tag_set(point: Point) -> str:
    """The tag set as line protocol writes it after the measurement: ",k=v" per tag, sorted
    by key and escaped, so that equal tag sets give equal text ("" without tags)."""
    keys = list(point.tags)
    if "\\" not in point.raw_tags and keys == sorted(keys):
        return point.raw_tags  # Telegraf sorts its tags: as written is the canonical form
    return "".join(f",{_escape_key(k)}={_escape_key(point.tags[k])}" for k in sorted(keys))


def _point(text: str, m: re.Match, line: int) -> Point:
    measurement, raw_tags, raw_fields, raw_time = m.groups()
    if "\\" in measurement:
        measurement = _MEASUREMENT_ESCAPE.sub(r"\1", measurement)
    tags: dict[str, str] = {}
    if raw_tags:
        if "\\" in raw_tags:
            pairs = [(_unescape_key(k), _unescape_key(v)) for k, v in
                     _TAG_PARTS.findall(raw_tags)]
        else:  # no escapes: every pair has exactly one "="
            pairs = [pair.split("=") for pair in raw_tags[1:].split(",")]
        tags = dict(pairs)
        if len(tags) < len(pairs):
            _twice(text, m, pairs)
    if "\\" in raw_fields:
        entries = [(_unescape_key(k), v) for k, v in _FIELD_PARTS.findall(raw_fields)]
    elif '"' in raw_fields:
        entries = _PLAIN_FIELDS.findall(raw_fields)
    else:  # no escapes, no strings: every entry has exactly one "="
        entries = [entry.split("=") for entry in raw_fields.split(",")]
    fields: list[tuple[str, float | None]] = []
    for key, raw in entries:
        last = raw[-1]
        if last == "i" or last == "u":
            number = int(raw[:-1])
            if not (-INT64 <= number < INT64 if last == "i" else number < UINT64):
                raise _Invalid(_field_at(text, m, len(fields)), f"field {key!r}: {raw} is out "
                               f"of range for {'an integer' if last == 'i' else 'an unsigned'}")
            fields.append((key, float(number)))
        elif last == '"' or raw[0] in "tTfF":
            fields.append((key, None))
        else:
            value = float(raw)
            if value in _INFINITIES:
                raise _Invalid(_field_at(text, m, len(fields)),
                               f"field {key!r}: {raw} is out of range for a float")
            fields.append((key, value))
    time = None
    if raw_time is not None:
        time = int(raw_time)
        if not -INT64 <= time < INT64:
            raise _Invalid(m.start(4), f"timestamp {raw_time} is out of range for int64")
    return Point(line, measurement, tags, fields, time, raw_tags, m.start(), m.end())


def _twice(text: str, m: re.Match, pairs: list) -> None:
    seen: set[str] = set()
    for tag, (key, _) in zip(_TAG_PARTS.finditer(text, m.start(2), m.end(2)), pairs,
                             strict=True):
        if key in seen:
            raise _Invalid(tag.start(1), f"tag key {key!r} given twice")
        seen.add(key)


def _field_at(text: str, m: re.Match, index: int) -> int:
    """Where the value of the point's ``index``-th field starts."""
    for i, field in enumerate(_FIELD_PARTS.finditer(text, m.start(3), m.end(3))):
        if i == index:
            return field.start(2)
    return m.start(3)


def _where(text: str, pos: int) -> tuple[int, str]:
    """Where the line at ``pos``, which ``_POINT`` refuses, fails and why: the same patterns
    as ``_POINT``, one section at a time."""
    step = _STEPS
    at = step["lead"].match(text, pos).end()  # type: ignore[union-attr]
    if not (m := step["measurement"].match(text, at)):
        return at, "expected a measurement name"
    at = m.end()
    while text.startswith(",", at):
        if not (m := step["key"].match(text, at + 1)):
            return at + 1, "expected a tag key after ','"
        at = m.end()
        if not text.startswith("=", at):
            return at, "expected '=' after the tag key"
        if not (m := step["key"].match(text, at + 1)):
            return at + 1, "expected a tag value after '='"
        at = m.end()
    if not (m := step["spaces"].match(text, at)):
        return at, "expected ',' and a tag or a space and the fields"
    at = m.end()
    while True:
        if not (m := step["key"].match(text, at)):
            return at, "expected a field key"
        at = m.end()
        if not text.startswith("=", at):
            return at, "expected '=' after the field key"
        at += 1
        if not (m := step["value"].match(text, at)):
            if text.startswith('"', at):
                return at, "string value without its closing '\"'"
            return at, "expected a number (1.5, 2i, 3u), a string or a boolean"
        at = m.end()
        if not text.startswith(",", at):
            break
        at += 1
    at = step["time"].match(text, at).end()  # type: ignore[union-attr]
    if not step["eol"].match(text, at):
        return at, "expected ',' and a field, an integer timestamp or the end of the line"
    return at, "does not parse"  # not reached: the steps are _POINT's own patterns
