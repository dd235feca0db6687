"""Pattern models for the benchmarks: the battery labeled by one of its patterns, a model
trained on it for each history given (8: the window model; 9 .. 32: the long one).

    python bench/pattern_models.py [--pattern new_high12] [--histories 8 32] [--out DIR]

Writes ``DIR/<pattern>-h<N>.keras`` (with its ``.tflite`` and card; trained as the README's
figures are, 5 epochs, seed 0) and prints the paths, to give ``bench/pipeline.py --models`` and
``--memory-model``. Needs the train extra.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from detector.task.patterns import PATTERNS
from detector.training.evaluation import battery
from detector.training.labeled import read_labeled
from detector.training.own_pattern import train_labeled

from common import say

EPOCHS = 5


def labeled_csv(path: Path, pattern: str) -> Path:
    """The battery's streams with the pattern's labels, in the long format ``train`` reads."""
    label = PATTERNS[pattern].label
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["stream", "value", "label"])
        for part, named in battery().items():
            for name, values in named.items():
                out.writerows([f"{part}/{name}", repr(float(v)), int(y)]
                              for v, y in zip(values, label(values), strict=True))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pattern", default="new_high12", choices=sorted(PATTERNS))
    p.add_argument("--histories", type=int, nargs="+", default=[8, 32])
    p.add_argument("--out", default="/tmp/bench-models")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = read_labeled(labeled_csv(out / f"{args.pattern}.csv", args.pattern), "value",
                        "label", "stream")
    paths = []
    for history in args.histories:
        name = f"{args.pattern}-h{history}"
        train_labeled(data, name, out, epochs=EPOCHS, seed=0, history=history)
        paths.append(str(out / f"{name}.keras"))
    say(" ".join(paths))


if __name__ == "__main__":
    main()
