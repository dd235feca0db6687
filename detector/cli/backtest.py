"""The input's history against the labels: ``models backtest NAME VERSION [--against VERSION]
--since DURATION`` before a promotion, and ``train --from-kafka`` to learn from the labels."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from detector.cli import own_pattern
from detector.cli.common import refuse_with
from detector.cli.progress import Bar
from detector.errors import UsageError
from detector.settings.fields import add_options, build, duration_s
from detector.settings.labels import BacktestSettings, HistorySettings

SINCE_HELP = ("how far back the input's history is read, such as 6h or 7d (the topic's "
              "retention bounds it)")


def _since(args: argparse.Namespace, what: str) -> float:
    if not args.since:
        raise UsageError(f"{what} needs --since DURATION ({SINCE_HELP})")
    seconds = duration_s("since", args.since)
    if seconds <= 0:
        raise UsageError("--since must be a duration above 0, such as 6h")
    return seconds


def cmd_backtest(args: argparse.Namespace) -> int:
    settings = build(BacktestSettings, args, "DETECTOR")
    since = _since(args, "backtest")
    from detector.labels.backtest import run

    bar = Bar(f"backtest {args.name} v{args.version}")
    result = run(settings, args.name, args.version, args.against, since, bar)
    bar.close()
    if args.json:
        print(json.dumps(result))
    else:
        print_backtest(result)
    return 0


def print_backtest(r: dict[str, Any]) -> None:
    from detector.labels.figures import show

    c, a = r["candidate"], r["against"]
    labels = r["labels"]
    cutoff = ("no time range on its card (trained from a file): every label counts"
              if r["cutoff"] is None else "labels of events after " + time.strftime(
                  "%Y-%m-%d %H:%M:%S UTC", time.gmtime(r["cutoff"])) + " (the end of its "
              "training data) count")
    print(f"{r['name']} v{c['version']} against v{a['version']} on {r['input']['topic']}: "
          f"{r['events']:,} events of {r['streams']:,} streams; {cutoff}")
    print(f"labels: {labels['scored']} scored, {labels['left_out']} left out (their events are "
          f"in v{c['version']}'s training range; {labels['partly_left_out']} partly; "
          f"{labels['events_left_out']:,} events), {labels['not_seen']} without events read")
    rows = [("events", f"{r['events']:,}", f"{r['events']:,}"),
            ("labeled events", f"{c['events']:,}", f"{a['events']:,}"),
            ("accuracy", show(c["accuracy"]), show(a["accuracy"])),
            ("precision", show(c["precision"]), show(a["precision"])),
            ("recall", show(c["recall"]), show(a["recall"])),
            ("F1", show(c["f1"]), show(a["f1"])),
            ("alerts per stream-day", show(c["alerts_per_stream_day"], 2),
             show(a["alerts_per_stream_day"], 2)),
            ("disagreements", f"{r['disagreements']:,}", f"{r['disagreements']:,}")]
    head = (f"v{c['version']} (candidate)", f"v{a['version']}")
    print(f"| {'':<22} | {head[0]:>16} | {head[1]:>16} |")
    print(f"|{'-' * 24}|{'-' * 18}|{'-' * 18}|")
    for name, left, right in rows:
        print(f"| {name:<22} | {left:>16} | {right:>16} |")


def add_backtest(sub: argparse._SubParsersAction) -> None:
    """``models backtest``, an action of ``models``."""
    help = ("Replay the input's retained history through VERSION of NAME and another version "
            "(--against; default the live one), both from cold state, outside the detectors' "
            "group, and score both on the labels of events after VERSION's training data: a "
            "side-by-side table (--json: one object).")
    bt = sub.add_parser("backtest", help=help, description=help)
    bt.set_defaults(fn=cmd_backtest)
    bt.add_argument("name", metavar="NAME")
    bt.add_argument("version", metavar="VERSION", type=int)
    bt.add_argument("--against", type=int, metavar="VERSION",
                    help="the version to compare with (default: NAME's live version)")
    bt.add_argument("--since", help=f"{SINCE_HELP} (required)")
    bt.add_argument("--json", action="store_true", help="one JSON object")
    add_options(bt, BacktestSettings, "DETECTOR")


# --- train --from-kafka ---------------------------------------------------------------------


def _options(cls: type) -> list[str]:
    """Every option name of a settings class, nested ones included."""
    out = []
    for f in dataclasses.fields(cls):
        nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            out += _options(nested)  # type: ignore[arg-type]
        else:
            out.append(f.name.replace("_", "-"))
    return out


def add_from_kafka_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--from-kafka", action="store_true", help="your labels from the label "
                       "topic instead, over the input topic's history (--since), read with "
                       "run's input settings")
    train.add_argument("--since", help=f"with --from-kafka: {SINCE_HELP}")
    add_options(train, HistorySettings, "DETECTOR")


def cmd_train_from_kafka(args: argparse.Namespace) -> int:
    refuse_with(args, "from-kafka", "csv", "features", "events")
    if not args.name:
        raise UsageError("--from-kafka needs --name NAME: the model's (and its files') name")
    own_pattern.check_target(args)
    settings = build(HistorySettings, args, "DETECTOR")
    since = _since(args, "--from-kafka")
    from detector.training.from_kafka import labeled_history

    bar = Bar(f"train {args.name}: reading {settings.input_topic}")
    data = labeled_history(settings, since, bar)
    bar.close()
    return own_pattern.train_on(args, data)


def refuse_kafka_options(args: argparse.Namespace) -> None:
    """``train`` without ``--from-kafka`` takes none of its options."""
    for name in ("since", *_options(HistorySettings)):
        if getattr(args, name.replace("-", "_"), None) is not None:
            raise UsageError(f"--{name} needs --from-kafka")
