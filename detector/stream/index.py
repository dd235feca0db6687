"""Stream id -> slot for the per-stream state arrays (``detector.stream.state``), without a
Python object per stream."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np


class StreamIndex:
    """Stream id -> slot, without keeping a Python object (a dict entry, an int) per stream.

    Settled ids live in two sorted numpy arrays, their Python hash and their slot (16 bytes a
    stream against ~70 for a dict entry and its int); ids added since the last merge wait in a
    small dict. A 64-bit hash can collide, so a found slot is confirmed by comparing ids, and
    an id whose hash is taken stays in the dict for good.
    """

    def __init__(self) -> None:
        self.hashes = np.empty(0, np.int64)
        self.slots = np.empty(0, np.int32)  # 2^31 streams a detector are plenty
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
        slots = np.fromiter((self.recent[k] for k in ids), np.int32, len(ids))
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
