"""Where the stream id, value, seq, time and epoch are in an input record (``stream.mapping``)."""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from typing import Any

from detector.settings.fields import ConfigError, opt

INPUT_FORMATS = ("json", "number", "influx")
#: A numeric event time's unit, and its divisor to epoch seconds (an int: an integer time
#: divides exactly rounded, which keeps nanoseconds beyond 2^53 as close as a float can).
TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
#: The producer's contract: the id is the record's ``stream`` field, equal to the record key.
DEFAULT_STREAM_ID = "{stream}"
#: Line protocol's: the series as InfluxDB writes it (measurement, then every tag sorted by
#: key, escaped), a space and the field: ``cpu,cpu=cpu0,host=web-1 usage_idle``.
INFLUX_STREAM_ID = "{measurement}{tags} {field}"
#: The placeholders of a line-protocol stream id (and ``{tags.NAME}``).
INFLUX_PLACEHOLDERS = ("key", "field", "measurement", "tags")


@dataclass(frozen=True)
class InputSettings:
    """How an input record becomes events (``detector/stream/mapping.py``); the defaults are the
    producer's own records."""

    input_format: str = opt(
        "json", "Record value: a JSON object; a bare number (UTF-8 text such as 23.5) whose "
        "stream id is the record key; or InfluxDB line protocol (influx: every numeric field "
        "of every line an event).", INPUT_FORMATS)
    stream_id: str = opt(
        DEFAULT_STREAM_ID, "Template of the stream id: {key} (the record key), {field} (with "
        "--value-path OBJECT.*) and dotted JSON paths such as {name} or {tags.host}. The "
        "default {stream} must equal the record key. With influx: {measurement}, {tags} (all "
        f"of them), {{tags.NAME}}, {{field}} and {{key}}; default {INFLUX_STREAM_ID}.")
    value_path: str = opt(
        "value", "Dotted JSON path of the value; OBJECT.* (such as fields.*) makes every "
        "numeric entry of OBJECT an event of its own stream.")
    seq_path: str = opt(
        "seq", "Dotted JSON path of the per-stream sequence number; empty: the input has "
        "none (the partition offset orders a stream).", empty_ok=True)
    time_path: str = opt(
        "ts", "Dotted JSON path of the optional event time (a number in --time-unit, or an "
        "ISO-8601 string); empty: none.", empty_ok=True)
    time_unit: str = opt("", "Unit of a numeric event time (with influx: of the lines' "
                         "timestamps).", tuple(TIME_UNITS), shown="s (ns with influx)")
    epoch_path: str = opt(
        "epoch", "Dotted JSON path of the optional producer epoch (an integer that grows "
        "with each producer start); empty: none.", empty_ok=True)

    def __post_init__(self) -> None:
        """ConfigError on a template or path that cannot work (``stream.mapping`` compiles
        them with the same functions)."""
        if not self.time_unit:
            object.__setattr__(self, "time_unit", "ns" if self.input_format == "influx" else "s")
        if self.input_format not in INPUT_FORMATS or self.time_unit not in TIME_UNITS:
            raise ConfigError(f"--input-format {self.input_format!r} / --time-unit "
                              f"{self.time_unit!r}: expected one of {', '.join(INPUT_FORMATS)} "
                              f"/ {', '.join(TIME_UNITS)}")
        if self.input_format == "influx":
            for f in fields(self):
                if f.name.endswith("_path") and getattr(self, f.name) != f.default:
                    raise ConfigError(f"--{f.name.replace('_', '-')} does not apply with "
                                      "--input-format influx: a line's fields, tags and "
                                      "timestamp are its own, and it has no seq or epoch")
        spread = self.value_path.endswith(".*")
        parse_template(id_template(self), self.input_format, spread)
        parse_path(self.value_path[:-2] if spread else self.value_path, "--value-path")
        for name in ("seq_path", "time_path", "epoch_path"):
            if getattr(self, name):
                parse_path(getattr(self, name), f"--{name.replace('_', '-')}")


def id_template(s: InputSettings) -> str:
    """The stream id template in force: a bare number's default id is its key, a line's its
    series and field."""
    if s.stream_id != DEFAULT_STREAM_ID:
        return s.stream_id
    return {"number": "{key}", "influx": INFLUX_STREAM_ID}.get(s.input_format, s.stream_id)


#: A path is a str (one name: a plain ``dict.get``) or a tuple of names (nested objects).
Path = str | tuple[str, ...]
#: A template part: ("text", literal), ("key", None), ("field", None) or ("path", Path); with
#: line protocol also ("measurement", None), ("tags", None) and ("tag", NAME).
Part = tuple[str, Any]


def parse_path(text: str, setting: str) -> Path:
    names = text.split(".")
    if not all(names) or "*" in text:
        raise ConfigError(f"{setting} {text!r}: expected a dotted path such as tags.host")
    return names[0] if len(names) == 1 else tuple(names)


def parse_template(text: str, input_format: str, spread: bool) -> list[Part]:
    """The parts of a ``--stream-id`` template; ConfigError for one that cannot work."""
    parts: list[Part] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"--stream-id {text!r}: {exc}") from None
    influx = input_format == "influx"
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(("text", literal))
        if name is None:
            continue
        if spec or conversion or not name:
            raise ConfigError(f"--stream-id {text!r}: a placeholder is {{key}}, {{field}} or "
                              "a dotted path such as {tags.host}")
        if influx:
            parts.append(_influx_part(text, name))
        else:
            parts.append((name, None) if name in ("key", "field")
                         else ("path", parse_path(name, f"--stream-id {text!r}:")))
    if not parts:
        raise ConfigError("--stream-id is empty")
    kinds = {kind for kind, _ in parts}
    if input_format == "number" and "path" in kinds:
        raise ConfigError(f"--stream-id {text!r}: --input-format number has no JSON fields; "
                          "the id may use {key} only")
    if influx and "field" not in kinds:
        raise ConfigError(f"--stream-id {text!r}: with --input-format influx every field is "
                          "a stream of its own: the id needs {field}")
    if not influx and spread != ("field" in kinds):
        raise ConfigError(f"--stream-id {text!r}: {{field}} and a --value-path OBJECT.* go "
                          "together (one stream per entry of OBJECT)")
    return parts


def _influx_part(text: str, name: str) -> Part:
    if name in INFLUX_PLACEHOLDERS:
        return (name, None)
    if name.startswith("tags.") and len(name) > len("tags."):
        return ("tag", name[len("tags."):])  # a tag key may hold dots: all of it is the name
    raise ConfigError(f"--stream-id {text!r}: with --input-format influx a placeholder is "
                      "{measurement}, {tags}, {tags.NAME}, {field} or {key}")
