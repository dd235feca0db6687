"""The serving step: one call for a batch of events from many streams, with their LSTM state.

Everything that runs a model (the pipeline, ``evaluate``, ``plot``, the benchmarks) goes through
``ModelStep``, so the accuracy we report is the accuracy the pipeline has. Never
``model.predict`` per event: that costs ~37 ms a call here, the batched step a few µs an event.

Two runtimes behind one interface. ``litert`` (the default) runs the ``.tflite`` converted
from the model's serving step (``detector.model.conversion``) and never imports TensorFlow, which
costs about 3 s and 500 MB per process; ``keras`` runs the ``.keras`` model itself
(``detector.model.keras_step``). A ``.tflite`` is used only if the model card says it was converted
from this very ``.keras`` file (its sha256; ``detector.model.files``); otherwise the model is
converted at load, and a
model that cannot be converted is served by Keras. The fingerprint is the ``.keras`` file's
either way, so state records written under one runtime are restored under the other.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detector.model.features import (
    FEATURE_SETS,
    HISTORY,
    LONGEST,
    STATEFUL,
    FeatureSet,
    input_width,
)
from detector.model.files import (
    SHIPPED,
    ModelError,
    current_tflite,
    features_of,
    read_card,
    resolve_model_path,
    tflite_path,
)
from detector.settings.detector import RUNTIMES

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What runs the step: ``litert.LiteRTStep`` or ``keras_step.KerasStep``."""

    width: int  # values per event
    state_size: int  # LSTM state floats per stream (0: stateless)
    chunk: int  # events of each stream per ``sequence`` call (0: no such call)

    def __call__(self, x: np.ndarray, state: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]: ...

    def sequence(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ModelStep:
    """A loaded model's batched step: ``(features, state) -> (prob, new_state)``.

    ``pattern`` is the name of the pattern a model trained on someone's labels flags (its
    card's ``pattern``; "" for the trend models), ``history`` the values of a stream its flags
    depend on (its card's ``history``, else its feature set's), ``alert_min_flags`` the flags
    in a row a pattern's run needs to fire (its card's, else 1).
    """

    def __init__(self, run: Runner, features: FeatureSet, name: str, fingerprint: bytes,
                 runtime: str, path: Path, model: Any = None, pattern: str = "",
                 history: int | None = None, alert_min_flags: int = 1):
        self._run = run
        self.features: FeatureSet = features
        self.state_size = run.state_size
        self.chunk = run.chunk
        self.name = name
        self.fingerprint = fingerprint
        self.runtime = runtime
        self.path = path
        self.pattern = pattern
        self.history = history or HISTORY[features]
        self.alert_min_flags = alert_min_flags
        self.version = 0  # its version in the model registry; 0: a file or a shipped model
        self._model = model

    @classmethod
    def load(cls, model: str, runtime: str = "litert") -> ModelStep:
        """Load a shipped model by name or a ``.keras`` file; nothing is trained here."""
        if runtime not in RUNTIMES:
            raise ModelError(f"unknown runtime {runtime!r}: give one of {', '.join(RUNTIMES)}")
        path = resolve_model_path(model)
        data = path.read_bytes()
        name = model if model in SHIPPED else path.stem
        digest = hashlib.sha256(data)
        run = _litert_runner(path, name, digest.hexdigest()) if runtime == "litert" else None
        keras_model = None
        if run is None:
            runtime = "keras"
            keras_model, run = _keras_runner(path)
        card = read_card(path)
        features = card.get("features")
        if features not in FEATURE_SETS:
            features = features_of(run.width, run.state_size > 0, path)
        step = cls(run, features, name, digest.digest()[:8], runtime, path, keras_model,
                   *_pattern_and_history(card, features, run, path), _min_flags(card))
        if runtime == "keras":
            step.warm_up()
        return step

    @classmethod
    def from_tflite(cls, content: bytes, card: dict[str, Any], name: str, version: int = 0,
                    where: str = "") -> ModelStep:
        """A model from its converted step and its card alone (a version from the model
        registry: no file, no TensorFlow), checked before it may serve: the card names a feature
        set, the step's signature fits it, and a call answers with a probability per event.
        Raises ModelError with one line otherwise."""
        where = where or f"model {name} v{version}"
        try:
            from detector.model.litert import LiteRTStep

            run = LiteRTStep(content)
        except ImportError:
            raise ModelError("serving a model needs ai-edge-litert: pip install ai-edge-litert"
                             ) from None
        except Exception as exc:  # LiteRT raises several types for bytes that are no model
            raise ModelError(f"{where}: not a LiteRT model ({str(exc).splitlines()[0][:200]})"
                             ) from None
        features = card.get("features")
        if features not in FEATURE_SETS:
            raise ModelError(f"{where}: its card names no feature set (one of "
                             f"{', '.join(FEATURE_SETS)})")
        litert = card.get("litert") if isinstance(card.get("litert"), dict) else {}
        keras_sha = litert.get("keras_sha256") or hashlib.sha256(content).hexdigest()
        step = cls(run, features, name, bytes.fromhex(keras_sha)[:8], "litert",
                   Path(where), None, *_pattern_and_history(card, features, run, where),
                   _min_flags(card))
        step.version = version
        prob, state = step(np.zeros((2, run.width), np.float32))
        if prob.shape != (2,) or not np.isfinite(prob).all() or state.shape[0] != 2:
            raise ModelError(f"{where}: its step does not answer with a probability per event")
        return step

    @property
    def model(self):
        """The Keras model (loaded on first use under LiteRT: tests and benchmarks want it)."""
        if self._model is None:
            from detector.model.keras_step import load_model

            self._model = load_model(self.path)
        return self._model

    def warm_up(self) -> None:
        """Compile the step now rather than on the first events: about a second under Keras
        (tracing); under LiteRT the first call costs about a millisecond, so load skips it."""
        self(np.zeros((1, self._run.width), np.float32), self.zero_state(1))

    def __call__(
        self, x: np.ndarray, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(batch,)`` and new LSTM states ``(batch, state_size)`` as numpy."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.state_size and state is None:
            state = self.zero_state(len(x))
        return self._run(x, state)

    def sequence(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``chunk`` events of each stream at once, ``x`` ``(streams, chunk, width)``, from
        their carried states: probabilities ``(streams, chunk)`` and the states after."""
        return self._run.sequence(np.ascontiguousarray(x, dtype=np.float32), state)

    def zero_state(self, batch: int) -> np.ndarray:
        """The state of a stream that has seen nothing yet."""
        return np.zeros((batch, self.state_size), np.float32)


def _min_flags(card: dict[str, Any]) -> int:
    """The flags in a row a pattern's run needs to fire, as the card says (1 otherwise)."""
    n = card.get("alert_min_flags")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _pattern_and_history(card: dict[str, Any], features: FeatureSet, run: Runner,
                         where: str | Path) -> tuple[str, int | None]:
    """The card's pattern ("" for a trend model) and history, checked against the step: it
    must take the values per event the feature set gives for that history (a ``long`` model's
    width depends on it). Raises ModelError with one line otherwise."""
    pattern, history = card.get("pattern"), card.get("history")
    history = history if isinstance(history, int) and history > 0 else None
    if features == "long" and not (history and HISTORY["window"] < history <= LONGEST):
        raise ModelError(f"{where}: a long model's card must declare its history (9 .. "
                         f"{LONGEST} values)")
    width = input_width(features, history or HISTORY[features])
    if run.width != width or (run.state_size > 0) != STATEFUL[features]:
        raise ModelError(f"{where}: its step takes {run.width} values per event "
                         f"({'with' if run.state_size else 'without'} carried state); the "
                         f"{features} feature set gives {width}")
    return (pattern if isinstance(pattern, str) else ""), history


def _litert_runner(path: Path, name: str, keras_sha256: str) -> Runner | None:
    """The LiteRT step of the model, converting it first if it has no current ``.tflite``;
    None (and one log line) if it cannot be converted: Keras serves it then."""
    try:
        from detector.model.litert import LiteRTStep
    except ImportError as exc:
        raise ModelError(f"the litert runtime needs ai-edge-litert, which is not installed "
                         f"({exc.name}): pip install ai-edge-litert, or use --runtime keras"
                         ) from None

    stored = current_tflite(path, keras_sha256)
    if stored is not None:
        return LiteRTStep(stored.read_bytes())
    try:
        from detector.model.conversion import ConversionError, convert
    except ImportError as exc:
        raise ModelError(
            f"model {name} has no current {tflite_path(path).name} beside it and converting "
            f"it needs TensorFlow, which is not installed ({exc.name}): run `python -m detector "
            f"convert --model {path}` where it is (pip install 'trend-detector[train]')"
        ) from None
    started = time.perf_counter()
    try:
        content, _ = convert(path)
    except ConversionError as exc:
        log.warning("model %s cannot be converted to LiteRT (%s); serving it with Keras",
                    name, exc)
        return None
    log.info("model %s had no current %s; converted at load in %.1f s (`python -m detector "
             "convert --model %s` stores it)", name, tflite_path(path).name,
             time.perf_counter() - started, path)
    return LiteRTStep(content)


def _keras_runner(path: Path) -> tuple[Any, Runner]:
    try:
        from detector.model.keras_step import KerasStep, load_model
    except ImportError as exc:
        raise ModelError(f"the keras runtime needs TensorFlow, which is not installed "
                         f"({exc.name}): pip install 'trend-detector[train]'") from None
    model = load_model(path)
    return model, KerasStep(model)
