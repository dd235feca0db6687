"""The battery's labeled patterns: exact comparisons, a tie (float dust included) flat."""

import numpy as np
import pytest

from detector.model.features import stream_inputs
from detector.task import shapes
from detector.task.patterns import PATTERNS, _labels
from detector.task.rule import TIE_SHARE, TIE_ULPS

STEP = 1e-3
#: A stream stepping by ``STEP`` before each case, so its typical step is known.
LEAD = np.arange(-30, -10) * STEP
#: Per order pattern: its last values in steps, the last one tied with a value it is compared
#: with, and the way the last one moves to complete the pattern.
CASES = {
    "dip": ([2, 1, 1], 1),  # x[t] > x[t-1]
    "peak": ([1, 2, 2], -1),  # x[t-1] > x[t]
    "rise5": ([1, 2, 3, 4, 4], 1),
    "up_up_down": ([1, 2, 3, 3], -1),
    "new_low4": ([1, 4, 5, 1], -1),  # x[t] < x[t-3], values apart
    "top_of_five": ([1, 2, 5, 3, 5], -1),  # x[t-2] > x[t], values apart
}
#: Where the values sit, and a dust step there: ``ulps``, a few units in the last place of
#: values near 1000 (beyond TIE_SHARE of the step); ``share``, 1e-11 of the step next to 0
#: (beyond TIE_ULPS of the values).
DUST = {"ulps": (1000.0, 30 * np.spacing(1000.0)), "share": (0.0, 1e-11 * STEP)}


def _case(pattern: str, where: str, nudge: float) -> np.ndarray:
    tail, sign = CASES[pattern]
    offset = DUST[where][0]
    values = np.r_[LEAD, np.array(tail) * STEP - tail[-1] * STEP] + offset
    values[-1] += sign * nudge
    return values


def test_the_dust_cases_are_dust_of_their_kind():
    ulps_dust, share_dust = DUST["ulps"][1], DUST["share"][1]
    assert TIE_SHARE * STEP < ulps_dust <= TIE_ULPS * np.spacing(1000.0)
    assert TIE_ULPS * np.spacing(5 * STEP) < share_dust <= TIE_SHARE * STEP


@pytest.mark.parametrize("where", DUST)
@pytest.mark.parametrize("pattern", CASES)
def test_dust_is_a_tie_for_each_pattern_and_a_real_step_is_not(pattern, where):
    label = PATTERNS[pattern].label
    dust = _case(pattern, where, DUST[where][1])
    strict = _case(pattern, where, 1e-7 * STEP)  # 1e-7 of the typical step: a step
    assert label(_case(pattern, where, 0.0))[-1] == 0  # the exact tie
    assert dust[-1] != _case(pattern, where, 0.0)[-1]  # the dust is in the values
    assert label(dust)[-1] == 0
    assert label(strict)[-1] == 1


def test_dust_is_no_dip_and_no_jump():
    dip, jump = PATTERNS["dip"].label, PATTERNS["jump5"].label
    assert dip([0.5, 0.3, 0.4]).tolist() == [0, 0, 1]
    assert dip([0.1 + 0.2, 0.3, 0.4]).tolist() == [0, 0, 0]  # 0.30000000000000004 is 0.3
    # -1.3e-18 in a stream stepping by 1e-3 is no step: the typical step stays 1e-3, so the
    # next step of 1e-3 is no jump, and one of 0.5 is
    ramp = np.r_[np.arange(-11, 1) * 1e-3, -1.3e-18, 1e-3, 0.5]
    assert jump(ramp)[-3:].tolist() == [0, 0, 1]
    # ... and a dust step is no jump even where the stream has been flat
    assert jump(np.r_[ramp, np.full(5, 0.5), 0.5 + 1e-16]).tolist()[-6:] == [0] * 6


def test_a_label_sees_a_tie_where_the_window_features_see_one():
    """Every comparison of an event's value with one of its window is a tie for the labels
    exactly where the ``window`` features give it 0, on streams with float dust of both kinds
    (and in a fresh stream's first events, where the unit is not the typical step yet)."""
    rng = np.random.default_rng(25)
    streams = [shapes.stream(kind, 300, rng) for kind in sorted(shapes.COMPUTED)]
    streams.append(np.r_[1.0, 1.0 + 40 * np.spacing(1.0), 1.0 + 80 * np.spacing(1.0), 2.0])
    for values in streams:
        newest = stream_inputs("window", values)[0].reshape(len(values), 8, 9)[:, -1]
        for back in range(1, 8):
            diff = newest[:, back]  # asinh((x[t] - x[t-back]) / unit)
            assert ((diff > 0) == _compared(values, back, 1)).all(), back
            assert ((diff < 0) == _compared(values, back, -1)).all(), back


def _compared(values: np.ndarray, back: int, sign: int) -> np.ndarray:
    """Per event, whether ``x[t] > x[t-back]`` (``sign`` 1; ``<``: -1) by more than a tie, as
    the labels compare values: a pattern of that one comparison."""
    def condition(x, gt):
        return gt(x(0), x(back)) if sign > 0 else gt(x(back), x(0))

    return _labels(condition)(values).astype(bool)
