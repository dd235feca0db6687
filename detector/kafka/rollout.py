"""Which model serves each partition, and the moves between versions the registry asks for.

The detector follows one model name in the registry (``registry``): the version live there
serves, a candidate shadows beside it (``shadow``); a ``--model`` that is a file's path pins
that file and follows nothing. A new version is loaded beside the current
one and checked (``ModelStep.from_tflite``) before anything changes; a load that fails keeps
the current version, logs one line, counts in ``detector_model_load_failures_total`` and shows
on ``/healthz``. A partition's model changes only at a checkpoint (``Pipeline._swap``) that
writes the partition's marker (``state_keys.ModelMarker``) with its state before any output of the
new model, and a restored partition takes its marker's model: a replay after a crash uses the
model its first pass used, so duplicates are identical, and every partition of every replica
moves at a point of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from detector.errors import DetectorError
from detector.kafka.registry import RegistryReader
from detector.model.files import SHIPPED, ModelError, is_path
from detector.model.serving import ModelStep
from detector.ops.metrics import Metrics
from detector.settings.detector import DetectorSettings
from detector.stream.state_keys import ModelMarker

#: How often the loop looks at the registry: a swap waits for a checkpoint anyway, and the
#: loop does not pay a poll of a second consumer on every batch.
FOLLOW_EVERY_S = 0.25

log = logging.getLogger(__name__)


class Rollout:
    """The live model, the candidate, the model of each partition, and the registry."""

    def __init__(self, settings: DetectorSettings, initial: ModelStep | None, metrics: Metrics):
        self.s = settings
        self.metrics = metrics
        self.live: ModelStep | None = initial
        self.candidate: ModelStep | None = None
        self.by_partition: dict[int, ModelStep] = {}
        self.failure = ""  # the last load that failed, for /healthz ("" once one works)
        self.reader: RegistryReader | None = None
        self._loaded: dict[tuple[str, int], ModelStep] = {}
        self._next_look = 0.0
        #: ``--model`` names a file: it serves as it is, whatever the registry holds.
        self.pinned = is_path(settings.model)

    @property
    def name(self) -> str:
        """The model's name: the one followed in the registry (a shipped or registry name as
        given), or a pinned file's stem."""
        return self.live.name if self.live is not None else self.s.model

    def start(self) -> ModelStep:
        """Read the registry; take its live version of the name if it has one. The model to
        start with (ModelError when there is none at all)."""
        self.reader = RegistryReader(self.s.kafka, self.s.models_topic,
                                     self.s.replication_factor)
        state = self.reader.read_all()  # also for the versions partitions' markers name
        pointer = None if self.pinned else state.pointers.get(self.name)
        if pointer is not None and pointer.live is not None:
            self._adopt(pointer.live)
        if self.live is None:
            raise ModelError(f"model {self.s.model!r}: not one of {', '.join(SHIPPED)}, no "
                             f".keras file, and nothing live under that name in the registry "
                             f"{self.s.models_topic}")
        if pointer is not None and pointer.candidate is not None:
            self._shadow(pointer.candidate)
        self._show()
        return self.live

    def follow(self) -> bool:
        """Take in the registry's news (cheap when there is none); True when a new live
        version is ready to take over."""
        now = time.monotonic()
        if self.reader is None or now < self._next_look:
            return False
        self._next_look = now + FOLLOW_EVERY_S
        if self.name not in self.reader.poll() or self.pinned:
            return False
        pointer = self.reader.state.pointers.get(self.name)
        if pointer is None:
            return False
        candidate = pointer.candidate
        if candidate is None and self.candidate is not None:
            log.info("model %s v%d no longer shadows", self.name, self.candidate.version)
            self.candidate = None
        elif candidate is not None and (self.candidate is None
                                        or self.candidate.version != candidate):
            self._shadow(candidate)
        moved = pointer.live is not None and self.live is not None \
            and pointer.live != self.live.version and self._adopt(pointer.live)
        self._show()
        self._release()
        return moved

    def _release(self) -> None:
        """Keep loaded only the versions that serve (live, candidate, a partition's): a
        registry of many versions costs a detector the ones it runs, not all."""
        serving = {id(s) for s in (self.live, self.candidate, *self.by_partition.values())
                   if s is not None}
        for key in [k for k, step in self._loaded.items() if id(step) not in serving]:
            del self._loaded[key]

    def load(self, name: str, version: int) -> ModelStep:
        """A version of the registry, loaded and checked (once); ModelError if it cannot."""
        if (name, version) not in self._loaded:
            if self.reader is None:
                raise ModelError("no model registry is read")
            v = self.reader.state.version(name, version)
            step = ModelStep.from_tflite(self.reader.tflite(v), v.card, name, version)
            if step.fingerprint != bytes.fromhex(v.keras_sha256)[:8]:
                raise ModelError(f"model {name} v{version}: its step is not the one its card "
                                 "was written for")
            self._loaded[(name, version)] = step
        return self._loaded[(name, version)]

    def _adopt(self, version: int) -> bool:
        try:
            step = self.load(self.name, version)
        except (ModelError, DetectorError) as exc:
            self._failed(version, exc)
            return False
        old = self.live
        self.live, self.failure = step, ""
        if old is not None and old.version:
            log.info("model %s v%d loaded and checked; it takes over from v%d at the next "
                     "checkpoint of each partition", self.name, version, old.version)
        return True

    def _shadow(self, version: int) -> None:
        try:
            self.candidate = self.load(self.name, version)
        except (ModelError, DetectorError) as exc:
            self._failed(version, exc)
            return
        log.info("model %s v%d shadows v%d: same events, its own state, flags to metrics%s",
                 self.name, version, self.live.version if self.live else 0,
                 f" and {self.s.candidate_topic}" if self.s.candidate_topic else "")

    def _failed(self, version: int, exc: BaseException) -> None:
        self.failure = f"model {self.name} v{version} failed to load ({exc}); serving " \
                       f"v{self.live.version if self.live else 0}"
        self.metrics.model_load_failures.inc()
        log.warning("%s", self.failure)

    def _show(self) -> None:
        """``detector_model_info``: one series per role."""
        self.metrics.model_info.clear()
        for role, step in (("live", self.live), ("candidate", self.candidate)):
            if step is not None:
                self.metrics.model_info.labels(step.name, str(step.version), role).set(1)

    # --- partitions ---------------------------------------------------------------------------

    def assign(self, partition: int, marker: ModelMarker | None) -> ModelStep:
        """The model of a restored partition: its marker's, when it can be loaded (the live one
        otherwise)."""
        assert self.live is not None
        step = self.live
        if marker is not None and marker.fingerprint != self.live.fingerprint:
            try:
                step = (self.load(marker.name, marker.version) if marker.version
                        else self._shipped(marker))
            except (ModelError, DetectorError) as exc:
                log.warning("partition %d was served by %s v%d, which cannot be loaded (%s): "
                            "%s v%d serves it from its committed offset on", partition,
                            marker.name, marker.version, exc, self.live.name,
                            self.live.version)
        self.by_partition[partition] = step
        return step

    def _shipped(self, marker: ModelMarker) -> ModelStep:
        """The shipped model a marker names (a detector restarted with another ``--model``),
        so that the partition moves at a swap like any other; the live one when the marker
        names a file (its path is not known here) and its runs start afresh at the restore."""
        if marker.name not in SHIPPED:
            return self.live  # type: ignore[return-value]
        if (marker.name, 0) not in self._loaded:
            step = ModelStep.load(marker.name, self.s.runtime)
            if step.fingerprint != marker.fingerprint:
                raise ModelError(f"the shipped {marker.name} is not the one that served it")
            self._loaded[(marker.name, 0)] = step
        return self._loaded[(marker.name, 0)]

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.by_partition.pop(p, None)
        self._release()

    def pending(self) -> set[int]:
        """Partitions still served by another model than the live one."""
        return {p for p, step in self.by_partition.items() if step is not self.live}

    def swapped(self, partitions: set[int]) -> None:
        for p in partitions:
            self.by_partition[p] = self.live  # type: ignore[assignment]
        self._release()

    def groups(self, partitions: np.ndarray) -> Iterator[tuple[ModelStep, np.ndarray | None]]:
        """The events of a batch by the model serving their partition (None: all of them)."""
        steps = {p: self.by_partition.get(p, self.live) for p in np.unique(partitions).tolist()}
        if len({id(s) for s in steps.values()}) <= 1:
            yield next(iter(steps.values()), self.live), None  # type: ignore[misc]
            return
        for step in {id(s): s for s in steps.values()}.values():
            mine = [p for p, s in steps.items() if s is step]
            yield step, np.nonzero(np.isin(partitions, mine))[0]

    def fingerprints(self, partitions: np.ndarray) -> np.ndarray:
        """The fingerprint of the model serving each of ``partitions`` (for state records)."""
        live = self.live.fingerprint if self.live else b""
        table = {p: s.fingerprint for p, s in self.by_partition.items()}
        return np.array([table.get(p, live) for p in partitions.tolist()], "S8")

    def marker(self, step: ModelStep | None = None) -> ModelMarker:
        step = step or self.live
        assert step is not None
        return ModelMarker(step.name, step.version, step.fingerprint, pattern=step.pattern)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
