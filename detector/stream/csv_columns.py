"""Columns of a CSV file as streams, read once for every use (evaluation, replay).

The whole file is read and checked before anything uses it, so a missing or non-numeric column
is one line and a non-zero exit; read as "every numeric column", a column that is not numeric
is named with its first bad cell; two columns of one name are refused (both would be one
stream). Values keep the text of their cell: a cell that is a JSON number is kept as written
(``23.50``, ``1e-9``, an integer beyond 2^53), so a replay loses no precision; one that only
Python reads as a number (``+5``, ``.5``) becomes its shortest float repr.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


@dataclass(frozen=True)
class Skipped:
    """A column left out of "every numeric column", and why: a person who asked for every
    column must learn that one is missing and which cell to fix."""

    name: str
    why: str  # "data row 3 has 'N/A'", or "no values"

    def __str__(self) -> str:
        return f"column {self.name!r} skipped: {self.why}"


@dataclass(frozen=True)
class CsvColumns:
    """The columns read as streams, and those left out (only without named columns)."""

    columns: list[Column]
    skipped: list[Skipped]

    def streams(self) -> dict[str, np.ndarray]:
        """Each column's values by its name, in row order."""
        return {c.name: np.array(c.values(), np.float64) for c in self.columns}


def read_rows(path: str | Path, wanted: tuple[str, ...] = ()
              ) -> tuple[list[list[str]], list[str], bytes]:
    """A CSV file's rows, its header (names stripped) and its bytes; UsageError, one line,
    when it cannot be read, is not UTF-8 CSV, is empty or lacks a ``wanted`` column."""
    try:
        data = Path(path).read_bytes()
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a UTF-8 CSV file: {exc}") from None
    if not rows:
        raise UsageError(f"{path} is empty: expected a header row naming the columns")
    header = [h.strip() for h in rows[0]]
    for name in wanted:
        if name not in header:
            raise UsageError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
    return rows, header, data


def read_columns(path: str | Path, names: tuple[str, ...] | None = None) -> CsvColumns:
    """The named columns of a CSV with a header row; empty cells skipped. Raises UsageError.

    Without ``names``: every column whose non-empty cells are all numbers; each other column
    is in ``skipped`` with its first cell that is not a finite number.
    """
    if names and len(set(names)) != len(names):
        raise UsageError(f"{path}: a column is named twice in {', '.join(names)}")
    rows, header, _ = read_rows(path, names or ())
    columns, skipped = [], []
    for name in names or header:
        at = [i for i, h in enumerate(header) if h == name]
        if name and len(at) > 1:
            raise UsageError(f"{path}: the header has {len(at)} columns named {name!r} (columns "
                             f"{', '.join(str(i + 1) for i in at)}): a stream is known by its "
                             "column's name, so each needs a name of its own")
        kept, numbers, bad = [], [], None
        for row_number, row in enumerate(rows[1:]):
            cell = row[at[0]] if at[0] < len(row) else ""
            if not cell.strip():
                continue
            number = json_number(cell)
            if number is None:
                bad = f"data row {row_number + 1} has {cell[:40]!r}"
                break
            kept.append(row_number)
            numbers.append(number)
        if names and bad:
            raise UsageError(f"{path}: column {name!r} is not numeric: {bad}")
        if names and not numbers:
            raise UsageError(f"{path}: column {name!r} has no values")
        if bad or not numbers:
            skipped.append(Skipped(name, bad or "no values"))
        else:
            columns.append(Column(name, kept, numbers))
    if not columns:
        raise UsageError(f"{path}: no numeric column ("
                         + "; ".join(str(s) for s in skipped) + ")")
    return CsvColumns(columns, skipped)
