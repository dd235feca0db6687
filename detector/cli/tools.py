"""For people: ``tail`` (readable records), ``demo`` (everything on the local broker) and
``config`` (the configuration tables)."""

from __future__ import annotations

import argparse

from detector.cli.common import (
    MODEL_HELP,
    RUNTIME_HELP,
    Command,
    positive_int,
    runtime_of,
    stop_on_signals,
)
from detector.errors import UsageError
from detector.settings.bridge import BridgeSettings
from detector.settings.detector import RUNTIMES, DetectorSettings
from detector.settings.fields import add_options, build
from detector.settings.producer import ProducerSettings


def cmd_tail(args: argparse.Namespace) -> int:
    settings = build(DetectorSettings, args, "DETECTOR")
    from detector.cli.tail import tail

    tail(settings.kafka, args.topic, args.from_beginning, stop_on_signals(), limit=args.limit)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.cli.demo import demo

    if args.column and not args.csv:
        raise UsageError("--column needs --csv FILE")
    if args.csv and not args.column:
        raise UsageError("--csv needs at least one --column")
    return demo(duration=args.duration, streams=args.streams, rate=args.rate, model=args.model,
                metrics_port=args.metrics_port, csv=args.csv, columns=tuple(args.column or ()),
                runtime=runtime_of(args))


def cmd_config(args: argparse.Namespace) -> int:
    from detector.settings.fields import markdown_table

    print("### Detector (`python -m detector run`)\n")
    print(markdown_table(DetectorSettings, "DETECTOR"))
    print("\n### Alertmanager bridge (`python -m detector alertmanager`)\n")
    print(markdown_table(BridgeSettings, "DETECTOR"))
    print("\n### Producer (`python -m producer`)\n")
    print(markdown_table(ProducerSettings, "PRODUCER"))
    return 0


def add_commands(command: Command) -> None:
    tail = command("tail", cmd_tail, "Print one readable line per record of a topic.")
    tail.add_argument("--topic", default="trend-alerts")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--limit", type=positive_int, help="stop after this many records")
    add_options(tail, DetectorSettings, "DETECTOR")

    demo = command("demo", cmd_demo, "Local broker + producer + detector, alerts on screen.")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--streams", type=positive_int, default=30)
    demo.add_argument("--rate", type=float, default=300.0, help="events/s over all streams")
    demo.add_argument("--model", default="seed", help=MODEL_HELP)
    demo.add_argument("--metrics-port", type=int, default=9108)
    demo.add_argument("--csv", metavar="FILE", help="replay columns of this CSV instead of "
                      "random values")
    demo.add_argument("--column", action="append", metavar="NAME",
                      help="a CSV column to replay as a stream (repeat for more)")
    demo.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    command("config", cmd_config, "Print the configuration tables (Markdown).")
