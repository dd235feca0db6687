"""The models' architectures and recipes: the seed's model kept exact, the stateful one, and
the pattern models (``window`` over 8 values, ``long`` over up to 32).

Everything that decides a trained model is its ``Recipe``, written into its card.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from detector.model.features import FEATURE_WIDTH, FLOOR, LONG_CHANNELS, WINDOW, FeatureSet


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model, written into its card."""

    features: FeatureSet
    events: int  # training events per epoch (drawn afresh every epoch)
    epochs: int
    batch_size: int
    learning_rate: float  # peak of a cosine decay (after a short warm-up for stateful models)
    near_tie_share: float  # share of steps (or samples) made tiny against the stream's scale
    near_tie_low: float = -4.0  # ... by a factor of 10^U(near_tie_low, -1)
    tie_share: float = 0.05  # share of steps made exact repeats (a long run can end in one)
    units: int = 50  # LSTM units (stateful models: one layer)
    activation: str = "relu"  # of the LSTM's cell (stateful models)
    pre_units: int = 0  # Dense before the LSTM (pair)
    pre_activation: str = "linear"  # ... and its activation
    post_units: int = 0  # relu Dense after the LSTM
    init_gains: tuple[float, ...] = ()  # head start: per gain two pre-LSTM units compute
    #                                     +-gain * step (pair)
    forget_shut: float = 0.0  # > 0: the LSTM's forget gate pinned at sigmoid(-forget_shut)
    seq_len: int = 100
    clipnorm: float | None = None


RECIPES: dict[FeatureSet, Recipe] = {
    # The seed's architecture, exactly; samples from every value shape, near-ties stressed.
    "seed": Recipe("seed", events=300_000, epochs=30, batch_size=256, learning_rate=2e-3,
                   near_tie_share=0.3, near_tie_low=-7.0),
    # 16 units carry 32 floats per stream. tanh, not relu: a bounded cell keeps the state of a
    # stream stable however large its steps get, and tanh(0) = 0 is "flat" for free. The
    # forget gate pinned shut: the rule needs one step of memory (see ShutForgetGate).
    "pair": Recipe("pair", events=600_000, epochs=160, batch_size=128, learning_rate=3e-3,
                   near_tie_share=0.1, near_tie_low=-7.0, tie_share=0.1, units=16,
                   activation="tanh", pre_units=16, pre_activation="tanh", post_units=16,
                   init_gains=(30.0, 3e3, 3e5),
                   forget_shut=12.0, clipnorm=1.0),
}



def build_seed_model(input_length: int = 3) -> keras.Model:
    """The seed's ``create_model``, layer for layer."""
    model = keras.Sequential([
        keras.Input((input_length, 1)),
        keras.layers.LSTM(50, activation="relu", return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.LSTM(50, activation="relu", return_sequences=False),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def build_stateful_model(recipe: Recipe, pinned: bool = True) -> keras.Model:
    """One flag per step from an LSTM whose ``[h, c]`` the pipeline carries per stream.

    ``pinned=False`` builds the same layers without the training-time constraints (what is
    saved: the pinned weights need no custom object to load)."""
    layers: list[keras.layers.Layer] = [keras.Input((None, FEATURE_WIDTH[recipe.features]))]
    if recipe.pre_units:
        layers.append(keras.layers.Dense(recipe.pre_units, activation=recipe.pre_activation))
    shut = recipe.forget_shut if pinned else 0.0
    layers.append(keras.layers.LSTM(
        recipe.units, activation=recipe.activation, return_sequences=True,
        kernel_constraint=ShutForgetGate(recipe.units, 0.0) if shut else None,
        recurrent_constraint=ShutForgetGate(recipe.units, 0.0) if shut else None,
        bias_constraint=ShutForgetGate(recipe.units, -shut) if shut else None))
    if recipe.post_units:
        layers.append(keras.layers.Dense(recipe.post_units, activation="relu"))
    layers.append(keras.layers.Dense(1, activation="sigmoid"))
    model = keras.Sequential(layers)
    if pinned:  # the plain copy only receives trained weights
        _head_start(model, recipe)
    return model


class ShutForgetGate(keras.constraints.Constraint):
    """Pins an LSTM's forget-gate slice of one weight (Keras orders the gates i, f, c, o).

    The rule needs one step of memory. With its forget gate open, the cell of the ``pair``
    model summed a long monotonic run into itself and then read a repeat at its end as one
    more step (measured: after 300 steps one way, 47% of such repeats flagged right). With
    the gate pinned shut the cell holds only what the last step wrote, so no run is too long.
    """

    def __init__(self, units: int, value: float):
        self.units, self.value = units, value

    def __call__(self, w):
        gate = np.zeros(4 * self.units, np.float32)
        gate[self.units:2 * self.units] = 1.0
        return w * (1.0 - gate) + gate * self.value

    def get_config(self) -> dict:
        return {"units": self.units, "value": self.value}


def _head_start(model: keras.Model, recipe: Recipe) -> None:
    """Pin the forget gate (if the recipe shuts it) and set two units of the first Dense to
    ``+-gain * u`` before training (those stay trainable).

    The flag turns on the sign of a step that can be 1e-4 of the stream's typical step; from
    Keras's default initialisation gradient descent finds that sharp a comparison slowly.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.LSTM) and recipe.forget_shut:
            cell = layer.cell
            for weight, pin in ((cell.kernel, cell.kernel_constraint),
                                (cell.recurrent_kernel, cell.recurrent_constraint),
                                (cell.bias, cell.bias_constraint)):
                weight.assign(pin(weight.value))
    if not recipe.init_gains or not recipe.pre_units:
        return
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    w, b = dense.get_weights()
    for k, gain in enumerate(recipe.init_gains):
        w[:, 2 * k:2 * k + 2] = 0.0
        w[0, 2 * k], w[0, 2 * k + 1] = gain, -gain
    dense.set_weights([w, b])


#: Head start of the ``window`` model's first layer: per comparison of a step's row, one unit
#: ``tanh(gain * difference)`` at each gain (a sign seen at two resolutions; trainable).
WINDOW_GAINS = (1e5, 1e3)


def build_window_model(free_units: int = 8, lstm_units: int = 32) -> keras.Model:
    """An LSTM over a stream's last ``WINDOW`` values, each step one value compared with every
    value of the window (``features.window_input``); stateless between events, like the
    seed's model over its three values. The first layer starts as sign detectors of those
    comparisons, so an order pattern is found in the first epochs."""
    width = WINDOW + 1
    units = len(WINDOW_GAINS) * WINDOW + free_units
    model = keras.Sequential([
        keras.Input((WINDOW, width)),
        keras.layers.TimeDistributed(keras.layers.Dense(units, activation="tanh")),
        keras.layers.LSTM(lstm_units, activation="tanh"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    dense = model.layers[0].layer
    w, b = dense.get_weights()
    for g, gain in enumerate(WINDOW_GAINS):
        w[:, g * WINDOW:(g + 1) * WINDOW] = 0.0
        w[np.arange(WINDOW), g * WINDOW + np.arange(WINDOW)] = gain
        b[g * WINDOW:(g + 1) * WINDOW] = 0.0
    dense.set_weights([w, b])
    return model


#: Head start of the ``long`` model's first layer, per comparison input (the event's value
#: against each value before it, and each step): ``tanh(g x)``, ``tanh(g (x - h))`` and
#: ``tanh(g (x + h))``, its sign, "above" and "not below" (each trainable). A tie is exactly 0
#: and any other difference reaches the model at least ``FLOOR`` from it, so ``h = FLOOR / 2``
#: tells a tie from both sides: counting steps up or values below is then a sum.
LONG_GAIN = 1e5
LONG_DETECTED = (0, 1)  # the channels of ``features.long_input`` that are comparisons


def build_long_model(history: int, free_units: int = 32) -> keras.Model:
    """A stateless model of a stream's last ``history`` values (``features.long_input``): the
    inputs flattened into a Dense layer whose units start as sign detectors of every
    comparison (plus ``free_units`` for sizes), then two relu layers. Cheaper per event than
    ``window``'s LSTM over its 8 values, and no state carried: at a model swap it reads the
    kept values and owes nothing to the model before."""
    steps = history - 1
    detectors = 3 * len(LONG_DETECTED) * steps
    model = keras.Sequential([
        keras.Input((steps, LONG_CHANNELS)),
        keras.layers.Flatten(),
        keras.layers.Dense(detectors + free_units, activation="tanh"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    dense = model.layers[1]
    w, b = dense.get_weights()
    w *= 0.1  # the free units start small: near linear in the log-sizes
    col = 0
    for position in range(steps):
        for channel in LONG_DETECTED:
            for offset in (0.0, -FLOOR / 2, FLOOR / 2):
                w[:, col] = 0.0
                w[position * LONG_CHANNELS + channel, col] = LONG_GAIN
                b[col] = LONG_GAIN * offset
                col += 1
    dense.set_weights([w, b])
    return model
