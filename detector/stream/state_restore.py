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

from detector.stream.state import StateRecordError, StreamStore, decode_state
from detector.stream.state_keys import LEGACY_WRITER, ModelMarker, stream_of

log = logging.getLogger(__name__)

_GONE = -1  # a chunk entry whose stream a tombstone removed


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
        # stream -> (applied offset, writer, index of its row here or _GONE); None: from store
        chunk: dict[bytes, tuple[int, int, int]] = {}
        rows, lstms, fps = [], [], []
        for key, value in records:
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
                try:
                    row, lstm, fingerprint = decode_state(value)
                except StateRecordError as exc:
                    self.rejected += 1
                    log.debug("skipping a state record: %s", exc)
                    continue
                stream = stream_of(key, int(row["writer"]))
                if stream is None or int(row["partition"]) != partition:
                    self.rejected += 1
                    continue
                offset = int(row["last_offset"])
                now = self._entry(stream, chunk)
                if now is None or now[2] == _GONE or offset >= now[0]:
                    chunk[stream] = (offset, int(row["writer"]), len(rows))
                    rows.append(row)
                    lstms.append(lstm)
                    fps.append(fingerprint)
        self.merged += len(records)
        self._install(chunk, rows, lstms, fps)

    def _entry(self, stream: bytes, chunk: dict[bytes, tuple[int, int, int]]
               ) -> tuple[int, int, int] | None:
        """What wins for ``stream`` so far: in this chunk, else in the store."""
        now = chunk.get(stream)
        if now is None:
            slot = self.store.slot_of(stream)
            if slot is not None:
                now = chunk[stream] = (int(self.store.last_offset[slot]),
                                       int(self.store.writer[slot]), -2)
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

    def _install(self, chunk: dict[bytes, tuple[int, int, int]], rows: list[np.void],
                 lstms: list[np.ndarray], fps: list[bytes]) -> None:
        won = [(stream, idx) for stream, (_, _, idx) in chunk.items() if idx >= 0]
        if won:
            streams = [stream for stream, _ in won]
            self.store.put(streams, [rows[i] for _, i in won], [lstms[i] for _, i in won])
            slots = self.store.index.find(streams, self.store.keys)
            self._note_fingerprints(slots, [fps[i] for _, i in won])
        gone = [stream for stream, (_, _, idx) in chunk.items() if idx == _GONE]
        if gone:
            slots = self.store.index.find(gone, self.store.keys)
            self.store.drop(slots[slots >= 0])

    def _note_fingerprints(self, slots: np.ndarray, fps: list[bytes]) -> None:
        if len(self._fp_of_slot) < self.store.capacity:
            grown = np.full(self.store.capacity, -1, np.int16)
            grown[:len(self._fp_of_slot)] = self._fp_of_slot
            self._fp_of_slot = grown
        ids = []
        for fp in fps:
            if fp not in self._fingerprints:
                self._fingerprints.append(fp)
            ids.append(self._fingerprints.index(fp))
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
