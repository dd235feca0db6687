"""The labels in force: the latest record of each id, each stream's labels in the order they
were written, and the truth they give an event.

Order is a record's position on the label topic: its timestamp, then partition and offset (a
stream's labels share a partition, since they are keyed by it, so for one stream this is the
order they were written in). Where ranges of one stream overlap, the latest covering an event
decides it: relabeling a stretch needs no deletion of the labels under it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator

import numpy as np

from detector.labels.codec import KINDS, Label, RangeLabel, Verdict

#: An event's truth: 1 pattern, 0 no pattern, or one of these (never scored).
UNKNOWN, IGNORED = -1, -2
TRUTH = {"pattern": 1, "no_pattern": 0, "ignore": IGNORED}

#: Where a label record sits on its topic: (timestamp in ms, partition, offset).
Position = tuple[int, int, int]


class LabelBook:
    def __init__(self) -> None:
        self._by_id: dict[str, tuple[Position, Label]] = {}
        self._ranges: dict[str, list[tuple[Position, RangeLabel]]] = {}
        self._verdicts: dict[str, list[tuple[Position, Verdict]]] = {}
        #: Per stream, the seqs its seq ranges span and whether it has time ranges: most flag
        #: records lie outside every label, and this says so without looking at each.
        self._span: dict[str, tuple[float, float, bool]] = {}
        #: Stream ids with labels, as the flag records' keys are (UTF-8).
        self.keys: set[bytes] = set()
        self.kinds: Counter[str] = Counter({kind: 0 for kind in KINDS})

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Label]:
        return (label for _, label in self._by_id.values())

    def add(self, label: Label, position: Position) -> tuple[bool, Label | None]:
        """Take a record in: whether it is now in force (not older than one of its id), and
        the label it replaced."""
        old = self._by_id.get(label.id)
        if old is not None and old[0] > position:
            return False, None
        if old is not None:
            self._remove(*old)
        self._by_id[label.id] = (position, label)
        shelf = self._ranges if isinstance(label, RangeLabel) else self._verdicts
        bisect.insort(shelf.setdefault(label.stream, []), (position, label),
                      key=lambda item: item[0])
        self._spanned(label.stream)
        self.keys.add(label.stream.encode())
        self.kinds[label.kind] += 1
        return True, old[1] if old else None

    def _remove(self, position: Position, label: Label) -> None:
        shelf = self._ranges if isinstance(label, RangeLabel) else self._verdicts
        items = shelf[label.stream]
        items.remove((position, label))
        if not items:
            del shelf[label.stream]
        self._spanned(label.stream)
        if label.stream not in self._ranges and label.stream not in self._verdicts:
            self.keys.discard(label.stream.encode())
        self.kinds[label.kind] -= 1

    def _spanned(self, stream: str) -> None:
        ranges = [label for _, label in self._ranges.get(stream, ())]
        seqs = [label for label in ranges if not label.by_time]
        if not ranges:
            self._span.pop(stream, None)
            return
        self._span[stream] = (min((r.start for r in seqs), default=float("inf")),
                              max((r.end for r in seqs), default=-1.0),
                              len(seqs) < len(ranges))

    def get(self, ident: str) -> Label | None:
        """The label in force with this id."""
        found = self._by_id.get(ident)
        return found[1] if found else None

    def ranges(self, stream: str) -> list[RangeLabel]:
        """The stream's range labels, oldest first."""
        return [label for _, label in self._ranges.get(stream, ())]

    def verdicts(self, stream: str) -> list[Verdict]:
        return [label for _, label in self._verdicts.get(stream, ())]

    def streams(self) -> set[str]:
        return set(self._ranges) | set(self._verdicts)

    def truth(self, stream: str, seq: int, ts: float | None) -> int:
        """One event's truth: the latest range label covering it decides."""
        span = self._span.get(stream)
        if span is None or (not span[2] and not span[0] <= seq <= span[1]):
            return UNKNOWN
        for _, label in reversed(self._ranges.get(stream, ())):
            if label.covers(seq, ts):
                return TRUTH[label.label]
        return UNKNOWN

    def truths(self, stream: str, seq: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``truth`` for many events of one stream at once (``ts`` NaN: no event time)."""
        out = np.full(len(seq), UNKNOWN, np.int8)
        for _, label in self._ranges.get(stream, ()):
            out[label.mask(seq, ts)] = TRUTH[label.label]
        return out

    def verdict_at(self, stream: str, seq: int) -> list[Verdict]:
        verdicts = self._verdicts.get(stream)
        return [v for _, v in verdicts if v.run_start_seq == seq] if verdicts else []
