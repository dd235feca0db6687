"""The scorer's memory: the last flag records it read, raw, so that a label arriving soon after
its events finds them without reading the topics again.

It keeps at most ``capacity`` records, dropping the oldest read first. For every partition it
knows where its records begin (``start``: everything below was read earlier and let go, or was
there before the scorer started), which is where a read-back of older events ends; and the
latest record time let go (``boundary_ms``): an event after it that has been read is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

#: One flag record as the window holds it: (timestamp ms, key, value).
Held = tuple[int, bytes | None, bytes | None]


class Window:
    def __init__(self, capacity: int, start: dict[TopicPartition, int], started_ms: int):
        self.capacity = capacity
        self.start = dict(start)
        self.boundary_ms = started_ms
        self._chunks: deque[tuple[TopicPartition, str, int, list[Held]]] = deque()
        self.size = 0

    def add(self, tp: TopicPartition, role: str, records: Sequence[ConsumerRecord]) -> None:
        """A poll's records of one partition, in offset order; the oldest let go past the
        capacity."""
        held = [(r.timestamp, r.key, r.value) for r in records]
        self._chunks.append((tp, role, records[-1].offset + 1, held))
        self.size += len(held)
        while self.size > self.capacity and self._chunks:
            old_tp, _, end, old = self._chunks.popleft()
            self.size -= len(old)
            self.start[old_tp] = max(self.start.get(old_tp, 0), end)
            self.boundary_ms = max(self.boundary_ms, max(t for t, _, _ in old))

    def find(self, keys: set[bytes]) -> Iterator[tuple[str, bytes | None]]:
        """``(role, value)`` of every record held whose key is one of ``keys``."""
        for _, role, _, held in self._chunks:
            for _, key, value in held:
                if key in keys:
                    yield role, value
