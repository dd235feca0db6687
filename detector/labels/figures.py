"""Flags against labels, in counts: true and false positives and negatives, and what they give.

A figure whose denominator is 0 (precision without a flag 1, recall without a pattern event)
is None, not a number: a model that never flagged anything has no precision to show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTCOMES = ("tp", "fp", "fn", "tn")


def outcome(truth: int, flag: int) -> str:
    """``tp``, ``fp``, ``fn`` or ``tn`` of one event whose truth is 1 or 0."""
    return ("tp" if flag else "fn") if truth == 1 else ("fp" if flag else "tn")


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, truth: np.ndarray, flags: np.ndarray) -> Counts:
        """Counts over the events whose truth is 1 or 0 (the others are not scored)."""
        y, f = np.asarray(truth), np.asarray(flags).astype(bool)
        pos, neg = y == 1, y == 0
        return cls(int((pos & f).sum()), int((neg & f).sum()), int((pos & ~f).sum()),
                   int((neg & ~f).sum()))

    def __iadd__(self, other: Counts) -> Counts:
        for name in OUTCOMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def events(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.events)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict:
        return {"events": self.events, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "tn": self.tn, "accuracy": self.accuracy, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def show(value: float | None, digits: int = 4) -> str:
    """A figure for a table: ``-`` where it is undefined."""
    return "-" if value is None else f"{value:.{digits}f}"
