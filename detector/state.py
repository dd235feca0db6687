"""Per-stream state in compact arrays, and its record on the compacted state topic.

One Python object per stream would cost several hundred bytes and a pointer chase per event;
instead every stream owns a slot number into a few numpy arrays, and one dict maps stream id
to slot. Slots of streams whose partition is revoked go back to a free list.

A state record carries the input offset of the last event it applied, so a restored stream
skips what it already covered and processes the rest again from exactly that state.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

import numpy as np

#: Magic and version: a record from another program or layout is rejected, not misread.
STATE_MAGIC = b"TDS\x01"
_HEADER = struct.Struct("<4s8sdBqqqiH")
#: The same layout as a numpy record, to encode many streams' states in one go.
_HEADER_DTYPE = np.dtype([("magic", "S4"), ("fingerprint", "S8"), ("prev", "<f8"),
                          ("prev_up", "u1"), ("seen", "<i8"), ("last_seq", "<i8"),
                          ("last_offset", "<i8"), ("partition", "<i4"), ("size", "<u2")])


class StateRecordError(ValueError):
    """A state-topic record that is not ours or is damaged."""


@dataclass(frozen=True)
class StreamState:
    """What one stream carries from event to event (one state-topic record)."""

    prev: float
    prev_up: bool
    seen: int
    last_seq: int
    last_offset: int
    partition: int
    lstm: np.ndarray  # float32, (state_size,)

    def without_lstm(self) -> StreamState:
        """The same stream position with a fresh LSTM state (the model has changed)."""
        return dataclasses.replace(self, lstm=np.zeros(0, np.float32))

    def encode(self, fingerprint: bytes) -> bytes:
        lstm = np.ascontiguousarray(self.lstm, dtype="<f4")
        return (
            _HEADER.pack(
                STATE_MAGIC,
                fingerprint,
                self.prev,
                int(self.prev_up),
                self.seen,
                self.last_seq,
                self.last_offset,
                self.partition,
                lstm.size,
            )
            + lstm.tobytes()
        )

    @classmethod
    def decode(cls, data: bytes | None) -> tuple[StreamState, bytes]:
        """The state and the fingerprint of the model that wrote it; raises StateRecordError."""
        if data is None:
            raise StateRecordError("state record has no value (a tombstone)")
        if len(data) < _HEADER.size:
            raise StateRecordError(f"state record too short: {len(data)} bytes")
        magic, fingerprint, prev, prev_up, seen, last_seq, last_offset, partition, size = (
            _HEADER.unpack_from(data)
        )
        if magic != STATE_MAGIC:
            raise StateRecordError(f"not a detector state record (magic {magic!r})")
        if len(data) != _HEADER.size + 4 * size:
            raise StateRecordError(
                f"state record length {len(data)} does not match its {size} LSTM values"
            )
        if prev_up > 1 or seen < 0 or last_seq < -1 or last_offset < -1 or not np.isfinite(prev):
            raise StateRecordError("state record fields out of range")
        lstm = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).astype(np.float32)
        if not np.all(np.isfinite(lstm)):
            raise StateRecordError("state record holds a non-finite LSTM value")
        state = cls(prev, bool(prev_up), seen, last_seq, last_offset, partition, lstm)
        return state, fingerprint


@dataclass(frozen=True)
class StateSnapshot:
    """Many streams' state records, ready to send: ``records(i, j)`` cuts them out."""

    rows: np.ndarray  # one structured record per stream, the StreamState.encode layout
    keys: list[str | None]

    def __len__(self) -> int:
        return len(self.rows)

    def records(self, start: int, stop: int) -> list[tuple[bytes, bytes, int]]:
        """``(key, state record, partition)`` for streams ``start .. stop-1``."""
        part = self.rows[start:stop]
        raw, size = part.tobytes(), part.dtype.itemsize
        parts = part["partition"].tolist()
        return [(key.encode(), raw[i * size:(i + 1) * size], parts[i])
                for i, key in enumerate(self.keys[start:stop])]


class StreamStore:
    """Slot arrays for every stream of the assigned partitions."""

    def __init__(self, state_size: int, capacity: int = 1024):
        self.state_size = state_size
        self.slots: dict[str, int] = {}
        self.keys: list[str | None] = []
        self._free: list[int] = []
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "prev", None)
        n = 0 if old is None else len(old)

        def grow(name: str, dtype: str, fill: float, width: int | None = None) -> None:
            shape = (capacity,) if width is None else (capacity, width)
            arr = np.full(shape, fill, dtype=dtype)
            if old is not None:
                arr[:n] = getattr(self, name)
            setattr(self, name, arr)

        grow("prev", "f8", 0.0)
        grow("prev_up", "?", False)
        grow("seen", "i8", 0)
        grow("last_seq", "i8", -1)
        grow("last_offset", "i8", -1)
        grow("partition", "i4", -1)
        grow("dirty", "?", False)
        grow("lstm", "f4", 0.0, self.state_size)
        self._free.extend(range(capacity - 1, n - 1, -1))
        self.keys.extend([None] * (capacity - n))

    def __len__(self) -> int:
        return len(self.slots)

    def _new_slot(self, stream: str, partition: int) -> int:
        if not self._free:
            self._alloc(2 * len(self.prev))
        slot = self._free.pop()
        self.slots[stream] = slot
        self.keys[slot] = stream
        self.partition[slot] = partition
        return slot

    def lookup(self, streams: list[str], partitions: np.ndarray) -> np.ndarray:
        """Slot of each event's stream; a stream seen for the first time gets a fresh slot."""
        get = self.slots.get
        out = np.empty(len(streams), dtype=np.int64)
        for i, stream in enumerate(streams):
            slot = get(stream)
            out[i] = self._new_slot(stream, int(partitions[i])) if slot is None else slot
        return out

    def get(self, stream: str) -> StreamState | None:
        slot = self.slots.get(stream)
        return None if slot is None else self.state_at(slot)

    def state_at(self, slot: int) -> StreamState:
        return StreamState(
            float(self.prev[slot]),
            bool(self.prev_up[slot]),
            int(self.seen[slot]),
            int(self.last_seq[slot]),
            int(self.last_offset[slot]),
            int(self.partition[slot]),
            self.lstm[slot].copy(),
        )

    def put(self, stream: str, state: StreamState) -> None:
        """Install a restored state (clean: it is already on the state topic)."""
        slot = self.slots.get(stream)
        if slot is None:
            slot = self._new_slot(stream, state.partition)
        self.prev[slot] = state.prev
        self.prev_up[slot] = state.prev_up
        self.seen[slot] = state.seen
        self.last_seq[slot] = state.last_seq
        self.last_offset[slot] = state.last_offset
        self.partition[slot] = state.partition
        self.lstm[slot] = state.lstm if state.lstm.size == self.state_size else 0.0
        self.dirty[slot] = False

    def snapshot(self, slots: np.ndarray, fingerprint: bytes) -> StateSnapshot:
        """The state records of ``slots`` as they are now, encoded into one numpy buffer.

        Compact (the record bytes plus a reference to each key) so that a checkpoint of a
        million streams neither stops the loop nor leaves a million Python objects behind;
        records are cut from it a slice at a time as they are sent.
        """
        n, width = len(slots), self.state_size
        dtype = np.dtype([*_HEADER_DTYPE.descr, ("lstm", "<f4", (width,))] if width
                         else _HEADER_DTYPE.descr)
        rows = np.zeros(n, dtype)
        rows["magic"] = STATE_MAGIC
        rows["fingerprint"] = fingerprint
        rows["prev"] = self.prev[slots]
        rows["prev_up"] = self.prev_up[slots]
        rows["seen"] = self.seen[slots]
        rows["last_seq"] = self.last_seq[slots]
        rows["last_offset"] = self.last_offset[slots]
        rows["partition"] = self.partition[slots]
        rows["size"] = width
        if width:
            rows["lstm"] = self.lstm[slots]
        keys = [self.keys[slot] for slot in slots.tolist()]
        return StateSnapshot(rows, keys)

    def dirty_slots(self, partitions: set[int] | None = None) -> np.ndarray:
        """Slots changed since their last checkpoint, optionally only in some partitions."""
        mask = self.dirty.copy()
        if partitions is not None:
            mask &= np.isin(self.partition, list(partitions))
        return np.nonzero(mask)[0]

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the streams of revoked partitions; their state lives on in the state topic."""
        gone = np.nonzero(np.isin(self.partition, list(partitions)))[0]
        for slot in gone.tolist():
            stream = self.keys[slot]
            if stream is None:
                continue
            del self.slots[stream]
            self.keys[slot] = None
            self._reset(slot)
            self._free.append(slot)
        return len(gone)

    def clear(self) -> None:
        self.drop_partitions(set(np.unique(self.partition[self.partition >= 0]).tolist()))

    def _reset(self, slot: int) -> None:
        self.prev[slot] = 0.0
        self.prev_up[slot] = False
        self.seen[slot] = 0
        self.last_seq[slot] = -1
        self.last_offset[slot] = -1
        self.partition[slot] = -1
        self.dirty[slot] = False
        self.lstm[slot] = 0.0
