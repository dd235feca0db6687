"""The task itself: the seed's generator, the exact rule and the feature sets."""

import numpy as np
import pytest

from detector.task import rule, shapes
from detector.task.rule import (
    DOWN,
    FLAT,
    TIE_SHARE,
    TIE_ULPS,
    UP,
    directions,
    exact_flags,
    repeat_nearby,
    seed_generator,
    step_flags,
    steps,
    walk_step,
)

scales = rule._scales


def seed_loop(values):
    """The seed's loadDataRandom, line for line, with random() replaced by the given values."""
    X, Y = [], []
    prev = cur = 0
    prev_state = 0
    for v in values:
        prev = cur
        cur = v
        cur_state = 1 if cur > prev else 0
        y = 1 if cur_state == prev_state else 0
        X.append([cur, prev, prev_state])
        Y.append(y)
        prev_state = cur_state
    return np.array(X), np.array(Y)


def test_seed_worked_example():
    assert exact_flags([0.1, 0.2, 0.3, 0.5, 0.3, 0.2]).tolist() == [0, 0, 1, 1, 0, 1]


def test_generator_matches_the_seed_code_value_for_value():
    rng = np.random.default_rng(3)
    x, y = seed_generator(500, rng)
    values = np.random.default_rng(3).random(500)
    want_x, want_y = seed_loop(values.tolist())
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_generator_labels_agree_with_the_rule_after_two_values():
    x, y = seed_generator(2000, np.random.default_rng(1))
    assert (y[2:] == exact_flags(x[:, 0])[2:]).all()  # no ties in the seed's data


@pytest.mark.parametrize(
    ("values", "flags"),
    [
        ([], []),
        ([0.5], [0]),
        ([0.5, 0.6], [0, 0]),
        ([0.3, 0.2, 0.1], [0, 0, 1]),  # down-down
        ([0.1, 0.3, 0.2], [0, 0, 0]),  # up-down
        ([0.5, 0.5, 0.5], [0, 0, 0]),  # flat, flat: no run
        ([0.4, 0.5, 0.5], [0, 0, 0]),  # up, then a tie
        ([0.5, 0.5, 0.4], [0, 0, 0]),  # a tie, then down
        ([1, 2, 2, 3], [0, 0, 0, 0]),  # a tie breaks the run
        ([1, 2, 2, 3, 4], [0, 0, 0, 0, 1]),  # and a new one starts after it
        ([200] * 50, [0] * 50),  # a counter sitting still is no trend
    ],
)
def test_exact_rule_on_hand_made_sequences(values, flags):
    assert exact_flags(values).tolist() == flags


def test_direction_is_exact_in_float64():
    big = np.array([1e9, 1e9 + 1, 1e9 + 1, 1e9])
    assert directions(big).tolist() == [FLAT, UP, FLAT, DOWN]
    assert exact_flags([1e12, 1e12 + 1e-2, 1e12 + 2e-2]).tolist() == [0, 0, 1]  # 82 ulps each


def test_float_dust_is_a_tie():
    """Rounding noise is no step: ``0.1 + 0.2`` next to ``0.3``, 0.33 next to its neighbour
    double, and a residue of 1e-18 where the stream steps by 1e-3."""
    assert directions([0.3, 0.1 + 0.2, 0.33, 0.33000000000000007]).tolist() == [
        FLAT, FLAT, UP, FLAT]
    assert exact_flags([0.2, 0.3, 0.1 + 0.2, 0.4, 0.5]).tolist() == [0, 0, 0, 0, 1]
    ramp = [-4e-3, -3e-3, -2e-3, -1e-3, 0.0, -1.3e-18, 0.0, 1e-18, 1e-3, 2e-3]
    assert directions(ramp)[4:].tolist() == [UP, FLAT, FLAT, FLAT, UP, UP]
    assert exact_flags(ramp)[4:].tolist() == [1, 0, 0, 0, 0, 1]
    assert exact_flags([0.1, 0.2, 0.3, 0.5, 0.3, 0.2]).tolist() == [0, 0, 1, 1, 0, 1]


def test_the_tie_bound():
    """``TIE_ULPS`` ulps of the larger value, or ``TIE_SHARE`` of the stream's typical step:
    a step just above either is a step, and so is one of 1e-7 of the typical step (which
    ``pair`` resolves)."""
    ulp = np.spacing(1.0)
    assert directions([1.0, 1.0 + TIE_ULPS * ulp, 1.0 + (2 * TIE_ULPS + 1) * ulp]).tolist() == [
        FLAT, FLAT, UP]
    walk = np.cumsum(np.tile([1.0, -0.5], 20))  # steps of 1 and 0.5: a typical step of ~0.7
    for share, moved in ((1e-7, True), (1e-9, True), (TIE_SHARE / 10, False)):
        d = directions(np.r_[walk, walk[-1] + share * 0.5])[-1]
        assert d == (UP if moved else FLAT), share


def test_a_stream_whose_own_steps_are_dust_is_read_at_its_scale():
    """No absolute floor: values of 1e-18 stepping by 1e-18 are steps like any others, and a
    constant computed with rounding noise never moves."""
    tiny = np.array([0.0, 1e-18, 3e-18, 2e-18, 2e-18, 0.0])
    assert directions(tiny).tolist() == [FLAT, UP, UP, DOWN, FLAT, DOWN]
    noisy = [sum(np.random.default_rng(i).permutation([0.1, 0.2, 0.3, 0.7])) for i in range(50)]
    assert len(set(noisy)) > 1 and not directions(noisy).any()


def dusty(rng: np.random.Generator, n: int) -> np.ndarray:
    """Steps of 1e-3 with exact repeats, dust of 1e-18 around zero and of one ulp elsewhere."""
    x = np.round(np.cumsum(rng.choice([-1e-3, 0.0, 1e-3], n)), 3)
    dust = rng.random(n) < 0.3
    x[dust] = np.where(x[dust] == 0, rng.normal(0, 1e-18, int(dust.sum())),
                       np.nextafter(x[dust], np.inf))
    return x


@pytest.mark.parametrize("seed", range(3))
def test_event_by_event_equals_the_whole_stream(seed):
    """The stream's state (previous value, its direction, the scale, events seen) is all the
    rule carries: one event at a time, across restarts, gives the whole stream's flags."""
    values = dusty(np.random.default_rng(seed), 400)
    prev, prev_dir, scale, seen, got = np.zeros(1), np.zeros(1, np.int8), np.zeros(1), 0, []
    for v in values:
        _, d, _, after = steps(np.array([v]), prev, scale, np.array([seen]))
        got.append(int(step_flags(d, prev_dir, np.array([seen]))[0]))
        prev, prev_dir, scale, seen = np.array([v]), d, after, seen + 1
    assert got == exact_flags(values).tolist()


def test_many_streams_at_once_equal_each_alone():
    rng = np.random.default_rng(4)
    streams = [dusty(rng, int(rng.integers(1, 300))) for _ in range(20)]
    flat = np.concatenate(streams)
    first = np.zeros(len(flat), bool)
    first[np.r_[0, np.cumsum([len(s) for s in streams])[:-1]]] = True
    zero = np.zeros(len(flat))
    _, d, _, _ = steps(flat, zero, zero, zero.astype(np.int64), first)
    assert d.tolist() == np.concatenate([directions(s) for s in streams]).tolist()


def test_a_long_stretch_of_dust_settles_in_few_rounds(monkeypatch):
    """The first guess holds every tie: 2,000 dust steps in a row do not take 2,000 rounds."""
    scans = []
    monkeypatch.setattr(rule, "_scales", lambda *a: scans.append(1) or scales(*a))
    x = np.r_[np.arange(50) * 1e-3, np.random.default_rng(5).normal(0, 1e-18, 2000)]
    assert not directions(x)[51:].any()
    assert len(scans) <= 2


def test_the_dust_shapes_make_dust():
    """The battery's float-dust shapes hold steps that are ties without being repeats, both
    within a few ulps and next to zero (where only the typical step tells)."""
    streams = [v for name, v in shapes.battery().items()
               if name.rsplit("-", 1)[0] in shapes.COMPUTED]
    near_zero = ulps = 0
    for v in streams:
        dust = (directions(v)[1:] == FLAT) & (v[1:] != v[:-1])
        top = np.maximum(np.abs(v[1:]), np.abs(v[:-1]))
        small = np.abs(v[1:] - v[:-1]) <= TIE_ULPS * np.spacing(top)
        ulps += int((dust & small).sum())
        near_zero += int((dust & ~small).sum())
    assert len(streams) == 3 * len(shapes.COMPUTED) and ulps > 1000 and near_zero > 50


def test_repeats_are_marked_on_both_events_of_their_window():
    values = np.array([0.5, 0.9, 0.9, 0.2, 0.7])
    assert repeat_nearby(values).tolist() == [False, False, True, True, False]


def test_walk_stays_in_unit_interval():
    rng = np.random.default_rng(0)
    cur = rng.random(1000)
    for _ in range(200):
        cur = walk_step(cur, rng, scale=0.3)
        assert (cur >= 0).all() and (cur <= 1).all()
