"""A replay of CSV columns as streams: a person's own data through the detector.

The file is read and checked (``detector.stream.csv_columns``) before anything is sent, so a
missing or non-numeric column is one line and a non-zero exit, not a half-sent replay; each
value is sent as the text of its cell.
"""

from __future__ import annotations

import json

from detector.errors import UsageError
from detector.stream.codec import MAX_STREAM_CHARS
from detector.stream.csv_columns import read_columns


class CsvSource:
    """A replay of CSV columns, one round per data row: each column with a value in that row
    sends it, ``seq`` being the row (0-based), so an empty cell leaves a gap in its stream."""

    def __init__(self, path: str, names: tuple[str, ...], prefix: str = ""):
        self.columns = read_columns(path, names).columns
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
