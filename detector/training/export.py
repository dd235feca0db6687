"""Write a model's ``.tflite`` and record on its card how far the two runtimes agree.

``export_tflite`` runs after training (and ``python -m detector convert``): it writes
``<name>.tflite`` beside ``<name>.keras`` (``detector.model.conversion``) and adds to
``<name>.card.json`` both files' sha256 and the largest differences between the two runtimes,
measured through ``Engine`` (the pipeline's own path) on fresh uniform streams and on any real
series given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.conversion import convert
from detector.model.files import CARD_KEY, MODELS_DIR, card_path, sha256, tflite_path
from detector.model.litert import LiteRTStep
from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine

#: The default battery: fresh uniform streams, stepped as the pipeline steps them.
FRESH_STREAMS, FRESH_LENGTH, FRESH_SEED = 64, 250, 0


def export_tflite(keras_path: str | Path, series: Sequence[np.ndarray] = (),
                  series_label: str = "") -> Path:
    """Write ``<name>.tflite`` beside the model and its card entry; return the file's path.

    ``series`` are extra real streams (1-D arrays of values) to measure the agreement on,
    described in the card by ``series_label``. Raises ConversionError if it cannot convert.
    """
    keras_path = Path(keras_path)
    content, version = convert(keras_path)
    out = tflite_path(keras_path)
    out.write_bytes(content)
    rng = np.random.default_rng(FRESH_SEED)
    battery = [*rng.random((FRESH_STREAMS, FRESH_LENGTH)), *series]
    measured_on = f"{FRESH_STREAMS} fresh uniform streams x {FRESH_LENGTH} events"
    if series:
        measured_on += f" and {len(series)} given series ({series_label or 'unnamed'})"
    entry = {
        "file": out.name,
        "sha256": sha256(out),
        "keras_sha256": sha256(keras_path),
        "converter": f"tensorflow {version}",
        **agreement(keras_path, content, battery),
        "measured_on": measured_on,
        "command": f"python -m detector convert --model {_model_arg(keras_path)}",
        "converted": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    card_file = card_path(keras_path)
    card = json.loads(card_file.read_text()) if card_file.exists() else {}
    card[CARD_KEY] = entry
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    return out


def _model_arg(keras_path: Path) -> str:
    """How ``--model`` names this file: a shipped model by its name."""
    shipped = MODELS_DIR / keras_path.name
    if shipped.exists() and shipped.samefile(keras_path):
        return keras_path.stem
    return str(keras_path)


class _Recorder:
    """A step that records each call's input and output (and otherwise is the step)."""

    def __init__(self, step: ModelStep):
        self._step = step
        self.calls: list[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __call__(self, x: np.ndarray, state: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        prob, new_state = self._step(x, state)
        self.calls.append((np.array(x), None if state is None else np.array(state), prob,
                           new_state))
        return prob, new_state


def agreement(keras_path: Path, content: bytes, streams: Sequence[np.ndarray]
              ) -> dict[str, Any]:
    """The largest differences between the runtimes, each carrying its own state through
    ``Engine`` as the pipeline does: probabilities and flags end to end, and the new state
    of one step from the same input (Keras's inputs replayed through LiteRT). ``whole_streams``:
    LiteRT fed each stream in one poll (a hot stream: its ``chunk`` signature) against Keras
    one event per poll."""
    keras_step = ModelStep.load(str(keras_path), "keras")
    lite = ModelStep(LiteRTStep(content), keras_step.features, keras_step.name,
                     keras_step.fingerprint, "litert", keras_path, pattern=keras_step.pattern,
                     history=keras_step.history)
    steps = {"keras": _Recorder(keras_step), "litert": _Recorder(lite)}
    length = max(len(s) for s in streams)
    out = {runtime: ([np.zeros(len(s), np.float32) for s in streams],
                     [np.zeros(len(s), np.int8) for s in streams]) for runtime in steps}
    for runtime, step in steps.items():
        engine = Engine(step)
        for t in range(length):
            live = [i for i, s in enumerate(streams) if t < len(s)]
            res = engine.process(Batch.of([f"s{i}" for i in live],
                                          np.array([streams[i][t] for i in live]),
                                          seq=np.full(len(live), t)))
            for j, i in enumerate(live):
                out[runtime][0][i][t], out[runtime][1][i][t] = res.probability[j], res.flag[j]
    engine = Engine(lite)
    whole = [engine.process(Batch.of([f"s{i}"] * len(s), np.asarray(s, np.float64),
                                     seq=np.arange(len(s)))) for i, s in enumerate(streams)]
    out["whole_streams"] = ([r.probability for r in whole], [r.flag for r in whole])

    def differences(runtime: str) -> tuple[float, int]:
        keras_probs, keras_flags = out["keras"]
        probs, flags = out[runtime]
        return (max(float(np.abs(k - p).max(initial=0)) for k, p in zip(keras_probs, probs,
                                                                          strict=True)),
                sum(int((k != f).sum()) for k, f in zip(keras_flags, flags, strict=True)))

    prob_diff, flags = differences("litert")
    whole_prob_diff, whole_flags = differences("whole_streams")
    state_diff = 0.0
    for x, state, _, keras_state in steps["keras"].calls:
        _, lite_state = steps["litert"]._step(x, state)
        state_diff = max(state_diff, float(np.abs(lite_state - keras_state).max(initial=0)))
    return {"max_abs_difference": {"probability": prob_diff, "state": state_diff},
            "flags_differing": flags, "events": int(sum(len(s) for s in streams)),
            "whole_streams": {"max_abs_difference": {"probability": whole_prob_diff},
                              "flags_differing": whole_flags}}
