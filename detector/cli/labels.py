"""Ground truth from the command line: ``label`` writes labels, ``score`` joins them with the
flags of the live model and the candidate (``--once``: a report; else a service with metrics).
Every option --x-y is also the environment variable DETECTOR_X_Y."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from detector.cli.common import Command, setup_logging, stop_on_signals
from detector.errors import UsageError
from detector.labels import codec
from detector.labels.codec import FIELDS, Label, LabelError
from detector.settings.fields import add_options, build
from detector.settings.labels import LabelSettings, ScoreSettings

if TYPE_CHECKING:
    from detector.labels.scorer import Scorer

#: How often the long-running scorer logs its figures.
SUMMARY_EVERY_S = 60.0


def _one(args: argparse.Namespace) -> Label:
    """The label the options describe (``--stream`` with a range, or ``--run``)."""
    body: dict = {"id": args.id, "source": args.source, "comment": args.comment}
    if args.run:
        stream, sep, start = args.run.rpartition(":")
        if not sep or not start.isdigit():
            raise UsageError(f"--run {args.run!r}: expected STREAM:START_SEQ (the run alert's "
                             "stream and start_seq)")
        if args.verdict is None or args.kind is not None:
            raise UsageError("--run needs --right or --wrong (and no --pattern, --no-pattern "
                             "or --ignore)")
        body |= {"stream": stream, "run_start_seq": int(start), "verdict": args.verdict}
        what = f"run:{start}"
    else:
        if args.kind is None or args.verdict is not None:
            raise UsageError("--stream needs --pattern, --no-pattern or --ignore (a verdict is "
                             "on a run: --run STREAM:START_SEQ --right|--wrong)")
        seqs, times = (args.from_seq, args.to_seq), (args.from_ts, args.to_ts)
        if any(v is not None for v in seqs) == any(v is not None for v in times):
            raise UsageError("--stream needs --from-seq and --to-seq, or --from-ts and --to-ts")
        if any(v is not None for v in seqs):
            body |= {"from_seq": _int(args.from_seq),
                     "to_seq": _int(args.to_seq)}
            what = f"seq:{args.from_seq}-{args.to_seq}"
        else:
            body |= {"from_ts": args.from_ts, "to_ts": args.to_ts}
            what = f"ts:{args.from_ts}-{args.to_ts}"
        body |= {"stream": args.stream, "label": args.kind}
    body["id"] = body["id"] or codec.default_id(body["stream"], what)
    return codec.parse(body)


def _int(text: str | None) -> int | str | None:
    """A seq as given: an integer when it reads as one, else the text (``parse`` says why)."""
    return int(text) if text is not None and text.strip().isdigit() else text


def read_csv(path: Path) -> list[Label]:
    """Every label of a CSV whose header names label fields (``codec.FIELDS``; ``id``
    optional); each mistake is one line naming the row, found before anything is written."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    if not rows:
        raise UsageError(f"{path}: empty; the first row names the columns ({', '.join(FIELDS)})")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in FIELDS]
    if unknown or len(set(header)) != len(header):
        raise UsageError(f"{path}: column {(unknown or header)[0]!r} is "
                         f"{'not a label field' if unknown else 'named twice'} (fields: "
                         f"{', '.join(FIELDS)})")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        body = {h: row[i].strip() for i, h in enumerate(header) if i < len(row) and row[i].strip()}
        for name in ("from_seq", "to_seq", "run_start_seq"):
            if name in body:
                body[name] = _int(body[name])
        try:
            if "id" not in body and "stream" in body:
                what = (f"run:{body.get('run_start_seq')}" if "run_start_seq" in body else
                        f"seq:{body.get('from_seq')}-{body.get('to_seq')}" if "from_seq" in body
                        else f"ts:{body.get('from_ts')}-{body.get('to_ts')}")
                body["id"] = codec.default_id(body["stream"], what)
            out.append(codec.parse(body))
        except LabelError as exc:
            raise UsageError(f"{path}: row {number}: {exc}") from None
    return out


def cmd_label(args: argparse.Namespace) -> int:
    given = [o for o in ("stream", "run", "csv") if getattr(args, o)]
    if len(given) != 1:
        raise UsageError("label needs one of --stream S (a range), --run S:START_SEQ (a "
                         "verdict) or --csv FILE (many)")
    settings = build(LabelSettings, args, "DETECTOR")
    if args.csv:
        single = [o for o in ("id", "from_seq", "to_seq", "from_ts", "to_ts", "kind", "verdict",
                              "source", "comment") if getattr(args, o) is not None]
        if single:
            raise UsageError(f"--{single[0].replace('_', '-')} does not apply with --csv (each "
                             "row says it)")
        labels = read_csv(Path(args.csv))
    else:
        labels = [_one(args)]
    from detector.labels import topic

    topic.write(settings.kafka, settings.labels, labels)
    kinds = {kind: sum(1 for label in labels if label.kind == kind) for kind in codec.KINDS}
    if not args.csv:
        print(codec.encode(labels[0]).decode())
    print(f"wrote {len(labels)} label(s) to {settings.labels.labels_topic} ("
          + ", ".join(f"{kind} {n}" for kind, n in kinds.items() if n) + ")")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.json and not args.once:
        raise UsageError("--json needs --once (the service's figures are its metrics)")
    settings = build(ScoreSettings, args, "DETECTOR")
    setup_logging()
    log = logging.getLogger("detector")
    from detector.labels.scorer import Scorer
    from detector.ops.server import MetricsServer

    stop = stop_on_signals()
    scorer = Scorer(settings, stop)
    try:
        if args.once:
            scorer.connect(wait=False)
            while not scorer.caught_up() and not stop.is_set():
                scorer.step(timeout_ms=50)
            print_report(scorer.report(), args.json)
            return 0
        server = MetricsServer(scorer.metrics, settings.metrics_host, settings.metrics_port,
                               scorer.not_ready_because).start()
        try:
            scorer.connect()
            log.info("scoring %s against labels of %s; metrics on %s",
                     " and ".join(f"{t} ({r})" for t, r in scorer.roles.items()),
                     settings.labels.labels_topic, server.url)
            _serve(scorer, log)
        finally:
            server.stop()
    finally:
        scorer.close()
    log.info("stopped cleanly")
    return 0


def _serve(scorer: Scorer, log: logging.Logger) -> None:
    last = time.monotonic()
    while not scorer.stop.is_set():
        scorer.tick()
        if time.monotonic() - last >= SUMMARY_EVERY_S:
            last = time.monotonic()
            log.info("figures: %s", json.dumps(scorer.report()["models"]))


def print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    from detector.labels.figures import show

    kinds = ", ".join(f"{kind} {n}" for kind, n in report["labels"].items())
    events = report["labeled_events"]
    print(f"labels: {sum(report['labels'].values())} ({kinds}); {report['labels_too_late']} too "
          f"late; labeled events with flags: {events['pattern']} pattern, "
          f"{events['no_pattern']} no_pattern")
    print(f"{'model':<16} {'version':>7} {'role':<9} {'events':>8} {'tp':>7} {'fp':>7} "
          f"{'fn':>7} {'tn':>7} {'accuracy':>8} {'precision':>9} {'recall':>7} {'F1':>7}")
    for m in report["models"]:
        print(f"{m['name']:<16} {m['version']:>7} {m['role']:<9} {m['events']:>8} {m['tp']:>7} "
              f"{m['fp']:>7} {m['fn']:>7} {m['tn']:>7} {show(m['accuracy']):>8} "
              f"{show(m['precision']):>9} {show(m['recall']):>7} {show(m['f1']):>7}")
    for r in report["runs"]:
        print(f"runs of {r['name']} v{r['version']} labeled {r['verdict']}: {r['runs']}")
    none = report["verdicts_without_run"]
    if any(none.values()):
        print(f"verdicts on no run: {none['no_run']} (the live flag there is 0), "
              f"{none['not_seen']} (no live flag of that event found)")


def add_commands(command: Command) -> None:
    label = command("label", cmd_label, "Write ground-truth labels to the label topic: a range "
                    "of a stream's events (--stream with --from-seq/--to-seq or "
                    "--from-ts/--to-ts, and --pattern, --no-pattern or --ignore), a verdict on "
                    "a run alert (--run STREAM:START_SEQ --right|--wrong), or a CSV of them. "
                    "Every option --x-y is also the environment variable DETECTOR_X_Y.")
    label.add_argument("--stream", help="the stream the range is of")
    label.add_argument("--from-seq", help="the range's first seq")
    label.add_argument("--to-seq", help="the range's last seq (inclusive)")
    label.add_argument("--from-ts", help="instead of seqs: the first event time (epoch seconds "
                       "or ISO-8601), for input without a seq of its own")
    label.add_argument("--to-ts", help="the last event time (inclusive)")
    kind = label.add_mutually_exclusive_group()
    for flag, value, help in (("--pattern", "pattern", "every event of the range is one where "
                               "the pattern is complete"),
                              ("--no-pattern", "no_pattern", "no event of the range is"),
                              ("--ignore", "ignore", "leave the range's events out of scores "
                               "and training")):
        kind.add_argument(flag, dest="kind", action="store_const", const=value, help=help)
    label.add_argument("--run", metavar="STREAM:START_SEQ", help="a run alert, by its stream "
                       "and start_seq")
    verdict = label.add_mutually_exclusive_group()
    verdict.add_argument("--right", dest="verdict", action="store_const", const="right",
                         help="the run was worth the alert")
    verdict.add_argument("--wrong", dest="verdict", action="store_const", const="wrong",
                         help="a false alarm")
    label.add_argument("--csv", help="import the labels of a CSV file: a header naming label "
                       f"fields ({', '.join(FIELDS)}), one label a row")
    label.add_argument("--id", help="the label's id (default: the stream and what it labels, "
                       "so labeling the same range or run again replaces the label)")
    label.add_argument("--source", help="who or what says so")
    label.add_argument("--comment", help="why")
    add_options(label, LabelSettings, "DETECTOR")

    score = command("score", cmd_score, "Join the labels with the live model's and the "
                    "candidate's flags: precision and recall per model version, as metrics "
                    "(a service) or once as a report. Every option --x-y is also the "
                    "environment variable DETECTOR_X_Y.")
    score.add_argument("--once", action="store_true", help="read every label and its flags, "
                       "print the figures and exit")
    score.add_argument("--json", action="store_true", help="with --once: one JSON object")
    add_options(score, ScoreSettings, "DETECTOR")
