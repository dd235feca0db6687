"""``train --from-kafka``: the labeled set from the input topic's history and the label topic.

Every stream with a range label is read from ``--since`` on, decoded with ``run``'s input
settings; duplicates go as the detector drops them (``engine.admit``: a producer's epoch, then
the seq), and input without a seq is numbered as the detector numbers it. Each event's truth
is the labels' (the latest range covering it); the events no label covers, or an ``ignore``
label does, stay in the stream only as the model's context (label -1): only labeled ranges
count. Verdicts on runs are about alerts, not events, and are not trained on. The card
records the topics, the time range of the input read and the label counts, which is what a
backtest reads its cutoff from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from detector.errors import UsageError
from detector.labels import history, topic
from detector.labels.book import LabelBook
from detector.model.features import HISTORY
from detector.settings.labels import HistorySettings
from detector.stream.engine import admit
from detector.stream.state import StreamStore
from detector.training.labeled import LabeledFile


def _streams(book: LabelBook, parts: list[history.Events]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per labeled stream, in arrival order without the detector's duplicates: values, the
    seq the detector gives each (its own count without a seq), event times."""
    if not parts:
        return {}
    names = [n for p in parts for n in p.names]
    cols = [np.concatenate([getattr(p.batch, c) for p in parts])
            for c in ("seq", "value", "ts", "epoch", "offset", "partition")]
    seq, value, ts, epoch, offset, partition = cols
    store = StreamStore(0)
    slots = store.lookup(names, partition)
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    first = np.r_[True, s[1:] != s[:-1]]
    verdict = admit(store, s, first, seq[order], epoch[order], offset[order], partition[order])
    keep = ~(verdict.replayed | verdict.duplicate)
    out: dict[str, tuple[np.ndarray, ...]] = {}
    heads = np.nonzero(first)[0]
    for start, end in zip(heads, np.r_[heads[1:], len(s)], strict=True):
        rows, kept = order[start:end], keep[start:end]
        out[names[rows[0]]] = (value[rows][kept], verdict.out_seq[start:end][kept],
                               ts[rows][kept])
    return out


def labeled_history(settings: HistorySettings, since_s: float,
                    progress: Callable[[int, int], None]) -> LabeledFile:
    """The labeled set; UsageError (one line) when the labels give nothing to learn from."""
    book, skipped = topic.load(settings.kafka, settings.labels_topic)
    wanted = {s for s in book.streams() if book.ranges(s)}
    if not wanted:
        raise UsageError(f"the label topic {settings.labels_topic} holds no range label "
                         "(python -m detector label --stream S --from-seq A --to-seq B "
                         "--pattern|--no-pattern)")
    parts: list[history.Events] = []

    def keep(events: history.Events) -> None:
        mine = np.array([n in wanted for n in events.names], bool)
        if mine.any():
            at = np.nonzero(mine)[0]
            parts.append(history.Events([events.names[i] for i in at.tolist()],
                                        events.batch.take(at), events.record_s[at]))

    read = history.read(settings.kafka, settings.input_topic, settings.mapping, since_s, keep,
                        progress)
    streams, used = {}, set()
    for name, (values, seq, ts) in sorted(_streams(book, parts).items()):
        truth = book.truths(name, seq, ts)
        if (truth >= 0).any():
            streams[name] = (values, np.where(truth >= 0, truth, -1).astype(np.int8))
            used.update(label.id for label in book.ranges(name) if label.mask(seq, ts).any())
    y = np.concatenate([labels for _, labels in streams.values()]) if streams else np.zeros(0)
    counts = {"pattern": int((y == 1).sum()), "no_pattern": int((y == 0).sum())}
    if counts["pattern"] == 0 or counts["no_pattern"] == 0:
        raise UsageError(f"the labels of {settings.labels_topic} cover {counts['pattern']} "
                         f"pattern and {counts['no_pattern']} no_pattern event(s) in "
                         f"{settings.input_topic} since the start time: a model needs both")
    if sum(counts.values()) < HISTORY["window"]:
        raise UsageError(f"{sum(counts.values())} labeled event(s); the model's window needs "
                         f"at least {HISTORY['window']}")
    digest = hashlib.sha256("\n".join(sorted(used)).encode()).hexdigest()
    events = sum(counts.values())
    source = {"source": "kafka", "input_topic": settings.input_topic,
              "labels_topic": settings.labels_topic,
              "time_range": {"from": read.first_s, "to": read.last_s, "since": read.since_s},
              "input": read.time_range(), "labels_in_topic": dict(book.kinds),
              "labels_used": len(used), "label_records_skipped": skipped.total,
              "labeled_events": counts, "streams": len(streams), "events": events,
              "label_rate": round(counts["pattern"] / events, 6), "labels_sha256": digest}
    return LabeledFile(Path(settings.labels_topic), digest, streams, source)
