"""A model's LSTM state rebuilt from a stream's recent values at a swap: the steps as they were
when the values arrived, float dust a tie as it was, and so the flags of an uninterrupted run."""

import numpy as np
import pytest

from detector.stream.engine import Batch, Engine
from detector.stream.rebuild import rebuild, unwind_scales
from detector.stream.state import HISTORY
from detector.task import shapes
from detector.task.rule import stream_steps

CUTS = (HISTORY - 3, 40, 97, 150, 233)


def dusty(n: int = 300, seed: int = 25) -> list[np.ndarray]:
    """Streams of the battery's float-dust shapes, and one of dust on a ramp."""
    rng = np.random.default_rng(seed)
    out = [shapes.stream(kind, n, rng) for kind in sorted(shapes.COMPUTED)]
    ramp = np.arange(n) * 1e-3 * np.where(np.arange(n) % 20 < 10, 1, -1).cumsum()
    ramp[rng.random(n) < 0.3] = 0.0
    ramp[ramp == 0.0] = rng.choice([0.0, -1.3e-18, 2e-19], int((ramp == 0.0).sum()))
    return [*out, ramp]


@pytest.mark.parametrize("cut", CUTS[1:])
def test_the_scales_and_ties_unwind_as_they_were(cut):
    for values in dusty():
        step, _, before, after = stream_steps(values[:cut])
        hist = values[cut - HISTORY:cut][None, :]
        got_before, got_tie = unwind_scales(hist, after[-1:])
        # from the second value on: the oldest one's step is not in the history
        np.testing.assert_allclose(got_before[0, 1:], before[1 - HISTORY:], rtol=1e-9)
        np.testing.assert_array_equal(got_tie[0, 1:], step[1 - HISTORY:] == 0)


@pytest.mark.parametrize("cut", CUTS)
def test_flags_after_a_rebuild_are_an_uninterrupted_runs(steps, cut):
    """pair serves each stream to ``cut``, its state is dropped and rebuilt from the recent
    values; from there its flags are those of a run that was never interrupted."""
    step = steps("pair")
    streams = dusty()
    names = [f"s{i}" for i in range(len(streams))]

    def batch(lo: int, hi: int) -> Batch:
        ids = [n for n in names for _ in range(hi - lo)]
        return Batch.of(ids, np.concatenate([v[lo:hi] for v in streams]))

    whole = Engine(step)
    whole.process(batch(0, cut))
    want = whole.process(batch(cut, len(streams[0])))
    swapped = Engine(step)
    swapped.process(batch(0, cut))
    store = swapped.store
    slots = store.index.find(names, store.keys)
    store.lstm[slots] = 0.0
    rebuild(store, slots, step)
    got = swapped.process(batch(cut, len(streams[0])))
    np.testing.assert_array_equal(got.direction, want.direction)
    np.testing.assert_array_equal(got.flag, want.flag)
    np.testing.assert_array_equal(got.flag, got.rule_flag)
