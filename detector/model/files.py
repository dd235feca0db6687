"""Where a model's files live and what its card says: the shipped models by name, any ``.keras``
by path, its converted ``.tflite`` and its model card beside it.

A ``.tflite`` is current only if the card says it was converted from this very ``.keras`` (its
sha256) and the file is the one it recorded; otherwise it is stale (after retraining, say).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from detector.errors import UsageError
from detector.model.features import FEATURE_WIDTH, STATEFUL, FeatureSet

MODELS_DIR = Path(__file__).parent / "shipped"
#: The shipped models, loaded by name.
SHIPPED = ("seed", "pair")
#: The card's entry for the converted step (``detector.model.conversion`` writes it).
CARD_KEY = "litert"


class ModelError(UsageError):
    """A model name or file that cannot be served; the message is one readable line."""


def is_path(model: str) -> bool:
    """Whether ``--model`` names a file (a ``/`` in it, or a ``.keras`` suffix): a file is
    served as it is, and pins the model; a name follows the model registry."""
    return "/" in model or os.sep in model or model.endswith(".keras")


def resolve_model_path(model: str) -> Path:
    """A shipped model by name (``seed``, ``pair``) or a ``.keras`` file by path."""
    if model in SHIPPED:
        path = MODELS_DIR / f"{model}.keras"
        if not path.exists():
            raise ModelError(f"shipped model {model!r} is missing from {MODELS_DIR}")
        return path
    path = Path(model)
    if path.suffix != ".keras" and not path.exists():
        raise ModelError(
            f"unknown model {model!r}: give one of {', '.join(SHIPPED)} or a .keras file"
        )
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if not _is_keras_archive(path):
        raise ModelError(f"{path} is not a Keras model: a .keras file is a zip archive holding "
                         "config.json, as model.save() writes it")
    return path


def _is_keras_archive(path: Path) -> bool:
    """What Keras checks first, so that a wrong file is named for what it is: Keras itself
    reports any file that is not a zip archive as "File not found"."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def card_path(model_path: Path) -> Path:
    """Where a model's card lives: ``seed.keras`` -> ``seed.card.json``."""
    return model_path.with_suffix(".card.json")


def tflite_path(model_path: Path) -> Path:
    """Where a model's converted serving step lives: ``seed.keras`` -> ``seed.tflite``."""
    return model_path.with_suffix(".tflite")


def read_card(model_path: Path) -> dict[str, Any]:
    """The model card, or an empty one (a ``.keras`` given by path may have none)."""
    path = card_path(model_path)
    try:
        card = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model card {path}: {exc}") from exc
    return card if isinstance(card, dict) else {}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current_tflite(model_path: Path, keras_sha256: str) -> Path | None:
    """The ``.tflite`` beside the model if its card says it was converted from this ``.keras``
    and the file is the one it recorded; None if missing or stale (e.g. after retraining)."""
    entry = read_card(model_path).get(CARD_KEY)
    path = tflite_path(model_path)
    if (not isinstance(entry, dict) or entry.get("keras_sha256") != keras_sha256
            or not path.exists() or entry.get("sha256") != sha256(path)):
        return None
    return path


def features_of(width: int, stateful: bool, where: Path) -> FeatureSet:
    """The feature set a model's input implies, when its card does not name one (a ``long``
    model's card always does: its width depends on its history)."""
    matches = [f for f, w in FEATURE_WIDTH.items() if w == width and STATEFUL[f] == stateful]
    if len(matches) != 1:
        kind = "stateful" if stateful else "stateless"
        raise ModelError(f"{where}: cannot tell the feature set of a {kind} model taking "
                         f"{width} values per event")
    return matches[0]
