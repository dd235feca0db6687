"""``python -m detector <command>``: run, alertmanager, train, convert, evaluate, reproduce,
plot, tail, demo, config.

Heavy imports (TensorFlow, Kafka) happen inside the command that needs them, so ``--help``,
``tail`` and ``config`` start at once. Every expected failure (a wrong setting, a missing
model, an unreachable broker) prints one line and exits non-zero; 2 for usage, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from detector.config import (
    RUNTIMES,
    BridgeSettings,
    ConfigError,
    DetectorSettings,
    Parser,
    ProducerSettings,
    add_options,
    build,
)
from detector.errors import DetectorError, UsageError

if TYPE_CHECKING:
    from detector.evaluation import Report

MODEL_HELP = "seed, pair or the path of a .keras file"
RUNTIME_HELP = "litert (default; no TensorFlow) or keras [env DETECTOR_RUNTIME]"


def _count(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _runtime(args: argparse.Namespace) -> str:
    """``--runtime``, else DETECTOR_RUNTIME, else litert (as ``run`` resolves its settings)."""
    runtime = args.runtime or os.environ.get("DETECTOR_RUNTIME") or "litert"
    if runtime not in RUNTIMES:
        raise ConfigError(f"DETECTOR_RUNTIME: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    return runtime


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs every reconnect attempt; our own lines say what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


# --- commands ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from detector.process_tuning import cap_malloc_arenas, settle_garbage_collector

    cap_malloc_arenas()  # before any thread starts
    settings = build(DetectorSettings, args, "DETECTOR")
    _logging()
    log = logging.getLogger("detector")
    from detector.metrics import Metrics, MetricsServer
    from detector.pipeline import Pipeline
    from detector.serving import ModelStep

    step = ModelStep.load(settings.model, settings.runtime)
    metrics = Metrics()
    stop = _stop_on_signals()
    pipeline = Pipeline(settings, step, metrics, stop)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port,
                           pipeline.not_ready_because).start()
    try:
        pipeline.connect()
        settle_garbage_collector()
        log.info("model %s (%s features, %d state floats per stream) on %s; metrics on %s",
                 step.name, step.features, step.state_size, step.runtime, server.url)
        log.info("consuming %s as group %s; flags to %s, alerts to %s, dead letters to %s",
                 settings.input_topic, settings.group_id, settings.output_topic,
                 settings.alert_topic, settings.dlq_topic)
        pipeline.run()
    finally:
        server.stop()
    log.info("stopped cleanly")
    return 0


def cmd_alertmanager(args: argparse.Namespace) -> int:
    settings = build(BridgeSettings, args, "DETECTOR")
    _logging()
    log = logging.getLogger("detector")
    from detector.alertmanager import Bridge
    from detector.metrics import BridgeMetrics, MetricsServer

    metrics = BridgeMetrics()
    stop = _stop_on_signals()
    bridge = Bridge(settings, metrics, stop)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port,
                           bridge.not_ready_because).start()
    try:
        bridge.connect()
        log.info("run records from %s (group %s) to Alertmanager at %s; metrics on %s",
                 settings.alert_topic, settings.group_id, settings.url, server.url)
        bridge.run()
    finally:
        server.stop()
    log.info("stopped cleanly")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detector.training import train

    card = train(args.features, out_dir=args.out, epochs=args.epochs, events=args.events,
                 seed=args.seed)
    print(json.dumps(card, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.evaluation import battery, evaluate, read_csv, score

    if args.csv or args.battery:
        streams = (read_csv(args.csv, args.column) if args.csv  # before loading the model
                   else {f"{part}/{name}": v for part, named in battery().items()
                         for name, v in named.items()})
        from detector.serving import ModelStep

        report = score(ModelStep.load(args.model), streams, args.seed)
        source = args.csv or "the battery (tests/data/real and detector/shapes.py)"
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
    from detector.serving import ModelStep

    step = ModelStep.load(args.model, _runtime(args))
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
    from detector.training import reproduce

    print(reproduce(seeds=args.seeds, epochs=args.epochs))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import numpy as np

    from detector.evaluation import plot_stream, read_csv, uniform_streams

    if args.csv:
        column = read_csv(args.csv, [args.column] if args.column else None)
        name, values = next(iter(column.items()))
        values, source = values[args.start:args.start + args.events], f"{name}"
    else:
        values = uniform_streams(1, args.events, np.random.default_rng(args.seed))[0]
        source = "a fresh uniform stream"
    from detector.serving import ModelStep

    info = plot_stream(ModelStep.load(args.model, _runtime(args)), values, args.out, source)
    print(f"wrote {info['out']}: {info['events']} events, {info['disagreements']} "
          f"disagreement(s) with the exact rule")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    settings = build(DetectorSettings, args, "DETECTOR")
    from detector.tail import tail

    tail(settings.kafka, args.topic, args.from_beginning, _stop_on_signals(), limit=args.limit)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.demo import demo

    if args.column and not args.csv:
        raise UsageError("--column needs --csv FILE")
    if args.csv and not args.column:
        raise UsageError("--csv needs at least one --column")
    return demo(duration=args.duration, streams=args.streams, rate=args.rate, model=args.model,
                metrics_port=args.metrics_port, csv=args.csv, columns=tuple(args.column or ()),
                runtime=_runtime(args))


def cmd_convert(args: argparse.Namespace) -> int:
    from detector.serving import resolve_model_path

    path = resolve_model_path(args.model)
    try:
        from detector.conversion import export_tflite
    except ImportError as exc:
        raise ConfigError(f"converting needs TensorFlow, which is not installed ({exc.name}): "
                          "pip install 'trend-detector[train]'") from None
    from detector.evaluation import battery

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


def cmd_config(args: argparse.Namespace) -> int:
    from detector.config import markdown_table

    print("### Detector (`python -m detector run`)\n")
    print(markdown_table(DetectorSettings, "DETECTOR"))
    print("\n### Alertmanager bridge (`python -m detector alertmanager`)\n")
    print(markdown_table(BridgeSettings, "DETECTOR"))
    print("\n### Producer (`python -m producer`)\n")
    print(markdown_table(ProducerSettings, "PRODUCER"))
    return 0


# --- the parser ----------------------------------------------------------------------------


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

    run = command("run", cmd_run, "Consume values, publish flags and alerts. Every option "
                  "--x-y is also the environment variable DETECTOR_X_Y.")
    add_options(run, DetectorSettings, "DETECTOR")

    bridge = command("alertmanager", cmd_alertmanager,
                     "Post the alert topic's runs to Alertmanager (one alert per run, firing "
                     "then resolved). Every option --x-y is also the environment variable "
                     "DETECTOR_X_Y.")
    add_options(bridge, BridgeSettings, "DETECTOR")

    train = command("train", cmd_train, "Train a model; write .keras, model card and curves.")
    train.add_argument("--features", choices=("seed", "pair"), required=True)
    train.add_argument("--epochs", type=_count, help="default: the feature set's recipe")
    train.add_argument("--events", type=_count,
                       help="training events (default: the feature set's recipe)")
    train.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
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
    ev.add_argument("--events", type=_count, default=100_000, help="uniform events")
    ev.add_argument("--streams", type=_count, default=10, help="uniform streams")
    ev.add_argument("--seed", type=_seed, default=12345)
    ev.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    ev.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    rep = command("reproduce", cmd_reproduce, "The seed's own experiment, reproduced.")
    rep.add_argument("--seeds", type=_count, default=3, help="random seeds per feature set")
    rep.add_argument("--epochs", type=_count, default=200, help="the seed's 200 by default")

    plot = command("plot", cmd_plot, "Draw a stream (fresh uniform, or a CSV column) with model "
                   "and rule flags.")
    plot.add_argument("--model", default="seed", help=MODEL_HELP)
    plot.add_argument("--csv", help="draw a column of this CSV instead of fresh values")
    plot.add_argument("--column", help="the column of --csv (default: the first numeric one)")
    plot.add_argument("--start", type=_seed, default=0, help="first row of --csv to draw")
    plot.add_argument("--events", type=_count, default=120)
    plot.add_argument("--seed", type=_seed, default=7)
    plot.add_argument("--out", default="stream.png")
    plot.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    tail = command("tail", cmd_tail, "Print one readable line per record of a topic.")
    tail.add_argument("--topic", default="trend-alerts")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--limit", type=_count, help="stop after this many records")
    add_options(tail, DetectorSettings, "DETECTOR")

    demo = command("demo", cmd_demo, "Local broker + producer + detector, alerts on screen.")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--streams", type=_count, default=30)
    demo.add_argument("--rate", type=float, default=300.0, help="events/s over all streams")
    demo.add_argument("--model", default="seed", help=MODEL_HELP)
    demo.add_argument("--metrics-port", type=int, default=9108)
    demo.add_argument("--csv", metavar="FILE", help="replay columns of this CSV instead of "
                      "random values")
    demo.add_argument("--column", action="append", metavar="NAME",
                      help="a CSV column to replay as a stream (repeat for more)")
    demo.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    conv = command("convert", cmd_convert, "Convert a model's serving step to LiteRT (.tflite "
                   "beside the .keras) and record both hashes and their agreement on its card.")
    conv.add_argument("--model", required=True, help=MODEL_HELP)

    command("config", cmd_config, "Print the configuration tables (Markdown).")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except DetectorError as exc:
        print(f"detector: error: {exc}", file=sys.stderr)
        return exc.exit_code
