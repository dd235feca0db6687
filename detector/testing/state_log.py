"""A large state log written straight to a state topic, as months of checkpoints leave one that
compaction has not reduced: for the restore's test and benchmark (``bench/restore.py``).

Each record is a real state record (``StreamStore.snapshot``) under a real key; a stream's
records apply ever later input offsets, so a restore must read them all and keep each
stream's last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from detector.kafka.outbox import Outbox
from detector.settings.kafka import KafkaSettings
from detector.stream.state import StreamStore
from detector.stream.state_keys import new_writer

#: Records appended per flush (a flush sends them as record batches, one per partition).
FLUSH_EVERY = 50_000


def write_state_log(kafka: KafkaSettings, topic: str, partitions: int, streams: int,
                    records: int, fingerprint: bytes, state_size: int = 0,
                    progress: Callable[[int], None] = lambda _: None) -> dict[bytes, int]:
    """``records`` state records of ``streams`` streams (round robin, so every stream has
    ``records / streams`` of them) spread over ``partitions``; each stream's last applied
    offset, by stream id."""
    store = StreamStore(state_size)
    ids = [f"s-{i}".encode() for i in range(streams)]
    slots = store.lookup(ids, np.arange(streams) % partitions)
    store.prev[slots] = 0.5
    store.last_active[slots] = time.time()  # active now: no idle eviction at the restore
    store.writer[slots] = new_writer()
    outbox = Outbox(kafka, [topic], linger_ms=0)
    last: dict[bytes, int] = {}
    try:
        written, offset = 0, 0
        while written < records:
            n = min(streams, records - written)
            store.last_offset[slots[:n]] = offset + np.arange(n)
            store.seen[slots[:n]] += 1
            offset += n
            for key, value, p in store.snapshot(slots[:n], fingerprint).records(0, n):
                outbox.append(topic, p, key, value)
            written += n
            if written % FLUSH_EVERY < n or written == records:
                outbox.wait(outbox.flush(), 120)
                progress(written)
        last = {ids[i]: int(store.last_offset[slots[i]]) for i in range(streams)}
    finally:
        outbox.close()
    return last
