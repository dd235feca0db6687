"""Your own pattern from the command line: ``train``, ``evaluate`` and ``plot`` on a labeled CSV
(``--csv FILE --value-column V --label-column L [--stream-column S]``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

from detector.cli.common import refuse_unless, refuse_with, require_extra, runtime_of
from detector.cli.outputs import check_name, check_out, staged
from detector.errors import UsageError
from detector.model.features import LONGEST, WINDOW

if TYPE_CHECKING:
    from detector.training.labeled import LabeledFile

#: The options of a labeled CSV, and those that only a labeled CSV takes.
LABELED = ("value-column", "label-column", "stream-column")


def add_labeled_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--value-column", metavar="V",
                        help="with --csv in long format (one row per event): the values")
    parser.add_argument("--label-column", metavar="L", help="... the labels: 1 where the "
                        "pattern is complete at this event, else 0")
    parser.add_argument("--stream-column", metavar="S", help="... the stream ids (default: "
                        "the whole file is one stream)")


def labeled(args: argparse.Namespace) -> bool:
    """Whether the command runs on a labeled CSV; refuses half of one, and one column in two
    roles."""
    if args.label_column is None:
        refuse_unless(args, "label-column", "value-column", "stream-column")
        return False
    if not args.csv:
        raise UsageError("--label-column needs --csv FILE (long format, one row per event)")
    if not args.value_column:
        raise UsageError("--label-column needs --value-column (the column of the values)")
    roles = {"--value-column": args.value_column, "--label-column": args.label_column,
             "--stream-column": args.stream_column}
    for a, b in (("--value-column", "--label-column"), ("--value-column", "--stream-column"),
                 ("--label-column", "--stream-column")):
        if roles[a] is not None and roles[a] == roles[b]:
            raise UsageError(f"{a} and {b} are both {roles[a]!r}: a column has one role")
    return True


def _read(args: argparse.Namespace, min_events: int = 1, both_classes: bool = False
          ):  # type: ignore[no-untyped-def]
    from detector.training.labeled import read_labeled

    return read_labeled(args.csv, args.value_column, args.label_column, args.stream_column,
                        min_events=min_events, both_classes=both_classes)


def cmd_train(args: argparse.Namespace) -> int:
    """``train --csv ...``: a pattern model on the file's labels: the window model, or the long
    one for a pattern that looks back further than 8 values (``--history``); written whole or
    not at all (``outputs``)."""
    refuse_with(args, "csv", "events", "features")
    if not args.name:
        raise UsageError("--csv needs --name NAME: the model's (and its files') name")
    history = check_target(args)
    # Read before TensorFlow's seconds of import; a model learns from both classes.
    data = _read(args, min_events=max(history, WINDOW), both_classes=True)
    return train_on(args, data)


def check_target(args: argparse.Namespace) -> int:
    """``--name``, ``--out`` and ``--history`` (returned), refused before any work (reading,
    training), not at the end."""
    check_name(args.name)
    check_out(args.out)
    history = args.history or WINDOW
    if not 2 <= history <= LONGEST:
        raise UsageError(f"--history {history}: a pattern may look at 2 .. {LONGEST} values")
    return history


def train_on(args: argparse.Namespace, data: LabeledFile) -> int:
    """A pattern model on labeled streams (a file's, or the label topic's), as ``--name``."""
    out = check_out(args.out)
    history = args.history or WINDOW
    require_extra("train", "train")
    from detector.training.own_pattern import EPOCHS, train_labeled

    if args.history is None:
        print(f"train {args.name}: no --history given: the pattern may look at the last "
              f"{WINDOW} values (give --history N, up to {LONGEST}, for one that looks further "
              "back)", flush=True)
    command = "python -m detector " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    with staged(out) as stage:
        card = train_labeled(data, args.name, stage, epochs=args.epochs or EPOCHS,
                             seed=args.seed, command=command, history=history)
    reached = card["target"]["reached"]
    print(f"train {args.name}: wrote {out / args.name}.keras, .tflite, .card.json and "
          f".curves.png; {'it reaches the target' if reached else 'it DOES NOT reach the target'}"
          f" (`models push` will {'take it' if reached else 'ask for --force'})", flush=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate --csv ... --label-column``: flags against labels, overall and per stream."""
    refuse_with(args, "label-column", "column", "events", "streams")
    data = _read(args)
    from detector.model.serving import ModelStep
    from detector.training.labeled import score_labeled

    report = score_labeled(ModelStep.load(args.model, runtime_of(args)), data.streams,
                           args.seed)
    ones = sum(int(labels.sum()) for _, labels in data.streams.values())
    if args.json:
        print(json.dumps({**report.as_dict(), "labels": {"0": data.events - ones, "1": ones}}))
        return 0
    o = report.overall
    print(f"model {report.model} on {args.csv}: {o.events:,} labeled events in "
          f"{len(report.streams)} stream(s), through the serving step")
    if ones in (0, data.events):
        # One class only (a quiet period, say): the figures that need the other say nothing.
        print(f"  every label is {int(ones > 0)}: accuracy {o.accuracy:.4%}; "
              + (f"{o.false_alarms_per_1000:.2f} false alarms per 1,000 events "
                 f"({round(o.false_alarms_per_1000 * o.events / 1000)} in all)" if not ones
                 else f"{o.missed} event(s) missed")
              + "; precision, recall and F1 need both classes")
    else:
        print(f"  accuracy {o.accuracy:.4%}, precision {o.precision:.4f}, recall "
              f"{o.recall:.4f}, F1 {o.f1:.4f}; {o.false_alarms_per_1000:.2f} false alarms per "
              f"1,000 events, {o.missed} label-1 event(s) missed")
    width = max(len(name) for name in report.streams)
    for name, f in sorted(report.streams.items(), key=lambda kv: (kv[1].accuracy, kv[0])):
        print(f"  {name:<{width}}  {f.accuracy:8.4%}  F1 {f.f1:.4f}  {f.events:>7,} events  "
              f"{f.false_alarms_per_1000:6.2f} false/1000  {f.missed:>4} missed")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``plot --csv ... --label-column``: a labeled stream, its labels and the model's flags."""
    refuse_with(args, "label-column", "column", "seed")
    require_extra("plot", "plots")
    data = _read(args)
    name = args.stream or next(iter(data.streams))
    if name not in data.streams:
        raise UsageError(f"--stream {name!r}: no such stream in {args.csv} (streams: "
                         f"{', '.join(list(data.streams)[:10])}...)")
    values, labels = data.streams[name]
    start = args.start or 0
    from detector.model.serving import ModelStep
    from detector.training.plots import plot_labeled

    info = plot_labeled(ModelStep.load(args.model, runtime_of(args)), values, labels, start,
                        args.events, args.out, f"stream {name!r} of {args.csv}")
    print(f"wrote {info['out']}: {info['events']} events, {info['wrong']} flag(s) differ from "
          "the labels")
    return 0
