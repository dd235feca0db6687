"""Two versions of a model over the input's retained history, scored on the same labels.

Before a promotion: both versions run from cold per-stream state over the same events (read
outside the detectors' group, decoded with ``run``'s input settings), through the serving step
the detector uses. Only labels of events after the candidate's training data count (its card's
``data.time_range.to``, a time of the input topic's records): a model is not scored on the
events it learned from. Verdicts on runs are the live model's runs and are not replayed here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.errors import UsageError
from detector.kafka.registry import Registry
from detector.labels import history, topic
from detector.labels.book import IGNORED, UNKNOWN, LabelBook
from detector.labels.figures import Counts
from detector.model.serving import ModelStep
from detector.settings.labels import BacktestSettings
from detector.stream.engine import Engine, Result

DAY_S = 86_400.0


@dataclass
class Side:
    """One version over the history: its flags' counts against the labels, its alerts."""

    step: ModelStep
    engine: Engine
    counts: Counts = field(default_factory=Counts)
    alerts: int = 0  # runs that fired
    flagged: int = 0  # events flagged 1

    def take(self, res: Result) -> None:
        self.alerts += sum(1 for run in res.runs if run.status == "firing")
        self.flagged += int(res.flag[res.processed].sum())


@dataclass
class LabelUse:
    """Which labels the backtest scored, and which it left out."""

    scored: set[str] = field(default_factory=set)  # some event after the cutoff
    before: set[str] = field(default_factory=set)  # some event in the training range
    events_left_out: int = 0


def versions(settings: BacktestSettings, name: str, version: int, against: int | None
             ) -> tuple[ModelStep, ModelStep, dict[str, Any]]:
    """The candidate and the version it is compared with (by default the live one), loaded
    from the registry as the detector loads them; and the candidate's card."""
    registry = Registry(settings.kafka, settings.models_topic)
    try:
        state = registry.state()
        if against is None:
            pointer = state.pointers.get(name)
            if pointer is None or pointer.live is None:
                raise UsageError(f"model {name} has no live version: give --against VERSION")
            against = pointer.live
        if against == version:
            raise UsageError(f"model {name} v{version} against itself: give another --against")
        found = [state.version(name, v) for v in (version, against)]
        steps = [ModelStep.from_tflite(registry.reader.tflite(v), v.card, name, v.version)
                 for v in found]
    finally:
        registry.close()
    return steps[0], steps[1], found[0].card


def cutoff_of(card: dict[str, Any]) -> float | None:
    """The end of a model's training data, from its card (None: the card records none)."""
    data = card.get("data") if isinstance(card.get("data"), dict) else {}
    span = data.get("time_range") if isinstance(data.get("time_range"), dict) else {}
    to = span.get("to")
    return float(to) if isinstance(to, int | float) and not isinstance(to, bool) else None


def _score(book: LabelBook, labeled_streams: set[str], events: history.Events,
           results: list[Result], sides: list[Side], cutoff: float | None, use: LabelUse
           ) -> None:
    """The chunk's labeled events against each side's flags."""
    res0 = results[0]
    labeled = np.array([n in labeled_streams for n in events.names], bool) & res0.processed
    if not labeled.any():
        return
    groups: dict[str, list[int]] = {}
    for i in np.nonzero(labeled)[0].tolist():
        groups.setdefault(events.names[i], []).append(i)
    for stream, rows in groups.items():
        idx = np.array(rows)
        seq, ts = res0.seq[idx], events.batch.ts[idx]
        truth = book.truths(stream, seq, ts)
        after = np.ones(len(idx), bool) if cutoff is None else events.record_s[idx] > cutoff
        known = (truth != UNKNOWN) & (truth != IGNORED)
        use.events_left_out += int((known & ~after).sum())
        for label in book.ranges(stream):
            covered = label.mask(seq, ts)
            if (covered & after).any():
                use.scored.add(label.id)
            if (covered & ~after).any():
                use.before.add(label.id)
        scored = known & after
        for side, res in zip(sides, results, strict=True):
            side.counts += Counts.of(truth[scored], res.flag[idx][scored])


def run(settings: BacktestSettings, name: str, version: int, against: int | None,
        since_s: float, progress: Callable[[int, int], None]) -> dict[str, Any]:
    """The backtest's figures, as ``--json`` prints them."""
    candidate, other, card = versions(settings, name, version, against)
    cutoff = cutoff_of(card)
    book, skipped = topic.load(settings.kafka, settings.labels_topic)
    sides = [Side(step, Engine(step, alert_min_length=settings.alert_min_length))
             for step in (candidate, other)]
    use = LabelUse()
    labeled_streams = book.streams()
    streams: set[str] = set()
    totals = {"events": 0, "disagreements": 0}

    def handle(events: history.Events) -> None:
        results = [side.engine.process(events.batch) for side in sides]
        done = results[0].processed
        totals["events"] += int(done.sum())
        totals["disagreements"] += int((results[0].flag[done] != results[1].flag[done]).sum())
        streams.update(events.names)
        for side, res in zip(sides, results, strict=True):
            side.take(res)
        _score(book, labeled_streams, events, results, sides, cutoff, use)

    started = time.perf_counter()
    read = history.read(settings.kafka, settings.input_topic, settings.mapping, since_s, handle,
                        progress)
    seconds = time.perf_counter() - started
    days = ((read.last_s or 0) - (read.first_s or 0)) / DAY_S
    ranges = {label.id for label in book if label.kind in ("pattern", "no_pattern")}

    def side_dict(side: Side) -> dict[str, Any]:
        per_day = side.alerts / (len(streams) * days) if streams and days > 0 else None
        return {"version": side.step.version, **side.counts.as_dict(),
                "alerts": side.alerts, "alerts_per_stream_day": per_day,
                "flagged": side.flagged}

    return {
        "name": name, "candidate": side_dict(sides[0]), "against": side_dict(sides[1]),
        "events": totals["events"], "disagreements": totals["disagreements"],
        "streams": len(streams), "input": read.time_range(), "cutoff": cutoff,
        "labels": {"in_topic": dict(book.kinds), "scored": len(use.scored & ranges),
                   "left_out": len((use.before - use.scored) & ranges),
                   "partly_left_out": len(use.before & use.scored & ranges),
                   "not_seen": len(ranges - use.scored - use.before),
                   "events_left_out": use.events_left_out, "records_skipped": skipped.total},
        "seconds": round(seconds, 3),
        "events_per_second": totals["events"] / seconds if seconds > 0 else None,
    }
