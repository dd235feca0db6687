"""Per-stream state in compact arrays, and its record on the compacted state topic.

One Python object per stream would cost several hundred bytes and a pointer chase per event;
instead every stream owns a slot number into a few numpy arrays, and one dict maps stream id
to slot. Slots of streams whose partition is revoked go back to a free list.

A state record carries the input offset of the last event it applied, so a restored stream
skips what it already covered and processes the rest again from exactly that state, and the
stream's recent values (as many as the store keeps: 8, or a long model's history), so that a
stateless model reads its window and a stateful one's LSTM state can be rebuilt at a swap.
Its key is the stream id and the token of the partition owner that wrote it (``state_keys``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from detector.model.features import LONGEST
from detector.stream.index import StreamIndex
from detector.stream.state_keys import LEGACY_WRITER, state_key

#: Magic and version: a record from another program or layout is rejected, not misread.
#: Version 3 added the stream's recent values (8 of them); version 4 keeps as many as the
#: writer kept (8 .. ``LONGEST``) and the writer, whose token ends the record's key (versions 2
#: and 3: the bare id). Versions 2 and 3 restore (2 without recent values).
STATE_MAGIC = b"TDS\x04"
_V3_MAGIC, _V2_MAGIC = b"TDS\x03", b"TDS\x02"
#: Recent values each stream keeps at least (float64, as they arrived, oldest first; NaN before
#: its first): what the ``window`` model reads, and what a new model's LSTM state is rebuilt
#: from at a swap. A model with a longer history (``long``, up to ``LONGEST``) makes the store
#: keep that many (``StreamStore.ensure_history``).
HISTORY = 8

#: What a stream carries from event to event: (name, dtype, value of a fresh stream). One list
#: makes both the store's arrays and the state record's layout, so they cannot drift apart.
FIELDS: tuple[tuple[str, str, float], ...] = (
    ("prev", "<f8", np.nan),  # the previous value (in memory: the newest of ``hist``)
    ("prev_dir", "<i1", 0),  # direction of the previous step: +1 up, 0 flat, -1 down
    ("scale", "<f8", 0.0),  # typical step size (detector.task.rule.steps); 0 until the first step
    ("seen", "<i8", 0),  # events applied; also the output seq of input without one
    ("last_seq", "<i8", -1),
    ("last_epoch", "<i8", -1),  # the producer epoch of the last event (-1: none)
    ("last_offset", "<i8", -1),  # input offset of the last event applied
    ("partition", "<i2", -1),  # its input partition
    ("run_dir", "<i1", 0),  # the open run (detector.stream.runs): its direction, 0 = none
    ("run_len", "<i4", 0),  # its number of values so far
    ("run_start_seq", "<i8", -1),  # seq of its first flag-1 event
    ("run_start_ts", "<f8", 0.0),  # event time (or detection time) of that event
    ("run_fired", "?", False),  # whether its firing record was sent
    ("last_active", "<f8", 0.0),  # wall-clock time of its last event (idle eviction)
    # the token of the partition owner whose key its state is under on the state topic
    # (``state_keys``): 0 never written, 1 the bare stream id of records before version 4
    ("writer", "<u8", 0),
)
_V2_HEADER = np.dtype([("magic", "S4"), ("fingerprint", "S8"),
                       *((n, t) for n, t, _ in FIELDS[:-1]), ("size", "<u2")])
_V3_HEADER = np.dtype([*_V2_HEADER.descr[:-1], ("hist", "<f8", (HISTORY,)), ("size", "<u2")])
#: Version 4: the fields (the writer too), how many recent values follow (``kept``) and how
#: many LSTM floats follow them; then the values (float64), then the LSTM state (float32).
_HEADER = np.dtype([*_V2_HEADER.descr[:-1], ("writer", "<u8"), ("kept", "<u1"),
                    ("size", "<u2")])
#: A decoded record, whatever its version: the recent values right-aligned in ``LONGEST``.
_ROW = np.dtype([*_HEADER.descr, ("hist", "<f8", (LONGEST,))])
_ABSENT = np.full(LONGEST, np.nan).tobytes()
_KEPT_AT, _SIZE_AT = _HEADER.fields["kept"][1], _HEADER.fields["size"][1]


class StateRecordError(ValueError):
    """A state-topic record that is not ours or is damaged."""


def decode_state(data: bytes | None) -> tuple[np.void, np.ndarray, bytes]:
    """A state record: its fields (a numpy record with every recent value it kept, in
    ``hist``, and how many, in ``kept``), its LSTM state and the model fingerprint.

    Raises StateRecordError for a tombstone, a foreign record or a damaged one.
    """
    if data is None:
        raise StateRecordError("state record has no value (a tombstone)")
    magic = bytes(data[:4])
    header = {STATE_MAGIC: _HEADER, _V3_MAGIC: _V3_HEADER, _V2_MAGIC: _V2_HEADER}.get(magic)
    if header is None and len(data) >= 4:
        raise StateRecordError(f"not a detector state record (magic {magic!r})")
    if header is None or len(data) < header.itemsize:
        raise StateRecordError(f"state record too short: {len(data)} bytes")
    if header is _HEADER:  # read without parsing the fields twice: restores are hot
        kept, size = data[_KEPT_AT], int.from_bytes(data[_SIZE_AT:_SIZE_AT + 2], "little")
    else:
        head = np.frombuffer(data, header, count=1)[0]
        kept, size = HISTORY, int(head["size"])
    end = header.itemsize + (8 * kept if header is _HEADER else 0)
    if len(data) != end + 4 * size or not HISTORY <= kept <= LONGEST:
        raise StateRecordError(f"state record length {len(data)} does not match its {kept} "
                               f"recent values and {size} LSTM values")
    if header is _HEADER:  # the values right-aligned after the fields, in one buffer
        row = np.frombuffer(data[:header.itemsize] + _ABSENT[:8 * (LONGEST - kept)]
                            + data[header.itemsize:end], _ROW, count=1)[0]
    else:
        row = _upgrade(head)
    if not _valid(row):
        raise StateRecordError("state record fields out of range")
    lstm = np.frombuffer(data, "<f4", offset=end).astype(np.float32)
    if not np.all(np.isfinite(lstm)):
        raise StateRecordError("state record holds a non-finite LSTM value")
    return row, lstm, bytes(row["fingerprint"])


def _valid(row: np.void) -> bool:
    """Whether a decoded row has every field in range."""
    return not (abs(int(row["prev_dir"])) > 1 or abs(int(row["run_dir"])) > 1 or row["seen"] < 0
                or row["last_seq"] < -1 or row["last_offset"] < -1 or row["run_len"] < 0
                or not 0 <= row["partition"] < 2**15
                or not all(math.isfinite(row[n])
                           for n in ("scale", "run_start_ts", "last_active"))
                or (row["seen"] > 0 and not np.isfinite(row["prev"]))
                or row["scale"] < 0 or np.isinf(row["hist"]).any())


def _all_valid(rows: np.ndarray) -> np.ndarray:
    """``_valid`` for an array of rows at once."""
    with np.errstate(invalid="ignore"):
        return ((np.abs(rows["prev_dir"].astype(np.int16)) <= 1)
                & (np.abs(rows["run_dir"].astype(np.int16)) <= 1) & (rows["seen"] >= 0)
                & (rows["last_seq"] >= -1) & (rows["last_offset"] >= -1) & (rows["run_len"] >= 0)
                & (rows["partition"] >= 0)
                & np.isfinite(rows["scale"]) & np.isfinite(rows["run_start_ts"])
                & np.isfinite(rows["last_active"])
                & ((rows["seen"] <= 0) | np.isfinite(rows["prev"])) & (rows["scale"] >= 0)
                & ~np.isinf(rows["hist"]).any(axis=1))


def kept_of(data: bytes) -> int | None:
    """How many recent values a current record keeps (None: not a current record)."""
    return data[_KEPT_AT] if len(data) > _KEPT_AT and data[:4] == STATE_MAGIC else None


def decode_states(values: list[bytes], kept: int, size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many current state records of ``kept`` recent values and ``size`` LSTM values each,
    decoded at once (a restore reads millions): their rows (the values right-aligned, as
    ``decode_state`` gives them), LSTM states (n x size) and whether each is valid. Every
    value must be ``record_size(kept, size)`` bytes long; ``decode_state`` takes the others."""
    dtype = np.dtype([*_HEADER.descr, ("hist", "<f8", (kept,)),
                      *([("lstm", "<f4", (size,))] if size else [])])
    raw = np.frombuffer(b"".join(values), dtype)
    rows = np.zeros(len(raw), _ROW)
    for name in _HEADER.names:
        rows[name] = raw[name]
    rows["hist"] = np.nan
    rows["hist"][:, LONGEST - kept:] = raw["hist"]
    ok = ((raw["magic"] == STATE_MAGIC) & (raw["kept"] == kept) & (raw["size"] == size)
          & (HISTORY <= kept <= LONGEST) & _all_valid(rows))
    lstm = raw["lstm"].astype(np.float32) if size else np.zeros((len(raw), 0), np.float32)
    if size:
        ok &= np.isfinite(lstm).all(axis=1)
    return rows, lstm, ok


def record_size(kept: int, size: int) -> int:
    """Bytes of a current state record with ``kept`` recent values and ``size`` LSTM ones."""
    return _HEADER.itemsize + 8 * kept + 4 * size


def _upgrade(old: np.void) -> np.void:
    """A version 2 or 3 record's fields in the current layout: its 8 recent values (version 3)
    or the one it knows, the previous value (version 2); under the bare stream id (the legacy
    writer)."""
    row = np.zeros(1, _ROW)[0]
    for name in _V2_HEADER.names:
        row[name] = old[name]
    row["kept"], row["hist"] = HISTORY, np.nan
    if "hist" in old.dtype.names:
        row["hist"][-HISTORY:] = old["hist"]
    else:
        row["hist"][-1] = old["prev"]
    row["writer"] = LEGACY_WRITER
    return row


@dataclass(frozen=True)
class StateSnapshot:
    """Many streams' state records, ready to send: ``records(i, j)`` cuts them out."""

    rows: np.ndarray  # one structured record per stream: the state record layout
    keys: list[Hashable]

    def __len__(self) -> int:
        return len(self.rows)

    def records(self, start: int, stop: int) -> list[tuple[bytes, bytes, int]]:
        """``(key, state record, partition)`` for streams ``start .. stop-1``: each under its
        stream id and writer (``state_keys``)."""
        part = self.rows[start:stop]
        raw, size = part.tobytes(), part.dtype.itemsize
        parts, writers = part["partition"].tolist(), part["writer"].tolist()
        return [(state_key(key if isinstance(key, bytes) else key.encode(), writers[i]),
                 raw[i * size:(i + 1) * size], parts[i])
                for i, key in enumerate(self.keys[start:stop])]


class StreamStore:
    """Slot arrays for every stream of the assigned partitions, keyed by stream id (the stream
    id's UTF-8 bytes in the pipeline, str elsewhere). One array per field of ``FIELDS``."""

    def __init__(self, state_size: int, capacity: int = 1024):
        self.state_size = state_size
        self.index = StreamIndex()
        self.keys: list[Hashable | None] = []
        self._free = np.empty(0, np.int64)  # a stack of unused slots
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "hist", None)
        n = 0 if old is None else len(old)
        columns = [*FIELDS, ("dirty", "?", False)]
        for name, dtype, fill in columns:
            if name == "prev":
                continue  # a view of ``hist``, below
            arr = np.full(capacity, fill, dtype=dtype)
            if old is not None:
                arr[:n] = getattr(self, name)
            setattr(self, name, arr)
        lstm = np.zeros((capacity, self.state_size), np.float32)
        hist = np.full((capacity, HISTORY if old is None else old.shape[1]), np.nan)
        if old is not None:
            lstm[:n], hist[:n] = self.lstm, self.hist
        self.lstm, self.hist = lstm, hist
        # The previous value is the newest recent value: one array, not two (8 bytes a stream).
        self.prev = hist[:, -1]
        self._free = np.concatenate([np.arange(capacity - 1, n - 1, -1), self._free])
        self.keys.extend([None] * (capacity - n))

    def __len__(self) -> int:
        return len(self.index)

    def adopt(self, other: StreamStore, slots: np.ndarray) -> np.ndarray:
        """Take over streams from another store as they are there (every field and the recent
        values; not the LSTM state, which belongs to another model); their slots here."""
        mine = self.lookup([other.keys[s] for s in slots.tolist()], other.partition[slots])
        for name, _, _ in FIELDS:
            getattr(self, name)[mine] = getattr(other, name)[slots]
        width = other.history
        self.ensure_history(width)
        self.hist[mine] = np.nan
        self.hist[mine, -width:] = other.hist[slots]
        self.lstm[mine] = 0.0
        return mine

    @property
    def history(self) -> int:
        """Recent values each stream keeps (at least ``HISTORY``)."""
        return self.hist.shape[1]

    def ensure_history(self, values: int) -> None:
        """Keep ``values`` recent values per stream from here on (a model with a longer
        history took over or shadows). The values a stream had not kept are absent (NaN):
        it has as many as it kept until it has seen that many more."""
        if values > self.history:
            wider = np.full((len(self.hist), values), np.nan)
            wider[:, values - self.history:] = self.hist
            self.hist = wider
            self.prev = wider[:, -1]

    def ensure_state_size(self, size: int) -> None:
        """Room for ``size`` LSTM floats per stream (a model with more state took over)."""
        if size > self.state_size:
            wider = np.zeros((len(self.lstm), size), np.float32)
            wider[:, :self.state_size] = self.lstm
            self.lstm, self.state_size = wider, size

    @property
    def capacity(self) -> int:
        return len(self.prev)

    def _new_slot(self, stream: Hashable, partition: int) -> int:
        if not len(self._free):
            self._alloc(2 * len(self.hist))
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

    def get(self, stream: Hashable) -> dict | None:
        """One stream's fields as a dict (tests, debugging); None for an unknown stream."""
        slot = self.slot_of(stream)
        if slot is None:
            return None
        state = {name: getattr(self, name)[slot].item() for name, _, _ in FIELDS}
        state["lstm"] = self.lstm[slot].copy()
        state["hist"] = self.hist[slot].copy()
        return state

    def put(self, streams: list[Hashable], rows: list[np.void] | np.ndarray,
            lstms: list[np.ndarray | None] | np.ndarray) -> None:
        """Install restored states (clean: they are already on the state topic): ``rows`` as
        ``decode_state`` gives them (a list, or a structured array), ``lstms`` one per stream
        (a list, or an n x size array). A state wider than the store's starts afresh, as does
        ``None`` (written by another model)."""
        if not streams:
            return
        table = rows if isinstance(rows, np.ndarray) else np.array(rows, dtype=_ROW)
        self.ensure_history(int(table["kept"].max()))  # what the writer's model needed
        slots = self.lookup(streams, table["partition"].astype(np.int64))
        self.hist[slots] = table["hist"][:, LONGEST - self.history:]
        for name, _, _ in FIELDS:
            getattr(self, name)[slots] = table[name]
        self.lstm[slots] = 0.0
        if isinstance(lstms, np.ndarray):
            if 0 < lstms.shape[1] <= self.state_size:
                self.lstm[slots, :lstms.shape[1]] = lstms
        else:
            for slot, lstm in zip(slots.tolist(), lstms, strict=True):
                if lstm is not None and lstm.size <= self.state_size:
                    self.lstm[slot, :lstm.size] = lstm
        self.dirty[slots] = False

    def snapshot(self, slots: np.ndarray, fingerprint: bytes | np.ndarray) -> StateSnapshot:
        """The state records of ``slots`` as they are now, encoded into one numpy buffer;
        ``fingerprint``: the model whose LSTM state each holds (one, or one per slot).

        Compact (the record bytes plus a reference to each key) so that a checkpoint of a
        million streams neither stops the loop nor leaves a million Python objects behind;
        records are cut from it a slice at a time as they are sent.
        """
        n, width, kept = len(slots), self.state_size, self.history
        dtype = np.dtype([*_HEADER.descr, ("hist", "<f8", (kept,)),
                          *([("lstm", "<f4", (width,))] if width else [])])
        rows = np.zeros(n, dtype)
        rows["magic"] = STATE_MAGIC
        rows["fingerprint"] = fingerprint
        for name, _, _ in FIELDS:
            rows[name] = getattr(self, name)[slots]
        rows["kept"], rows["hist"] = kept, self.hist[slots]
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

    def idle_slots(self, before: float) -> np.ndarray:
        """Slots of streams whose last event was processed before ``before`` (wall clock)."""
        live = self.partition >= 0
        return np.nonzero(live & (self.last_active < before))[0]

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the streams of revoked partitions; their state lives on in the state topic."""
        return self.drop(np.nonzero(np.isin(self.partition, list(partitions)))[0])

    def drop(self, slots: np.ndarray) -> int:
        """Forget these streams and free their slots for new ones."""
        gone = np.array([slot for slot in np.asarray(slots).tolist()
                         if self.keys[slot] is not None], np.int64)
        self.index.remove(gone)
        for slot in gone.tolist():
            self.keys[slot] = None
        for name, _, fill in FIELDS:
            getattr(self, name)[gone] = fill
        self.dirty[gone] = False
        self.lstm[gone] = 0.0
        self.hist[gone] = np.nan
        self._free = np.concatenate([self._free, gone])
        return len(gone)

    def clear(self) -> None:
        self.drop_partitions(set(np.unique(self.partition[self.partition >= 0]).tolist()))

