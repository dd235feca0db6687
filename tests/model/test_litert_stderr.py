"""LiteRT's runtime announces its CPU delegate on stderr from C++; the step keeps that one line
out of every command and lets everything else through."""

import subprocess
import sys

from detector.model.litert import DELEGATE_NOTICE
from tests.support import ROOT


def stderr_of(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stderr


MODEL = "(MODELS_DIR / 'pair.tflite').read_bytes()"
SETUP = "import os, sys, numpy as np\nfrom detector.model.files import MODELS_DIR\n"


def test_the_runtime_prints_the_notice_where_nothing_holds_it_back():
    """Without the step's care the line is there: this is what the step removes."""
    err = stderr_of(SETUP + "from ai_edge_litert.interpreter import Interpreter\n"
                    f"Interpreter(model_content={MODEL}, num_threads=1).allocate_tensors()\n")
    assert err.splitlines() == [DELEGATE_NOTICE.decode()]


def test_a_step_prints_nothing_and_hides_nothing_else():
    err = stderr_of(SETUP + "from detector.model import litert\n"
                    "os.write(2, b'before\\n')\n"
                    "with litert._without_delegate_notice():\n"
                    "    os.write(2, b'written meanwhile\\n')\n"
                    f"    step = litert.LiteRTStep({MODEL})\n"
                    "    print('from Python', file=sys.stderr)\n"
                    "step(np.zeros((4, 2), np.float32), np.zeros((4, step.state_size), "
                    "np.float32))\n"
                    "os.write(2, b'after\\n')\n")
    assert err.splitlines() == ["before", "written meanwhile", "from Python", "after"]
