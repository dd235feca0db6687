"""Where ``train`` writes: checked before any work, and written whole or not at all.

Training takes minutes; a name that cannot be a file name, or an ``--out`` that is a file,
must be refused before them, not found at the end. The files are written into a hidden
directory beside ``--out`` and moved into it only once all of them are there, so Ctrl-C (or
any failure) leaves neither half a model nor an empty folder, and never half-overwrites an
earlier model of the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.errors import UsageError

#: A model's name is its files' name (NAME.keras, ...), its pattern's on every record and the
#: name it is pushed under: letters, digits, '.', '_' and '-', starting with a letter or digit.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str) -> None:
    """UsageError unless ``name`` can be a model's (and its files') name."""
    if not NAME.fullmatch(name) or name.endswith(".keras"):
        raise UsageError(f"--name {name!r}: a model's name is its files' name too: letters, "
                         "digits, '.', '_' and '-' (at most 100, the first a letter or digit; "
                         "no '/', no .keras)")


def check_out(out: str) -> Path:
    """``--out`` as a directory that exists or can be made; UsageError (one line) if not."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file; give a directory (made if missing)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write there ({existing} is not a writable "
                         "directory)")
    return path


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A hidden directory to write into; its files move into ``out`` when the block ends
    without an exception (paths to the staging directory in model cards are made ``out``'s),
    and it is removed in every case."""
    anchor = out if out.is_dir() else _existing_parent(out)
    stage = Path(tempfile.mkdtemp(prefix=".training-", dir=anchor))
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for card in stage.glob("*.card.json"):
            body = json.loads(card.read_text())
            card.write_text(json.dumps(_replaced(body, str(stage), str(out)), indent=2) + "\n")
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _replaced(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` in every string it holds."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replaced(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replaced(v, old, new) for k, v in value.items()}
    return value
