"""The model registry: model versions, and which of them serve, in a compacted Kafka topic.

Replicas on different machines need no shared disk: a version is its converted step (the
``.tflite`` the detector serves), its card and their checksums; each name has a pointer record
saying which version is live, which is the candidate (shadowing) and which were live before
(for a rollback). Keys, one record each (the last one per key is what holds, as compaction
keeps it):

- ``chunk/<name>/<n>/<i>``: the ``.tflite``'s bytes ``i * CHUNK_BYTES`` on, raw: a model is
  cut into records well below Kafka's default ``message.max.bytes`` (1 MiB), so any cluster
  takes one up to ``MAX_MODEL_BYTES`` without a setting changed;
- ``version/<name>/<n>``: ``{"name", "version", "sha256" (of the .tflite), "keras_sha256",
  "card", "pushed_at", "size", "chunks"}``, written after its chunks; versions count from 1
  per name (records before chunks carried the bytes themselves, ``"tflite"`` in base64);
- ``pointer/<name>``: ``{"name", "live", "candidate", "previous": [...]}``.

The topic has one partition, so every reader sees every record in the order written. A
reader keeps each version's card and where its chunks are, not their bytes: a detector reads
the bytes of the versions it serves when it loads them (``RegistryReader.tflite``). ``prune``
deletes old versions (tombstones).
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
from detector.kafka import acl, clients, topics
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: One chunk of a model: with its key and the record's overhead, far below 1 MiB.
CHUNK_BYTES = 512 * 1024
#: The largest model the registry takes (a .tflite): refused before anything is written.
MAX_MODEL_BYTES = 64 << 20
#: A fetch of the registry: a few chunks at a time.
FETCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    sha256: str  # of the .tflite
    keras_sha256: str
    card: dict[str, Any]
    pushed_at: float = 0.0
    size: int = 0
    chunks: int = 0
    inline: bytes | None = None  # a record from before chunks carries the bytes itself

    def record(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "inline"}
        return json.dumps(body, separators=(",", ":")).encode()


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
    """Everything the registry holds, as its records say so far (chunks by offset)."""

    versions: dict[tuple[str, int], Version] = field(default_factory=dict)
    pointers: dict[str, Pointer] = field(default_factory=dict)
    chunks: dict[tuple[str, int], dict[int, int]] = field(default_factory=dict)  # -> i: offset

    def apply(self, key: bytes | None, value: bytes | None, offset: int = -1) -> str | None:
        """Take one record into account; the name it concerns (None for a foreign one)."""
        try:
            kind, _, rest = (key or b"").decode().partition("/")
            if kind == "chunk":
                name, number, index = rest.rsplit("/", 2)
                where = self.chunks.setdefault((name, int(number)), {})
                if value is None:
                    where.pop(int(index), None)
                else:
                    where[int(index)] = offset
                return None
            body = json.loads(value) if value is not None else None
        except (UnicodeDecodeError, ValueError):
            log.warning("skipping a registry record that is not ours (key %r)", key)
            return None
        try:
            if kind == "version":
                name, _, number = rest.rpartition("/")
                if body is None:  # pruned
                    self.versions.pop((name, int(number)), None)
                    return name
                inline = body.pop("tflite", None)
                version = Version(**body, inline=None if inline is None
                                  else base64.b64decode(inline))
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


def ensure_topic(kafka: KafkaSettings, topic: str, replication_factor: int = -1) -> None:
    topics.ensure_topics(kafka, [topics.changelog(topic, 1, "the registry's models")],
                         replication_factor)


class RegistryReader:
    """Follows the registry topic from its start: ``poll`` takes in what arrived since."""

    def __init__(self, kafka: KafkaSettings, topic: str, replication_factor: int = -1):
        ensure_topic(kafka, topic, replication_factor)
        self.kafka = kafka
        self.state = RegistryState()
        self._tp = TopicPartition(topic, 0)
        self._consumer = self._new_consumer()
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)

    def _new_consumer(self) -> KafkaConsumer:
        return clients.consumer(self.kafka, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=20, isolation_level="read_committed",
                                max_partition_fetch_bytes=FETCH_BYTES)

    def poll(self, timeout_ms: int = 0) -> set[str]:
        """Records arrived since the last poll, applied; the names they concern."""
        changed: set[str] = set()
        for records in self._consumer.poll(timeout_ms=timeout_ms, max_records=500).values():
            for r in records:
                name = self.state.apply(r.key, r.value, r.offset)
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

    def tflite(self, v: Version) -> bytes:
        """A version's .tflite, read back from its chunks and checked against its sha256.
        UsageError when chunks are missing (pruned) or the bytes do not match."""
        if v.inline is not None:
            content = v.inline
        else:
            where = self.state.chunks.get((v.name, v.version), {})
            if sorted(where) != list(range(v.chunks)):
                raise UsageError(f"model {v.name} v{v.version}: {v.chunks - len(where)} of its "
                                 f"{v.chunks} chunks are missing from {self._tp.topic}")
            pieces = self._read_at(where)
            content = b"".join(pieces[i] for i in range(v.chunks))
        if hashlib.sha256(content).hexdigest() != v.sha256:
            raise UsageError(f"model {v.name} v{v.version}: its bytes in {self._tp.topic} do "
                             "not match its sha256")
        return content

    def _read_at(self, where: dict[int, int]) -> dict[int, bytes]:
        """Chunk index -> bytes, read at the offsets given (with a consumer of their own)."""
        wanted = {offset: i for i, offset in where.items()}
        out: dict[int, bytes] = {}
        consumer = self._new_consumer()
        try:
            consumer.assign([self._tp])
            consumer.seek(self._tp, min(wanted))
            deadline = time.monotonic() + max(30.0, self.kafka.connect_timeout_s)
            while len(out) < len(wanted):
                if time.monotonic() > deadline:
                    raise clients.KafkaUnavailable(f"cannot read a model's chunks from "
                                                   f"{self._tp.topic}")
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        if r.offset in wanted:
                            out[wanted[r.offset]] = r.value
                        if r.offset >= max(wanted):
                            break
        finally:
            clients.close_bounded(consumer.close, "a registry reader")
        return out

    def close(self) -> None:
        clients.close_bounded(self._consumer.close, "the registry reader")


class Registry:
    """What ``python -m detector models ...`` does: read the registry, write to it."""

    def __init__(self, kafka: KafkaSettings, topic: str, replication_factor: int = -1):
        self.kafka, self.topic = kafka, topic
        self.reader = RegistryReader(kafka, topic, replication_factor)

    def state(self) -> RegistryState:
        return self.reader.read_all()

    def _write(self, records: list[tuple[str, bytes | None]]) -> None:
        """Records in this order, all acknowledged (an idempotent producer: a retry during a
        leader's move neither duplicates nor reorders them)."""
        producer = clients.producer(self.kafka, max_request_size=CHUNK_BYTES + 64 * 1024,
                                    acks="all", enable_idempotence=True, linger_ms=5)
        try:
            with acl.writing(self.topic):
                futures = [producer.send(self.topic, key=key.encode(), value=value, partition=0)
                           for key, value in records]
                for future in futures:
                    future.get(timeout=max(60.0, self.kafka.connect_timeout_s))
        finally:
            clients.close_bounded(producer.close, "the registry writer")
        self.reader.poll(timeout_ms=0)

    def push(self, name: str, tflite: bytes, card: dict[str, Any], keras_sha256: str
             ) -> tuple[Version, bool]:
        """A new version (the next number of ``name``): its chunks, then its record; live at
        once when nothing of that name is (so that a detector following it has a model).
        Returns it and whether it is live. The same step pushed again is the version it
        already is (nothing written). UsageError, before anything is written, for a model
        over ``MAX_MODEL_BYTES``."""
        if len(tflite) > MAX_MODEL_BYTES:
            raise UsageError(f"the model's .tflite is {len(tflite) / 2**20:.1f} MiB; the "
                             f"registry takes at most {MAX_MODEL_BYTES >> 20} MiB")
        state = self.state()
        digest = hashlib.sha256(tflite).hexdigest()
        same = [v for (n, _), v in state.versions.items() if n == name and v.sha256 == digest]
        pointer = state.pointers.get(name)
        if same:
            return same[-1], pointer is not None and pointer.live == same[-1].version
        number = state.latest(name) + 1
        pieces = [tflite[i:i + CHUNK_BYTES] for i in range(0, len(tflite), CHUNK_BYTES)]
        version = Version(name, number, digest, keras_sha256, card, time.time(), len(tflite),
                          len(pieces))
        records: list[tuple[str, bytes | None]] = [
            (f"chunk/{name}/{number}/{i}", piece) for i, piece in enumerate(pieces)]
        records.append((f"version/{name}/{number}", version.record()))
        live = pointer is None or pointer.live is None
        if live:
            records.append((f"pointer/{name}", Pointer(name, live=number).record()))
        self._write(records)
        return version, live

    def prune(self, name: str, keep: int) -> list[int]:
        """Delete the versions of ``name`` but the ``keep`` newest and those live, shadowing
        or in the rollback list (tombstones for their records); the versions deleted."""
        state = self.state()
        pointer = state.pointers.get(name) or Pointer(name)
        numbers = sorted(v for n, v in state.versions if n == name)
        kept = set(numbers[-keep:] if keep else []) | set(pointer.previous) \
            | {v for v in (pointer.live, pointer.candidate) if v is not None}
        gone = [v for v in numbers if v not in kept]
        records: list[tuple[str, bytes | None]] = []
        for number in gone:
            records.append((f"version/{name}/{number}", None))
            records += [(f"chunk/{name}/{number}/{i}", None)
                        for i in sorted(state.chunks.get((name, number), {}))]
        if records:
            self._write(records)
        return gone

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
        self._write([(f"pointer/{name}", new.record())])
        return new

    def close(self) -> None:
        self.reader.close()
