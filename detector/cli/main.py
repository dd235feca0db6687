"""``python -m detector <command>``: run, alertmanager, train, convert, evaluate, reproduce,
plot, models, label, score, tail, demo, broker, config.

Heavy imports (TensorFlow, Kafka) happen inside the command that needs them, so ``--help``,
``tail`` and ``config`` start at once. Every expected failure (a wrong setting, a missing
model, an unreachable broker, an extra not installed) prints one line and exits non-zero; 2
for usage, settings and missing extras, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from detector.cli import labels, models, offline, serve, tools
from detector.errors import DetectorError
from detector.settings.fields import Parser


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="detector",
        description="Streaming detector of three-value monotonic runs with a Keras LSTM.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=Parser)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str
                ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    for module in (serve, offline, models, labels, tools):
        module.add_commands(command)
    return p


#: The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except DetectorError as exc:
        print(f"detector: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        line = kafka_error(exc)
        if line is None:
            raise
        print(f"detector: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C where no command waits for it: nothing left half done
        print(f"detector: {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def kafka_error(exc: Exception) -> str | None:
    """One line for a kafka-python error that reached the top (a consumer's: a missing ACL
    is named with its operation and resource); None for any other exception."""
    errors = sys.modules.get("kafka.errors")  # imported only by a command that used Kafka
    if errors is None or not isinstance(exc, errors.KafkaError):
        return None
    from detector.kafka.acl import refusal

    return refusal(exc) or f"Kafka: {type(exc).__name__}: {exc}"
