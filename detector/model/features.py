"""What the models see: each event's values normalized against the stream's own scale.

Real streams come at any scale and offset (a CO2 record near 400 ppm, counts in the
millions, rates near 1e-9, negative temperatures), while the rule depends only on the order
of consecutive values. So every value of an event's window is re-expressed relative to the
stream's previous value (recentering) in units of the stream's typical step (rescaling):

    u = (x_t - x_{t-1}) / s,   s = geometric running mean of the stream's |steps| (ties left out)

and compressed (``compress``): ``asinh`` (linear near 0, logarithmic for spikes, so no input
is huge), with the steps below 1e-3 of ``s`` drawn up by a power law so that every real step,
however small against the stream's own (ISBNs of one publisher in a list of many, a column of
physical constants spanning 50 orders of magnitude, values that went through float32), is at
least 1e-4 of an input: ten times what the first ``seed`` model resolved.
The difference is taken in float64 on the values as they arrived, before anything is cast to
float32, so a step that decides a comparison is never rounded away (a cast of 1e9-scale values
to float32 would erase steps below ~64). A tie gives exactly 0: an exact repeat, and float
dust too (``detector.task.rule.tie_bound``: a step within a few ulps of the values or 1e-10 of
``s``), which the rule calls flat and no model could resolve. The model still reads a
magnitude, not a sign: the order of steps is kept, and telling the smallest real step from a
tie is its to learn. ``s`` is the geometric (log-space) mean so that one spike or level shift
moves it by a small factor rather than dwarfing the steps after it.

The pattern models compare values further apart in the same units: ``window`` every pair of a
stream's last 8 values, ``long`` the event's value against each of up to 31 before it and every
step between them (with its log-size, so that sizes compare as differences). Both take each
difference in float64, a tie exactly 0, so an order relation is the sign of one input.

The per-stream quantities (previous value, previous direction, scale) are stream state, kept
in ``detector.stream.state`` and checkpointed with the rest. Training builds its inputs with
the same ``advance``, so the model is trained on exactly what serving feeds it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from detector.task import segments
from detector.task.rule import TIE_SHARE, step_unit, steps, tie_bound

FeatureSet = Literal["seed", "pair", "window", "long"]
FEATURE_SETS: tuple[FeatureSet, ...] = ("seed", "pair", "window", "long")

#: Values of a stream the ``window`` feature set compares: the event's own and the seven before.
WINDOW = 8
#: The most values a model's flags may depend on (``long``'s history): what a stream keeps for
#: it at most (``detector.stream.state``).
LONGEST = 32
#: Inputs of the ``long`` feature set per value before the event's own (``long_input``).
LONG_CHANNELS = 4
#: Values per event the model sees (``long``: ``input_width``), and whether its LSTM state is
#: carried between events.
FEATURE_WIDTH: dict[FeatureSet, int] = {"seed": 3, "pair": 2, "window": WINDOW * (WINDOW + 1)}
STATEFUL: dict[FeatureSet, bool] = {"seed": False, "pair": True, "window": False, "long": False}
#: The values of a stream (its event's own included) its flags depend on. ``pair`` reads the
#: last step and remembers the one before in its LSTM state, whose forget gate is pinned shut.
#: A ``long`` model's is its card's (9 .. ``LONGEST``).
HISTORY: dict[FeatureSet, int] = {"seed": 3, "pair": 3, "window": WINDOW}

#: Below this share of the unit a step's size reaches the model drawn up by a power law, so
#: that the smallest step that is not dust (``TIE_SHARE`` of the unit) arrives as ``FLOOR``.
KNEE = 1e-3
FLOOR = 1e-4
_POWER = np.log(KNEE / FLOOR) / np.log(KNEE / TIE_SHARE)  # 1/7
#: A step larger than this many units reads as this many: beyond what training shows the
#: models (``seed`` read spikes of 1e30 of the stream's step as a coin toss), and far beyond
#: what any pattern needs to call a step large.
CEILING = 1e15


def _power_of_ten(x: float) -> str:
    return f"1e{round(np.log10(x))}"


#: ``compress`` in words, for model cards.
COMPRESSION = (f"asinh, with ratios from the dust bound ({_power_of_ten(TIE_SHARE)}) to "
               f"{_power_of_ten(KNEE)} drawn up into {_power_of_ten(FLOOR)}.."
               f"{_power_of_ten(KNEE)} by a power law and ratios above "
               f"{_power_of_ten(CEILING)} read as {_power_of_ten(CEILING)} (odd and increasing)")


def advance(value: np.ndarray, prev: np.ndarray, scale: np.ndarray, seen: np.ndarray,
            first: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Streams' next events, in order: each one's normalized step, direction and the stream's
    scale after it.

    The arrays hold one entry per event, grouped by stream and in order; ``first`` marks each
    stream's first event here (None: one event per stream). ``prev``, ``scale`` and ``seen``
    are the stream's state before its first event here (read at ``first`` only). Returns
    ``(u, step_dir, scale_after, unit)``; ``u`` is float32, the step in units of ``unit``
    (``compress``ed), the stream's scale *before* this event (its own step sets the scale of a
    fresh stream). A stream's first event has no step, and a tie (dust included) is none:
    ``u = 0`` and direction flat (``detector.task.rule.steps``).
    """
    d, step_dir, scale_before, scale_after = steps(value, prev, scale, seen, first)
    s = step_unit(d, scale_before)
    return normalized(d, s), step_dir, scale_after, s


def normalized(step: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``u``, float32: each step (``steps``': a tie is 0) in units of ``unit``, ``compress``ed."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return compress(step / unit).astype(np.float32)


def compress(ratio: np.ndarray) -> np.ndarray:
    """A step in units of the stream's typical step as the model reads it: ``asinh`` (linear
    near 0, logarithmic for spikes) up to ``CEILING``, with the range from the dust bound to
    ``KNEE`` drawn up into ``FLOOR..KNEE`` by a power law. Odd and increasing, so the order
    and sign of steps are kept, but a real step 1e-9 of the typical step is no longer 1e-9 of
    an input: no model resolves that, while 1e-4 is ten times what the first ``seed`` did.
    0 (a tie) and NaN (a value absent) give 0."""
    r = np.clip(np.nan_to_num(ratio, nan=0.0), -CEILING, CEILING)
    out = np.asarray(np.arcsinh(r))
    small = (np.abs(r) < KNEE) & (r != 0)  # few: the power law only where it applies
    rs = r[small]
    a = np.maximum(np.abs(rs), TIE_SHARE)
    out[small] = np.copysign(np.arcsinh(KNEE) * (a / KNEE) ** _POWER, rs)
    return out


def input_width(features: FeatureSet, history: int) -> int:
    """Values per event a model of ``features`` reads, for a ``long`` one with ``history``."""
    return LONG_CHANNELS * (history - 1) if features == "long" else FEATURE_WIDTH[features]


def model_input(features: FeatureSet, u: np.ndarray, prev_dir: np.ndarray,
                window: np.ndarray | None = None, unit: np.ndarray | None = None
                ) -> np.ndarray:
    """One step's model input for a batch of streams, ``(batch, input_width)``, float32.

    ``seed`` keeps the seed's layout ``[x3, x2, direction of x2]``: x3 and x2 relative to x2
    (so x2's own slot is 0) and the previous direction as +1 up, 0 flat, -1 down. ``pair``
    is ``[x_t, x_{t-1}]`` relative to ``x_{t-1}``, with the LSTM state carried per stream.
    ``window`` and ``long`` need each event's ``window`` of values (as many as the model's
    history) and ``unit`` (``window_input``, ``long_input``).
    """
    zero = np.zeros_like(u)
    if features == "seed":
        cols = (u, zero, np.asarray(prev_dir, np.float32))
    elif features == "pair":
        cols = (u, zero)
    elif features in ("window", "long") and window is not None and unit is not None:
        return (window_input if features == "window" else long_input)(window, unit)
    else:
        raise ValueError(f"unknown feature set {features!r}; expected one of {FEATURE_SETS}")
    return np.stack(cols, axis=1).astype(np.float32)


def window_input(window: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The ``window`` feature set: every value of the window compared with every other.

    ``window`` is ``(batch, WINDOW)``, float64, ``window[:, j]`` the value ``j`` events back
    (NaN before the stream's first); ``unit`` the stream's typical step (``advance``). A step
    of the model's input sequence per value, oldest first: its differences to each value of the
    window, ``compress((x_i - x_k) / unit)`` taken in float64 (a tie, dust within the rule's
    ``tie_bound`` included, is exactly 0; any other keeps its sign), and whether the value
    exists. Every order relation among the last ``WINDOW`` values, neighbours or not, is then
    the sign of one input; their sizes are in the stream's own units. Flattened to
    ``(batch, WINDOW * (WINDOW + 1))``.
    """
    window = np.asarray(window, np.float64)
    out = compared(window[:, ::-1, None], window[:, None, :],
                   np.asarray(unit, np.float64)[:, None, None])
    present = ~np.isnan(window[:, ::-1])
    cols = np.concatenate([out, present[:, :, None]], axis=2)
    return cols.reshape(len(window), -1).astype(np.float32)


def compared(a: np.ndarray, b: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """``compress((a - b) / unit)``, the difference taken in float64: a tie (within the rule's
    ``tie_bound``) exactly 0, any other keeping its sign; a value absent (NaN) 0."""
    unit = np.asarray(unit, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        diff = a - b
        diff = np.where(np.abs(diff) <= tie_bound(a, b, unit), 0.0, diff)
        return compress(diff / unit)


def long_input(window: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The ``long`` feature set: where the event's value stands against each value before it,
    and every step between them, as size and as log-size.

    ``window`` is ``(batch, history)``, float64, ``window[:, j]`` the value ``j`` events back
    (NaN before the stream's first); ``unit`` the stream's typical step (``advance``). Per
    value ``x_k`` before the event's own ``x_0`` (oldest first), four inputs:
    ``compress((x_0 - x_k) / unit)``, the step out of ``x_k`` (``x_{k-1} - x_k``) the same way,
    that step's log-size ``log2(|step| / unit)`` (one per doubling; 0 for a tie), and whether
    ``x_k`` exists. Differences in float64, a tie exactly 0 as in ``window_input``. So every order
    relation of the event's value with the values before it, every step's direction, and the
    sizes of steps against each other (a difference of log-sizes) are one input or a sum of
    a few; what they leave out is the order of two older values that are not neighbours.
    ``(batch, LONG_CHANNELS * (history - 1))``.
    """
    window = np.asarray(window, np.float64)
    unit = np.asarray(unit, np.float64)[:, None]
    newest, older, newer = window[:, :1], window[:, 1:], window[:, :-1]
    against = compared(newest, older, unit)
    step = compared(newer, older, unit)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        size = np.log2(np.minimum(np.abs(newer - older) / unit, CEILING))
    size = np.where(step != 0, size, 0.0)
    cols = np.stack([against, step, size, ~np.isnan(older)], axis=2)[:, ::-1]
    return cols.reshape(len(window), -1).astype(np.float32)


def windows(values: np.ndarray, width: int = WINDOW, past: np.ndarray | None = None
            ) -> np.ndarray:
    """Each event's ``width`` latest values, ``(n, width)``, newest first: ``values`` is one
    stream in order, ``past`` the values before it (oldest first; NaN: none)."""
    values = np.asarray(values, np.float64)
    past = np.full(width - 1, np.nan) if past is None else np.asarray(past, np.float64)
    ext = np.r_[np.full(width - 1, np.nan), past, values][-(len(values) + width - 1):]
    at = np.arange(len(values))[:, None] + (width - 1) - np.arange(width)[None, :]
    return ext[at]


def stream_inputs(features: FeatureSet, values: np.ndarray, history: int | None = None
                  ) -> np.ndarray:
    """Model inputs of whole streams ``(n, length)`` event by event, as serving builds them:
    ``(n, length, input_width)``; ``history``: a ``long`` model's."""
    values = np.atleast_2d(np.asarray(values, np.float64))
    n, length = values.shape
    first = np.arange(n * length) % max(length, 1) == 0
    zero = np.zeros(n * length)
    u, step_dir, _, unit = advance(values.ravel(), zero, zero, zero.astype(np.int64), first)
    prev_dir = segments.shift(step_dir, zero.astype(np.int8), first)
    width = history or HISTORY.get(features, 0)
    window = (np.concatenate([windows(v, width) for v in values])
              if features in ("window", "long") else None)
    return model_input(features, u, prev_dir, window, unit).reshape(
        n, length, input_width(features, width))


#: A step below this share of the stream's typical step is a near-tie: ``evaluate`` counts
#: the errors next to one apart, where a model's resolution would show first.
NEAR_TIE = 1e-3


def near_tie(values: np.ndarray, eps: float = NEAR_TIE) -> np.ndarray:
    """Per event of one stream: whether a step of its window is non-zero but below ``eps`` of
    the stream's typical step, as the normalization measures it."""
    u = np.abs(stream_inputs("pair", values)[0, :, 0])
    small = (u > 0) & (u < compress(np.float64(eps)))
    close = small.copy()
    close[1:] |= small[:-1]
    return close
