"""A replay of a CSV file as streams: a person's own data through the detector.

Two layouts, as ``evaluate`` and ``train`` read them: *wide*, a column a stream and a row a
step (``--column``, or every numeric column when none is named), and *long*, a row an event
(``--value-column``, with ``--stream-column`` naming each row's stream). The file is read and
checked (``detector.stream.csv_columns``) before anything is sent, so a missing or
non-numeric column is one line and a non-zero exit, not a half-sent replay; each value is
sent as the text of its cell.
"""

from __future__ import annotations

import json

from detector.errors import UsageError
from detector.stream.codec import MAX_STREAM_CHARS
from detector.stream.csv_columns import Skipped, json_number, read_columns, read_rows


def _stream_ids(ids: list[str]) -> list[str]:
    for stream in ids:
        if not 0 < len(stream) <= MAX_STREAM_CHARS:
            raise UsageError(f"stream id {stream[:40]!r}... must be 1..{MAX_STREAM_CHARS} "
                             "characters")
    return ids


class CsvSource:
    """A replay of CSV columns, one round per data row: each column with a value in that row
    sends it, ``seq`` being the row (0-based), so an empty cell leaves a gap in its stream.
    No ``names``: every numeric column, the others in ``skipped``."""

    def __init__(self, path: str, names: tuple[str, ...], prefix: str = ""):
        table = read_columns(path, names or None)
        self.columns, self.skipped = table.columns, table.skipped
        self.ids = _stream_ids([prefix + c.name for c in self.columns])
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


class LongCsvSource:
    """A replay of a long-format CSV, one round per row (one event): the row's stream sends
    its value, ``seq`` counting that stream's rows from 0. Without ``stream_column`` the file
    is one stream, named after ``value_column``."""

    def __init__(self, path: str, value_column: str, stream_column: str | None,
                 prefix: str = ""):
        wanted = (value_column,) + ((stream_column,) if stream_column else ())
        rows, header, _ = read_rows(path, wanted)
        at_value = header.index(value_column)
        at_stream = header.index(stream_column) if stream_column else None
        index: dict[str, int] = {}
        self._events: list[tuple[int, int, str]] = []  # stream index, seq, value text
        counts: list[int] = []
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            cell = row[at_value] if at_value < len(row) else ""
            text = json_number(cell)
            if text is None:
                raise UsageError(f"{path}: row {number}, column {value_column!r}: "
                                 f"{cell.strip()[:40]!r} is not a finite number")
            stream = value_column if at_stream is None else (
                row[at_stream].strip() if at_stream < len(row) else "")
            if not stream:
                raise UsageError(f"{path}: row {number}, column {stream_column!r}: no stream id")
            i = index.setdefault(stream, len(index))
            if i == len(counts):
                counts.append(0)
            self._events.append((i, counts[i], text))
            counts[i] += 1
        if not self._events:
            raise UsageError(f"{path}: no rows of values in column {value_column!r}")
        self.skipped: list[Skipped] = []
        self.ids = _stream_ids([prefix + s for s in index])
        self.keys = [s.encode() for s in self.ids]
        self._json_ids = [json.dumps(s) for s in self.ids]
        self._next = 0

    @property
    def events(self) -> int:
        return len(self._events)

    def next_round(self) -> list[int] | None:
        """The next row's stream; None after the last row."""
        if self._next >= len(self._events):
            return None
        self._next += 1
        return [self._events[self._next - 1][0]]

    def record(self, i: int, ts: float) -> bytes:
        """This row's event (of stream ``i``), its value's text unchanged; no epoch."""
        _, seq, text = self._events[self._next - 1]
        return (f'{{"stream":{self._json_ids[i]},"seq":{seq},"value":{text},'
                f'"ts":{ts!r}}}').encode()


def stream_id_column(path: str, used: tuple[str, ...]) -> str | None:
    """A column the wide replay does not send whose cells look like stream ids (text, each
    repeated: at most half as many distinct ones as rows): the file is likely long format,
    and replaying its value column as one stream is likely a mistake worth a word."""
    rows, header, _ = read_rows(path)
    data = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    for at, name in enumerate(header):
        if name in used:
            continue
        cells = [row[at].strip() if at < len(row) else "" for row in data]
        if (len(cells) >= 4 and all(cells) and all(json_number(c) is None for c in cells)
                and 2 <= len(set(cells)) <= len(cells) / 2):
            return name
    return None
