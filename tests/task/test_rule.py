"""The task itself: the seed's generator, the exact rule and the feature sets."""

import random

import numpy as np
import pytest

from detector.task.rule import (
    DOWN,
    FLAT,
    UP,
    direction,
    exact_flags,
    repeat_nearby,
    seed_generator,
    step_flags,
    walk_step,
)


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
    assert direction(big[1:], big[:-1]).tolist() == [UP, FLAT, DOWN]
    assert exact_flags([1e12, 1e12 + 1e-3, 1e12 + 2e-3]).tolist() == [0, 0, 1]


def test_step_rule_equals_sequence_rule():
    rng = random.Random(5)
    values = [rng.choice([0.1, 0.2, 0.3]) for _ in range(300)]  # many ties
    prev, prev_dir, seen, got = 0.0, FLAT, 0, []
    for v in values:
        step_dir = direction(np.array([v]), np.array([prev])) if seen else np.array([FLAT])
        got.append(int(step_flags(step_dir, np.array([prev_dir]), np.array([seen]))[0]))
        prev, prev_dir, seen = v, int(step_dir[0]), seen + 1
    assert got == exact_flags(values).tolist()


def test_repeats_are_marked_on_both_events_of_their_window():
    values = np.array([0.5, 0.9, 0.9, 0.2, 0.7])
    assert repeat_nearby(values).tolist() == [False, False, True, True, False]


def test_walk_stays_in_unit_interval():
    rng = np.random.default_rng(0)
    cur = rng.random(1000)
    for _ in range(200):
        cur = walk_step(cur, rng, scale=0.3)
        assert (cur >= 0).all() and (cur <= 1).all()
