"""The battery's pattern models, each trained once per test process as the README's figures
are (``PATTERN_EPOCHS``, the pattern's own history) and shared by the test modules that serve
one: ``(model path, labeled CSV path, card)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import PATTERN_EPOCHS, labeled_battery

_TRAINED: dict[str, tuple[Path, Path, dict]] = {}


def pattern_model(tmp_path_factory: pytest.TempPathFactory, name: str
                  ) -> tuple[Path, Path, dict]:
    if name not in _TRAINED:
        from detector.task.patterns import PATTERNS
        from detector.training.labeled import read_labeled
        from detector.training.own_pattern import train_labeled

        where = tmp_path_factory.mktemp(name)
        csv_path = labeled_battery(where / f"{name}.csv", name)
        data = read_labeled(csv_path, "value", "label", "stream", min_events=8)
        card = train_labeled(data, name, where, epochs=PATTERN_EPOCHS, seed=0,
                             history=PATTERNS[name].values)
        _TRAINED[name] = (where / f"{name}.keras", csv_path, card)
    return _TRAINED[name]
