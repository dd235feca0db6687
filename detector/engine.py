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
from typing import TYPE_CHECKING

import numpy as np

from detector import runs
from detector.features import advance, model_input
from detector.rule import step_flags
from detector.runs import FIRST_FLAG_LENGTH, RunRecord
from detector.state import StreamStore

if TYPE_CHECKING:
    from detector.serving import ModelStep


@dataclass
class Batch:
    """Decoded events, columnar. ``offset`` and ``partition`` locate each in the input topic.

    ``streams`` are the stream ids as the state store keys them: the pipeline passes the
    stream ids' UTF-8 bytes (16 bytes a stream smaller than str at a million streams), others
    pass str. ``seq`` -1: the input has none (the engine numbers the stream's events itself);
    ``epoch`` -1: none; ``ts`` NaN: no event time.
    """

    streams: list[Hashable]
    seq: np.ndarray  # int64
    value: np.ndarray  # float64
    partition: np.ndarray  # int32
    offset: np.ndarray  # int64
    epoch: np.ndarray  # int64
    ts: np.ndarray  # float64

    @classmethod
    def of(
        cls,
        streams: list[Hashable],
        values: np.ndarray,
        seq: np.ndarray | None = None,
        partition: np.ndarray | None = None,
        offset: np.ndarray | None = None,
        epoch: np.ndarray | None = None,
        ts: np.ndarray | None = None,
    ) -> Batch:
        n = len(streams)

        def column(given: np.ndarray | None, dtype: type, fill: float) -> np.ndarray:
            return np.full(n, fill, dtype) if given is None else np.asarray(given, dtype)

        return cls(streams, column(seq, np.int64, -1), np.asarray(values, np.float64),
                   column(partition, np.int32, 0), column(offset, np.int64, -1),
                   column(epoch, np.int64, -1), column(ts, np.float64, np.nan))


@dataclass
class Result:
    """Per event of the batch. Only ``processed`` events have meaningful flags."""

    processed: np.ndarray  # bool: applied to state, has an output record
    duplicate: np.ndarray  # bool: an older epoch, or seq at or below the stream's last (skipped)
    replayed: np.ndarray  # bool: offset already covered by restored state (skipped)
    gap: np.ndarray  # bool: seq jumped past last_seq + 1 (processed anyway)
    seq: np.ndarray  # int64: the event's seq, or the stream's own count for input without one
    flag: np.ndarray  # int8: the model's flag (0 for a stream's first two events)
    probability: np.ndarray  # float32
    direction: np.ndarray  # int8: direction of the current step (+1 up, 0 flat, -1 down)
    rule_flag: np.ndarray  # int8: the exact rule
    runs: list[RunRecord]  # run lifecycle records, in event order per stream
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
        wall_clock: Callable[[], float] = time.time,
        alert_min_length: int = FIRST_FLAG_LENGTH,
    ):
        self.step = step
        self.store = store if store is not None else StreamStore(step.state_size)
        self._clock = clock
        self._wall = wall_clock
        self.alert_min_length = alert_min_length

    def process(self, batch: Batch) -> Result:
        """Apply a batch to the state; flags for the events that were not duplicates or replays.

        Every wave updates the rule state (previous value, direction, scale, seq, offset). A
        stateful model runs once per wave, since a wave's LSTM state is the previous wave's
        output; a stateless one (``seed``) sees only features the waves already fixed, so the
        whole batch goes through one call after the loop. Runs need the flags, so they advance
        once every flag is known, wave by wave again.
        """
        n = len(batch.streams)
        store = self.store
        slots = store.lookup(batch.streams, batch.partition)
        res = Result(
            processed=np.zeros(n, bool), duplicate=np.zeros(n, bool),
            replayed=np.zeros(n, bool), gap=np.zeros(n, bool), seq=batch.seq.copy(),
            flag=np.zeros(n, np.int8), probability=np.zeros(n, np.float32),
            direction=np.zeros(n, np.int8), rule_flag=np.zeros(n, np.int8), runs=[],
            calls=0, inference_seconds=[], call_sizes=[],
        )
        stateful = self.step.state_size > 0
        now = self._wall()
        applied: list[tuple[np.ndarray, np.ndarray]] = []  # (idx, slots) per wave
        deferred: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (idx, x, seen)
        for idx in waves(slots):
            s = slots[idx]
            seq, epoch = batch.seq[idx], batch.epoch[idx]
            last_seq, last_epoch = store.last_seq[s], store.last_epoch[s]
            replayed = (batch.offset[idx] >= 0) & (batch.offset[idx] <= store.last_offset[s])
            replayed &= batch.partition[idx] == store.partition[s]
            older = (epoch < last_epoch) | ((epoch == last_epoch) & (seq <= last_seq))
            duplicate = ~replayed & (seq >= 0) & older
            res.replayed[idx] = replayed
            res.duplicate[idx] = duplicate
            keep = ~(replayed | duplicate)
            if not keep.all():
                idx, s = idx[keep], s[keep]
                seq, epoch, last_seq, last_epoch = (seq[keep], epoch[keep], last_seq[keep],
                                                    last_epoch[keep])
                if len(idx) == 0:
                    continue
            value = batch.value[idx]
            seen, prev_dir = store.seen[s], store.prev_dir[s]
            u, step_dir, store.scale[s] = advance(value, store.prev[s], store.scale[s], seen)
            x = model_input(self.step.features, u, prev_dir)
            if stateful:
                prob, store.lstm[s] = self._call(res, x, store.lstm[s])
                res.probability[idx] = prob
                res.flag[idx] = (prob > 0.5) & (seen >= 2)
            else:
                deferred.append((idx, x, seen))
            out_seq = np.where(seq >= 0, seq, seen)
            res.seq[idx] = out_seq
            res.processed[idx] = True
            res.gap[idx] = (seq >= 0) & (epoch == last_epoch) & (seq > last_seq + 1)
            res.direction[idx] = step_dir
            res.rule_flag[idx] = step_flags(step_dir, prev_dir, seen)
            store.prev[s] = value
            store.prev_dir[s] = step_dir
            store.seen[s] = seen + 1
            store.last_seq[s] = out_seq
            store.last_epoch[s] = np.maximum(last_epoch, epoch)
            store.last_offset[s] = batch.offset[idx]
            store.partition[s] = batch.partition[idx]
            store.last_active[s] = now
            store.dirty[s] = True
            applied.append((idx, s))
        if deferred:
            idx = np.concatenate([d[0] for d in deferred])
            seen = np.concatenate([d[2] for d in deferred])
            prob, _ = self._call(res, np.concatenate([d[1] for d in deferred]), None)
            res.probability[idx] = prob
            res.flag[idx] = (prob > 0.5) & (seen >= 2)
        for idx, s in applied:
            ts = batch.ts[idx]
            runs.advance(store, s, idx, res.flag[idx], res.direction[idx], res.seq[idx],
                         np.where(np.isnan(ts), now, ts), self.alert_min_length, res.runs)
        return res

    def _call(self, res: Result, x: np.ndarray, state: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        started = self._clock()
        prob, new_state = self.step(x, state)
        res.inference_seconds.append(self._clock() - started)
        res.call_sizes.append(len(x))
        res.calls += 1
        # A model fed values far outside anything it was trained on must still answer with a
        # number: a NaN would become invalid JSON in the output record.
        return np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0), new_state
