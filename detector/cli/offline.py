"""Models offline: ``train``, ``evaluate``, ``reproduce``, ``plot``, ``convert``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from detector.cli.common import (
    MODEL_HELP,
    RUNTIME_HELP,
    Command,
    non_negative_int,
    positive_int,
    runtime_of,
)
from detector.settings.detector import RUNTIMES
from detector.settings.fields import ConfigError

if TYPE_CHECKING:
    from detector.training.evaluation import Report


def cmd_train(args: argparse.Namespace) -> int:
    from detector.training.train import train

    card = train(args.features, out_dir=args.out, epochs=args.epochs, events=args.events,
                 seed=args.seed)
    print(json.dumps(card, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.training.evaluation import battery, evaluate, read_csv, score

    if args.csv or args.battery:
        streams = (read_csv(args.csv, args.column) if args.csv  # before loading the model
                   else {f"{part}/{name}": v for part, named in battery().items()
                         for name, v in named.items()})
        from detector.model.serving import ModelStep

        report = score(ModelStep.load(args.model), streams, args.seed)
        source = args.csv or "the battery (tests/data/real and detector/task/shapes.py)"
        if not args.json:
            _print_report(report, source)
        else:
            print(json.dumps({"model": report.model, "accuracy": report.accuracy,
                              "events": report.events, "errors": report.errors,
                              "errors_by_kind": {"near_tie": report.errors_near_tie,
                                                 "repeat": report.errors_repeat,
                                                 "other": report.errors_other},
                              "streams": {name: {"accuracy": s.accuracy, "events": s.events}
                                          for name, s in report.streams.items()}}))
        return 0
    from detector.model.serving import ModelStep

    step = ModelStep.load(args.model, runtime_of(args))
    result = evaluate(step, args.events, args.streams, args.seed)
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


def _print_report(report: Report, source: str) -> None:
    print(f"model {report.model} on {source}: {report.events:,} events in "
          f"{len(report.streams)} streams")
    print(f"  agreement with the exact rule: {report.accuracy:.4%} ({report.errors} errors: "
          f"{report.errors_near_tie} next to a near-tie, {report.errors_repeat} next to a "
          f"repeat, {report.errors_other} other)")
    width = max(len(name) for name in report.streams)
    for name, s in sorted(report.streams.items(), key=lambda kv: (kv[1].accuracy, kv[0])):
        print(f"  {name:<{width}}  {s.accuracy:8.4%}  {s.events:>7,} events  {s.errors:>5} errors")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from detector.training.reproduce import reproduce

    print(reproduce(seeds=args.seeds, epochs=args.epochs))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import numpy as np

    from detector.training.evaluation import read_csv, uniform_streams
    from detector.training.plots import plot_stream

    if args.csv:
        column = read_csv(args.csv, [args.column] if args.column else None)
        name, values = next(iter(column.items()))
        values, source = values[args.start:args.start + args.events], f"{name}"
    else:
        values = uniform_streams(1, args.events, np.random.default_rng(args.seed))[0]
        source = "a fresh uniform stream"
    from detector.model.serving import ModelStep

    info = plot_stream(ModelStep.load(args.model, runtime_of(args)), values, args.out, source)
    print(f"wrote {info['out']}: {info['events']} events, {info['disagreements']} "
          f"disagreement(s) with the exact rule")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from detector.model.files import resolve_model_path

    path = resolve_model_path(args.model)
    try:
        from detector.training.export import export_tflite
    except ImportError as exc:
        raise ConfigError(f"converting needs TensorFlow, which is not installed ({exc.name}): "
                          "pip install 'trend-detector[train]'") from None
    from detector.training.evaluation import battery

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
    train = command("train", cmd_train, "Train a model; write .keras, model card and curves.")
    train.add_argument("--features", choices=("seed", "pair"), required=True)
    train.add_argument("--epochs", type=positive_int, help="default: the feature set's recipe")
    train.add_argument("--events", type=positive_int,
                       help="training events (default: the feature set's recipe)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    train.add_argument("--out", default="models", help="output directory (default ./models)")

    ev = command("evaluate", cmd_evaluate, "Agreement with the exact rule through the serving "
                 "step: on your CSV, on the battery, or on fresh uniform streams.")
    ev.add_argument("--model", default="seed", help=MODEL_HELP)
    ev.add_argument("--csv", help="a CSV file: each --column is one stream, in row order, "
                    "empty cells skipped")
    ev.add_argument("--column", action="append", help="a column of --csv (repeat the option; "
                    "default: every numeric column)")
    ev.add_argument("--battery", action="store_true",
                    help="the check battery: public real series and generated shapes")
    ev.add_argument("--events", type=positive_int, default=100_000, help="uniform events")
    ev.add_argument("--streams", type=positive_int, default=10, help="uniform streams")
    ev.add_argument("--seed", type=non_negative_int, default=12345)
    ev.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    ev.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    rep = command("reproduce", cmd_reproduce, "The seed's own experiment, reproduced.")
    rep.add_argument("--seeds", type=positive_int, default=3, help="random seeds per feature set")
    rep.add_argument("--epochs", type=positive_int, default=200, help="the seed's 200 by default")

    plot = command("plot", cmd_plot, "Draw a stream (fresh uniform, or a CSV column) with model "
                   "and rule flags.")
    plot.add_argument("--model", default="seed", help=MODEL_HELP)
    plot.add_argument("--csv", help="draw a column of this CSV instead of fresh values")
    plot.add_argument("--column", help="the column of --csv (default: the first numeric one)")
    plot.add_argument("--start", type=non_negative_int, default=0,
                      help="first row of --csv to draw")
    plot.add_argument("--events", type=positive_int, default=120)
    plot.add_argument("--seed", type=non_negative_int, default=7)
    plot.add_argument("--out", default="stream.png")
    plot.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    conv = command("convert", cmd_convert, "Convert a model's serving step to LiteRT (.tflite "
                   "beside the .keras) and record both hashes and their agreement on its card.")
    conv.add_argument("--model", required=True, help=MODEL_HELP)
