"""The model registry: model versions, and which of them serve, in a compacted Kafka topic.

Replicas on different machines need no shared disk: a version is its converted step (the
``.tflite`` the detector serves), its card and their checksums, in one record; each name has a
pointer record saying which version is live, which is the candidate (shadowing) and which were
live before (for a rollback). Keys, one record each (the last one per key is what holds, as
compaction keeps it):

- ``version/<name>/<n>``: ``{"name", "version", "sha256" (of the .tflite), "keras_sha256",
  "card", "tflite" (base64), "pushed_at"}``; versions count from 1 per name;
- ``pointer/<name>``: ``{"name", "live", "candidate", "previous": [...]}``.

The topic has one partition, so every reader sees every record in the order written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from detector.errors import UsageError
from detector.kafka import clients
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: The registry's records are small beside Kafka's limits (a model's step is tens of kB).
MAX_RECORD_BYTES = 4 << 20


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    sha256: str  # of the .tflite
    keras_sha256: str
    card: dict[str, Any]
    tflite: bytes
    pushed_at: float = 0.0

    def record(self) -> bytes:
        return json.dumps({**asdict(self), "tflite": base64.b64encode(self.tflite).decode()},
                          separators=(",", ":")).encode()


@dataclass
class Pointer:
    name: str
    live: int | None = None
    candidate: int | None = None
    previous: list[int] = field(default_factory=list)  # live before, the latest last

    def record(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


@dataclass
class RegistryState:
    """Everything the registry holds, as its records say so far."""

    versions: dict[tuple[str, int], Version] = field(default_factory=dict)
    pointers: dict[str, Pointer] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Take one record into account; the name it concerns (None for a foreign one)."""
        try:
            kind, _, rest = (key or b"").decode().partition("/")
            body = json.loads(value) if value is not None else None
        except (UnicodeDecodeError, ValueError):
            log.warning("skipping a registry record that is not ours (key %r)", key)
            return None
        try:
            if kind == "version" and body is not None:
                version = Version(**{**body, "tflite": base64.b64decode(body["tflite"])})
                self.versions[(version.name, version.version)] = version
                return version.name
            if kind == "pointer" and body is not None:
                self.pointers[rest] = Pointer(**body)
                return rest
        except (TypeError, KeyError, ValueError) as exc:
            log.warning("skipping a damaged registry record %r (%s)", key, exc)
        return None

    def latest(self, name: str) -> int:
        return max((v for n, v in self.versions if n == name), default=0)

    def version(self, name: str, number: int) -> Version:
        try:
            return self.versions[(name, number)]
        except KeyError:
            known = sorted(v for n, v in self.versions if n == name)
            raise UsageError(f"model {name} has no version {number} in the registry"
                             + (f" (versions: {', '.join(map(str, known))})" if known
                                else " (no versions at all: push one)")) from None


def ensure_topic(kafka: KafkaSettings, topic: str) -> None:
    clients.ensure_topics(kafka, [clients.TopicSpec(topic, 1, {"cleanup.policy": "compact"})])


class RegistryReader:
    """Follows the registry topic from its start: ``poll`` takes in what arrived since."""

    def __init__(self, kafka: KafkaSettings, topic: str):
        ensure_topic(kafka, topic)
        self.state = RegistryState()
        self._tp = TopicPartition(topic, 0)
        self._consumer: KafkaConsumer = clients.consumer(
            kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20,
            max_partition_fetch_bytes=MAX_RECORD_BYTES)
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)

    def poll(self, timeout_ms: int = 0) -> set[str]:
        """Records arrived since the last poll, applied; the names they concern."""
        changed: set[str] = set()
        for records in self._consumer.poll(timeout_ms=timeout_ms, max_records=500).values():
            for r in records:
                name = self.state.apply(r.key, r.value)
                if name:
                    changed.add(name)
        return changed

    def read_all(self, timeout_s: float = 10.0) -> RegistryState:
        """Everything up to the topic's end (a fetch's high watermark)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll(timeout_ms=200)
            high = self._consumer.highwater(self._tp)
            if high is not None and self._consumer.position(self._tp) >= high:
                return self.state
            if time.monotonic() > deadline:
                raise clients.KafkaUnavailable(f"cannot read the model registry {self._tp.topic} "
                                               f"to its end within {timeout_s:g} s")

    def close(self) -> None:
        clients.close_bounded(self._consumer.close, "the registry reader")


class Registry:
    """What ``python -m detector models ...`` does: read the registry, write to it."""

    def __init__(self, kafka: KafkaSettings, topic: str):
        self.kafka, self.topic = kafka, topic
        self.reader = RegistryReader(kafka, topic)

    def state(self) -> RegistryState:
        return self.reader.read_all()

    def _write(self, key: str, value: bytes) -> None:
        producer = clients.producer(self.kafka, max_request_size=MAX_RECORD_BYTES, acks="all")
        try:
            producer.send(self.topic, key=key.encode(), value=value, partition=0).get(
                timeout=self.kafka.connect_timeout_s)
        finally:
            clients.close_bounded(producer.close, "the registry writer")
        self.reader.poll(timeout_ms=0)

    def push(self, name: str, tflite: bytes, card: dict[str, Any], keras_sha256: str
             ) -> tuple[Version, bool]:
        """A new version (the next number of ``name``); live at once when nothing of that
        name is (so that a detector following it has a model). Returns it and whether it is
        live. The same step pushed again is the version it already is (nothing written)."""
        state = self.state()
        digest = hashlib.sha256(tflite).hexdigest()
        same = [v for (n, _), v in state.versions.items() if n == name and v.sha256 == digest]
        pointer = state.pointers.get(name)
        if same:
            return same[-1], pointer is not None and pointer.live == same[-1].version
        version = Version(name, state.latest(name) + 1, digest, keras_sha256, card, tflite,
                          time.time())
        self._write(f"version/{name}/{version.version}", version.record())
        if pointer is None or pointer.live is None:
            self._write(f"pointer/{name}", Pointer(name, live=version.version).record())
            return version, True
        return version, False

    def change(self, name: str, action: str, number: int | None = None) -> Pointer:
        """``promote`` (and clear the candidate if it was it), ``shadow``, ``unshadow`` or
        ``rollback`` (back to the version live before); the pointer written."""
        state = self.state()
        if number is not None:
            state.version(name, number)  # UsageError for a version that does not exist
        old = state.pointers.get(name) or Pointer(name)
        new = Pointer(name, old.live, old.candidate, list(old.previous))
        if action == "promote":
            if number == old.live:
                raise UsageError(f"model {name} v{number} is live already")
            if old.live is not None:
                new.previous.append(old.live)
            new.live = number
            if old.candidate == number:
                new.candidate = None
        elif action == "shadow":
            if number == old.live:
                raise UsageError(f"model {name} v{number} is live: shadow another version")
            new.candidate = number
        elif action == "unshadow":
            if old.candidate is None:
                raise UsageError(f"model {name} has no candidate")
            new.candidate = None
        elif action == "rollback":
            if not old.previous:
                raise UsageError(f"model {name} has no earlier live version to go back to")
            new.live = new.previous.pop()
        self._write(f"pointer/{name}", new.record())
        return new

    def close(self) -> None:
        self.reader.close()
