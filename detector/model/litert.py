"""The serving step in LiteRT (the TensorFlow Lite runtime): the default, without TensorFlow.

A ``.tflite`` beside a ``.keras`` holds the model's serving step (``detector.model.conversion``
writes it): inputs ``x`` ``(batch, width)`` and, for a stateful model, ``state``
``(batch, state_size)`` in ModelStep's row layout; outputs ``probability`` and ``state``. A
stateful model has it as the signature ``step`` beside ``chunk``: ``x``
``(batch, chunk, width)``, that many events of each stream in one call, ``probability``
``(batch, chunk)``. The batch dimension is dynamic. Each signature's tensors are resized only
when its batch size changes (resizing and allocating costs 10-35 µs here, measured against the
same call at an unchanged size, batches of 10 to 1,000): no cache of interpreters per size and
no padding to buckets, which would cost more in wasted rows than it saves.

One thread (``num_threads=1``): the detector calls the step from one thread, the Kafka
client's I/O thread and (locally) the broker need the other core, and one thread already runs
the ``seed`` step ten times faster than the Kafka client moves events here. A second thread
made ``pair`` slower at batches up to 1,024 and ``seed`` slower at batch 1. An interpreter is
not safe to call from two threads at once (its input tensors are shared), so a call holds a
lock: free when, as in the detector, one thread calls, and right when a step is shared.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

import numpy as np
from ai_edge_litert.interpreter import Interpreter

#: What the runtime prints to stderr (fd 2, from C++) when it applies its default CPU delegate,
#: once per process: noise in every command. No setting of ai-edge-litert 2.3 silences it
#: (its logger reads no environment variable, TF_CPP_MIN_LOG_LEVEL included), and without the
#: delegate (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) ``pair``'s step ran at a third of its speed.
DELEGATE_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """Hold fd 2 while the interpreter applies its delegate, then write back everything
    written there but the notice: nothing else is lost (another thread's line written
    meanwhile comes a few milliseconds late)."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = [line for line in held.read().splitlines(keepends=True)
                    if line.rstrip() != DELEGATE_NOTICE]
            data = b"".join(rest)
            while data:
                data = data[os.write(2, data):]


class LiteRTStep:
    """A converted serving step: ``(x, state) -> (probability, new_state)`` as numpy, and
    ``sequence`` for whole chunks of each stream's events (``chunk`` of them; 0: none)."""

    def __init__(self, content: bytes):
        with _without_delegate_notice():  # the delegate is applied at the first allocation
            self._interpreter = Interpreter(model_content=content, num_threads=1)
            self._interpreter.allocate_tensors()
        signatures = self._interpreter.get_signature_list()
        # A file with one signature (a stateless model's, or one converted before ``chunk``
        # existed) holds its step as ``serving_default``: it serves one event a stream a call.
        self._step = self._interpreter.get_signature_runner(
            "step" if "step" in signatures else next(iter(signatures)))
        inputs = self._step.get_input_details()
        self.width = int(inputs["x"]["shape_signature"][-1])
        self.state_size = int(inputs["state"]["shape_signature"][-1]) if "state" in inputs else 0
        self._chunk = (self._interpreter.get_signature_runner("chunk")
                       if "chunk" in signatures else None)
        self.chunk = (int(self._chunk.get_input_details()["x"]["shape_signature"][1])
                      if self._chunk else 0)
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        batch = len(x)
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.state_size), np.float32)
        if not self.state_size:
            with self._lock:
                return self._step(x=x)["probability"], np.zeros((batch, 0), np.float32)
        return self._run(self._step, x, state)

    def sequence(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(streams, chunk, width)``: probabilities ``(streams, chunk)`` and each
        stream's state after its last event."""
        return self._run(self._chunk, x, state)

    def _run(self, runner, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:  # a runner resizes only when the shape changed, then allocates
            out = runner(x=x, state=np.ascontiguousarray(state, dtype=np.float32))
        return out["probability"], out["state"]
