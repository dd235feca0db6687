"""The detection core: a batch of decoded events from many streams -> flags, in stream order.

No Kafka here: the Kafka loop, ``evaluate``, the plots and the benchmarks all feed this, so
what they report is what the pipeline does. A batch is ordered by stream (each stream's events
contiguous, in arrival order) and every per-event quantity is a scan over those stretches
(``detector.task.segments``), so a poll of one hot stream costs about what a poll of many streams
with one event each does. The model runs once per batch (stateless) or, carrying each stream's
LSTM state, over chunks of each stream's events (``ModelStep.sequence``). A stateless pattern
model reads each event's last values (8, or a ``long`` model's history): the store keeps as
many per stream as the model in use reads (``StreamStore.ensure_history``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from detector.model.features import advance, model_input
from detector.stream import runs
from detector.stream.runs import FIRST_FLAG_LENGTH, RunRecord
from detector.stream.state import StreamStore
from detector.task import segments
from detector.task.rule import step_flags

if TYPE_CHECKING:
    from detector.model.serving import ModelStep

log = logging.getLogger(__name__)

#: Streams logged by name for arriving on a second partition; past this many, one more line
#: says so and the rest are only counted (``Result.partition_conflicts``): bounded memory.
CONFLICTS_LOGGED = 1000


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

    def take(self, idx: np.ndarray) -> Batch:
        """The events at ``idx``, in that order."""
        return Batch([self.streams[i] for i in idx.tolist()], self.seq[idx], self.value[idx],
                     self.partition[idx], self.offset[idx], self.epoch[idx], self.ts[idx])

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
    #: Events that came on another input partition than their stream's state: a producer
    #: that does not key a stream's records alike (its order, and so its flags, do not hold).
    partition_conflicts: int = 0


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


class Engine:
    """Runs batches through the model step against the per-stream state."""

    def __init__(
        self,
        step: ModelStep | None,
        store: StreamStore | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        alert_min_length: int = FIRST_FLAG_LENGTH,
        alert_min_flags: int | None = None,
    ):
        self.step = step  # the model a batch goes through unless ``process`` names another
        self.store = store if store is not None else StreamStore(step.state_size if step else 0)
        self._clock = clock
        self._wall = wall_clock
        self.alert_min_length = alert_min_length  # values of a trend run
        self.alert_min_flags = alert_min_flags  # flags of a pattern's run (None: its card's)
        self._conflicted: set[Hashable] = set()  # streams logged as on two partitions
        self._conflicts_capped = False

    def process(self, batch: Batch, step: ModelStep | None = None) -> Result:
        """Apply a batch to the state; flags for the events that were not duplicates or replays.

        Each event is judged against the stream's state after its previous accepted event
        (``admit``); the accepted ones then go through the features, the model and the runs
        as whole streams at a time, and each stream's state is written once, from its last.
        """
        step = step or self.step
        assert step is not None, "no model to process with"
        n = len(batch.streams)
        store = self.store
        store.ensure_history(step.history)
        slots = store.lookup(batch.streams, batch.partition)
        conflicts = np.nonzero(store.partition[slots] != batch.partition)[0]
        if len(conflicts):
            self._conflicting(batch, slots, conflicts)
        res = Result(
            processed=np.zeros(n, bool), duplicate=np.zeros(n, bool),
            replayed=np.zeros(n, bool), gap=np.zeros(n, bool), seq=batch.seq.copy(),
            flag=np.zeros(n, np.int8), probability=np.zeros(n, np.float32),
            direction=np.zeros(n, np.int8), rule_flag=np.zeros(n, np.int8), runs=[],
            calls=0, inference_seconds=[], call_sizes=[], partition_conflicts=len(conflicts),
        )
        order = np.argsort(slots, kind="stable")  # by stream, each in arrival order
        s = slots[order]
        first = np.r_[True, s[1:] != s[:-1]] if n else np.zeros(0, bool)
        verdict = admit(store, s, first, batch.seq[order], batch.epoch[order],
                        batch.offset[order], batch.partition[order])
        res.replayed[order] = verdict.replayed
        res.duplicate[order] = verdict.duplicate
        keep = ~(verdict.replayed | verdict.duplicate)
        idx, s = order[keep], s[keep]
        if len(idx) == 0:
            return res
        first = np.r_[True, s[1:] != s[:-1]]
        seen = store.seen[s] + segments.positions(first)
        value = batch.value[idx]
        u, step_dir, scale, unit = advance(value, store.prev[s], store.scale[s], store.seen[s],
                                           first)
        prev_dir = segments.shift(step_dir, store.prev_dir[s], first)
        recent = segments.recent(value, store.hist[s], first, store.history)
        window = recent[:, :step.history] if step.features in ("window", "long") else None
        x = model_input(step.features, u, prev_dir, window, unit)
        if step.state_size:
            prob = self._recurrent(res, x, s, first, step)
        else:
            prob, _ = self._call(res, step, x, None)
        # A model fed values far outside anything it was trained on must still answer with a
        # number: a NaN would become invalid JSON in the output record.
        prob = np.nan_to_num(prob, nan=0.0, posinf=1.0, neginf=0.0)
        out_seq = verdict.out_seq[keep]
        res.probability[idx] = prob
        # A trend needs three values: a stream's first two get flag 0 without asking a model.
        res.flag[idx] = (prob > 0.5) & ((seen >= 2) | bool(step.pattern))
        res.seq[idx] = out_seq
        res.processed[idx] = True
        res.gap[idx] = verdict.gap[keep]
        res.direction[idx] = step_dir
        res.rule_flag[idx] = step_flags(step_dir, prev_dir, seen)
        now = self._wall()
        ts = batch.ts[idx]
        # A pattern's run is its consecutive flags; a trend's also keeps one direction.
        pattern = bool(step.pattern)
        min_length = ((self.alert_min_flags or step.alert_min_flags) if pattern
                      else self.alert_min_length)
        res.runs = runs.advance(
            store, s, idx, res.flag[idx], np.ones_like(step_dir) if pattern else step_dir,
            out_seq, np.where(np.isnan(ts), now, ts), min_length, first,
            first_length=1 if pattern else runs.FIRST_FLAG_LENGTH)
        last = np.r_[first[1:], True]
        stream, at = s[last], idx[last]
        store.hist[stream] = recent[last, ::-1]
        store.prev[stream] = batch.value[at]
        store.prev_dir[stream] = step_dir[last]
        store.scale[stream] = scale[last]
        store.seen[stream] = seen[last] + 1
        store.last_seq[stream] = out_seq[last]
        store.last_epoch[stream] = verdict.max_epoch[keep][last]
        store.last_offset[stream] = batch.offset[at]
        store.partition[stream] = batch.partition[at]
        store.last_active[stream] = now
        store.dirty[stream] = True
        return res

    def _conflicting(self, batch: Batch, slots: np.ndarray, events: np.ndarray) -> None:
        """Log each stream once that arrives on another partition than its state's (a stream
        this member sees on two of its own partitions), up to ``CONFLICTS_LOGGED`` streams."""
        seen = self._conflicted
        for i in events.tolist():
            stream = batch.streams[i]
            if stream in seen:
                continue
            if len(seen) >= CONFLICTS_LOGGED:
                if not self._conflicts_capped:
                    self._conflicts_capped = True
                    log.warning("more than %d streams arrive on two input partitions; further "
                                "ones are only counted (detector_stream_partition_conflicts_total)",
                                CONFLICTS_LOGGED)
                return
            seen.add(stream)
            name = stream.decode(errors="replace") if isinstance(stream, bytes) else stream
            log.warning("stream %r arrives on input partitions %d and %d: its order, and so its "
                        "flags, hold only within one partition; key its records by the stream "
                        "or by something its id contains", name,
                        self.store.partition[slots[i]], batch.partition[i])

    def _recurrent(self, res: Result, x: np.ndarray, s: np.ndarray, first: np.ndarray,
                   step: ModelStep) -> np.ndarray:
        """Probabilities of a stateful model over each stream's events, in order, from its
        carried LSTM state; the state after each stream's last event is stored.

        Whole chunks of ``step.chunk`` events go through one sequence call per chunk index
        (all streams with that many events at once), the rest one step call per position:
        ``max events / chunk + chunk - 1`` calls at most, rather than one per event of the
        busiest stream.
        """
        head = np.nonzero(first)[0]
        count = np.diff(np.r_[head, len(s)])
        self.store.ensure_state_size(step.state_size)
        state = self.store.lstm[s[head], :step.state_size]
        chunk = step.chunk
        whole = count // chunk if chunk else np.zeros(len(head), np.int64)
        prob = np.zeros(len(s), np.float32)
        for k in range(int(whole.max())):
            rows = np.nonzero(whole > k)[0]
            at = (head[rows] + k * chunk)[:, None] + np.arange(chunk)
            prob[at], state[rows] = self._call(res, step.sequence, x[at], state[rows])
        rest = count - whole * chunk
        for t in range(int(rest.max())):
            rows = np.nonzero(rest > t)[0]
            at = head[rows] + whole[rows] * chunk + t
            prob[at], state[rows] = self._call(res, step, x[at], state[rows])
        self.store.lstm[s[head], :step.state_size] = state
        return prob

    def _call(self, res: Result, run: Callable, x: np.ndarray, state: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
        started = self._clock()
        prob, new_state = run(x, state)
        res.inference_seconds.append(self._clock() - started)
        res.call_sizes.append(int(np.prod(x.shape[:-1])))
        res.calls += 1
        return prob, new_state


@dataclass
class Verdict:
    """Per event (in the order given to ``admit``): whether it is skipped, and what it sets."""

    replayed: np.ndarray  # bool
    duplicate: np.ndarray  # bool
    gap: np.ndarray  # bool
    out_seq: np.ndarray  # int64: its seq, or the stream's count for input without one
    max_epoch: np.ndarray  # int64: the stream's last_epoch once this event is applied


def admit(store: StreamStore, s: np.ndarray, first: np.ndarray, seq: np.ndarray,
          epoch: np.ndarray, offset: np.ndarray, partition: np.ndarray) -> Verdict:
    """Replays and duplicates among events grouped by stream (``s`` their slots, ``first``
    each stream's first), each judged against its stream's state after the previous
    *accepted* event, exactly as one event at a time would.

    Which events are accepted depends on which were accepted before, so this iterates:
    judge every event against the last event accepted before it under the current guess,
    until the guess stops changing. After k rounds each stream's first k events are right
    whatever the guess, so it ends, at the one consistent answer; starting from "nothing
    accepted" (every event against the stored state) it usually ends in two or three rounds.
    """
    n = len(s)
    head = segments.heads(first)
    stored_seen, stored_seq = store.seen[s], store.last_seq[s]
    stored_epoch, stored_offset = store.last_epoch[s], store.last_offset[s]
    stored_partition = store.partition[s]
    accepted = np.zeros(n, bool)
    while True:
        count = np.cumsum(accepted) - accepted
        out_seq = np.where(seq >= 0, seq, stored_seen + count - count[head])
        prior = segments.shift(segments.last_where(accepted, first), np.full(n, -1), first)
        has, at = prior >= 0, np.maximum(prior, 0)
        last_seq = np.where(has, out_seq[at], stored_seq)
        same_partition = partition == np.where(has, partition[at], stored_partition)
        # The events of one record share its offset (lines of one series in a line-protocol
        # record): a later one is not a replay of an earlier one in the same batch, while
        # after a restore every one of them is (state is only ever written between batches).
        covered = np.where(has, offset < offset[at], offset <= stored_offset)
        max_epoch = segments.cummax(epoch, accepted, first)
        last_epoch = np.maximum(stored_epoch, segments.shift(max_epoch, np.full(
            n, np.iinfo(np.int64).min), first))
        replayed = (offset >= 0) & covered & same_partition
        older = (epoch < last_epoch) | ((epoch == last_epoch) & (seq <= last_seq))
        duplicate = ~replayed & (seq >= 0) & older
        now = ~(replayed | duplicate)
        if (now == accepted).all():
            break
        accepted = now
    gap = (seq >= 0) & (epoch == last_epoch) & (seq > last_seq + 1)
    return Verdict(replayed, duplicate, gap, out_seq, np.maximum(stored_epoch, max_epoch))
