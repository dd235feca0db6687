"""Columns of a CSV file as streams, read once for every use (evaluation, replay).

The whole file is read and checked before anything uses it, so a missing or non-numeric column
is one line and a non-zero exit. Values keep the text of their cell: a cell that is a JSON
number is kept as written (``23.50``, ``1e-9``, an integer beyond 2^53), so a replay loses no
precision; one that only Python reads as a number (``+5``, ``.5``) becomes its shortest
float repr.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

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


def read_columns(path: str | Path, names: tuple[str, ...] | None = None) -> list[Column]:
    """The named columns of a CSV with a header row; empty cells skipped. Raises UsageError.

    Without ``names``: every column whose non-empty cells are all numbers.
    """
    if names and len(set(names)) != len(names):
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
    for name in names or header:
        if name not in header:
            raise UsageError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
        at = header.index(name)
        kept, numbers = [], []
        for row_number, row in enumerate(rows[1:]):
            cell = row[at] if at < len(row) else ""
            if not cell.strip():
                continue
            number = json_number(cell)
            if number is None and not names:
                break  # looking for numeric columns: not this one
            if number is None:
                raise UsageError(f"{path}: column {name!r} is not numeric: data row "
                                 f"{row_number + 1} has {cell[:40]!r}")
            kept.append(row_number)
            numbers.append(number)
        else:
            if not numbers and names:
                raise UsageError(f"{path}: column {name!r} has no values")
            if numbers:
                columns.append(Column(name, kept, numbers))
    if not columns:
        raise UsageError(f"{path}: no numeric column")
    return columns


