"""The label record: what a person (or another tool) says about a stream's events.

Key: the stream id (UTF-8). Value: a JSON object, one of

- a range of events: ``{"id", "stream", "from_seq", "to_seq", "label", "source"?,
  "comment"?}``, both seqs inclusive, ``label`` one of ``pattern`` (every event of the range is
  one where the pattern is complete), ``no_pattern`` (none is) or ``ignore`` (leave them out);
  ``from_ts``/``to_ts`` (epoch seconds or ISO-8601, inclusive, the events' own time) take the
  place of the seqs where the input has no seq of its own;
- a verdict on one run alert: ``{"id", "stream", "run_start_seq", "verdict", "source"?,
  "comment"?}``, ``verdict`` ``right`` or ``wrong``.

A later record with the same ``id`` replaces an earlier one. Other fields are ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from detector.errors import UsageError
from detector.stream.codec import MAX_SEQ, MAX_STREAM_CHARS

LABEL_KINDS = ("pattern", "no_pattern", "ignore")
VERDICTS = ("right", "wrong")
#: Every kind a label can be of: what ``score`` counts labels by.
KINDS = LABEL_KINDS + VERDICTS
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 4096
#: The fields a label record may carry (``label --csv`` refuses other columns).
FIELDS = ("id", "stream", "from_seq", "to_seq", "from_ts", "to_ts", "label", "run_start_seq",
          "verdict", "source", "comment")


class LabelError(UsageError):
    """A label that does not fit the format; the message is one line."""


@dataclass(frozen=True, slots=True)
class RangeLabel:
    """Events ``from_..to_`` (seqs, or event times when ``by_time``) of a stream, all one kind."""

    id: str
    stream: str
    label: str  # one of LABEL_KINDS
    start: float  # from_seq, or from_ts
    end: float  # to_seq, or to_ts (inclusive)
    by_time: bool = False
    source: str = ""
    comment: str = ""

    @property
    def kind(self) -> str:
        return self.label

    def covers(self, seq: int, ts: float | None) -> bool:
        if self.by_time:
            return ts is not None and self.start <= ts <= self.end
        return self.start <= seq <= self.end

    def mask(self, seq: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``covers`` for many events (``ts`` NaN: no event time, never covered by time)."""
        at = ts if self.by_time else seq
        return (at >= self.start) & (at <= self.end)

    def record(self) -> dict[str, Any]:
        bounds = ({"from_ts": self.start, "to_ts": self.end} if self.by_time
                  else {"from_seq": int(self.start), "to_seq": int(self.end)})
        return {"id": self.id, "stream": self.stream, **bounds, "label": self.label,
                **_extras(self)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the run alert of ``stream`` that started at ``run_start_seq`` was right."""

    id: str
    stream: str
    run_start_seq: int
    verdict: str  # one of VERDICTS
    source: str = ""
    comment: str = ""

    @property
    def kind(self) -> str:
        return self.verdict

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "run_start_seq": self.run_start_seq,
                "verdict": self.verdict, **_extras(self)}


Label = RangeLabel | Verdict


def _extras(label: Label) -> dict[str, str]:
    return {k: v for k, v in (("source", label.source), ("comment", label.comment)) if v}


def encode(label: Label) -> bytes:
    return json.dumps(label.record(), separators=(",", ":"), ensure_ascii=False).encode()


def default_id(stream: str, what: str) -> str:
    """A label's id when none is given: the stream and what it labels, so that labeling the
    same range (or run) again replaces the earlier label instead of adding one."""
    return f"{stream}@{what}"


def epoch_seconds(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO-8601 string (UTC when it names no offset)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
            return number if math.isfinite(number) else None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _seq(body: dict[str, Any], name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise LabelError(f"{name} must be an integer in [0, 2^63), got {value!r}")
    return value


def _time(body: dict[str, Any], name: str) -> float:
    value = epoch_seconds(body[name])
    if value is None:
        raise LabelError(f"{name} must be epoch seconds or an ISO-8601 time, got "
                         f"{body[name]!r}")
    return value


def _text(body: dict[str, Any], name: str, limit: int, required: bool = False) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise LabelError(f"a label needs {'an' if name == 'id' else 'a'} {name}")
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise LabelError(f"{name} must be text of at most {limit} characters")
    return value


def parse(body: Any) -> Label:
    """A label from a decoded record; LabelError names what does not fit."""
    if not isinstance(body, dict):
        raise LabelError(f"a label is a JSON object, not {type(body).__name__}")
    ident = _text(body, "id", MAX_ID_CHARS, required=True)
    stream = _text(body, "stream", MAX_STREAM_CHARS, required=True)
    extras = {"source": _text(body, "source", MAX_TEXT_CHARS),
              "comment": _text(body, "comment", MAX_TEXT_CHARS)}
    has = {name for name in FIELDS if body.get(name) not in (None, "")}
    shapes = [{"from_seq", "to_seq"} & has, {"from_ts", "to_ts"} & has, {"run_start_seq"} & has]
    given = [s for s in shapes if s]
    if len(given) != 1:
        raise LabelError("a label has from_seq and to_seq, or from_ts and to_ts, or "
                         "run_start_seq (one of these, not several)")
    if "run_start_seq" in has:
        if "label" in has:
            raise LabelError("a run's label is a verdict (right or wrong), not a label")
        verdict = body.get("verdict")
        if verdict not in VERDICTS:
            raise LabelError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        return Verdict(ident, stream, _seq(body, "run_start_seq"), verdict, **extras)
    if "verdict" in has:
        raise LabelError("a verdict is on a run: give run_start_seq, not a range")
    kind = body.get("label")
    if kind not in LABEL_KINDS:
        raise LabelError(f"label must be one of {', '.join(LABEL_KINDS)}, got {kind!r}")
    by_time = "from_ts" in has or "to_ts" in has
    names = ("from_ts", "to_ts") if by_time else ("from_seq", "to_seq")
    missing = [n for n in names if n not in has]
    if missing:
        raise LabelError(f"a range needs {' and '.join(names)} (missing {missing[0]})")
    read = _time if by_time else _seq
    start, end = read(body, names[0]), read(body, names[1])
    if start > end:
        raise LabelError(f"{names[0]} {body[names[0]]} is after {names[1]} {body[names[1]]}")
    return RangeLabel(ident, stream, kind, start, end, by_time, **extras)


def decode(key: bytes | None, value: bytes | None) -> Label:
    """The label of one record of the label topic; LabelError (one line) otherwise."""
    try:
        label = parse(json.loads(value or b""))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LabelError(f"not a JSON label ({str(exc)[:80]})") from None
    if key is not None and key != label.stream.encode():
        raise LabelError(f"record key {key[:40]!r} is not the label's stream {label.stream!r}")
    return label
