"""Convert a model's serving step to LiteRT: the ``.tflite`` the default runtime serves.

The converted step is ``keras_step.KerasStep.step_function``: for a stateful model the
signatures ``step`` (one cell step with the carried ``[h, c]`` as input and output) and ``chunk``
(``keras_step.CHUNK`` such steps per stream in one call); for ``seed`` its one signature,
its fixed-length sequence stepped from the zero state. Each LSTM cell is written out as
``keras_step.fused_cell`` (the same arithmetic in fewer ops, builtin only: Keras's own LSTM
layer converts to a ``While`` loop that needs TensorFlow's Flex delegate).
Needs TensorFlow: the serving path imports this only to convert a model at load.
``detector.training.export`` writes the file and measures the two runtimes' agreement.
"""

from __future__ import annotations

import re
from pathlib import Path

import tensorflow as tf

from detector.model.files import ModelError
from detector.model.keras_step import KerasStep, load_model


class ConversionError(ModelError):
    """The model's step does not convert to LiteRT builtin ops; one line saying why."""


def convert(keras_path: Path) -> tuple[bytes, str]:
    """The ``.tflite`` bytes of the model's serving step, and the converter's version."""
    model = load_model(keras_path)
    try:
        step = KerasStep(model, fused=True)
        # The trackable object must hold the variables themselves: a Keras 3 model passed
        # directly converts them to uninitialised resource variables (every output NaN).
        holder = tf.Module()
        holder.variables_ = [getattr(v, "value", v) for v in step.model.weights]
        functions = [step.step_function] + ([step.chunk_function] if step.chunk else [])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [f.get_concrete_function() for f in functions], holder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert(), tf.__version__
    except ModelError as exc:
        raise ConversionError(str(exc)) from exc
    except Exception as exc:  # the converter raises many types; its first error names the op
        text = str(exc)
        found = re.search(r"error: ([^\n]+)", text)
        first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise ConversionError((found.group(1) if found else first).strip()[:300]) from exc
