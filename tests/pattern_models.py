"""The battery's pattern models, each trained once per test session as the README's figures
are (``PATTERN_EPOCHS``) and shared by the test modules that serve one: ``(model path,
labeled CSV path, card)``. Training is deterministic for its seed, so the test workers of one
session share each model through their common temporary directory: the first trains it, the
others wait for it (a file lock) instead of training it again."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from detector.model.files import card_path
from tests.support import PATTERN_EPOCHS, labeled_battery


def pattern_model(tmp_path_factory: pytest.TempPathFactory, name: str, window: bool = False
                  ) -> tuple[Path, Path, dict]:
    """The model of pattern ``name`` with the pattern's own history (``window``: the window
    model's default instead)."""
    key = f"{name}-window" if window else name
    where = _shared(tmp_path_factory) / "pattern-models" / key
    where.mkdir(parents=True, exist_ok=True)
    model, csv_path = where / f"{name}.keras", where / f"{name}.csv"
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (where / "trained").exists():  # not a half-written one: a test failed in it
            _train(name, where, csv_path, window)
            (where / "trained").touch()
    return model, csv_path, json.loads(card_path(model).read_text())


def _train(name: str, where: Path, csv_path: Path, window: bool) -> None:
    from detector.task.patterns import PATTERNS
    from detector.training.labeled import read_labeled
    from detector.training.own_pattern import train_labeled

    labeled_battery(csv_path, name)
    data = read_labeled(csv_path, "value", "label", "stream", min_events=8)
    history = {} if window else {"history": PATTERNS[name].values}
    train_labeled(data, name, where, epochs=PATTERN_EPOCHS, seed=0, **history)


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This session's temporary directory that every xdist worker shares (each worker's own
    is one level below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
