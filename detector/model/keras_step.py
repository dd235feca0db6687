"""The serving step in Keras: the ``--runtime keras`` path, and what the LiteRT files are made of.

This is the only serving module that imports TensorFlow (about 3 s and 500 MB); the default
runtime never imports it. The stateless ``seed`` model takes ``[x3, x2, x2 > x1]`` as a fixed
length sequence and carries no LSTM state. The stateful models (``pair``) are trained as
sequence models; here each LSTM layer's cell is stepped once with the stream's carried
``[h, c]`` and the new ``[h, c]`` is handed back to be stored. ``chunk_function`` runs
``CHUNK`` such steps of each stream in one call (the cell unrolled, the other layers over all
steps at once), so a stream with many events in a poll needs few calls. ``step_function`` and
``chunk_function`` have named inputs and outputs: ``detector.model.conversion`` converts exactly
them (a stateful model's as the signatures ``step`` and ``chunk``), built with
``fused=True``: each cell written out as ``fused_cell``, and a stateless model's sequence
(``seed``, ``window``) stepped the same way from the zero state; a model without an LSTM
(``long``) is converted as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from detector.model.files import ModelError

#: Events of one stream per ``chunk`` call. Measured under LiteRT with ``pair`` on one stream:
#: 8 steps 15 µs a call, 16 23 µs, 32 35 µs, 64 68 µs (one step: 4 µs), so 32 takes most of
#: the gain while the rest of a stream (fewer than 32 events) costs at most 31 step calls.
CHUNK = 32

#: One LSTM cell step: ``(x, h, c) -> (output, h, c)``.
#: ``h`` and ``c`` None: the zero state, as a stateless model's sequences start.
CellStep = Callable[[tf.Tensor, tf.Tensor | None, tf.Tensor | None],
                    tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


def load_model(path: Path) -> keras.Model:
    """A ``.keras`` file, or ModelError with one line (Keras raises many types for a bad file)."""
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from exc


def input_kind(model: keras.Model) -> tuple[int, bool, int]:
    """``(values per event, stateful, steps)`` from the input shape: ``(None, 3, 1)`` is a
    stateless fixed-length sequence of 3 steps of one value (``seed``), ``(None, 8, 9)`` one of
    8 steps of 9 values (``window``), ``(None, None, 2)`` a stateful step of width 2 (``pair``;
    one step an event)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) == 3 and shape[1] is None and shape[2]:
        return int(shape[2]), True, 1
    if len(shape) == 3 and shape[1] and shape[2]:
        return int(shape[1]) * int(shape[2]), False, int(shape[1])
    raise ModelError(f"{model.name}: cannot serve a model with input shape {shape}")


@dataclass(frozen=True)
class StepLayout:
    """Which layers a stateful step runs and where each LSTM's ``[h, c]`` sits in the state row."""

    layers: tuple[keras.layers.Layer, ...]
    state_slices: tuple[tuple[int, int] | None, ...]
    state_size: int


def step_layout(model: keras.Model) -> StepLayout:
    """Walk the layer list: LSTMs are stepped through their cell, the rest applied as they are."""
    layers: list[keras.layers.Layer] = []
    slices: list[tuple[int, int] | None] = []
    offset = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.TimeDistributed):
            layer = layer.layer
        if isinstance(layer, keras.layers.Dropout | keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.LSTM):
            units = layer.cell.units
            slices.append((offset, units))
            offset += 2 * units
        elif isinstance(layer, keras.layers.RNN):
            raise ModelError(f"unsupported recurrent layer {type(layer).__name__}")
        else:
            slices.append(None)
        layers.append(layer)
    return StepLayout(tuple(layers), tuple(slices), offset)


def keras_cell(cell: keras.layers.LSTMCell) -> CellStep:
    """The layer's own cell call: the reference the ``--runtime keras`` path serves."""

    def step(x: tf.Tensor, h: tf.Tensor | None, c: tf.Tensor | None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        out, (h, c) = cell(x, [h, c], training=False)
        return out, h, c

    return step


def fused_cell(cell: keras.layers.LSTMCell) -> CellStep:
    """The same cell arithmetic in fewer, larger ops, for conversion: ``[x, h]`` times the
    stacked kernels in one matrix product; a gate whose kernel and recurrent columns are all
    zero (``pair``'s forget gate, pinned shut in training) as the constant it is; from the zero
    state (``h`` and ``c`` None) without the products that are 0. Keras's cell converts to a
    product, a slice and an add per gate, and its unrolled layer to ops XNNPACK does not take;
    this runs both shipped steps faster under LiteRT (``pair`` at batch 4,096 about twice as
    fast, ``bench/startup.py --sections step``). Equal to the cell within float rounding; the
    card records the measured difference."""
    units = cell.units
    kernel = np.concatenate([np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel)])
    bias = np.asarray(cell.bias) if cell.use_bias else np.zeros(4 * units, np.float32)
    gates = [kernel[:, g * units : (g + 1) * units] for g in range(4)]
    constant = [not gate.any() for gate in gates]
    live = [g for g in range(4) if not constant[g]]
    live_kernel = np.concatenate([gates[g] for g in live], axis=1)
    from_zero = tf.constant(live_kernel[: len(kernel) - units])  # the input's rows alone
    live_kernel = tf.constant(live_kernel)
    live_bias = tf.constant(np.concatenate([bias[g * units : (g + 1) * units] for g in live]))
    act, recurrent = cell.activation, cell.recurrent_activation

    def step(x: tf.Tensor, h: tf.Tensor | None, c: tf.Tensor | None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        if h is None:
            z = tf.matmul(x, from_zero) + live_bias
        else:
            z = tf.matmul(tf.concat([x, h], axis=1), live_kernel) + live_bias
        parts = iter(tf.split(z, len(live), axis=1))
        i, f, g, o = (
            tf.constant(bias[n * units : (n + 1) * units]) if constant[n] else next(parts)
            for n in range(4))
        gated = recurrent(i) * act(g)
        c = gated if c is None else recurrent(f) * c + gated
        h = recurrent(o) * act(c)
        return h, h, c

    return step


class KerasStep:
    """A Keras model's batched step, compiled: ``(x, state) -> (probability, new_state)``.

    ``fused``: each LSTM stepped through ``fused_cell`` (what ``detector.model.conversion``
    converts), a stateless model's sequence too; otherwise the model's own layers (the
    ``--runtime keras`` reference)."""

    def __init__(self, model: keras.Model, fused: bool = False):
        self.model = model
        self.width, stateful, self.steps = input_kind(model)
        x_spec = tf.TensorSpec((None, self.width), tf.float32, name="x")
        self.chunk = 0
        # A stateless model without an LSTM (``long``) converts as it is.
        fused = fused and any(isinstance(layer, keras.layers.LSTM) for layer in model.layers)
        if stateful or fused:  # stepped cell by cell (the reference stateless path is the model)
            self._layout = step_layout(model)
            cell = fused_cell if fused else keras_cell
            self._cells = [cell(layer.cell) if where else None for layer, where
                           in zip(self._layout.layers, self._layout.state_slices, strict=True)]
        if stateful:
            self.state_size = self._layout.state_size
            state_spec = tf.TensorSpec((None, self.state_size), tf.float32, name="state")
            self.step_function = _named("step", self._stateful, [x_spec, state_spec])
            self.chunk = CHUNK
            self.chunk_function = _named("chunk", self._chunk, [
                tf.TensorSpec((None, CHUNK, self.width), tf.float32, name="x"), state_spec])
        else:
            self.state_size = 0
            self.step_function = _named(
                "step", self._sequence if fused else self._stateless, [x_spec])

    def _stateless(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        seq = tf.reshape(x, (-1, self.steps, self.width // self.steps))
        return {"probability": tf.reshape(self.model(seq, training=False), (-1,))}

    def _sequence(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """A stateless model's fixed-length sequence from the zero state: the last step's
        probability."""
        return {"probability": self._steps(tf.reshape(x, (-1, self.width // self.steps)), None,
                                           self.steps)["probability"][:, -1]}

    def _stateful(self, x: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._steps(x, state, 1)

    def _chunk(self, x: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._steps(tf.reshape(x, (-1, self.width)), state, CHUNK)

    def _steps(self, x: tf.Tensor, state: tf.Tensor | None, steps: int
               ) -> dict[str, tf.Tensor]:
        """``steps`` events of each stream, rows ``stream * steps + t``: each LSTM cell is
        stepped ``steps`` times from the carried ``[h, c]``; every other layer sees all rows
        at once (the same per-row arithmetic as one event at a time)."""
        out = x
        new_state = []
        for layer, where, cell in zip(self._layout.layers, self._layout.state_slices,
                                      self._cells, strict=True):
            if where is None:
                out = layer(out, training=False)
                continue
            start, units = where
            h = c = None
            if state is not None:
                h = state[:, start : start + units]
                c = state[:, start + units : start + 2 * units]
            # One row a stream, step t's inputs in columns t * width ...: each step's slice
            # and the outputs' concatenation stay 2-D, which XNNPACK runs (a 3-D slice is
            # left to LiteRT's own kernels and split the graph: the step ran at half speed).
            width = out.shape[-1]
            seq = tf.reshape(out, (-1, steps * width)) if steps > 1 else None
            outs = []
            for t in range(steps):
                o, h, c = cell(out if seq is None else seq[:, t * width : (t + 1) * width], h, c)
                outs.append(o)
            out = tf.reshape(tf.concat(outs, axis=1), (-1, units)) if steps > 1 else outs[0]
            new_state += [h, c]
        prob = tf.reshape(out, (-1, steps) if steps > 1 else (-1,))
        return {"probability": prob, "state": tf.concat(new_state, axis=1)}

    def __call__(self, x: np.ndarray, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        batch = len(x)
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.state_size), np.float32)
        if self.state_size == 0:
            return (self.step_function(x)["probability"].numpy(),
                    np.zeros((batch, 0), np.float32))
        out = self.step_function(x, np.asarray(state, dtype=np.float32))
        return out["probability"].numpy(), out["state"].numpy()

    def sequence(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``CHUNK`` events of each stream, ``x`` ``(streams, CHUNK, width)``: probabilities
        ``(streams, CHUNK)`` and each stream's state after its last."""
        out = self.chunk_function(x, np.asarray(state, dtype=np.float32))
        return out["probability"].numpy(), out["state"].numpy()


def _named(name: str, body: Callable[..., dict[str, tf.Tensor]],
           signature: list[tf.TensorSpec]) -> Callable[..., dict[str, tf.Tensor]]:
    """A compiled function whose name becomes its LiteRT signature key and whose arguments
    name its inputs (``x`` and, for a stateful model, ``state``)."""

    # Two functions, not one defined in two branches: AutoGraph caches its conversion by
    # qualified name, so the second would get the first one's arguments.
    def stateless(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return body(x)

    def stateful(x: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        return body(x, state)

    function = stateless if len(signature) == 1 else stateful
    function.__name__ = name
    return tf.function(function, input_signature=signature, reduce_retracing=True)
