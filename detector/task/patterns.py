"""Labeled patterns of the battery: what a user's labels might say, computed exactly.

A user trains the detector's model on their own labels (``python -m detector train --csv``).
To hold that to figures, the battery labels its streams (real series and generated shapes) by
patterns of the kind the feature set is for: the order and relative size of a stream's last
few values, a tie being flat (a tie never satisfies a strict comparison). A label is 1 at the
event where the pattern is complete, and depends only on that value and earlier ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _back(values: np.ndarray, k: int) -> np.ndarray:
    """``x[t-k]`` for every ``t`` (NaN before the stream's start, so comparisons are False)."""
    return np.r_[np.full(min(k, len(values)), np.nan), values[:len(values) - k]]


def typical_step(values: np.ndarray, n: int = 10) -> np.ndarray:
    """Before each event, the geometric mean of the stream's last ``n`` non-zero steps (NaN
    until there is one): what "a step far larger than usual" is measured against."""
    steps = np.abs(np.diff(values, prepend=values[:1]))
    steps[0] = 0.0
    out = np.full(len(values), np.nan)
    logs: list[float] = []
    for t, step in enumerate(steps):
        if logs:
            out[t] = np.exp(np.mean(logs[-n:]))
        if step > 0:
            logs.append(float(np.log(step)))
    return out


@dataclass(frozen=True)
class Pattern:
    """A labeled pattern: ``label(values) -> 0/1 per event``."""

    name: str
    kind: str  # "neighbours": compares consecutive values; "apart": values further apart;
    #            "size": relative size of a step
    values: int  # how many of the last values it looks at
    description: str
    label: Callable[[np.ndarray], np.ndarray]


def _labels(condition: Callable[[Callable[[int], np.ndarray]], np.ndarray]
            ) -> Callable[[np.ndarray], np.ndarray]:
    def label(values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, np.float64)
        with np.errstate(invalid="ignore"):
            return condition(lambda k: _back(v, k)).astype(np.int8)
    return label


def _jump(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float64)
    step = np.abs(v - _back(v, 1))
    with np.errstate(invalid="ignore"):
        return (step > 5 * typical_step(v)).astype(np.int8)


PATTERNS: dict[str, Pattern] = {p.name: p for p in (
    Pattern("dip", "neighbours", 3, "a dip: x[t-2] > x[t-1] < x[t]",
            _labels(lambda x: (x(2) > x(1)) & (x(1) < x(0)))),
    Pattern("peak", "neighbours", 3, "a peak: x[t-2] < x[t-1] > x[t]",
            _labels(lambda x: (x(2) < x(1)) & (x(1) > x(0)))),
    Pattern("rise5", "neighbours", 5, "five values rising: x[t-4] < ... < x[t]",
            _labels(lambda x: (x(4) < x(3)) & (x(3) < x(2)) & (x(2) < x(1)) & (x(1) < x(0)))),
    Pattern("up_up_down", "neighbours", 4, "two rises then a fall: x[t-3] < x[t-2] < x[t-1] > x[t]",
            _labels(lambda x: (x(3) < x(2)) & (x(2) < x(1)) & (x(1) > x(0)))),
    Pattern("new_low4", "apart", 4, "a new low of the last four: x[t] < x[t-1], x[t-2], x[t-3]",
            _labels(lambda x: (x(0) < x(1)) & (x(0) < x(2)) & (x(0) < x(3)))),
    Pattern("top_of_five", "apart", 5,
            "the middle of five values is their top: x[t-2] > x[t-4], x[t-3], x[t-1], x[t]",
            _labels(lambda x: (x(2) > x(4)) & (x(2) > x(3)) & (x(2) > x(1)) & (x(2) > x(0)))),
    Pattern("jump5", "size", 2,
            "a step more than 5x the typical step (geometric mean of the last 10 non-zero "
            "steps)", _jump),
)}
