"""A candidate model beside the live one: the same events, in the same batches, each model with
per-stream state of its own, and how often their flags differ.

The candidate's state starts from the live state of each stream as the shadow first meets it
(its values, scale, runs: what is not the model's), with its own LSTM state rebuilt from the
stream's recent values (``rebuild``): a stream is compared from its first event in the shadow.
Nothing of it is checkpointed; after a restart or a rebalance it is seeded again the same way.
While it shadows, the live state keeps as many recent values as the candidate reads, so that
once a stream has seen that many, a promotion of the candidate flags it exactly as an
uninterrupted run of the candidate would.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from detector.model.serving import ModelStep
from detector.stream.engine import Batch, Engine, Result
from detector.stream.rebuild import rebuild
from detector.stream.state import StreamStore


class Shadow:
    def __init__(self, step: ModelStep, alert_min_length: int,
                 alert_min_flags: int | None = None):
        self.step = step
        self.engine = Engine(step, alert_min_length=alert_min_length,
                             alert_min_flags=alert_min_flags)

    def seed(self, live: StreamStore, streams: list[Hashable]) -> None:
        """Before the live model takes a batch: its streams the shadow has not met, as the live
        state has them (the streams new to both start afresh in both)."""
        live.ensure_history(self.step.history)  # so that promoting the candidate is exact
        store = self.engine.store
        unknown = store.index.find(streams, store.keys) < 0
        if not unknown.any():
            return
        names = list({streams[i]: None for i in np.nonzero(unknown)[0].tolist()})
        found = live.index.find(names, live.keys)
        slots = found[found >= 0]
        if len(slots):
            rebuild(store, store.adopt(live, slots), self.step)

    def process(self, batch: Batch, live: Result) -> tuple[Result, int, int]:
        """The candidate's result for the batch, the events both models flagged and on how many
        of them they differ."""
        res = self.engine.process(batch)
        both = res.processed & live.processed
        return res, int(both.sum()), int((res.flag[both] != live.flag[both]).sum())

    def forget(self, partitions: set[int]) -> None:
        self.engine.store.drop_partitions(partitions)
