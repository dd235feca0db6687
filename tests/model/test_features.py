"""What the models see: normalization against the stream's own scale, exact in float64."""

import numpy as np
import pytest

from detector.model.features import (
    CEILING,
    FLOOR,
    KNEE,
    advance,
    compress,
    model_input,
    near_tie,
    stream_inputs,
    window_input,
    windows,
)
from detector.task import shapes
from detector.task.rule import DOWN, FLAT, TIE_SHARE, UP, directions


def steps_of(values: np.ndarray) -> np.ndarray:
    return stream_inputs("pair", values)[0, :, 0]


def test_a_tie_is_exactly_zero_and_a_step_keeps_its_sign():
    u = steps_of(np.array([5.0, 6.0, 6.0, 5.5, 5.5]))
    assert u[0] == 0 and u[2] == 0 and u[4] == 0  # first event, ties
    assert u[1] > 0 and u[3] < 0


def test_float_dust_is_a_tie_the_models_already_know():
    """0.33 next to 0.33000000000000007, and -1.3e-18 in a stream stepping by 1e-3: u = 0 and
    flat, as for a repeat, and the typical step does not shrink towards the dust; a step of
    1e-7 of the typical step (which ``pair`` resolves) keeps its sign."""
    ramp = np.array([-3e-3, -2e-3, -1e-3, 0.0, -1.3e-18, 0.0, 1e-7 * 1e-3, 0.33,
                     0.33000000000000007])
    n = len(ramp)
    u, d, after, _ = advance(ramp, np.zeros(n), np.zeros(n), np.zeros(n, np.int64),
                             np.arange(n) == 0)
    assert u[4] == u[5] == u[8] == 0 and d[4] == d[5] == d[8] == FLAT
    assert after[5] == after[3] and u[6] > 0 and d[6] == UP


def test_the_window_features_tie_dust_too():
    """Every pairwise difference of the window is a tie within the rule's bound, in units of
    the stream's typical step."""
    values = np.array([1.0, 2.0, 0.0, -1.3e-18, 0.1 + 0.2, 0.3, 5.0, 5.0 + 1e-7])
    x = window_input(windows(values)[-1:], np.array([1.0])).reshape(8, 9)[:, :8]
    # row i: values[i] (oldest first); column j: the value j events back, values[7 - j]
    assert x[3, 5] == 0 and x[2, 4] == 0  # -1.3e-18 against 0.0, and back
    assert x[5, 3] == 0 and x[4, 2] == 0  # 0.3 against 0.1 + 0.2, and back
    assert x[7, 1] > 0 and x[6, 0] < 0  # 1e-7 of the unit keeps its sign
    assert x[3, 0] < 0 and x[4, 5] > 0


def test_compression_keeps_order_and_lifts_the_smallest_real_step():
    """``asinh`` from ``KNEE`` to ``CEILING``; below, the range from the dust bound is drawn
    into ``FLOOR..KNEE``; above, a step reads as ``CEILING``: odd, increasing, continuous, 0
    stays 0."""
    r = np.geomspace(TIE_SHARE, CEILING, 5000)
    c = compress(r)
    assert (np.diff(c) > 0).all()
    np.testing.assert_array_equal(compress(-r), -c)
    assert compress(np.array([0.0, np.nan])).tolist() == [0.0, 0.0]
    assert compress(np.array([1e300, np.inf])).tolist() == [c[-1], c[-1]]
    assert c[0] == pytest.approx(FLOOR, rel=1e-6)
    above = r >= KNEE
    np.testing.assert_array_equal(c[above], np.arcsinh(r[above]))
    assert compress(np.nextafter(KNEE, 0)) == pytest.approx(np.arcsinh(KNEE), rel=1e-12)


def test_a_real_step_far_below_the_typical_one_reaches_the_model():
    """ISBNs 205 apart in a list stepping by ~5e8, constants falling by orders of magnitude
    after a large one, float32 values 2 of its ulps apart: every step the rule sees (1e-6 ..
    1e-9 of the typical step here) reaches the model at least FLOOR from 0, with its sign."""
    cases = {
        "isbn": [9781107691155.0, 9780199738472.0, 9781622911356.0, 9781622911561.0,
                 9781622911356.0],
        "constants": [4.2, 1e-6, 3e-7, 2e-8, 6.3e-11, 9e-17],
        "float32": [-0.8, -0.6, -0.5, -0.3, -0.5000001192092896, -0.5, -0.7000000476837158],
    }
    for name, values in cases.items():
        u, direction = steps_of(np.array(values)), directions(np.array(values))
        assert (np.sign(u) == direction).all(), name
        assert (np.abs(u[1:]) >= FLOOR).all(), name


def test_steps_far_below_float32_resolution_of_the_value_survive():
    """At 1e9 float32 cannot tell values 64 apart; the step is taken in float64 first."""
    values = 1e9 + np.array([0.0, 1.0, 2.0, 2.0, 1.0])
    u = steps_of(values)
    assert u[1] > 0 and u[2] > 0 and u[3] == 0 and u[4] < 0


@pytest.mark.parametrize("factor", [1e-9, 1e-3, 1.0, 7.5, 1e6, 1e12])
def test_scale_free(factor):
    values = shapes.stream("mixed", 400, np.random.default_rng(3), rescale=False)
    np.testing.assert_allclose(steps_of(values * factor), steps_of(values), rtol=1e-5,
                               atol=1e-30)
    np.testing.assert_allclose(steps_of(-values * factor), -steps_of(values), rtol=1e-5,
                               atol=1e-30)


def test_a_spike_barely_moves_the_scale():
    _, _, scale, _ = advance(np.array([1e6]), np.array([0.0]), np.array([1.0]), np.array([5]))
    assert scale[0] < 5.0  # the geometric mean: a 1e6 step moves it by 10^0.6


def test_any_finite_double_gives_finite_inputs():
    extreme = np.array([0.0, 1.7e308, -1.7e308, 5e-324, -5e-324, 1e-300, 1e300, 1e300])
    x = stream_inputs("seed", extreme)
    assert np.isfinite(x).all()
    u = x[0, :, 0]
    assert u[1] > 0 and u[2] < 0 and u[3] > 0 and u[6] > 0 and u[7] == 0
    assert u[4] == u[5] == 0  # steps of 1e-323 and 1e-300 after steps of 1e308: dust


def test_seed_layout_keeps_x2_slot_and_previous_direction():
    x = model_input("seed", np.array([0.5, -0.2, 0.0], np.float32),
                    np.array([UP, FLAT, DOWN], np.int8))
    assert x.dtype == np.float32 and x.shape == (3, 3)
    assert x[:, 1].tolist() == [0, 0, 0] and x[:, 2].tolist() == [1, 0, -1]
    with pytest.raises(ValueError, match="unknown feature set"):
        model_input("raw", x[:, 0], x[:, 2])


def test_near_tie_is_relative_to_the_stream_scale():
    values = np.array([0.5, 0.9, 0.9000001, 0.2, 0.7, 0.7])
    assert near_tie(values).tolist() == [False, False, True, True, False, False]
    assert near_tie(values * 1e9 + 5e11).tolist() == near_tie(values).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_a_stream_at_once_equals_event_by_event(seed):
    """The scale is a log-space EMA; over a whole stream it is a scan, not a loop."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.random((4, 2000)) * np.exp(rng.normal(0, 4, (4, 2000))), 3)
    n, length = values.shape
    prev, scale = np.zeros(n), np.zeros(n)
    want_u, want_scale = np.zeros(values.shape, np.float32), np.zeros(values.shape)
    for t in range(length):
        want_u[:, t], _, want_scale[:, t], _ = advance(values[:, t], prev, scale, np.full(n, t))
        prev, scale = values[:, t], want_scale[:, t]
    first = np.arange(n * length) % length == 0
    zero = np.zeros(n * length)
    u, _, after, _ = advance(values.ravel(), zero, zero, np.zeros(n * length, np.int64), first)
    np.testing.assert_allclose(after.reshape(n, length), want_scale, rtol=1e-13)
    np.testing.assert_array_equal(u.reshape(n, length), want_u)
    rest = values[:, 700:]  # from the state stored after event 699
    first = np.arange(rest.size) % rest.shape[1] == 0
    u, _, after, _ = advance(rest.ravel(), np.repeat(values[:, 699], rest.shape[1]),
                          np.repeat(want_scale[:, 699], rest.shape[1]),
                          np.full(rest.size, 700), first)
    np.testing.assert_allclose(after.reshape(rest.shape), want_scale[:, 700:], rtol=1e-13)
    np.testing.assert_array_equal(u.reshape(rest.shape), want_u[:, 700:])
