"""Labeled patterns of the battery: what a user's labels might say, computed exactly.

A user trains the detector's model on their own labels (``python -m detector train --csv``).
To hold that to figures, the battery labels its streams (real series and generated shapes) by
patterns of the kind the feature sets are for: the order and relative size of a stream's last
few values (``window``, up to 8) or of up to 32 (``long``: new highs and lows of the last 12 or
16, a breakout above the last 20, counts of steps up), a tie being flat (a tie never satisfies
a strict comparison), float dust included as the rule has it (``detector.task.rule.tie_bound``,
in the unit the models compare an event's values in, ``detector.task.rule.step_unit``). A label
is 1 at the event where the pattern is complete, and depends only on that value and earlier
ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector.task.rule import step_unit, stream_steps, tie_bound


def _back(values: np.ndarray, k: int) -> np.ndarray:
    """``x[t-k]`` for every ``t`` (NaN before the stream's start, so comparisons are False)."""
    return np.r_[np.full(min(k, len(values)), np.nan), values[:max(len(values) - k, 0)]]


def typical_step(values: np.ndarray, n: int = 10) -> np.ndarray:
    """Before each event, the geometric mean of the stream's last ``n`` steps that are not ties
    (NaN until there is one): what "a step far larger than usual" is measured against."""
    steps = np.abs(stream_steps(values)[0])
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
    values: int  # how many of the last values it looks at (its history: the model's, trained)
    description: str
    label: Callable[[np.ndarray], np.ndarray]


Values = Callable[[int], np.ndarray]
Above = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _labels(condition: Callable[[Values, Above], np.ndarray]
            ) -> Callable[[np.ndarray], np.ndarray]:
    """A label from ``condition(x, above)``: ``x(k)`` is ``x[t-k]`` per event, ``above(a, b)``
    whether ``a > b`` by more than a tie."""
    def label(values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, np.float64)
        step, _, before, _ = stream_steps(v)
        scale = step_unit(step, before)

        def above(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return a - b > tie_bound(a, b, scale)

        with np.errstate(invalid="ignore", over="ignore"):
            return condition(lambda k: _back(v, k), above).astype(np.int8)
    return label


def _beyond_all(n: int, high: bool) -> Callable[[Values, Above], np.ndarray]:
    """``x[t]`` above (``high``) or below each of the ``n - 1`` values before it."""
    def condition(x: Values, gt: Above) -> np.ndarray:
        return np.logical_and.reduce([gt(x(0), x(k)) if high else gt(x(k), x(0))
                                      for k in range(1, n)])
    return condition


def _ups(steps: int, at_least: int) -> Callable[[Values, Above], np.ndarray]:
    """At least ``at_least`` of the last ``steps`` steps up (a tie is not up)."""
    def condition(x: Values, gt: Above) -> np.ndarray:
        return sum(gt(x(k), x(k + 1)).astype(int) for k in range(steps)) >= at_least
    return condition


def _jump(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float64)
    step = np.abs(stream_steps(v)[0])
    with np.errstate(invalid="ignore"):
        return (step > 5 * typical_step(v)).astype(np.int8)


PATTERNS: dict[str, Pattern] = {p.name: p for p in (
    Pattern("dip", "neighbours", 3, "a dip: x[t-2] > x[t-1] < x[t]",
            _labels(lambda x, gt: gt(x(2), x(1)) & gt(x(0), x(1)))),
    Pattern("peak", "neighbours", 3, "a peak: x[t-2] < x[t-1] > x[t]",
            _labels(lambda x, gt: gt(x(1), x(2)) & gt(x(1), x(0)))),
    Pattern("rise5", "neighbours", 5, "five values rising: x[t-4] < ... < x[t]",
            _labels(lambda x, gt: gt(x(3), x(4)) & gt(x(2), x(3)) & gt(x(1), x(2))
                    & gt(x(0), x(1)))),
    Pattern("up_up_down", "neighbours", 4, "two rises then a fall: x[t-3] < x[t-2] < x[t-1] > x[t]",
            _labels(lambda x, gt: gt(x(2), x(3)) & gt(x(1), x(2)) & gt(x(1), x(0)))),
    Pattern("new_low4", "apart", 4, "a new low of the last four: x[t] < x[t-1], x[t-2], x[t-3]",
            _labels(lambda x, gt: gt(x(1), x(0)) & gt(x(2), x(0)) & gt(x(3), x(0)))),
    Pattern("top_of_five", "apart", 5,
            "the middle of five values is their top: x[t-2] > x[t-4], x[t-3], x[t-1], x[t]",
            _labels(lambda x, gt: gt(x(2), x(4)) & gt(x(2), x(3)) & gt(x(2), x(1))
                    & gt(x(2), x(0)))),
    Pattern("new_high12", "apart", 12, "a new high of the last 12 values: x[t] above the 11 "
            "before it", _labels(_beyond_all(12, high=True))),
    Pattern("new_low16", "apart", 16, "a new low of the last 16 values: x[t] below the 15 "
            "before it", _labels(_beyond_all(16, high=False))),
    Pattern("breakout20", "apart", 21, "a breakout: x[t] above the highest of the 20 values "
            "before it", _labels(_beyond_all(21, high=True))),
    Pattern("up5_of_10", "neighbours", 11, "at least 5 of the last 10 steps up",
            _labels(_ups(10, 5))),
    Pattern("jump5", "size", 12,
            "a step more than 5x the typical step (geometric mean of the last 10 steps that "
            "are not ties)", _jump),
)}
