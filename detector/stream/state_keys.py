"""Keys of the state topic: each owner of a partition writes under keys of its own.

Compaction keeps the record *written last* per key, not the one with the highest applied
offset. A member evicted without knowing it (a long GC pause, a stopped VM) can write a stale
checkpoint after the partition's new owner wrote its own; under one key per stream, compaction
would then delete the newer record, and a later restore would put the stream behind its
committed offset (its flags silently wrong). So each ownership of a partition draws a random
*writer* token, and a stream's state goes under ``stream id + token``: a stale writer can only
replace its own older records, never the new owner's. The restore takes, per stream, the record
with the highest applied offset over all its keys; an owner that writes a stream restored from
another key tombstones that key after its own record (``Checkpointer``), so a stream has one
key but for a stale writer's leftovers, which the next restore drops.

Model markers (which model serves a partition from a checkpoint on) get the same treatment:
one key per writer, and the restore takes the marker of the highest (epoch, generation); a new
owner writes its marker at the epoch after the highest it read, so a stale writer's marker,
written later, still loses.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

#: The writer of records keyed by the bare stream id (state records before version 4), and of
#: a stream never written (0).
LEGACY_WRITER = 1
NO_WRITER = 0
_TOKEN_BYTES = 8
#: The marker key of records before version 4: one for all writers.
LEGACY_MARKER_KEY = b""
_MARKER_MAGIC = b"TDM\x01"


def new_writer() -> int:
    """A token for one ownership of a partition: random, so no two owners share one."""
    while True:
        token = secrets.randbits(64)
        if token > LEGACY_WRITER:
            return token


def state_key(stream: bytes, writer: int) -> bytes:
    """The key of ``stream``'s state written by ``writer``."""
    return stream if writer == LEGACY_WRITER else stream + writer.to_bytes(_TOKEN_BYTES, "big")


def stream_of(key: bytes, writer: int) -> bytes | None:
    """The stream id of a state record's key, given the writer its record names (None when
    the key does not end in that writer's token: not a record of ours)."""
    if writer == LEGACY_WRITER:
        return key
    if len(key) <= _TOKEN_BYTES or int.from_bytes(key[-_TOKEN_BYTES:], "big") != writer:
        return None
    return key[:-_TOKEN_BYTES]


def marker_key(writer: int) -> bytes:
    """A writer's marker key: 8 bytes, shorter than any new state key (a stream id has at
    least one byte before its token)."""
    return writer.to_bytes(_TOKEN_BYTES, "big")


@dataclass(frozen=True)
class ModelMarker:
    """Which model a partition's outputs come from, from the checkpoint that wrote it on:
    restored with the partition, so a replay after a crash uses the model the first pass did.
    ``epoch`` counts the partition's owners (a new owner writes one more than it read);
    ``generation`` is its consumer group generation, to tell apart two that read the same."""

    name: str
    version: int
    fingerprint: bytes
    epoch: int = -1
    generation: int = -1
    pattern: str = ""  # what the model flags ("": trends), for its runs' resolutions

    @property
    def rank(self) -> tuple[int, int]:
        return self.epoch, self.generation

    def encode(self) -> bytes:
        return _MARKER_MAGIC + json.dumps({
            "name": self.name, "version": self.version, "fingerprint": self.fingerprint.hex(),
            "epoch": self.epoch, "generation": self.generation,
            **({"pattern": self.pattern} if self.pattern else {})}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> ModelMarker | None:
        """The marker in ``data``; None for anything else (a damaged or foreign record)."""
        if not data or not data.startswith(_MARKER_MAGIC):
            return None
        try:
            body = json.loads(data[len(_MARKER_MAGIC):])
            return cls(str(body["name"]), int(body["version"]),
                       bytes.fromhex(body["fingerprint"]), int(body.get("epoch", -1)),
                       int(body.get("generation", -1)), str(body.get("pattern", "")))
        except (ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def is_marker(data: bytes | None) -> bool:
        return bool(data) and data.startswith(_MARKER_MAGIC)  # type: ignore[union-attr]
