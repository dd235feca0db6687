"""``python -m producer``: random values for many streams, or a CSV's columns replayed, into
Kafka. Never imports TensorFlow."""

from __future__ import annotations

import signal
import sys
import threading

from kafka.errors import KafkaError

from detector.errors import DetectorError
from detector.settings.fields import Parser, add_options, build
from detector.settings.producer import ProducerSettings


def parser() -> Parser:
    p = Parser(
        prog="producer",
        description="Emit random values for many independent streams to a Kafka topic, or "
        "replay columns of a CSV file (--from-csv FILE --column NAME ...). Every option --x-y "
        "is also the environment variable PRODUCER_X_Y.",
    )
    add_options(p, ProducerSettings, "PRODUCER")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        settings = build(ProducerSettings, args, "PRODUCER")
        from producer.publish import open_source, publish  # after parsing: --help stays instant

        publish(settings, stop, source=open_source(settings))
    except DetectorError as exc:
        print(f"producer: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaError as exc:
        print(f"producer: error: Kafka: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
