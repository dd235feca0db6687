"""The task itself: the seed's generator, the exact rule and the feature sets."""

import random

import numpy as np
import pytest

from detector.rule import (
    exact_flags,
    near_tie,
    seed_generator,
    sequence_features,
    step_features,
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
    assert (y[2:] == exact_flags(x[:, 0])[2:]).all()


@pytest.mark.parametrize(
    ("values", "flags"),
    [
        ([], []),
        ([0.5], [0]),
        ([0.5, 0.6], [0, 0]),
        ([0.3, 0.2, 0.1], [0, 0, 1]),  # down-down
        ([0.1, 0.3, 0.2], [0, 0, 0]),  # up-down
        ([0.5, 0.5, 0.5], [0, 0, 1]),  # a tie is "not up" both times: not-up, not-up
        ([0.4, 0.5, 0.5], [0, 0, 0]),  # up, then a tie (not up)
        ([0.5, 0.5, 0.4], [0, 0, 1]),  # tie (not up), down (not up)
    ],
)
def test_exact_rule_on_hand_made_sequences(values, flags):
    assert exact_flags(values).tolist() == flags


def test_step_rule_equals_sequence_rule():
    rng = random.Random(5)
    values = [rng.choice([0.1, 0.2, 0.3]) for _ in range(300)]  # many ties
    prev, prev_up, seen, got = 0.0, False, 0, []
    for v in values:
        up, flag = step_flags(np.array([v]), np.array([prev]), np.array([prev_up]),
                              np.array([seen]))
        got.append(int(flag[0]))
        prev, prev_up, seen = v, bool(up[0]), seen + 1
    assert got == exact_flags(values).tolist()


def test_feature_sets():
    values = np.array([0.1, 0.2, 0.15])
    np.testing.assert_allclose(
        sequence_features("seed", values),
        [[0.1, 0.0, 0.0], [0.2, 0.1, 1.0], [0.15, 0.2, 1.0]], rtol=1e-6,
    )
    np.testing.assert_allclose(sequence_features("pair", values),
                               [[0.1, 0.0], [0.2, 0.1], [0.15, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(sequence_features("raw", values), [[0.1], [0.2], [0.15]],
                               rtol=1e-6)
    assert step_features("seed", values, values, np.zeros(3)).dtype == np.float32
    with pytest.raises(ValueError, match="unknown feature set"):
        step_features("nope", values, values, values)


def test_near_tie_marks_both_differences():
    close = near_tie(np.array([0.5, 0.9, 0.9001, 0.2, 0.7]))
    assert close.tolist() == [False, False, True, True, False]


def test_walk_stays_in_unit_interval():
    rng = np.random.default_rng(0)
    cur = rng.random(1000)
    for _ in range(200):
        cur = walk_step(cur, rng, scale=0.3)
        assert (cur >= 0).all() and (cur <= 1).all()
