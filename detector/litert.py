"""The serving step in LiteRT (the TensorFlow Lite runtime): the default, without TensorFlow.

A ``.tflite`` beside a ``.keras`` holds the model's serving step (``detector.conversion``
writes it): inputs ``x`` ``(batch, width)`` and, for a stateful model, ``state``
``(batch, state_size)`` in ModelStep's row layout; outputs ``probability`` and ``state``. The
batch dimension is dynamic. Resizing the interpreter to a new batch size and allocating costs
10-35 µs here (measured against the same call at an unchanged size, batches of 10 to 1,000), so
one interpreter is resized whenever the size changes: no cache of interpreters per size and no
padding to buckets, which would cost more in wasted rows than it saves.

One thread (``num_threads=1``): the detector calls the step from one thread, the Kafka
client's I/O thread and (locally) the broker need the other core, and one thread already runs
the ``seed`` step ten times faster than the Kafka client moves events here. A second thread
made ``pair`` slower at batches up to 1,024 and ``seed`` slower at batch 1. An interpreter is
not safe to call from two threads at once (its input tensors are shared), so a call holds a
lock: free when, as in the detector, one thread calls, and right when a step is shared.
"""

from __future__ import annotations

import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class LiteRTStep:
    """A converted serving step: ``(x, state) -> (probability, new_state)`` as numpy."""

    def __init__(self, content: bytes):
        self._interpreter = Interpreter(model_content=content, num_threads=1)
        runner = self._interpreter.get_signature_runner()
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # it holds views into the interpreter, which would forbid resizing
        self._x = inputs["x"]["index"]
        self._prob = outputs["probability"]["index"]
        self.width = int(inputs["x"]["shape_signature"][-1])
        if "state" in inputs:
            self._state_in = inputs["state"]["index"]
            self._state_out = outputs["state"]["index"]
            self.state_size = int(inputs["state"]["shape_signature"][-1])
        else:
            self._state_in = self._state_out = None
            self.state_size = 0
        self._batch = -1
        self._lock = threading.Lock()

    def _resize(self, batch: int) -> None:
        it = self._interpreter
        it.resize_tensor_input(self._x, [batch, self.width], strict=True)
        if self._state_in is not None:
            it.resize_tensor_input(self._state_in, [batch, self.state_size], strict=True)
        it.allocate_tensors()
        self._batch = batch

    def __call__(self, x: np.ndarray, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        batch = len(x)
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.state_size), np.float32)
        it = self._interpreter
        with self._lock:
            if batch != self._batch:
                self._resize(batch)
            it.set_tensor(self._x, x)
            if self._state_in is None:
                it.invoke()
                return it.get_tensor(self._prob), np.zeros((batch, 0), np.float32)
            it.set_tensor(self._state_in, np.ascontiguousarray(state, dtype=np.float32))
            it.invoke()
            return it.get_tensor(self._prob), it.get_tensor(self._state_out)
