"""Scans over events grouped by stream against plain loops over each stream."""

import numpy as np
import pytest

from detector.task import segments


def split(first: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    return np.split(values, np.nonzero(first)[0][1:])


def random_segments(rng: np.random.Generator, n: int) -> np.ndarray:
    first = rng.random(n) < rng.choice([0.01, 0.3, 1.0])
    first[0] = True
    return first


@pytest.mark.parametrize("seed", range(6))
def test_scans_equal_loops_per_segment(seed):
    rng = np.random.default_rng(seed)
    n = 500
    first = random_segments(rng, n)
    mask = rng.random(n) < 0.4
    values = rng.integers(-(2**62), 2**62, n) // rng.choice([1, 2**58], n)
    stored = rng.integers(-5, 5, n)
    x = rng.normal(size=n)
    want_pos, want_last, want_max, want_shift, want_scan = [], [], [], [], []
    start = 0
    for seg_mask, seg_values, seg_stored, seg_x in zip(
            split(first, mask), split(first, values), split(first, stored), split(first, x),
            strict=True):
        best, last, y = np.iinfo(np.int64).min, -1, 0.0
        for i in range(len(seg_mask)):
            want_pos.append(i)
            if seg_mask[i]:
                best, last = max(best, seg_values[i]), start + i
            want_max.append(best)
            want_last.append(last)
            want_shift.append(seg_stored[0] if i == 0 else seg_values[i - 1])
            y = seg_x[i] if i == 0 else 0.9 * y + seg_x[i]
            want_scan.append(y)
        start += len(seg_mask)
    assert segments.positions(first).tolist() == want_pos
    assert segments.last_where(mask, first).tolist() == want_last
    assert segments.cummax(values, mask, first).tolist() == want_max
    assert segments.shift(values, stored, first).tolist() == want_shift
    np.testing.assert_allclose(segments.linear_scan(x, 0.9, first), want_scan, rtol=1e-12,
                               atol=1e-12)


def test_one_long_segment_and_empty_input():
    x = np.random.default_rng(0).normal(size=20_000)
    first = np.zeros(len(x), bool)
    first[0] = True
    y, want = segments.linear_scan(x, 0.9, first), np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc = 0.9 * acc + v
        want[i] = acc
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
    empty = np.zeros(0, bool)
    assert len(segments.linear_scan(np.zeros(0), 0.9, empty)) == 0
    assert len(segments.cummax(np.zeros(0, np.int64), empty, empty)) == 0
    assert len(segments.last_where(empty, empty)) == 0
