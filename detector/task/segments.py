"""Scans over a batch's events grouped by stream, so no Python loop runs per event or per wave.

The engine orders a batch so that each stream's events are contiguous and in arrival order:
each stream's stretch is a *segment*, and ``first`` marks the first element of each. A hot
stream with thousands of events in one poll then costs a few numpy calls, like a thousand
streams with one event each.
"""

from __future__ import annotations

import numpy as np


def positions(first: np.ndarray) -> np.ndarray:
    """Each element's index within its segment: ``[T, F, F, T, F] -> [0, 1, 2, 0, 1]``."""
    idx = np.arange(len(first))
    return idx - heads(first)


def heads(first: np.ndarray) -> np.ndarray:
    """For each element, the index of its segment's first element."""
    idx = np.arange(len(first))
    return np.maximum.accumulate(np.where(first, idx, 0)) if len(first) else idx


def shift(after: np.ndarray, stored: np.ndarray, first: np.ndarray) -> np.ndarray:
    """What held before each element: the previous element's ``after`` value in its segment,
    ``stored`` (given per element) at a segment's first element."""
    out = np.empty_like(after)
    out[1:] = after[:-1]
    out[first] = np.asarray(stored)[first]
    return out


def last_where(mask: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Index of the last element at or before each one, in its segment, where ``mask`` holds;
    -1 where none does."""
    idx = np.arange(len(mask))
    last = np.maximum.accumulate(np.where(mask, idx, -1)) if len(mask) else idx
    return np.where(last >= heads(first), last, -1)


def cummax(values: np.ndarray, mask: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running maximum within each segment of ``values`` where ``mask`` holds (inclusive);
    the smallest int64 where nothing has been seen yet. Any int64 values: they are ranked
    first, so segments can be kept apart in one ``maximum.accumulate``."""
    n = len(values)
    lowest = np.iinfo(np.int64).min
    if n == 0:
        return np.full(0, lowest, np.int64)
    uniq, rank = np.unique(values, return_inverse=True)
    width = len(uniq) + 1
    segment = np.cumsum(first) - 1
    key = segment * width + np.where(mask, rank + 1, 0)
    best = np.maximum.accumulate(key) - segment * width  # earlier segments' keys are smaller
    return np.where(best > 0, uniq[np.maximum(best - 1, 0)], lowest)


def linear_scan(x: np.ndarray, a: float, first: np.ndarray) -> np.ndarray:
    """``y_k = a * y_(k-1) + x_k`` within each segment (``y = x`` at its first element).

    A Hillis-Steele scan: log2(longest segment) vectorized rounds. Each ``y_k`` is the same
    sum as the sequential recurrence, added in another order, so they agree to a few float64
    roundings (|a| <= 1: the powers only shrink).
    """
    y = np.array(x, np.float64)
    pos = positions(first)
    coef, d = float(a), 1
    top = int(pos.max()) if len(pos) else 0
    while d <= top:
        i = np.nonzero(pos >= d)[0]
        step = y[i - d] * coef
        y[i] += step
        coef *= coef
        d *= 2
    return y


def recent(values: np.ndarray, stored: np.ndarray, first: np.ndarray, width: int) -> np.ndarray:
    """Each element's ``width`` latest values, itself first: ``out[i, j]`` is the value ``j``
    elements back in its segment, reaching into ``stored`` (per element, its segment's values
    before this batch, oldest first) past the segment's start. ``(n, width)``."""
    n = len(values)
    pos = positions(first)
    back = np.arange(width)[None, :]
    inside = back <= pos[:, None]
    own = values[np.maximum(np.arange(n)[:, None] - back, 0)]
    depth = stored.shape[1] if stored.ndim == 2 else 0
    before = depth - (back - pos[:, None])  # column of ``stored``, where outside
    usable = ~inside & (before >= 0)
    older = np.full((n, width), np.nan)
    if depth:
        rows = np.nonzero(usable)
        older[rows] = stored[rows[0], before[rows]]
    return np.where(inside, own, older)
