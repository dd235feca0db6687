"""Accuracy through the serving step: on fresh uniform streams, on real series (a CSV, or the
battery of public real series and generated shapes), and the picture of a flagged stream.

Streams are interleaved and cut into poll-sized batches the way the pipeline sees them, and go
through the same ``Engine`` (grouped by stream, carried state, compiled step), so the accuracy
reported here is the pipeline's.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector.errors import DetectorError
from detector.model.features import near_tie
from detector.stream.csv_columns import read_columns
from detector.stream.engine import Batch, Engine, occurrence_rank
from detector.task import shapes
from detector.task.rule import exact_flags, repeat_nearby, uniform_streams

if TYPE_CHECKING:
    from detector.model.serving import ModelStep

#: The public real series of the battery (CSV, one column a stream; see its SOURCES.md).
REAL_DIR = Path(__file__).resolve().parents[1] / "task" / "real_series"

#: Records per poll in evaluation, as ``--max-poll-records`` gives the pipeline.
EVAL_BATCH = 2000


@dataclass(frozen=True)
class Evaluation:
    model: str
    features: str
    events: int
    streams: int
    seed: int
    accuracy: float
    errors: int
    errors_near_tie: int
    false_alerts: int
    missed_alerts: int
    seconds: float
    events_per_second: float

    def as_dict(self) -> dict:
        return asdict(self)


def interleave(lengths: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random arrival order of every stream's events that keeps each stream in order.

    Returns ``(stream_index, position)`` per arrival.
    """
    arrivals = np.repeat(np.arange(len(lengths)), lengths)
    rng.shuffle(arrivals)
    return arrivals, occurrence_rank(arrivals)


def run_streams(step: ModelStep, streams: list[np.ndarray], rng: np.random.Generator,
                batch: int = EVAL_BATCH) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Model flags and probabilities for each stream, all interleaved and cut into polls."""
    lengths = [len(v) for v in streams]
    arrivals, position = interleave(lengths, rng)
    names = [f"eval-{s}" for s in range(len(streams))]
    flat = np.concatenate([np.asarray(v, np.float64) for v in streams]) if streams else []
    starts = np.r_[0, np.cumsum(lengths)[:-1]] if streams else []
    engine = Engine(step)
    flags = np.zeros(len(flat), np.int8)
    probs = np.zeros(len(flat), np.float32)
    for start in range(0, len(arrivals), batch):
        a = arrivals[start : start + batch]
        pos = position[start : start + batch]
        at = starts[a] + pos
        res = engine.process(Batch.of([names[s] for s in a], flat[at], seq=pos))
        flags[at] = res.flag
        probs[at] = res.probability
    cut = np.cumsum(lengths)[:-1]
    return np.split(flags, cut), np.split(probs, cut)


@dataclass(frozen=True)
class StreamScore:
    accuracy: float
    events: int
    errors: int


@dataclass(frozen=True)
class Report:
    """Agreement of a model with the exact rule over named streams, and where it errs."""

    model: str
    events: int
    accuracy: float
    errors: int
    errors_near_tie: int  # a step of the window far smaller than the stream's typical step
    errors_repeat: int  # a step of the window is a tie: an exact repeat or float dust
    errors_other: int
    streams: dict[str, StreamScore] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, StreamScore]:
        return min(self.streams.items(), key=lambda kv: kv[1].accuracy)

    @property
    def worst_accuracy(self) -> float:
        return self.worst[1].accuracy if self.streams else 1.0

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """Overall figures and the worst stream, for a model card."""
        name, score = self.worst
        return {k: v for k, v in asdict(self).items() if k != "streams"} | {
            "streams": len(self.streams), "worst_stream": name,
            "worst_stream_accuracy": score.accuracy}


def score(step: ModelStep, streams: dict[str, np.ndarray], seed: int = 12345) -> Report:
    """Run every stream through the serving step (interleaved) and score it against the rule."""
    names = list(streams)
    values = [np.asarray(streams[n], np.float64) for n in names]
    flags, _ = run_streams(step, values, np.random.default_rng(seed))
    per: dict[str, StreamScore] = {}
    kinds = np.zeros(3, np.int64)
    for name, v, f in zip(names, values, flags, strict=True):
        wrong = f != exact_flags(v)
        repeat, close = repeat_nearby(v), near_tie(v)
        kinds += [(wrong & repeat).sum(), (wrong & close & ~repeat).sum(),
                  (wrong & ~close & ~repeat).sum()]
        per[name] = StreamScore(float(1 - wrong.mean()) if len(v) else 1.0, len(v),
                                int(wrong.sum()))
    events = sum(s.events for s in per.values())
    errors = int(kinds.sum())
    return Report(step.name, events, 1 - errors / events if events else 1.0, errors,
                  int(kinds[1]), int(kinds[0]), int(kinds[2]), per)


def read_csv(path: str | Path, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """Named columns of a CSV (default: every numeric one) as streams, in row order; empty
    cells skipped. Raises UsageError (one line) for a missing file or column, or a cell that
    is not a finite number."""
    return read_columns(path, tuple(columns) if columns else None).streams()


def battery(real_dir: Path = REAL_DIR) -> dict[str, dict[str, np.ndarray]]:
    """The check battery: the public real series (package data: an install without them is
    broken, not a smaller battery) and every generated shape at several magnitudes."""
    files = sorted(real_dir.glob("*.csv"))
    if not files:
        raise DetectorError(f"the battery's real series are missing: no CSV file in {real_dir}")
    real = {f"{path.stem}:{name}": v for path in files for name, v in read_csv(path).items()}
    return {"real": real, "generated": shapes.battery()}


def evaluate_battery(step: ModelStep) -> dict[str, Report]:
    return {name: score(step, streams) for name, streams in battery().items()}


def evaluate(step: ModelStep, events: int, streams: int, seed: int) -> Evaluation:
    """Accuracy against the exact rule on ``events`` fresh uniform events over ``streams``."""
    rng = np.random.default_rng(seed)
    length = max(1, events // streams)
    values = uniform_streams(streams, length, rng)
    started = time.perf_counter()
    flags = np.stack(run_streams(step, list(values), rng)[0])
    seconds = time.perf_counter() - started
    truth = np.stack([exact_flags(v) for v in values])
    ties = np.stack([near_tie(v) for v in values])
    wrong = flags != truth
    n = values.size
    return Evaluation(
        model=step.name,
        features=step.features,
        events=n,
        streams=streams,
        seed=seed,
        accuracy=float(1 - wrong.mean()),
        errors=int(wrong.sum()),
        errors_near_tie=int((wrong & ties).sum()),
        false_alerts=int((wrong & (flags == 1)).sum()),
        missed_alerts=int((wrong & (flags == 0)).sum()),
        seconds=seconds,
        events_per_second=n / seconds,
    )


def near_tie_probe(step: ModelStep, eps: float, streams: int = 200, seed: int = 0) -> float:
    """Share of streams whose flags around one near-tie are all right: a walk with steps of
    0.5..2, one step of ``eps`` (relative to that) either way, at a random magnitude."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(streams):
        x = _walk(rng)
        x[20] = x[19] + rng.choice([-1, 1]) * eps
        x[21:] += x[20] - x[21] + rng.choice([-1, 1]) * rng.uniform(0.5, 2)
        cases.append(x * 10 ** rng.uniform(-6, 9))
    return _share_right(step, cases, rng, slice(19, 23))


def spike_probe(step: ModelStep, size: float, streams: int = 100, seed: int = 0) -> float:
    """Share of streams whose flags around two spikes are all right: a walk with steps of
    0.5..2, two steps of about ``size`` (relative to that) in a row, each either way, then an
    ordinary one, at a random magnitude."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(streams):
        x = _walk(rng)
        x[20:] += rng.choice([-1, 1]) * size
        x[21:] += rng.choice([-1, 1]) * size * rng.uniform(0.5, 2)
        x[22:] += rng.choice([-1, 1]) * rng.uniform(0.5, 2)
        cases.append(x * 10 ** rng.uniform(-3, 3))
    return _share_right(step, cases, rng, slice(19, 24))


def long_run_probe(step: ModelStep, length: int, streams: int = 100, seed: int = 0) -> float:
    """Share of streams with every flag right: a run of ``length`` steps one way (slowing down
    by up to 100x), a repeated value, then three more steps."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(streams):
        steps = rng.uniform(0.2, 2, length) * np.geomspace(1, rng.uniform(0.01, 1), length)
        x = np.r_[0.0, np.cumsum(rng.choice([-1, 1]) * steps)]
        x = np.r_[x, x[-1], x[-1] + np.cumsum(rng.choice([-1, 1]) * rng.uniform(0.5, 2, 3))]
        cases.append(np.round(x * 10 ** rng.uniform(-3, 6), 6))
    return _share_right(step, cases, rng, slice(None))


def _walk(rng: np.random.Generator, length: int = 40) -> np.ndarray:
    return np.cumsum(rng.choice([-1.0, 1.0], length) * rng.uniform(0.5, 2, length))


def _share_right(step: ModelStep, cases: list[np.ndarray], rng: np.random.Generator,
                 at: slice) -> float:
    """Share of ``cases`` whose model flags at ``at`` all equal the rule's."""
    flags, _ = run_streams(step, cases, rng)
    return float(np.mean([(f[at] == exact_flags(v)[at]).all()
                          for f, v in zip(flags, cases, strict=True)]))
