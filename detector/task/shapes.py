"""Value shapes real streams have, generated: for training and for the battery of checks.

Uniform values in [0, 1) never repeat and never move slowly; real series do both. Each shape
here is one way real data looks (counts and few-decimal readings that repeat, plateaus, slow
ramps, spikes, level shifts, seasonal readings, prices, growth), and ``mixed`` strings several
together in one stream, at magnitudes from 1e-9 to 1e12, with offsets and either sign. The
model never sees these magnitudes (``detector.model.features`` normalizes them away); the exact
rule is applied to the values as generated, ties included. The ``COMPUTED`` shapes are values
derived from readings (means, sums, quotients, filters) with the float dust their arithmetic
leaves, which the rule calls ties.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Shape = Callable[[int, np.random.Generator], np.ndarray]


def _walk(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.normal(0, 1, n))


def uniform(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random(n)


def walk(n: int, rng: np.random.Generator) -> np.ndarray:
    return _walk(n, rng)


def heavy_walk(n: int, rng: np.random.Generator) -> np.ndarray:
    """Steps with heavy tails: most small, a few enormous."""
    return np.cumsum(rng.standard_t(1.2, n))


def rounded_walk(n: int, rng: np.random.Generator) -> np.ndarray:
    """A walk read to a few decimals: the typical step is 0.3 to 30 units of the last digit."""
    unit = 10.0 ** -int(rng.integers(0, 4))
    steps = rng.normal(0, 10 ** rng.uniform(-0.5, 1.5), n)
    return np.round(np.cumsum(steps)) * unit


def counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Event counts per interval: integers, often equal, sometimes mostly zero."""
    return rng.poisson(10 ** rng.uniform(-0.7, 3), n).astype(np.float64)


def plateaus(n: int, rng: np.random.Generator) -> np.ndarray:
    """Piecewise constant: a gauge that holds its value, then jumps."""
    change = rng.random(n) < 10 ** rng.uniform(-2, -0.3)
    return np.cumsum(np.where(change, rng.normal(0, 1, n), 0.0))


def constant(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.full(n, rng.normal())


def slow_ramp(n: int, rng: np.random.Generator) -> np.ndarray:
    """Ramps of 20 to 300 steps, each step 1e-7 to 1e-4 of the level, that stop and hold the
    value for a while (a gauge filling, then full) before the next ramp, up or down."""
    level = 10 ** rng.uniform(0, 6)
    steps = np.empty(0)
    while len(steps) < n:
        size = level * 10 ** rng.uniform(-7, -4) * rng.choice([-1.0, 1.0])
        ramp = size * rng.uniform(0.5, 1.5, int(rng.integers(20, 301)))
        steps = np.concatenate([steps, ramp, np.zeros(int(rng.integers(1, 21)))])
    return level + np.cumsum(steps[:n])


def long_runs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Runs of 10 to 150 steps one way (a trend), each ending in a short pause (a repeated value)
    or a turn: the end of a long run is where a model that carries state can go wrong."""
    steps = np.empty(0)
    while len(steps) < n:
        drift = np.cumsum(rng.normal(0, 0.1, int(rng.integers(10, 151))))
        size = np.abs(rng.normal(0, 1)) * np.exp(drift)
        pause = np.zeros(int(rng.integers(0, 4)))
        steps = np.concatenate([steps, rng.choice([-1.0, 1.0]) * size, pause])
    return np.cumsum(steps[:n])


def spikes(n: int, rng: np.random.Generator) -> np.ndarray:
    """A walk with single-point spikes of 1e2 to 1e6 steps."""
    x = _walk(n, rng)
    at = rng.random(n) < 0.03
    x[at] += 10 ** rng.uniform(2, 6, int(at.sum())) * rng.choice([-1.0, 1.0], int(at.sum()))
    return x


def level_shifts(n: int, rng: np.random.Generator) -> np.ndarray:
    """A walk that jumps to a new level (1e2 to 1e6 steps away) now and then."""
    jumps = np.where(rng.random(n) < 0.02, 10 ** rng.uniform(2, 6, n) * rng.choice([-1, 1], n),
                     0.0)
    return _walk(n, rng) + np.cumsum(jumps)


def seasonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A temperature-like reading: a cycle plus noise, to one decimal."""
    period = rng.uniform(6, 60)
    t = np.arange(n)
    x = 10 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3)) + rng.normal(0, 1.5, n)
    return np.round(x + rng.uniform(-20, 30), 1)


def smooth_cycle(n: int, rng: np.random.Generator) -> np.ndarray:
    """An hourly temperature: a slow daily cycle read to one decimal, so long monotonic runs
    end in a repeat at every turn."""
    t = np.arange(n)
    x = 5 * np.sin(2 * np.pi * t / rng.uniform(24, 400) + rng.uniform(0, 6.3))
    return np.round(x + rng.normal(0, 0.05, n) + rng.uniform(-20, 80), 1)


def price(n: int, rng: np.random.Generator) -> np.ndarray:
    """A geometric walk quoted to cents."""
    return np.round(10 ** rng.uniform(0, 4) * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)


def growth(n: int, rng: np.random.Generator) -> np.ndarray:
    """Exponential growth with noise, mostly up, sometimes down (GDP, population)."""
    return np.exp(np.cumsum(rng.normal(0.01, 0.01, n))) * 10 ** rng.uniform(2, 5)


def smooth_trend(n: int, rng: np.random.Generator) -> np.ndarray:
    """A slow curve read to three significant digits (a yearly rate, a population): runs of
    dozens of values that flatten into a repeat where the curve turns."""
    t = np.linspace(0, 1, n)
    curve = np.polyval(rng.normal(0, 1, 4), t * rng.uniform(0.5, 3))
    x = 2 + curve - curve.min()
    return np.round(x, 3 - int(np.floor(np.log10(x.max()))))


def zigzag(n: int, rng: np.random.Generator) -> np.ndarray:
    """Small alternating steps: runs of one, the hardest pattern for alerts."""
    sign = np.where(np.arange(n) % 2, 1.0, -1.0)
    return np.cumsum(sign * rng.uniform(0.5, 1.5, n) + rng.normal(0, 0.05, n))


# Values computed from readings the way pipelines compute them. Where the exact result would
# repeat, the rounding of the arithmetic leaves float dust (``detector.task.rule.tie_bound``):
# a step of an ulp or two, or a residue of an ulp of the reading next to an exact zero. Each
# draws its own magnitude and computes at it: ``transform`` would round the dust away.


def _reading(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sensor read to a unit of 1e-6..1e3, holding or flickering between neighbouring
    readings most of the time: the input of the computations below."""
    unit = 10.0 ** int(rng.integers(-6, 4))
    moves = rng.choice([-2, -1, 0, 1, 2], n, p=[0.1, 0.2, 0.4, 0.2, 0.1])
    level = int(rng.integers(-1000, 1000))
    return (level + np.cumsum(moves)) * unit


def window_means(n: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of each sliding window of a reading, window by window with ``np.mean``: a
    window holding the same values in another order has a mean an ulp away."""
    w = int(rng.integers(2, 13))
    x = _reading(n + w - 1, rng)
    return np.lib.stride_tricks.sliding_window_view(x, w).mean(axis=1)


def decimal_sums(n: int, rng: np.random.Generator) -> np.ndarray:
    """Totals of a few meters read to two decimals (``0.1 + 0.2`` is not ``0.3``): the same
    total made of other parts differs in the last place."""
    cents = np.round(np.cumsum(rng.choice([-10, 0, 0, 0, 10, 33], n))) + 1000
    parts = rng.dirichlet(np.ones(int(rng.integers(2, 6))), n) * cents[:, None]
    parts = np.round(parts)
    parts[:, -1] = cents - parts[:, :-1].sum(axis=1)
    return (parts / 100 * 10.0 ** int(rng.integers(-3, 4))).sum(axis=1)


def unit_prices(n: int, rng: np.random.Generator) -> np.ndarray:
    """A price recomputed from a total and a quantity, as an invoice line has it: a product and
    a quotient that round, an ulp off where the price held."""
    price = np.round(10 ** rng.uniform(-1, 4) * np.exp(np.cumsum(
        np.where(rng.random(n) < 0.7, 0.0, rng.normal(0, 0.02, n)))), 2)
    quantity = rng.integers(1, 500, n)
    return np.round(price * quantity, 2) / quantity


def residuals(n: int, rng: np.random.Generator) -> np.ndarray:
    """A reading minus its centred moving mean, then a running median of three (a signal
    package's high-pass and median filter): exact zeros, and residues an ulp of the reading
    in size (1e-19 for a reading of 1e-3) where it held, next to steps of a fraction of its
    unit."""
    x = _reading(n + 4, rng)
    windows = np.lib.stride_tricks.sliding_window_view
    high = x[1:-1] - windows(x, 3).mean(axis=1)
    return np.median(windows(high, 3), axis=1)


SHAPES: dict[str, Shape] = {
    "uniform": uniform, "walk": walk, "heavy_walk": heavy_walk, "rounded_walk": rounded_walk,
    "counts": counts, "plateaus": plateaus, "constant": constant, "slow_ramp": slow_ramp,
    "long_runs": long_runs,
    "spikes": spikes, "level_shifts": level_shifts, "seasonal": seasonal,
    "smooth_cycle": smooth_cycle, "smooth_trend": smooth_trend, "price": price,
    "growth": growth, "zigzag": zigzag,
    "window_means": window_means, "decimal_sums": decimal_sums, "unit_prices": unit_prices,
    "residuals": residuals,
}
#: Shapes computed at their own magnitude, with the float dust that leaves: not transformed.
COMPUTED = frozenset({"window_means", "decimal_sums", "unit_prices", "residuals"})


def mixed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Segments of several shapes one after another, each continuing from where the last ended
    (or jumping: a level shift), in one stream."""
    out, at = [], 0.0
    names = list(SHAPES)
    while sum(map(len, out)) < n:
        seg = SHAPES[names[rng.integers(len(names))]](int(rng.integers(5, max(6, n // 2))), rng)
        if out and rng.random() < 0.7:
            seg = seg - seg[0] + at
        out.append(seg)
        at = seg[-1]
    return np.concatenate(out)[:n]


def transform(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same shape at another magnitude (1e-9 to 1e12), sign and offset.

    Shapes that carry their own decimals (rounded readings, counts, prices) are only scaled
    by powers of ten and offset by whole units, so that their ties stay ties.
    """
    magnitude = 10.0 ** int(rng.integers(-9, 13))
    sign = rng.choice([-1.0, 1.0])
    offset = float(np.round(rng.normal(0, 10 ** rng.uniform(0, 3))))
    return sign * (x + offset) * magnitude


def stream(kind: str, n: int, rng: np.random.Generator, rescale: bool = True) -> np.ndarray:
    """One stream of ``kind`` (a name of ``SHAPES`` or ``mixed``), ``n`` values."""
    x = mixed(n, rng) if kind == "mixed" else SHAPES[kind](n, rng)
    return transform(x, rng) if rescale and kind not in COMPUTED else x


def battery(length: int = 1000, per_kind: int = 3, seed: int = 2026
            ) -> dict[str, np.ndarray]:
    """The generated part of the check battery: every shape, and mixes, at several scales."""
    rng = np.random.default_rng(seed)
    return {f"{kind}-{i}": stream(kind, length, rng)
            for kind in [*SHAPES, "mixed"] for i in range(per_kind)}
