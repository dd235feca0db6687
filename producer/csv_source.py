"""Columns of a CSV file as streams: a person's own data through the detector.

The whole file is read and checked before anything is sent, so a missing or non-numeric column
is one line and a non-zero exit, not a half-sent replay. Values keep the text of their cell:
a cell that is a JSON number is sent as written (``23.50``, ``1e-9``, an integer beyond 2^53),
so no precision is lost on the way; one that only Python reads as a number (``+5``, ``.5``)
is sent as its shortest float repr.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from detector.codec import MAX_STREAM_CHARS
from detector.errors import UsageError

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Column:
    """One column as a stream: the data rows that have a value (0-based) and its JSON text."""

    name: str
    rows: list[int]
    numbers: list[str]

    def values(self) -> list[float]:
        return [float(text) for text in self.numbers]


def json_number(cell: str) -> str | None:
    """The cell as JSON number text, or None when it is not a finite number."""
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return text if _JSON_NUMBER.fullmatch(text) else repr(value)


def read_columns(path: str, names: tuple[str, ...]) -> list[Column]:
    """The named columns of a CSV with a header row; empty cells skipped. Raises UsageError."""
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: a column is named twice in {', '.join(names)}")
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a UTF-8 CSV file: {exc}") from None
    if not rows:
        raise UsageError(f"{path} is empty: expected a header row naming the columns")
    header = [h.strip() for h in rows[0]]
    columns = []
    for name in names:
        if name not in header:
            raise UsageError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
        at = header.index(name)
        kept, numbers = [], []
        for row_number, row in enumerate(rows[1:]):
            cell = row[at] if at < len(row) else ""
            if not cell.strip():
                continue
            number = json_number(cell)
            if number is None:
                raise UsageError(f"{path}: column {name!r} is not numeric: data row "
                                 f"{row_number + 1} has {cell[:40]!r}")
            kept.append(row_number)
            numbers.append(number)
        if not numbers:
            raise UsageError(f"{path}: column {name!r} has no values")
        columns.append(Column(name, kept, numbers))
    return columns


class CsvSource:
    """A replay of CSV columns, one round per data row: each column with a value in that row
    sends it, ``seq`` being the row (0-based), so an empty cell leaves a gap in its stream."""

    def __init__(self, path: str, names: tuple[str, ...], prefix: str = ""):
        self.columns = read_columns(path, names)
        self.ids = [prefix + c.name for c in self.columns]
        for stream in self.ids:
            if not 0 < len(stream) <= MAX_STREAM_CHARS:
                raise UsageError(f"stream id {stream[:40]!r}... must be 1..{MAX_STREAM_CHARS} "
                                 "characters")
        self.keys = [s.encode() for s in self.ids]
        self._json_ids = [json.dumps(s) for s in self.ids]
        self._by_row: dict[int, list[tuple[int, str]]] = {}
        for i, column in enumerate(self.columns):
            for row, number in zip(column.rows, column.numbers, strict=True):
                self._by_row.setdefault(row, []).append((i, number))
        self._rows = iter(sorted(self._by_row))
        self._row = -1
        self._numbers: dict[int, str] = {}

    @property
    def events(self) -> int:
        return sum(len(c.rows) for c in self.columns)

    def next_round(self) -> list[int] | None:
        """The next row with a value: its columns' stream indices; None after the last row."""
        self._row = next(self._rows, -1)
        if self._row < 0:
            return None
        self._numbers = dict(self._by_row[self._row])
        return list(self._numbers)

    def record(self, i: int, ts: float) -> bytes:
        """Column ``i``'s value of this row, its text unchanged; no epoch (a replayed row is
        the same event as before: a duplicate by seq)."""
        return (f'{{"stream":{self._json_ids[i]},"seq":{self._row},'
                f'"value":{self._numbers[i]},"ts":{ts!r}}}').encode()
