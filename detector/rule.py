"""The task, defined once: the seed's generator, the exact rule, and the model feature sets.

Pure numpy, no TensorFlow: the producer, the codec and the tests import this cheaply.

Conventions (the seed's, kept everywhere):
- a stream starts with ``prev = 0`` and ``prev_up = 0`` (no direction yet);
- "up" means ``x_t > x_{t-1}``; a tie counts as "not up";
- the exact flag of ``x_t`` is ``up_t == up_{t-1}`` and the first two values of a stream,
  which have no three-value window, get flag 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FeatureSet = Literal["seed", "pair", "raw"]
FEATURE_SETS: tuple[FeatureSet, ...] = ("seed", "pair", "raw")

#: Values per step the model sees, and whether its LSTM state is carried between events.
FEATURE_WIDTH: dict[FeatureSet, int] = {"seed": 3, "pair": 2, "raw": 1}
STATEFUL: dict[FeatureSet, bool] = {"seed": False, "pair": True, "raw": True}

#: Below this difference two consecutive values count as a near-tie in error reports.
NEAR_TIE = 1e-3


def seed_generator(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The seed's ``loadDataRandom``: ``X = [cur, prev, prevState]``, ``y = up == prevState``.

    Vectorised but value-for-value what the seed's loop computes, including its start at
    ``prev = 0, prevState = 0`` (so the first label is 0 and the second compares with x_0 > 0).
    """
    cur = rng.random(n)
    prev = np.concatenate(([0.0], cur[:-1]))
    up = cur > prev
    prev_up = np.concatenate(([False], up[:-1]))
    x = np.stack([cur, prev, prev_up.astype(np.float64)], axis=1)
    y = (up == prev_up).astype(np.int64)
    return x, y


def exact_flags(values: np.ndarray) -> np.ndarray:
    """The exact rule over one stream: 1 where the last three values moved the same way."""
    values = np.asarray(values, dtype=np.float64)
    flags = np.zeros(len(values), dtype=np.int64)
    if len(values) >= 3:
        up = values[1:] > values[:-1]
        flags[2:] = up[1:] == up[:-1]
    return flags


def step_flags(
    value: np.ndarray, prev: np.ndarray, prev_up: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exact rule for one event per stream, from that stream's carried state.

    ``seen`` is how many events the stream had before this one. Returns ``(up, flag)``.
    """
    up = value > prev
    flag = (up == prev_up.astype(bool)) & (seen >= 2)
    return up, flag


def step_features(
    features: FeatureSet, value: np.ndarray, prev: np.ndarray, prev_up: np.ndarray
) -> np.ndarray:
    """One step's model input for a batch of streams, shape ``(batch, FEATURE_WIDTH)``, float32.

    ``seed`` is ``[x3, x2, x2 > x1]`` (the step function feeds it as a length-3 sequence);
    ``pair`` is ``[x_t, x_{t-1}]``; ``raw`` is ``[x_t]``.
    """
    if features == "seed":
        cols = (value, prev, prev_up)
    elif features == "pair":
        cols = (value, prev)
    elif features == "raw":
        cols = (value,)
    else:
        raise ValueError(f"unknown feature set {features!r}; expected one of {FEATURE_SETS}")
    return np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=1)


def sequence_features(features: FeatureSet, values: np.ndarray) -> np.ndarray:
    """The per-step inputs of a whole stream, ``(len, FEATURE_WIDTH)``, as serving builds them."""
    values = np.asarray(values, dtype=np.float64)
    prev = np.concatenate(([0.0], values[:-1]))
    up = values > prev
    prev_up = np.concatenate(([False], up[:-1]))
    return step_features(features, values, prev, prev_up)


def near_tie(values: np.ndarray, eps: float = NEAR_TIE) -> np.ndarray:
    """Per event of one stream: whether ``|x3 - x2|`` or ``|x2 - x1|`` is below ``eps``."""
    values = np.asarray(values, dtype=np.float64)
    close = np.zeros(len(values), dtype=bool)
    if len(values) >= 2:
        step = np.abs(np.diff(values)) < eps
        close[1:] |= step
        close[2:] |= step[:-1]
    return close


def uniform_streams(n_streams: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Fresh iid uniform values, ``(n_streams, length)``: the seed's value distribution."""
    return rng.random((n_streams, length))


def walk_step(cur: np.ndarray, rng: np.random.Generator, scale: float = 0.05) -> np.ndarray:
    """One step of a Gaussian random walk per stream, kept in [0, 1] by reflection.

    Smoother than uniform values, with long monotonic runs: the producer's ``walk`` pattern.
    """
    folded = np.mod(cur + rng.normal(0.0, scale, np.shape(cur)), 2.0)
    return np.where(folded > 1.0, 2.0 - folded, folded)
