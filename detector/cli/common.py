"""What the commands share: argument types, the runtime choice, signals and logging."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from detector.errors import MissingExtra, UsageError
from detector.settings.detector import RUNTIMES
from detector.settings.fields import ConfigError

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]

MODEL_HELP = "seed, pair or the path of a .keras file"
RUNTIME_HELP = "litert (default; no TensorFlow) or keras [env DETECTOR_RUNTIME]"


#: The optional extras (pyproject.toml) and the modules each brings that the commands import.
EXTRAS = {"train": ("tensorflow", "keras", "matplotlib"), "plots": ("matplotlib",)}


def require_extra(command: str, extra: str) -> None:
    """Import the extra's modules now: a missing one is one line naming the extra (exit 2)
    instead of a traceback at the end of a command that may have run for minutes."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtra(command, exc.name or module, extra) from None


def refuse_unless(args: argparse.Namespace, needed: str, *options: str) -> None:
    """Options that only apply with ``--needed`` are refused without it (UsageError), rather
    than silently ignored."""
    if not getattr(args, needed.replace("-", "_")):
        for option in options:
            if getattr(args, option.replace("-", "_")) is not None:
                raise UsageError(f"--{option} needs --{needed}")


def refuse_with(args: argparse.Namespace, given: str, *options: str) -> None:
    """Options that do not apply with ``--given`` are refused with it (UsageError)."""
    if getattr(args, given.replace("-", "_")):
        for option in options:
            if getattr(args, option.replace("-", "_")) is not None:
                raise UsageError(f"--{option} does not apply with --{given}")


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
