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
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

#: Magic and version: a record from another program or layout is rejected, not misread.
STATE_MAGIC = b"TDS\x01"
_HEADER = struct.Struct("<4s8sdBqqqiH")
#: The same layout as a numpy record, to encode many streams' states in one go.
_HEADER_DTYPE = np.dtype([("magic", "S4"), ("fingerprint", "S8"), ("prev", "<f8"),
                          ("prev_up", "u1"), ("seen", "<i8"), ("last_seq", "<i8"),
                          ("last_offset", "<i8"), ("partition", "<i4"), ("size", "<u2")])


#: Where the per-stream event count stops (it only has to tell the first two events apart).
SEEN_MAX = 2**31 - 1


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
        if (prev_up > 1 or seen < 0 or last_seq < -1 or last_offset < -1
                or not 0 <= partition < 2**15 or not np.isfinite(prev)):
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
    keys: list[Hashable]

    def __len__(self) -> int:
        return len(self.rows)

    def records(self, start: int, stop: int) -> list[tuple[bytes, bytes, int]]:
        """``(key, state record, partition)`` for streams ``start .. stop-1``."""
        part = self.rows[start:stop]
        raw, size = part.tobytes(), part.dtype.itemsize
        parts = part["partition"].tolist()
        return [(key if isinstance(key, bytes) else key.encode(), raw[i * size:(i + 1) * size],
                 parts[i]) for i, key in enumerate(self.keys[start:stop])]


class StreamIndex:
    """Stream id -> slot, without keeping a Python object (a dict entry, an int) per stream.

    Settled ids live in two sorted numpy arrays, their Python hash and their slot (16 bytes a
    stream against ~70 for a dict entry and its int); ids added since the last merge wait in a
    small dict. A 64-bit hash can collide, so a found slot is confirmed by comparing ids, and
    an id whose hash is taken stays in the dict for good.
    """

    def __init__(self) -> None:
        self.hashes = np.empty(0, np.int64)
        self.slots = np.empty(0, np.int64)
        self.recent: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.hashes) + len(self.recent)

    def find(self, ids: list[Hashable], id_of_slot: list[Hashable | None]) -> np.ndarray:
        """The slot of each id, -1 for ids not in the index."""
        n = len(ids)
        out = np.full(n, -1, np.int64)
        if len(self.hashes):
            hs = np.fromiter(map(hash, ids), np.int64, n)
            pos = np.minimum(np.searchsorted(self.hashes, hs), len(self.hashes) - 1)
            hit = np.nonzero(self.hashes[pos] == hs)[0]
            cand = self.slots[pos[hit]]
            same = [id_of_slot[c] == ids[i] for i, c in zip(hit.tolist(), cand.tolist(),
                                                             strict=True)]
            out[hit[same]] = cand[same]
        if self.recent:
            get = self.recent.get
            for i in np.nonzero(out < 0)[0].tolist():
                out[i] = get(ids[i], -1)
        return out

    def add(self, stream: Hashable, slot: int) -> None:
        self.recent[stream] = slot
        if len(self.recent) >= max(50_000, len(self.hashes) // 8):
            self._merge()

    def _merge(self) -> None:
        ids = list(self.recent)
        hs = np.fromiter(map(hash, ids), np.int64, len(ids))
        pos = np.minimum(np.searchsorted(self.hashes, hs), max(len(self.hashes) - 1, 0))
        taken = (self.hashes[pos] == hs) if len(self.hashes) else np.zeros(len(ids), bool)
        _, first = np.unique(hs, return_index=True)
        unique = np.zeros(len(ids), bool)
        unique[first] = True
        move = unique & ~taken
        slots = np.fromiter((self.recent[k] for k in ids), np.int64, len(ids))
        hashes = np.concatenate([self.hashes, hs[move]])
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.slots = np.concatenate([self.slots, slots[move]])[order]
        self.recent = {ids[i]: int(slots[i]) for i in np.nonzero(~move)[0].tolist()}

    def remove(self, slots: np.ndarray) -> None:
        keep = ~np.isin(self.slots, slots)
        self.hashes, self.slots = self.hashes[keep], self.slots[keep]
        gone = set(slots.tolist())
        self.recent = {k: v for k, v in self.recent.items() if v not in gone}


class StreamStore:
    """Slot arrays for every stream of the assigned partitions, keyed by stream id (the record
    key bytes in the pipeline, str elsewhere)."""

    def __init__(self, state_size: int, capacity: int = 1024):
        self.state_size = state_size
        self.index = StreamIndex()
        self.keys: list[Hashable | None] = []
        self._free = np.empty(0, np.int64)  # a stack of unused slots
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
        grow("seen", "i4", 0)  # saturates at SEEN_MAX: only "at least two" matters
        grow("last_seq", "i8", -1)
        grow("last_offset", "i8", -1)
        grow("partition", "i2", -1)
        grow("dirty", "?", False)
        grow("lstm", "f4", 0.0, self.state_size)
        self._free = np.concatenate([np.arange(capacity - 1, n - 1, -1), self._free])
        self.keys.extend([None] * (capacity - n))

    def __len__(self) -> int:
        return len(self.index)

    def _new_slot(self, stream: Hashable, partition: int) -> int:
        if not len(self._free):
            self._alloc(2 * len(self.prev))
        slot = int(self._free[-1])
        self._free = self._free[:-1]
        self.index.add(stream, slot)
        self.keys[slot] = stream
        self.partition[slot] = partition
        return slot

    def slot_of(self, stream: Hashable) -> int | None:
        slot = int(self.index.find([stream], self.keys)[0])
        return None if slot < 0 else slot

    def lookup(self, streams: list[Hashable], partitions: np.ndarray) -> np.ndarray:
        """Slot of each event's stream; a stream seen for the first time gets a fresh slot."""
        out = self.index.find(streams, self.keys)
        new: dict[Hashable, int] = {}  # a new stream may come more than once in a batch
        for i in np.nonzero(out < 0)[0].tolist():
            slot = new.get(streams[i])
            if slot is None:
                slot = new[streams[i]] = self._new_slot(streams[i], int(partitions[i]))
            out[i] = slot
        return out

    def get(self, stream: Hashable) -> StreamState | None:
        slot = self.slot_of(stream)
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

    def put(self, streams: list[Hashable], states: list[StreamState]) -> None:
        """Install restored states (clean: they are already on the state topic)."""
        slots = self.lookup(streams, np.array([st.partition for st in states], np.int64))
        for slot, state in zip(slots.tolist(), states, strict=True):
            self.prev[slot] = state.prev
            self.prev_up[slot] = state.prev_up
            self.seen[slot] = min(state.seen, SEEN_MAX)
            self.last_seq[slot] = state.last_seq
            self.last_offset[slot] = state.last_offset
            self.partition[slot] = state.partition
            self.lstm[slot] = state.lstm if state.lstm.size == self.state_size else 0.0
        self.dirty[slots] = False

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
        gone = np.array([slot for slot in gone.tolist() if self.keys[slot] is not None],
                        np.int64)
        self.index.remove(gone)
        for slot in gone.tolist():
            self.keys[slot] = None
            self._reset(slot)
        self._free = np.concatenate([self._free, gone])
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
