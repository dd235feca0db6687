"""Labeled streams: a user's CSV in long format, read and checked; a model scored on them.

One row per event: a value, a label (1: the pattern is complete at this event, 0: not) and,
optionally, a stream id; rows are in order within each stream, and streams may interleave.
Every mistake in the file is one line naming the row and the column (``UsageError``, exit 2),
found before anything is trained.

Scoring runs the streams through the serving step as the pipeline does (``run_streams``:
interleaved, cut into polls, state carried), so the figures are the pipeline's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detector.errors import UsageError
from detector.model.serving import ModelStep
from detector.stream.csv_columns import json_number, read_rows
from detector.training.evaluation import run_streams

#: Streams given as ``(values, labels)``, by name.
Labeled = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class LabeledFile:
    """Labeled streams; a label below 0 is an event without one (context for the window, never
    trained or scored on: ``train --from-kafka`` labels only some ranges of a stream)."""

    path: Path
    sha256: str
    streams: Labeled
    #: The card's account of the data where it is not a file (``train --from-kafka``).
    source: dict | None = None

    @property
    def events(self) -> int:
        """Labeled events."""
        return sum(int((y >= 0).sum()) for _, y in self.streams.values())

    @property
    def label_rate(self) -> float:
        ones = sum(int((y == 1).sum()) for _, y in self.streams.values())
        return ones / self.events if self.events else 0.0

    def describe(self) -> dict:
        """The model card's ``data``."""
        if self.source is not None:
            return dict(self.source)
        return {"file": self.path.name, "sha256": self.sha256, "streams": len(self.streams),
                "events": self.events, "label_rate": round(self.label_rate, 6)}


def read_labeled(path: str | Path, value_column: str, label_column: str,
                 stream_column: str | None = None, min_events: int = 1,
                 both_classes: bool = True) -> LabeledFile:
    """The file's streams, checked: every value a finite number, every label 0 or 1, both
    classes present (to train on; a score may be of one, such as false alarms on a quiet
    period), at least ``min_events`` events. Raises UsageError with the row and column of the
    first mistake."""
    path = Path(path)
    wanted = tuple(c for c in (value_column, label_column, stream_column) if c is not None)
    rows, header, data = read_rows(path, wanted)
    for name in wanted:
        if header.count(name) > 1:
            raise UsageError(f"{path}: two columns are named {name!r}")
    at_value, at_label = header.index(value_column), header.index(label_column)
    at_stream = header.index(stream_column) if stream_column else None
    values: dict[str, list[float]] = {}
    labels: dict[str, list[int]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        cells = [row[i].strip() if i < len(row) else "" for i in range(len(header))]
        text = json_number(cells[at_value])
        if text is None:
            raise UsageError(f"{path}: row {number}, column {value_column!r}: "
                             f"{cells[at_value][:40]!r} is not a finite number")
        label = cells[at_label]
        if label not in ("0", "1", "0.0", "1.0"):
            raise UsageError(f"{path}: row {number}, column {label_column!r}: label "
                             f"{label[:40]!r} is not 0 or 1")
        stream = "" if at_stream is None else cells[at_stream]
        if at_stream is not None and not stream:
            raise UsageError(f"{path}: row {number}, column {stream_column!r}: no stream id")
        values.setdefault(stream, []).append(float(text))
        labels.setdefault(stream, []).append(int(float(label)))
    name = path.stem
    streams = {(s or name): (np.array(v, np.float64), np.array(labels[s], np.int8))
               for s, v in values.items()}
    out = LabeledFile(path, hashlib.sha256(data).hexdigest(), streams)
    if out.events < min_events:
        raise UsageError(f"{path}: {out.events} event(s); the model's window needs at least "
                         f"{min_events}")
    ones = sum(int(y.sum()) for _, y in streams.values())
    if both_classes and ones in (0, out.events):
        raise UsageError(f"{path}: every label in column {label_column!r} is {int(ones > 0)}: "
                         "a model needs events of both classes to learn from")
    return out


def split(names: list[str], seed: int, share: float = 0.2) -> tuple[list[str], list[str]]:
    """Whole streams held out for the report (about ``share``; at least one, when there are
    two or more), the rest to train on, chosen by ``seed``."""
    order = sorted(names)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    held = max(1, round(share * len(order))) if len(order) > 1 else 0
    return sorted(order[held:]), sorted(order[:held])


@dataclass(frozen=True)
class Figures:
    """How flags compare with labels over some events."""

    events: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    false_alarms_per_1000: float
    missed: int  # label-1 events flagged 0

    @classmethod
    def of(cls, labels: np.ndarray, flags: np.ndarray) -> Figures:
        """Over the labeled events (a label below 0 is none)."""
        known = np.asarray(labels) >= 0
        y, f = np.asarray(labels)[known].astype(bool), np.asarray(flags, bool)[known]
        n = len(y)
        tp, fp, fn = int((f & y).sum()), int((f & ~y).sum()), int((~f & y).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        return cls(n, float((f == y).mean()) if n else 1.0, precision, recall, f1,
                   1000 * fp / n if n else 0.0, fn)


@dataclass(frozen=True)
class LabeledReport:
    """A model's flags against the labels: overall, and per stream."""

    model: str
    overall: Figures
    streams: dict[str, Figures] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"model": self.model, **asdict(self.overall),
                "streams": {name: asdict(f) for name, f in self.streams.items()}}


def score_labeled(step: ModelStep, streams: Labeled, seed: int = 12345) -> LabeledReport:
    """Each stream through the serving step (interleaved, in polls), scored on its labels."""
    names = list(streams)
    flags, _ = run_streams(step, [streams[n][0] for n in names], np.random.default_rng(seed))
    per = {n: Figures.of(streams[n][1], f) for n, f in zip(names, flags, strict=True)}
    overall = Figures.of(np.concatenate([streams[n][1] for n in names]),
                         np.concatenate(flags)) if names else Figures.of(np.zeros(0), np.zeros(0))
    return LabeledReport(step.name, overall, per)
