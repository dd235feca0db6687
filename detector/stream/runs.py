"""Trend runs: one alert when a run starts, one when it ends, instead of one per flag.

A run of a stream is a maximal stretch of consecutive values moving the same way, as the
model's flags see it: it starts at the first flag 1 (three values: x1, x2, x3) and lasts while
each next event has flag 1 in the same direction; a tie is flat and ends it. It *fires* once,
at the event where it reaches ``min_length`` values, and is *resolved* once, at the first
event that does not continue it (with its final length). A run shorter than ``min_length``
gives nothing. The run's fields are stream state (``detector.stream.state``), so a crash replays the
same records, never a second firing with other contents nor a lost resolution.

A run belongs to the model that opened it: when another model takes a stream over (a swap, or
a restore under another model than the one that wrote the state), its open run ends there
(``end``), resolved under the model that opened it with the reason, and the new model's runs
start afresh.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from detector.stream.state import StreamStore
from detector.task import segments
from detector.task.rule import FLAT

#: Values in a run at its first flag 1.
FIRST_FLAG_LENGTH = 3


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One lifecycle record: ``index`` is the event of the batch it belongs to."""

    index: int
    status: str  # "firing" or "resolved"
    direction: int  # +1 up, -1 down
    start_seq: int  # seq of the run's first flag-1 event
    start_ts: float  # that event's time (event time, else detection time)
    length: int  # values in the run: min_length when firing, the final count when resolved


def advance(store: StreamStore, slots: np.ndarray, index: np.ndarray, flag: np.ndarray,
            step_dir: np.ndarray, seq: np.ndarray, ts: np.ndarray, min_length: int,
            first: np.ndarray | None = None, first_length: int = FIRST_FLAG_LENGTH
            ) -> list[RunRecord]:
    """Apply streams' events to their runs; their records, in event order (by ``index``).

    The arrays hold one entry per event, grouped by stream and in order, ``slots`` giving each
    event's stream; ``first`` marks each stream's first event here (None: one event per
    stream). A run's direction after an event depends on that event alone (its flag and step),
    and its length grows by one per continuing event, so every event's run state comes from
    the last event that broke the run before it: no step per event. ``first_length``: a run's
    length at its first flag (a trend's three values; a pattern model's runs count flags, and
    pass a step direction of +1 throughout, so that any flag 1 continues them).
    """
    first = np.ones(len(slots), bool) if first is None else np.asarray(first, bool)
    moving = (flag == 1) & (step_dir != FLAT)
    dir_after = np.where(moving, step_dir, FLAT).astype(np.int8)
    dir_before = segments.shift(dir_after, store.run_dir[slots], first)
    cont = moving & (dir_before == step_dir)
    starts = moving & ~cont
    # Since a stream's last break (a start or an end) here, or from its stored run.
    broke = segments.last_where(~cont, first)
    here = np.arange(len(slots))
    since = here - np.where(broke >= 0, broke, segments.heads(first) - 1)
    base = np.where(broke >= 0, np.where(starts[np.maximum(broke, 0)], first_length, 0),
                    store.run_len[slots])
    len_after = base + since
    started = segments.last_where(starts, first)
    start_seq = np.where(started >= 0, seq[np.maximum(started, 0)], store.run_start_seq[slots])
    start_ts = np.where(started >= 0, ts[np.maximum(started, 0)], store.run_start_ts[slots])
    fired_after = ((dir_after != FLAT) & (len_after >= min_length)) | (
        (broke < 0) & store.run_fired[slots])
    fired_before = segments.shift(fired_after, store.run_fired[slots], first)
    fire = (dir_after != FLAT) & (len_after >= min_length) & ~(cont & fired_before)
    resolve = (dir_before != FLAT) & ~cont & fired_before
    # One record per resolution (the run before the event) and firing (the run after it),
    # in event order, a resolution before a firing at the same event.
    resolved, fired = np.nonzero(resolve)[0], np.nonzero(fire)[0]
    at = np.r_[resolved, fired]
    after = np.r_[np.zeros(len(resolved), bool), np.ones(len(fired), bool)]
    order = np.lexsort((after, index[at]))
    at, after = at[order], after[order]

    def pick(values: np.ndarray, stored: np.ndarray) -> list:
        """Each record's field: the value after its event, or before it for a resolution."""
        before = segments.shift(values, stored, first)
        return np.where(after, values[at], before[at]).tolist()

    out = [RunRecord(*row) for row in zip(
        index[at].tolist(), np.array(["resolved", "firing"])[after.astype(int)].tolist(),
        pick(dir_after, store.run_dir[slots]), pick(start_seq, store.run_start_seq[slots]),
        pick(start_ts, store.run_start_ts[slots]), pick(len_after, store.run_len[slots]),
        strict=True)]
    last = np.r_[first[1:], True]
    stream = slots[last]
    store.run_dir[stream] = dir_after[last]
    store.run_len[stream] = len_after[last]
    store.run_start_seq[stream] = start_seq[last]
    store.run_start_ts[stream] = start_ts[last]
    store.run_fired[stream] = fired_after[last]
    return out


@dataclass(frozen=True, slots=True)
class EndedRun:
    """A fired run ended without an event (``end``): what its resolution record needs."""

    stream: Hashable  # the store's key
    partition: int
    direction: int
    start_seq: int
    length: int
    seq: int  # its last event's
    value: float  # its last event's


def end(store: StreamStore, slots: np.ndarray) -> list[EndedRun]:
    """End the open runs of ``slots`` now (another model takes the streams over); the fired
    ones, to be resolved. Every run of these streams starts afresh after this."""
    slots = np.asarray(slots, np.int64)
    open_ = slots[store.run_dir[slots] != FLAT]
    fired = open_[store.run_fired[open_]]
    ended = [EndedRun(store.keys[s], int(p), int(d), int(start), int(n), int(seq), float(v))
             for s, p, d, start, n, seq, v in zip(
                 fired.tolist(), store.partition[fired].tolist(), store.run_dir[fired].tolist(),
                 store.run_start_seq[fired].tolist(), store.run_len[fired].tolist(),
                 store.last_seq[fired].tolist(), store.prev[fired].tolist(), strict=True)]
    store.run_dir[open_] = FLAT
    store.run_len[open_] = 0
    store.run_start_seq[open_] = -1
    store.run_start_ts[open_] = 0.0
    store.run_fired[open_] = False
    store.dirty[open_] = True
    return ended
