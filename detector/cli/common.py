"""What the commands share: argument types, the runtime choice, signals and logging."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from detector.settings.detector import RUNTIMES
from detector.settings.fields import ConfigError

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]

MODEL_HELP = "seed, pair or the path of a .keras file"
RUNTIME_HELP = "litert (default; no TensorFlow) or keras [env DETECTOR_RUNTIME]"


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def runtime_of(args: argparse.Namespace) -> str:
    """``--runtime``, else DETECTOR_RUNTIME, else litert (as ``run`` resolves its settings)."""
    runtime = args.runtime or os.environ.get("DETECTOR_RUNTIME") or "litert"
    if runtime not in RUNTIMES:
        raise ConfigError(f"DETECTOR_RUNTIME: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    return runtime


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every reconnect attempt; our own lines say what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
