"""Models offline: ``train``, ``evaluate``, ``reproduce``, ``plot``, ``convert``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from detector.cli import backtest, own_pattern
from detector.cli.common import (
    MODEL_HELP,
    RUNTIME_HELP,
    Command,
    non_negative_int,
    positive_int,
    refuse_unless,
    refuse_with,
    require_extra,
    runtime_of,
)
from detector.cli.outputs import check_out, staged
from detector.errors import UsageError
from detector.settings.detector import RUNTIMES

if TYPE_CHECKING:
    import numpy as np

    from detector.model.serving import ModelStep
    from detector.stream.csv_columns import Skipped
    from detector.training.evaluation import Report

#: ``evaluate``'s fresh uniform streams, by default.
UNIFORM_EVENTS, UNIFORM_STREAMS = 100_000, 10


def cmd_train(args: argparse.Namespace) -> int:
    if args.from_kafka:
        return backtest.cmd_train_from_kafka(args)
    backtest.refuse_kafka_options(args)
    if own_pattern.labeled(args):
        return own_pattern.cmd_train(args)
    refuse_unless(args, "csv", "name", "history")
    if not args.features:
        raise UsageError("train needs --features seed|pair (a shipped model's recipe) or --csv "
                         "FILE with --value-column, --label-column and --name (your pattern)")
    out = check_out(args.out)
    require_extra("train", "train")
    from detector.training.train import train

    with staged(out) as stage:
        card = train(args.features, out_dir=stage, epochs=args.epochs, events=args.events,
                     seed=args.seed)
    print(json.dumps(card, indent=2).replace(str(stage), str(out)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if own_pattern.labeled(args):
        return own_pattern.cmd_evaluate(args)
    refuse_unless(args, "csv", "column")
    for given in ("csv", "battery"):
        refuse_with(args, given, "events", "streams")
    from detector.model.serving import ModelStep
    from detector.training.evaluation import evaluate, score

    if args.csv or args.battery:
        streams, source, skipped = _named_streams(args)  # before loading the model
        step = ModelStep.load(args.model, runtime_of(args))
        if step.pattern:
            return _pattern_flags(step, streams, source, skipped, args)
        report = score(step, streams, args.seed)
        if not args.json:
            _print_report(report, source, skipped)
        else:
            print(json.dumps({"model": report.model, "accuracy": report.accuracy,
                              "events": report.events, "errors": report.errors,
                              "errors_by_kind": {"near_tie": report.errors_near_tie,
                                                 "repeat": report.errors_repeat,
                                                 "other": report.errors_other},
                              "streams": {name: {"accuracy": s.accuracy, "events": s.events}
                                          for name, s in report.streams.items()},
                              "skipped_columns": {s.name: s.why for s in skipped}}))
        return 0
    step = ModelStep.load(args.model, runtime_of(args))
    if step.pattern:
        raise UsageError(f"model {step.name} detects the pattern {step.pattern!r}, not trends: "
                         "score it on labeled data (--csv FILE --value-column V "
                         "--label-column L), or count its flags on columns (--csv FILE)")
    result = evaluate(step, args.events or UNIFORM_EVENTS, args.streams or UNIFORM_STREAMS,
                      args.seed)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    r = result
    print(f"model {r.model} ({r.features} features): {r.events:,} fresh uniform events over "
          f"{r.streams} streams (seed {r.seed})")
    print(f"  accuracy against the exact rule: {r.accuracy:.4%}  ({r.errors} errors: "
          f"{r.false_alerts} false alerts, {r.missed_alerts} missed)")
    print(f"  errors on near-ties (a step under 1e-3 of the stream's typical step): "
          f"{r.errors_near_tie}")
    print(f"  through the serving step at {r.events_per_second:,.0f} events/s")
    return 0


def _named_streams(args: argparse.Namespace
                   ) -> tuple[dict[str, np.ndarray], str, list[Skipped]]:
    """``--csv``'s columns or the battery's streams, what they are, and the columns skipped."""
    if args.csv:
        from detector.stream.csv_columns import read_columns

        table = read_columns(args.csv, tuple(args.column) if args.column else None)
        return table.streams(), args.csv, table.skipped
    from detector.training.evaluation import battery

    parts = battery()
    files = {name.partition(":")[0] for name in parts["real"]}
    source = (f"the battery: {len(parts['real'])} public real series from {len(files)} files "
              f"(detector/task/real_series, sources in its SOURCES.md) and "
              f"{len(parts['generated'])} generated streams of every shape "
              f"(detector/task/shapes.py)")
    return ({f"{part}/{name}": v for part, named in parts.items() for name, v in named.items()},
            source, [])


def _pattern_flags(step: ModelStep, streams: dict[str, np.ndarray], source: str,
                   skipped: list[Skipped], args: argparse.Namespace) -> int:
    """A pattern model on unlabeled streams: how often it flags, and nothing it is compared
    with (the trend rule is not what it was trained for; labels score it)."""
    import numpy as np

    from detector.training.evaluation import run_streams

    flags, _ = run_streams(step, list(streams.values()), np.random.default_rng(args.seed))
    per = {name: (len(f), int(f.sum())) for name, f in zip(streams, flags, strict=True)}
    events, flagged = sum(n for n, _ in per.values()), sum(k for _, k in per.values())
    if args.json:
        print(json.dumps({"model": step.name, "pattern": step.pattern, "events": events,
                          "flags": flagged, "agreement": None,
                          "streams": {n: {"events": e, "flags": k} for n, (e, k) in per.items()},
                          "skipped_columns": {s.name: s.why for s in skipped}}))
        return 0
    print(f"model {step.name} detects the pattern {step.pattern!r} (its card): {flagged:,} "
          f"flag(s) over {events:,} events in {len(per)} streams of {source}")
    print("  no labels given, so no agreement to show: --value-column and --label-column "
          "score it on a labeled file")
    for s in skipped:
        print(f"  {s}")
    width = max(len(name) for name in per)
    for name, (e, k) in sorted(per.items(), key=lambda kv: (-kv[1][1], kv[0])):
        print(f"  {name:<{width}}  {k:>6,} flags  {e:>7,} events  {k / e if e else 0:8.3%}")
    return 0


def _print_report(report: Report, source: str, skipped: list[Skipped]) -> None:
    print(f"model {report.model} on {source}: {report.events:,} events in "
          f"{len(report.streams)} streams")
    for s in skipped:
        print(f"  {s}")
    print(f"  agreement with the exact rule: {report.accuracy:.4%} ({report.errors} errors: "
          f"{report.errors_near_tie} next to a near-tie, {report.errors_repeat} next to a "
          f"repeat or dust, {report.errors_other} other)")
    width = max(len(name) for name in report.streams)
    for name, s in sorted(report.streams.items(), key=lambda kv: (kv[1].accuracy, kv[0])):
        print(f"  {name:<{width}}  {s.accuracy:8.4%}  {s.events:>7,} events  {s.errors:>5} errors")


def cmd_reproduce(args: argparse.Namespace) -> int:
    require_extra("reproduce", "train")
    from detector.training.reproduce import reproduce

    print(reproduce(seeds=args.seeds, epochs=args.epochs))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if own_pattern.labeled(args):
        return own_pattern.cmd_plot(args)
    refuse_unless(args, "label-column", "stream")
    refuse_unless(args, "csv", "column", "start")
    refuse_with(args, "csv", "seed")
    require_extra("plot", "plots")
    import numpy as np

    from detector.training.evaluation import read_csv, uniform_streams
    from detector.training.plots import plot_stream

    if args.csv:
        column = read_csv(args.csv, [args.column] if args.column else None)
        name, values = next(iter(column.items()))
        start = args.start or 0
        values, source = values[start:start + args.events], f"column {name!r}"
    else:
        values = uniform_streams(1, args.events, np.random.default_rng(args.seed or 7))[0]
        source = "a fresh uniform stream"
    from detector.model.serving import ModelStep

    step = ModelStep.load(args.model, runtime_of(args))
    if step.pattern:  # the plot draws the trend rule's flags beside the model's
        raise UsageError(f"model {step.name} detects the pattern {step.pattern!r}, not trends: "
                         "plot it on a labeled file (--csv FILE --value-column V "
                         "--label-column L), its labels beside its flags")
    info = plot_stream(step, values, args.out, source)
    print(f"wrote {info['out']}: {info['events']} events of {source}, "
          f"{info['disagreements']} disagreement(s) with the exact rule")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from detector.model.files import resolve_model_path

    path = resolve_model_path(args.model)
    require_extra("convert", "train")
    from detector.training.evaluation import battery
    from detector.training.export import export_tflite

    out = export_tflite(path, series=[v for part in battery().values() for v in part.values()],
                        series_label="the battery")
    entry = json.loads(path.with_suffix(".card.json").read_text())["litert"]
    diff, whole = entry["max_abs_difference"], entry["whole_streams"]
    print(f"wrote {out} and its entry in {path.with_suffix('.card.json').name}: on "
          f"{entry['events']:,} events ({entry['measured_on']}) LiteRT and Keras differ by at "
          f"most {diff['probability']:.1e} in probability and {diff['state']:.1e} in state; "
          f"{entry['flags_differing']} flags differ (each stream in one poll under LiteRT: "
          f"{whole['max_abs_difference']['probability']:.1e}, {whole['flags_differing']})")
    return 0


def add_commands(command: Command) -> None:
    train = command("train", cmd_train, "Train a model: a shipped one's recipe (--features), or "
                    "your pattern from a labeled CSV (--csv); write .keras, .tflite, model card "
                    "and curves (needs the train extra).")
    train.add_argument("--features", choices=("seed", "pair"),
                       help="a shipped model's feature set, and so its recipe")
    train.add_argument("--csv", help="your labeled events instead (long format: one row an "
                       "event, in order within each stream)")
    own_pattern.add_labeled_options(train)
    train.add_argument("--name", help="with --csv: the model's name (NAME.keras, ...) and "
                       "its pattern's, on every flag and run record")
    train.add_argument("--history", type=positive_int, metavar="N",
                       help="with --csv: how many of a stream's last values the pattern may "
                       "look at, its own included (default 8: the window model; 9 .. 32: the "
                       "long model)")
    train.add_argument("--epochs", type=positive_int,
                       help="epochs (default: the feature set's recipe; with --csv 20)")
    train.add_argument("--events", type=positive_int,
                       help="training events (default: the feature set's recipe)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    train.add_argument("--out", default="models", help="output directory")
    backtest.add_from_kafka_options(train)

    ev = command("evaluate", cmd_evaluate, "Agreement with the exact rule through the serving "
                 "step: on your CSV, on the battery, or on fresh uniform streams (the default). "
                 "A model of your own pattern: against the labels of a labeled CSV "
                 "(--label-column), or its flags alone on columns or the battery.")
    ev.add_argument("--model", default="seed", help=MODEL_HELP)
    what = ev.add_mutually_exclusive_group()
    what.add_argument("--csv", help="a CSV file: each --column is one stream, in row order, "
                      "empty cells skipped")
    what.add_argument("--battery", action="store_true", help="the check battery: the public "
                      "real series shipped in the package and every generated shape")
    ev.add_argument("--column", action="append", help="a column of --csv (repeat the option; "
                    "default: every numeric column, the others named as skipped)")
    own_pattern.add_labeled_options(ev)
    ev.add_argument("--events", type=positive_int,
                    help=f"fresh uniform events (default: {UNIFORM_EVENTS:,})")
    ev.add_argument("--streams", type=positive_int,
                    help=f"fresh uniform streams they are spread over (default: {UNIFORM_STREAMS})")
    ev.add_argument("--seed", type=non_negative_int, default=12345,
                    help="random seed of the values and of their order of arrival")
    ev.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    ev.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    rep = command("reproduce", cmd_reproduce, "The seed's own experiment, reproduced (needs the "
                  "train extra).")
    rep.add_argument("--seeds", type=positive_int, default=3, help="random seeds per feature set")
    rep.add_argument("--epochs", type=positive_int, default=200,
                     help="epochs, as many as the seed trains")

    plot = command("plot", cmd_plot, "Draw a stream (fresh uniform, or a CSV column) with model "
                   "and rule flags (needs the plots extra).")
    plot.add_argument("--model", default="seed", help=MODEL_HELP)
    plot.add_argument("--csv", help="draw a column of this CSV instead of fresh values")
    plot.add_argument("--column", help="the column of --csv (default: the first numeric one)")
    own_pattern.add_labeled_options(plot)
    plot.add_argument("--stream", help="with --label-column: the stream to draw (default: the "
                      "file's first)")
    plot.add_argument("--start", type=non_negative_int,
                      help="first data row of --csv to draw (default: 0)")
    plot.add_argument("--events", type=positive_int, default=120, help="values to draw")
    plot.add_argument("--seed", type=non_negative_int,
                      help="random seed of the fresh uniform stream (default: 7)")
    plot.add_argument("--out", default="stream.png", help="the PNG file to write")
    plot.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    conv = command("convert", cmd_convert, "Convert a model's serving step to LiteRT (.tflite "
                   "beside the .keras) and record both hashes and their agreement on its card "
                   "(needs the train extra).")
    conv.add_argument("--model", required=True, help=f"{MODEL_HELP} (required)")
