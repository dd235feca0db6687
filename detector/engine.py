"""The detection core: a batch of decoded events from many streams -> flags, in stream order.

No Kafka here: the Kafka loop, ``evaluate``, the plots and the benchmarks all feed this, so
what they report is what the pipeline does. Events are grouped into waves (wave k holds the
k-th event of every stream in the batch) so each stream's events stay in order and each wave
is one compiled model call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from detector.rule import step_features, step_flags
from detector.serving import ModelStep
from detector.state import SEEN_MAX, StreamStore


@dataclass
class Batch:
    """Decoded events, columnar. ``offset`` and ``partition`` locate each in the input topic.

    ``streams`` are the stream ids as the state store keys them: the pipeline passes the record
    keys (bytes: 16 bytes a stream smaller than str at a million streams), others pass str.
    """

    streams: list[Hashable]
    seq: np.ndarray  # int64
    value: np.ndarray  # float64
    partition: np.ndarray  # int32
    offset: np.ndarray  # int64

    @classmethod
    def of(
        cls,
        streams: list[Hashable],
        values: np.ndarray,
        seq: np.ndarray | None = None,
        partition: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> Batch:
        n = len(streams)
        return cls(
            streams,
            np.zeros(n, np.int64) if seq is None else np.asarray(seq, np.int64),
            np.asarray(values, np.float64),
            np.zeros(n, np.int32) if partition is None else np.asarray(partition, np.int32),
            np.full(n, -1, np.int64) if offset is None else np.asarray(offset, np.int64),
        )


@dataclass
class Result:
    """Per event of the batch. Only ``processed`` events have meaningful flags."""

    processed: np.ndarray  # bool: applied to state, has an output record
    duplicate: np.ndarray  # bool: seq at or below the stream's last (skipped)
    replayed: np.ndarray  # bool: offset already covered by restored state (skipped)
    gap: np.ndarray  # bool: seq jumped past last_seq + 1 (processed anyway)
    flag: np.ndarray  # int8: the model's flag (0 for a stream's first two events)
    probability: np.ndarray  # float32
    up: np.ndarray  # bool: direction of the current step
    rule_flag: np.ndarray  # int8: the exact rule
    calls: int  # compiled model calls made
    inference_seconds: list[float]  # one per call
    call_sizes: list[int]  # events per call


def occurrence_rank(keys: np.ndarray) -> np.ndarray:
    """For each element, how many equal keys come before it: ``[3, 3, 1, 3] -> [0, 1, 0, 2]``."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_keys))[0] + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - group_start
    return rank


def waves(slots: np.ndarray) -> list[np.ndarray]:
    """Indices of the batch split so that wave k holds each slot's k-th occurrence, in order."""
    if len(slots) == 0:
        return []
    rank = occurrence_rank(slots)
    by_wave = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_wave], np.arange(1, rank.max() + 1))
    return np.split(by_wave, bounds)


class Engine:
    """Runs batches through the model step against the per-stream state."""

    def __init__(
        self,
        step: ModelStep,
        store: StreamStore | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.step = step
        self.store = store if store is not None else StreamStore(step.state_size)
        self._clock = clock

    def process(self, batch: Batch) -> Result:
        """Apply a batch to the state; flags for the events that were not duplicates or replays.

        Every wave updates the rule state (previous value, direction, seq, offset). A stateful
        model runs once per wave, since a wave's LSTM state is the previous wave's output; a
        stateless one (``seed``) sees only features the waves already fixed, so the whole batch
        goes through one call after the loop.
        """
        n = len(batch.streams)
        store = self.store
        slots = store.lookup(batch.streams, batch.partition)
        res = Result(
            processed=np.zeros(n, bool),
            duplicate=np.zeros(n, bool),
            replayed=np.zeros(n, bool),
            gap=np.zeros(n, bool),
            flag=np.zeros(n, np.int8),
            probability=np.zeros(n, np.float32),
            up=np.zeros(n, bool),
            rule_flag=np.zeros(n, np.int8),
            calls=0,
            inference_seconds=[],
            call_sizes=[],
        )
        stateful = self.step.state_size > 0
        deferred: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (idx, x, seen)
        for idx in waves(slots):
            s = slots[idx]
            seq = batch.seq[idx]
            last_seq = store.last_seq[s]
            replayed = (batch.offset[idx] >= 0) & (batch.offset[idx] <= store.last_offset[s])
            replayed &= batch.partition[idx] == store.partition[s]
            duplicate = ~replayed & (seq <= last_seq)
            res.replayed[idx] = replayed
            res.duplicate[idx] = duplicate
            keep = ~(replayed | duplicate)
            if not keep.all():
                idx, s, seq, last_seq = idx[keep], s[keep], seq[keep], last_seq[keep]
                if len(idx) == 0:
                    continue
            value = batch.value[idx]
            prev, prev_up, seen = store.prev[s], store.prev_up[s], store.seen[s]
            x = step_features(self.step.features, value, prev, prev_up)
            if stateful:
                prob, store.lstm[s] = self._call(res, x, store.lstm[s])
                res.probability[idx] = prob
                res.flag[idx] = (prob > 0.5) & (seen >= 2)
            else:
                deferred.append((idx, x, seen))
            up, rule = step_flags(value, prev, prev_up, seen)
            res.processed[idx] = True
            res.gap[idx] = seq > last_seq + 1
            res.up[idx] = up
            res.rule_flag[idx] = rule
            store.prev[s] = value
            store.prev_up[s] = up
            store.seen[s] = np.minimum(seen.astype(np.int64) + 1, SEEN_MAX)
            store.last_seq[s] = seq
            store.last_offset[s] = batch.offset[idx]
            store.partition[s] = batch.partition[idx]
            store.dirty[s] = True
        if deferred:
            idx = np.concatenate([d[0] for d in deferred])
            seen = np.concatenate([d[2] for d in deferred])
            prob, _ = self._call(res, np.concatenate([d[1] for d in deferred]), None)
            res.probability[idx] = prob
            res.flag[idx] = (prob > 0.5) & (seen >= 2)
        return res

    def _call(self, res: Result, x: np.ndarray, state: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        started = self._clock()
        out = self.step(x, state)
        res.inference_seconds.append(self._clock() - started)
        res.call_sizes.append(len(x))
        res.calls += 1
        return out
