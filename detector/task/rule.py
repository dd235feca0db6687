"""The task, defined once: the exact rule, the seed's generator and the value shapes we test on.

Pure numpy, no TensorFlow: the producer, the codec and the tests import this cheaply.

The rule (the seed's stated goal): the flag of ``x3`` is 1 exactly when ``x1 < x2 < x3`` or
``x1 > x2 > x3``. A step is up, down or flat (a tie); a flat step breaks a run. The first two
values of a stream have no three-value window and get flag 0.

A tie is an exact repeat, or a step so far below the stream's resolution that it is float
dust, the rounding of the arithmetic that made the values rather than a move (``tie_bound``):
at most ``TIE_ULPS`` units in the last place of the larger value (``0.33`` next to
``0.33000000000000007``), or at most ``TIE_SHARE`` of the stream's typical step before it
(``0.0`` next to ``-1.3e-18`` in a column stepping by 1e-3). The typical step is the
geometric running mean of the stream's steps that are not ties; the models read every step
in its units (``detector.model.features``) and get a tie as exactly 0. Beyond the bound only
the order of consecutive values matters: flags do not change under scaling or negation (up to
the rounding of a step within a few ulps of the bound), nor under any increasing transform
that keeps the steps above it.
"""

from __future__ import annotations

import numpy as np

from detector.task import segments

#: Directions of a step, as stored per stream and encoded in the seed model's third feature.
UP, FLAT, DOWN = 1, 0, -1

#: A step of at most this many units in the last place (ulps) of the larger of its two values,
#: 0.7e-14..1.4e-14 of it, is a tie: what float64 arithmetic rounds (``0.1 + 0.2`` is ``0.3``
#: plus one ulp) and what printing to 15 significant digits leaves (R's ``write.csv``:
#: ``279.017000000001`` next to ``279.016999999999`` is 36). A double holds 15.9 digits.
TIE_ULPS = 64
#: A step of at most this share of the stream's typical step before it is a tie: a residue of
#: cancellation (``-1.3e-18`` where the values step by 1e-3 is 1e-15 of a step). Every step
#: above it reaches the models at least 1e-4 from a tie (``detector.model.features.compress``).
TIE_SHARE = 1e-10
#: Weight of the newest step in the log-space running mean of a stream's typical step.
SCALE_RATE = 0.1
_MAX = np.finfo(np.float64).max


def tie_bound(value: np.ndarray, prev: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The largest ``|value - prev|`` that is a tie, per element: ``TIE_ULPS`` ulps of the
    larger magnitude, or ``TIE_SHARE`` of ``scale`` (the stream's typical step; 0: none yet)."""
    top = np.maximum(np.abs(value), np.abs(prev))
    return np.maximum(TIE_ULPS * np.spacing(top), TIE_SHARE * np.asarray(scale, np.float64))


def steps(value: np.ndarray, prev: np.ndarray, scale: np.ndarray, seen: np.ndarray,
          first: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Streams' next events, in order: each one's step, its direction and the stream's typical
    step before and after it.

    The arrays hold one entry per event, grouped by stream and in order; ``first`` marks each
    stream's first event here (None: one event per stream). ``prev``, ``scale`` and ``seen``
    are the stream's state before its first event here. Returns ``(step, direction,
    scale_before, scale_after)``, ``step`` in float64 and exactly 0 for a tie (and for a
    stream's very first event), clipped to the largest double where it overflows.

    Whether a step is a tie depends on the typical step before it, which only the steps that
    are not ties move. So the ties are the one guess that reproduces itself: each round
    settles at least one more event of every stream, exactly as one event at a time would.
    The first guess, every step within the bound of the stream's largest step here or its
    stored scale, holds all the ties; a round or two usually ends it.
    """
    value = np.asarray(value, np.float64)
    first = np.ones(len(value), bool) if first is None else np.asarray(first, bool)
    scale = np.asarray(scale, np.float64)
    prev = segments.shift(value, np.asarray(prev, np.float64), first)
    fresh = np.asarray(seen) + segments.positions(first) == 0
    with np.errstate(over="ignore", invalid="ignore"):
        step = np.clip(np.where(fresh, 0.0, value - prev), -_MAX, _MAX)
    mag = np.abs(step)
    heads = np.nonzero(first)[0]
    largest = np.maximum.reduceat(mag, heads)[np.cumsum(first) - 1] if len(mag) else mag
    tie = mag <= tie_bound(value, prev, np.maximum(largest, scale))
    while True:
        before, after = _scales(np.where(tie, 0.0, mag), scale, first)
        settled = mag <= tie_bound(value, prev, before)
        if (settled == tie).all():
            break
        tie = settled
    step = np.where(tie, 0.0, step)
    return step, np.sign(step).astype(np.int8), before, after


def _scales(mag: np.ndarray, scale: np.ndarray, first: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The scale before and after each event: a log-space EMA over the non-zero steps,
    ``log s <- (1 - r) log s + r log |step|``, seeded by a fresh stream's first step.

    A linear recurrence in ``log s``, so a whole stream's run of events is one scan
    (``segments.linear_scan``) rather than a step per event.
    """
    moved = np.nonzero(mag > 0)[0]
    after = scale.copy()
    if len(moved):
        m, stored = mag[moved], scale[moved]
        seg = (np.cumsum(first) - 1)[moved]
        opens = np.r_[True, seg[1:] != seg[:-1]]  # a stream's first non-zero step here
        seeded = opens & ~(stored > 0)
        with np.errstate(divide="ignore"):
            x = np.where(opens, (1 - SCALE_RATE) * np.log(stored) + SCALE_RATE * np.log(m),
                         SCALE_RATE * np.log(m))
        x = np.where(seeded, np.log(m), x)
        ema = np.where(seeded, m, np.exp(segments.linear_scan(x, 1 - SCALE_RATE, opens)))
        latest = segments.last_where(mag > 0, first)
        at = np.full(len(mag), np.nan)
        at[moved] = ema
        after = np.where(latest >= 0, at[np.maximum(latest, 0)], scale)
    return segments.shift(after, scale, first), after


def step_unit(step: np.ndarray, scale_before: np.ndarray) -> np.ndarray:
    """The unit an event's values are compared in (``steps``' step and scale before): the
    stream's typical step before it, else (a fresh stream) its own step, else 1."""
    mag = np.abs(step)
    return np.where(scale_before > 0, scale_before, np.where(mag > 0, mag, 1.0))


def stream_steps(values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``steps`` over one whole stream, from its first value."""
    values = np.asarray(values, np.float64)
    zero = np.zeros(len(values))
    return steps(values, zero, zero, zero.astype(np.int64), np.arange(len(values)) == 0)


def directions(values: np.ndarray) -> np.ndarray:
    """The direction of each step of one stream, ties (dust included) flat; the first 0."""
    return stream_steps(values)[1]


def exact_flags(values: np.ndarray) -> np.ndarray:
    """The exact rule over one stream: 1 where the last three values moved strictly the same way."""
    values = np.asarray(values, dtype=np.float64)
    flags = np.zeros(len(values), dtype=np.int64)
    if len(values) >= 3:
        d = directions(values)[1:]
        flags[2:] = (d[1:] == d[:-1]) & (d[1:] != FLAT)
    return flags


def step_flags(step_dir: np.ndarray, prev_dir: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """The exact rule for one event per stream, from that stream's carried state.

    ``step_dir`` is the direction of this event's step, ``prev_dir`` the previous step's and
    ``seen`` how many events the stream had before this one.
    """
    return (step_dir == prev_dir) & (step_dir != FLAT) & (seen >= 2)


def repeat_nearby(values: np.ndarray) -> np.ndarray:
    """Per event of one stream: whether either step of its window is a tie (a repeat or dust)."""
    values = np.asarray(values, dtype=np.float64)
    tie = np.zeros(len(values), dtype=bool)
    if len(values) >= 2:
        flat = directions(values)[1:] == FLAT
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
