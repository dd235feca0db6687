"""Trend runs: one alert when a run starts, one when it ends, instead of one per flag.

A run of a stream is a maximal stretch of consecutive values moving the same way, as the
model's flags see it: it starts at the first flag 1 (three values: x1, x2, x3) and lasts while
each next event has flag 1 in the same direction; a tie is flat and ends it. It *fires* once,
at the event where it reaches ``min_length`` values, and is *resolved* once, at the first
event that does not continue it (with its final length). A run shorter than ``min_length``
gives nothing. The run's fields are stream state (``detector.state``), so a crash replays the
same records, never a second firing with other contents nor a lost resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.rule import FLAT
from detector.state import StreamStore

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
            out: list[RunRecord]) -> None:
    """Apply one event per stream (``slots`` distinct) to the runs; append their records."""
    run_dir, run_len = store.run_dir[slots], store.run_len[slots]
    fired = store.run_fired[slots]
    active = run_dir != FLAT
    moving = (flag == 1) & (step_dir != FLAT)
    cont = active & moving & (step_dir == run_dir)
    starts = moving & ~cont
    for i in np.nonzero(active & ~cont & fired)[0].tolist():
        out.append(RunRecord(int(index[i]), "resolved", int(run_dir[i]),
                             int(store.run_start_seq[slots[i]]),
                             float(store.run_start_ts[slots[i]]), int(run_len[i])))
    new_len = np.where(cont, run_len + 1, np.where(starts, FIRST_FLAG_LENGTH, 0))
    new_dir = np.where(cont, run_dir, np.where(starts, step_dir, FLAT)).astype(np.int8)
    store.run_start_seq[slots] = np.where(starts, seq, store.run_start_seq[slots])
    store.run_start_ts[slots] = np.where(starts, ts, store.run_start_ts[slots])
    was_fired = fired & cont
    fire = (new_dir != FLAT) & ~was_fired & (new_len >= min_length)
    for i in np.nonzero(fire)[0].tolist():
        out.append(RunRecord(int(index[i]), "firing", int(new_dir[i]),
                             int(store.run_start_seq[slots[i]]),
                             float(store.run_start_ts[slots[i]]), int(new_len[i])))
    store.run_dir[slots] = new_dir
    store.run_len[slots] = new_len
    store.run_fired[slots] = was_fired | fire
