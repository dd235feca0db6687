"""The serving step: one compiled call for a batch of events from many streams.

Everything that runs a model (the pipeline, ``evaluate``, ``plot``, the benchmarks) goes through
``ModelStep``, so the accuracy we report is the accuracy the pipeline has. Never
``model.predict`` per event: that costs ~37 ms a call here, the batched step a few µs an event.

The stateless ``seed`` model takes ``[x3, x2, x2 > x1]`` as a length-3 sequence and carries no
LSTM state between events (the stream state carries x2 and the direction). The stateful models
(``pair``) are trained as sequence models; here each LSTM layer's cell is stepped once
with the stream's carried ``[h, c]`` and the new ``[h, c]`` is handed back to be stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN reorders float sums (results differ in the last bits between batch sizes) and prints
# a banner at import; plain kernels are as fast for these small LSTMs and exactly repeatable.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np
import tensorflow as tf

from detector.errors import UsageError
from detector.features import FEATURE_SETS, FEATURE_WIDTH, FeatureSet

MODELS_DIR = Path(__file__).parent / "models"


class ModelError(UsageError):
    """A model name or file that cannot be served; the message is one readable line."""


def resolve_model_path(model: str) -> Path:
    """A shipped model by name (``seed``, ``pair``) or a ``.keras`` file by path."""
    if model in FEATURE_SETS:
        path = MODELS_DIR / f"{model}.keras"
        if not path.exists():
            raise ModelError(f"shipped model {model!r} is missing from {MODELS_DIR}")
        return path
    path = Path(model)
    if path.suffix != ".keras" and not path.exists():
        raise ModelError(
            f"unknown model {model!r}: give one of {', '.join(FEATURE_SETS)} or a .keras file"
        )
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    return path


def card_path(model_path: Path) -> Path:
    """Where a model's card lives: ``seed.keras`` -> ``seed.card.json``."""
    return model_path.with_suffix(".card.json")


def _infer_features(model: keras.Model, path: Path) -> FeatureSet:
    card = card_path(path)
    if card.exists():
        features = json.loads(card.read_text()).get("features")
        if features in FEATURE_SETS:
            return features
    shape = tuple(model.inputs[0].shape)
    if shape[1:] == (3, 1):
        return "seed"
    if len(shape) == 3 and shape[1] is None and shape[2] == 2:
        return "pair"
    raise ModelError(f"{path}: cannot tell the feature set from input shape {shape}")


@dataclass(frozen=True)
class StepLayout:
    """Which layers a stateful step runs and where each LSTM's ``[h, c]`` sits in the state row."""

    layers: tuple[keras.layers.Layer, ...]
    state_slices: tuple[tuple[int, int] | None, ...]
    state_size: int


def _step_layout(model: keras.Model) -> StepLayout:
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


class ModelStep:
    """A loaded model and its compiled batched step: ``(features, state) -> (prob, new_state)``."""

    def __init__(self, model: keras.Model, features: FeatureSet, name: str, fingerprint: bytes):
        self.model = model
        self.features: FeatureSet = features
        self.name = name
        self.fingerprint = fingerprint
        width = FEATURE_WIDTH[features]
        if features == "seed":
            self.state_size = 0
            self._fn = tf.function(
                self._stateless,
                input_signature=[tf.TensorSpec((None, width), tf.float32)],
                reduce_retracing=True,
            )
        else:
            self._layout = _step_layout(model)
            self.state_size = self._layout.state_size
            self._fn = tf.function(
                self._stateful,
                input_signature=[
                    tf.TensorSpec((None, width), tf.float32),
                    tf.TensorSpec((None, self.state_size), tf.float32),
                ],
                reduce_retracing=True,
            )

    @classmethod
    def load(cls, model: str) -> ModelStep:
        """Load a shipped model by name or a ``.keras`` file; nothing is trained here."""
        path = resolve_model_path(model)
        try:
            loaded = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad file; report one line.
            raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from exc
        fingerprint = hashlib.sha256(path.read_bytes()).digest()[:8]
        name = model if model in FEATURE_SETS else path.stem
        step = cls(loaded, _infer_features(loaded, path), name, fingerprint)
        step.warm_up()
        return step

    def warm_up(self) -> None:
        """Trace the compiled step now (about a second) rather than on the first events."""
        self(np.zeros((1, FEATURE_WIDTH[self.features]), np.float32), self.zero_state(1))

    def _stateless(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(self.model(tf.expand_dims(x, -1), training=False), (-1,))

    def _stateful(self, x: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out = x
        new_state = []
        for layer, where in zip(self._layout.layers, self._layout.state_slices, strict=True):
            if where is None:
                out = layer(out, training=False)
                continue
            start, units = where
            h = state[:, start : start + units]
            c = state[:, start + units : start + 2 * units]
            out, (h, c) = layer.cell(out, [h, c], training=False)
            new_state += [h, c]
        return tf.reshape(out, (-1,)), tf.concat(new_state, axis=1)

    def __call__(
        self, x: np.ndarray, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(batch,)`` and new LSTM states ``(batch, state_size)`` as numpy."""
        x = np.asarray(x, dtype=np.float32)
        batch = x.shape[0]
        if self.state_size == 0:
            prob = self._fn(x).numpy() if batch else np.zeros(0, np.float32)
            return prob, np.zeros((batch, 0), np.float32)
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.state_size), np.float32)
        prob, new_state = self._fn(x, np.asarray(state, dtype=np.float32))
        return prob.numpy(), new_state.numpy()

    def zero_state(self, batch: int) -> np.ndarray:
        """The state of a stream that has seen nothing yet."""
        return np.zeros((batch, self.state_size), np.float32)
