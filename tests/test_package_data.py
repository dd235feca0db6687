"""What `pip install .` puts beside the code: every data file of the package, built by
setuptools itself (its ``build_py`` step, which a wheel is made of) from a copy of the tree."""

import shutil
import subprocess
import sys

from tests.support import ROOT


def test_every_data_file_of_the_package_is_installed(tmp_path):
    src = tmp_path / "src"
    for part in ("detector", "producer"):
        shutil.copytree(ROOT / part, src / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    built = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()",
                            "-q", "build_py", "-d", str(tmp_path / "out")], cwd=src,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    data = {p.relative_to(src) for p in (src / "detector").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    installed = {p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")
                 if p.is_file()}
    assert data and not data - installed, f"not installed: {sorted(map(str, data - installed))}"
    real = {p.name for p in data if p.parent.name == "real_series"}
    assert "SOURCES.md" in real and len(real) == 15
