"""The task, defined once: the exact rule, the seed's generator and the value shapes we test on.

Pure numpy, no TensorFlow: the producer, the codec and the tests import this cheaply.

The rule (the seed's stated goal): the flag of ``x3`` is 1 exactly when ``x1 < x2 < x3`` or
``x1 > x2 > x3``. A step is up, down or flat (a tie, ``x_t == x_{t-1}``); a flat step breaks a
run. The first two values of a stream have no three-value window and get flag 0. Only the
order of consecutive values matters, so the flags of a stream do not change under any strictly
increasing transform of its values.
"""

from __future__ import annotations

import numpy as np

#: Directions of a step, as stored per stream and encoded in the seed model's third feature.
UP, FLAT, DOWN = 1, 0, -1


def direction(value: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """``UP``, ``DOWN`` or ``FLAT`` per element, int8: exact comparisons of float64 values."""
    value, prev = np.asarray(value, np.float64), np.asarray(prev, np.float64)
    return ((value > prev).astype(np.int8) - (value < prev).astype(np.int8)).astype(np.int8)


def exact_flags(values: np.ndarray) -> np.ndarray:
    """The exact rule over one stream: 1 where the last three values moved strictly the same way."""
    values = np.asarray(values, dtype=np.float64)
    flags = np.zeros(len(values), dtype=np.int64)
    if len(values) >= 3:
        d = direction(values[1:], values[:-1])
        flags[2:] = (d[1:] == d[:-1]) & (d[1:] != FLAT)
    return flags


def step_flags(step_dir: np.ndarray, prev_dir: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The exact rule for one event per stream, from that stream's carried state.

    ``step_dir`` is the direction of this event's step, ``prev_dir`` the previous step's and
    ``seen`` how many events the stream had before this one.
    """
    return (step_dir == prev_dir) & (step_dir != FLAT) & (seen >= 2)


def repeat_nearby(values: np.ndarray) -> np.ndarray:
    """Per event of one stream: whether either step of its window is an exact repeat (a tie)."""
    values = np.asarray(values, dtype=np.float64)
    tie = np.zeros(len(values), dtype=bool)
    if len(values) >= 2:
        flat = values[1:] == values[:-1]
        tie[1:] |= flat
        tie[2:] |= flat[:-1]
    return tie


def seed_generator(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The seed's ``loadDataRandom``: ``X = [cur, prev, prevState]``, ``y = up == prevState``.

    Kept value-for-value for ``reproduce`` (the seed's own experiment, on its own data, where
    ties never occur), including its start at ``prev = 0, prevState = 0``.
    """
    cur = rng.random(n)
    prev = np.concatenate(([0.0], cur[:-1]))
    up = cur > prev
    prev_up = np.concatenate(([False], up[:-1]))
    x = np.stack([cur, prev, prev_up.astype(np.float64)], axis=1)
    y = (up == prev_up).astype(np.int64)
    return x, y


def uniform_streams(n_streams: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Fresh iid uniform values, ``(n_streams, length)``: the seed's value distribution."""
    return rng.random((n_streams, length))


def walk_step(cur: np.ndarray, rng: np.random.Generator, scale: float = 0.05) -> np.ndarray:
    """One step of a Gaussian random walk per stream, kept in [0, 1] by reflection.

    Smoother than uniform values, with long monotonic runs: the producer's ``walk`` pattern.
    """
    folded = np.mod(cur + rng.normal(0.0, scale, np.shape(cur)), 2.0)
    return np.where(folded > 1.0, 2.0 - folded, folded)
