"""Training data: generated streams of every value shape, with near-ties and repeats stressed,
and their inputs built exactly as serving builds them."""

from __future__ import annotations

import keras
import numpy as np

from detector.model.features import FeatureSet, stream_inputs
from detector.task import shapes
from detector.task.rule import exact_flags
from detector.training.architectures import Recipe


def training_values(n: int, length: int, near_share: float, rng: np.random.Generator,
                    near_low: float = -4.0, tie_share: float = 0.05) -> np.ndarray:
    """``n`` streams of every value shape (a third of them mixes), at every magnitude, with a
    share of steps shrunk by 10^U(near_low, -1) (the near-ties the model must resolve) and a
    share made exact repeats anywhere, also at the end of a long run."""
    kinds = [*shapes.SHAPES, *["mixed"] * (len(shapes.SHAPES) // 2)]
    x = np.stack([shapes.stream(kinds[rng.integers(len(kinds))], length, rng) for _ in range(n)])
    d = np.diff(x, axis=1)
    tiny = rng.random(d.shape) < near_share
    d[tiny] *= 10 ** rng.uniform(near_low, -1, int(tiny.sum()))
    d[rng.random(d.shape) < tie_share] = 0.0
    return np.concatenate([x[:, :1], x[:, :1] + np.cumsum(d, axis=1)], axis=1)


def seed_data(n: int, near_share: float, rng: np.random.Generator, near_low: float = -7.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Samples for the seed model: ``[u3, 0, direction of x2]`` windows of generated streams
    (as a length-3 sequence of one feature), with exact labels; windows without a full
    three-value history are left out (serving gives those flag 0 without asking the model)."""
    length = 50
    values = training_values(int(np.ceil(n / (length - 2))), length, near_share, rng, near_low)
    x = stream_inputs("seed", values)[:, 2:].reshape(-1, 3)
    y = np.stack([exact_flags(v)[2:] for v in values]).reshape(-1).astype(np.float32)
    order = rng.permutation(len(x))[:n]
    return x[order, :, None], y[order]


class StreamBatches(keras.utils.PyDataset):
    """Fresh training streams every epoch (features, exact flags, weights that skip t < 2)."""

    def __init__(self, recipe: Recipe, rng: np.random.Generator):
        super().__init__()
        self.recipe, self.rng = recipe, rng
        self.n = max(recipe.batch_size, recipe.events // recipe.seq_len)
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        r = self.recipe
        values = training_values(self.n, r.seq_len, r.near_tie_share, self.rng, r.near_tie_low,
                                 r.tie_share)
        self.x, self.y, self.w = stream_arrays(r.features, values)

    def __len__(self) -> int:
        return int(np.ceil(self.n / self.recipe.batch_size))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = slice(i * self.recipe.batch_size, (i + 1) * self.recipe.batch_size)
        return self.x[part], self.y[part], self.w[part]


def stream_arrays(features: FeatureSet, values: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step inputs as serving builds them, exact flags, and weights that ignore t < 2."""
    x = stream_inputs(features, values)
    y = np.stack([exact_flags(v) for v in values]).astype(np.float32)[..., None]
    w = np.ones(values.shape, np.float32)
    w[:, :2] = 0.0
    return x, y, w
