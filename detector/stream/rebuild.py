"""A model's per-stream LSTM state rebuilt from the stream's recent values, at a model swap.

A stateful model's state is what it remembers of a stream. When another model takes a stream
over (a new version promoted, a rollback, a restored stream whose state another model wrote),
its state is rebuilt by running it over the stream's recent values (at least ``state.HISTORY``
are kept for this) from the zero state: "burn-in", as R2D2 (ICLR 2019) warms up recurrent
state from replayed inputs. A model whose flags depend on no more values than that then gives
exactly the flags of an uninterrupted run over the stream; its card declares how many
(``history``). A stateless model (``seed``, ``window``, ``long``) has nothing to rebuild: it
reads the kept values themselves.

The normalized steps of those values are computed as they were when the values arrived: the
stream's typical step before each of them is unwound from the one after it
(``detector.task.rule.steps`` updates ``log s`` by a fixed weight per step that is not a tie),
a tie (float dust included) is flat and 0 as it was, and a stream whose whole life is in the
history is replayed from its first value, as it was.
"""

from __future__ import annotations

import numpy as np

from detector.model.features import model_input, normalized
from detector.model.serving import ModelStep
from detector.stream.state import HISTORY, StreamStore
from detector.task.rule import SCALE_RATE, step_unit, tie_bound

_MAX = np.finfo(np.float64).max


def unwind_scales(values: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The typical step before each value of ``values`` (rows of recent values, oldest first,
    NaN for none), given ``scale``, the one after the newest; and whether each value's step
    was a tie.

    A step was a tie exactly when it is within ``tie_bound`` of the scale after it: a tie left
    the scale as it was, and a step that moved it was beyond the bound of the scale before it,
    and of the one after it too, which lies between that scale and the step.
    """
    n, width = values.shape
    before = np.empty((n, width))
    tie = np.zeros((n, width), bool)
    after = np.asarray(scale, np.float64).copy()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for j in range(width - 1, -1, -1):
            if j:
                value, prev = values[:, j], values[:, j - 1]
                step = np.minimum(np.abs(value - prev), _MAX)
                tie[:, j] = step <= tie_bound(value, prev, after)
            else:
                step = np.full(n, np.nan)
            moved = np.isfinite(step) & ~tie[:, j] & (after > 0)
            log_before = (np.log(after) - SCALE_RATE * np.log(step)) / (1 - SCALE_RATE)
            after = np.where(moved, np.exp(log_before), after)
            before[:, j] = after
    return before, tie


def rebuild(store: StreamStore, slots: np.ndarray, step: ModelStep) -> None:
    """Set the LSTM state of ``slots`` to ``step``'s after the streams' recent values."""
    size = step.state_size
    if not size or not len(slots):
        return
    store.ensure_state_size(size)
    burn = min(store.history, max(HISTORY, step.history))  # the values its flags depend on
    values = store.hist[slots, -burn:]
    seen = store.seen[slots]
    before, tie = unwind_scales(values, store.scale[slots])
    state = np.zeros((len(slots), size), np.float32)
    prev_dir = np.zeros(len(slots), np.int8)
    whole_life = seen <= burn  # the values start at the stream's first
    for j in range(burn):
        value, prev = values[:, j], values[:, j - 1] if j else np.full(len(slots), np.nan)
        first = whole_life & np.isfinite(value) & ~np.isfinite(prev)
        stepped = np.isfinite(value) & np.isfinite(prev)
        live = first | stepped
        if not live.any():
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.where(stepped & ~tie[:, j], np.clip(value - prev, -_MAX, _MAX), 0.0)
        dirs = np.sign(d).astype(np.int8)
        u = normalized(d, step_unit(d, before[:, j]))
        x = model_input(step.features, u, prev_dir)
        rows = np.nonzero(live)[0]
        _, new = step(x[rows], state[rows])
        state[rows] = new
        prev_dir = np.where(live, dirs, prev_dir).astype(np.int8)
    store.lstm[slots, :size] = state
