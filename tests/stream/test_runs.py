"""Run lifecycles: one firing and one resolution per run of at least N values."""

import numpy as np
import pytest

from detector.stream import runs
from detector.stream.state import StreamStore
from detector.task.rule import directions, exact_flags


def lifecycle(values, min_length=3, flags=None):
    """Feed one stream event by event with the given (else exact) flags; its run records."""
    return in_polls(values, np.arange(1, len(values)), min_length, flags)


def in_polls(values, cuts, min_length=3, flags=None):
    """The same stream fed in polls of many events each (cut at ``cuts``): its run records."""
    values = np.asarray(values, np.float64)
    flags = exact_flags(values) if flags is None else np.asarray(flags)
    dirs = directions(values)
    store = StreamStore(state_size=0)
    slot = store.lookup(["s"], np.array([0]))
    out: list[runs.RunRecord] = []
    for part in np.split(np.arange(len(values)), cuts):
        first = np.r_[True, np.zeros(len(part) - 1, bool)]
        out += runs.advance(store, np.repeat(slot, len(part)), part, flags[part], dirs[part],
                            part, part.astype(float), min_length, first)
    return [(r.status, r.index, r.direction, r.start_seq, r.length) for r in out]


def test_one_firing_and_one_resolution_per_run():
    # up x5 (values 0..4), then down x3, then flat
    values = [0, 1, 2, 3, 4, 3, 2, 1, 1]
    assert lifecycle(values) == [
        ("firing", 2, 1, 2, 3),  # the first flag: three values
        ("resolved", 5, 1, 2, 5),  # the first event that does not continue it: 0..4
        ("firing", 6, -1, 6, 3),  # 4, 3, 2
        ("resolved", 8, -1, 6, 4),  # a tie ends the down run of 4, 3, 2, 1
    ]


def test_min_length_hides_short_runs_and_fires_once_when_reached():
    values = [0, 1, 2, 1, 0, -1, -2, -3, -2]
    assert lifecycle(values, min_length=5) == [
        ("firing", 6, -1, 4, 5),  # 2, 1, 0, -1, -2: the run reaches five values at seq 6
        ("resolved", 8, -1, 4, 6),
    ]  # the up run of three values never fires, so it is never resolved either


def test_a_tie_breaks_a_run_and_a_constant_stream_gives_nothing():
    assert lifecycle([1, 2, 2, 3, 4]) == [("firing", 4, 1, 4, 3)]
    assert lifecycle([200.0] * 50) == []


def test_a_flag_against_the_run_direction_ends_it_and_starts_another():
    """Only a model error can do this; the lifecycle stays well-formed."""
    values = [0, 1, 2, 3, 2]
    assert lifecycle(values, flags=[0, 0, 1, 1, 1]) == [
        ("firing", 2, 1, 2, 3), ("resolved", 4, 1, 2, 4), ("firing", 4, -1, 4, 3)]


@pytest.mark.parametrize("seed", range(5))
def test_every_firing_is_resolved_once_on_random_walks(seed):
    values = np.round(np.cumsum(np.random.default_rng(seed).normal(size=2000)))
    records = lifecycle(values, min_length=4)
    open_runs = set()
    for status, _, _, start, _ in records:
        if status == "firing":
            assert start not in open_runs
            open_runs.add(start)
        else:
            open_runs.remove(start)
    assert len(open_runs) <= 1  # only the run still going at the end


@pytest.mark.parametrize("seed", range(5))
def test_polls_of_many_events_equal_one_event_at_a_time(seed):
    rng = np.random.default_rng(seed)
    values = np.round(np.cumsum(rng.normal(size=3000)))
    flags = exact_flags(values)
    flags[rng.random(3000) < 0.05] ^= 1  # model errors too
    cuts = np.sort(rng.choice(np.arange(1, 3000), 12, replace=False))
    for min_length in (3, 4, 7):
        assert in_polls(values, cuts, min_length, flags) == lifecycle(values, min_length, flags)


def test_end_closes_open_runs_and_returns_the_fired_ones_to_resolve():
    """Another model takes the streams over: each open run ends (the fired ones returned,
    with their last event's seq and value), and the next flags start a new run."""
    store = StreamStore(state_size=0)
    slots = store.lookup(["up", "short", "none"], np.array([0, 1, 1]))
    values = {"up": [0, 1, 2, 3, 4], "short": [5, 1, 0], "none": [1, 1, 1]}
    for name, slot in zip(values, slots.tolist(), strict=True):
        v = np.asarray(values[name], np.float64)
        n = len(v)
        runs.advance(store, np.full(n, slot), np.arange(n), exact_flags(v), directions(v),
                     np.arange(10, 10 + n), np.arange(n, dtype=float), 4,
                     np.r_[True, np.zeros(n - 1, bool)])
        store.last_seq[slot], store.prev[slot] = 9 + n, v[-1]
    assert store.run_fired[slots].tolist() == [True, False, False]  # "short" has 3 of 4
    ended = runs.end(store, slots)
    assert ended == [runs.EndedRun("up", 0, 1, 12, 5, 14, 4.0)]
    assert store.run_dir[slots].tolist() == [0, 0, 0] and not store.run_fired[slots].any()
    assert store.run_len[slots].tolist() == [0, 0, 0]
    assert store.dirty[slots].tolist() == [True, True, False]  # the ended runs: to checkpoint
    assert runs.end(store, slots) == []  # nothing open any more
