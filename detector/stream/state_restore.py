"""The state topic's records merged back into a store, a chunk at a time, in log order.

Per stream, the record with the highest applied offset wins, over every key it is under (one
per writer, ``state_keys``); a tombstone removes a stream when it is for the key of the record
that wins so far (an idle stream forgotten, or a key its owner replaced). Per partition, the
marker of the highest (epoch, generation) names the model. What is not ours, or is damaged,
is counted and skipped. No Kafka here: ``detector/kafka/restore.py`` reads the records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from detector.stream.state import (
    StateRecordError,
    StreamStore,
    decode_state,
    decode_states,
    kept_of,
    record_size,
)
from detector.stream.state_keys import LEGACY_WRITER, ModelMarker, stream_of

log = logging.getLogger(__name__)

_GONE = -1  # a chunk entry whose stream a tombstone removed
_STORE = -2  # a chunk entry that is what the store holds


@dataclass
class StateMerge:
    """Merges records into ``store``; remembers each partition's markers and the model
    fingerprint each restored stream's LSTM state was written for."""

    store: StreamStore
    #: partition -> marker key -> (marker, arrival): the latest of equal rank wins
    markers: dict[int, dict[bytes, tuple[ModelMarker, int]]] = field(default_factory=dict)
    rejected: int = 0
    merged: int = 0  # records read
    _arrivals: int = 0  # markers read
    _fingerprints: list[bytes] = field(default_factory=list)  # id -> fingerprint
    _fp_of_slot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))

    def apply(self, partition: int, records: list[tuple[bytes | None, bytes | None]]) -> None:
        """Merge one partition's records, in the order they are on the topic."""
        markers = self.markers.setdefault(partition, {})
        decoded = _Decoded(records)
        # stream -> (applied offset, writer, index of its record here, or _GONE / _STORE),
        # starting from what the store holds for the chunk's streams (one lookup for all)
        chunk: dict[bytes, tuple[int, int, int]] = {}
        streams = {i: stream_of(records[i][0], row[1])  # type: ignore[arg-type]
                   for i, row in decoded.fields.items()}
        known = list({s for s in streams.values() if s is not None})
        slots = self.store.index.find(known, self.store.keys).tolist() if known else []
        offsets, writers = self.store.last_offset, self.store.writer
        chunk.update({s: (int(offsets[slot]), int(writers[slot]), _STORE)
                      for s, slot in zip(known, slots, strict=True) if slot >= 0})
        for i, (key, value) in enumerate(records):
            if key is None:
                self.rejected += 1
            elif value is None:
                self._tombstone(key, chunk, markers)
            elif ModelMarker.is_marker(value):
                marker = ModelMarker.decode(value)
                if marker is None:
                    self.rejected += 1
                else:
                    self._arrivals += 1
                    markers[key] = (marker, self._arrivals)
            else:
                row = decoded.row(i)
                stream = streams.get(i)
                if row is None or stream is None or row[2] != partition:
                    self.rejected += 1
                    continue
                offset, writer = row[0], row[1]
                now = chunk.get(stream)
                if now is None or now[2] == _GONE or offset >= now[0]:
                    chunk[stream] = (offset, writer, i)
        self.merged += len(records)
        self._install(chunk, decoded)

    def _entry(self, stream: bytes, chunk: dict[bytes, tuple[int, int, int]]
               ) -> tuple[int, int, int] | None:
        """What wins for ``stream`` so far: in this chunk, else in the store."""
        now = chunk.get(stream)
        if now is None:
            slot = self.store.slot_of(stream)
            if slot is not None:
                now = chunk[stream] = (int(self.store.last_offset[slot]),
                                       int(self.store.writer[slot]), _STORE)
        return now

    def _tombstone(self, key: bytes, chunk: dict[bytes, tuple[int, int, int]],
                   markers: dict[bytes, tuple[ModelMarker, int]]) -> None:
        if key in markers:
            del markers[key]
            return
        # the key of a legacy record (the bare id), or of a stream id and a writer's token
        candidates = [(key, LEGACY_WRITER)]
        if len(key) > 8:
            candidates.append((key[:-8], int.from_bytes(key[-8:], "big")))
        for stream, writer in candidates:
            now = self._entry(stream, chunk)
            if now is not None and now[2] != _GONE and now[1] == writer:
                chunk[stream] = (now[0], writer, _GONE)

    def _install(self, chunk: dict[bytes, tuple[int, int, int]], decoded: _Decoded) -> None:
        won = [(stream, i) for stream, (_, _, i) in chunk.items() if i >= 0]
        for streams, rows, lstms, fps in decoded.groups(won):
            self.store.put(streams, rows, lstms)
            slots = self.store.index.find(streams, self.store.keys)
            self._note_fingerprints(slots, fps)
        gone = [stream for stream, (_, _, i) in chunk.items() if i == _GONE]
        if gone:
            slots = self.store.index.find(gone, self.store.keys)
            self.store.drop(slots[slots >= 0])

    def _note_fingerprints(self, slots: np.ndarray, fps: list[bytes] | np.ndarray) -> None:
        if len(self._fp_of_slot) < self.store.capacity:
            grown = np.full(self.store.capacity, -1, np.int16)
            grown[:len(self._fp_of_slot)] = self._fp_of_slot
            self._fp_of_slot = grown
        fps = np.asarray(fps, "S8")
        ids = np.empty(len(fps), np.int16)
        for fp in np.unique(fps).tolist():
            if fp not in self._fingerprints:
                self._fingerprints.append(fp)
            ids[fps == fp] = self._fingerprints.index(fp)
        self._fp_of_slot[slots] = ids

    def stale(self, partition: int, fingerprint: bytes) -> np.ndarray:
        """Slots of ``partition`` whose restored LSTM state another model wrote."""
        slots = np.nonzero(self.store.partition == partition)[0]
        slots = slots[slots < len(self._fp_of_slot)]
        want = self._fingerprints.index(fingerprint) if fingerprint in self._fingerprints \
            else -2
        return slots[self._fp_of_slot[slots] != want]

    def marker(self, partition: int) -> ModelMarker | None:
        """The partition's marker of the highest (epoch, generation); None if it has none."""
        found = self.markers.get(partition)
        if not found:
            return None
        return max(found.values(), key=lambda m: (m[0].rank, m[1]))[0]

    def marker_keys(self, partition: int) -> list[bytes]:
        """The keys of every marker the partition has on the topic."""
        return list(self.markers.get(partition, {}))

    def forget(self, partition: int) -> None:
        self.markers.pop(partition, None)


class _Decoded:
    """A chunk's state records decoded together, by length and values kept
    (``decode_states``); the odd ones (older versions, damaged) one by one."""

    def __init__(self, records: list[tuple[bytes | None, bytes | None]]):
        by_shape: dict[tuple[int, int | None], list[int]] = {}  # (length, values kept)
        for i, (key, value) in enumerate(records):
            if key is not None and value is not None and not ModelMarker.is_marker(value):
                by_shape.setdefault((len(value), kept_of(value)), []).append(i)
        self.where: dict[int, tuple[int, int]] = {}  # record -> (group, row in group)
        self.fields: dict[int, tuple[int, int, int]] = {}  # record -> offset, writer, partition
        self.tables: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, lstms) per group
        for (length, kept), idx in by_shape.items():
            size, odd = divmod(length - record_size(kept or 0, 0), 4)
            if kept is None or size < 0 or odd:
                self._one_by_one(records, idx)
                continue
            rows, lstm, ok = decode_states([records[i][1] for i in idx],  # type: ignore[misc]
                                           kept, size)
            group = len(self.tables)
            self.tables.append((rows, lstm))
            offsets, writers = rows["last_offset"].tolist(), rows["writer"].tolist()
            parts = rows["partition"].tolist()
            for j, i in enumerate(idx):
                if ok[j]:
                    self.where[i] = (group, j)
                    self.fields[i] = (offsets[j], writers[j], parts[j])
            self._one_by_one(records, [i for j, i in enumerate(idx) if not ok[j]])

    def _one_by_one(self, records: list[tuple[bytes | None, bytes | None]],
                    idx: list[int]) -> None:
        for i in idx:
            try:
                row, lstm, _ = decode_state(records[i][1])
            except StateRecordError as exc:
                log.debug("skipping a state record: %s", exc)
                continue
            table = np.array([row])
            self.where[i] = (len(self.tables), 0)
            self.tables.append((table, lstm.reshape(1, -1)))
            self.fields[i] = (int(row["last_offset"]), int(row["writer"]),
                              int(row["partition"]))

    def row(self, i: int) -> tuple[int, int, int] | None:
        """(applied offset, writer, partition) of record ``i``; None when it is damaged."""
        return self.fields.get(i)

    def groups(self, won: list[tuple[bytes, int]]
               ) -> list[tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]]:
        """The winning records by group: streams, rows, LSTM states, fingerprints."""
        picked: dict[int, tuple[list[bytes], list[int]]] = {}
        for stream, i in won:
            group, j = self.where[i]
            streams, rows = picked.setdefault(group, ([], []))
            streams.append(stream)
            rows.append(j)
        out = []
        for group, (streams, rows) in picked.items():
            table, lstm = self.tables[group]
            idx = np.array(rows)
            out.append((streams, table[idx], lstm[idx], table["fingerprint"][idx]))
        return out
