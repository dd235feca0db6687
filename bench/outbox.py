"""Per-record cost of the output path: the outbox against ``KafkaProducer.send``.

    python bench/outbox.py [--records 100000] [--rounds 5]

Flag-sized records (a real output record's length) to 6 partitions of a fresh local broker,
keys over 1,000 streams. Per record, in µs on the calling thread: appending to the outbox
(kafka-python's batch builder), then with the batches built and handed to the I/O thread
(``flush``), then until every request is acknowledged; kafka-python's batch builder alone
(what the outbox adds is the rest); and ``send`` (its future, the partition's accumulator),
then until ``flush`` returns. The median round of each is reported:
the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kafka.record.default_records import DefaultRecordBatchBuilder

from detector.kafka import clients, topics
from detector.kafka.outbox import MAGIC, Outbox
from detector.settings.kafka import KafkaSettings
from detector.testing.local_broker import LocalBroker

from common import say, table

#: An output record as the detector writes it (encode_flag), 221 bytes.
RECORD = (b'{"stream":"s-123","seq":4567,"value":0.7340123,"flag":1,"probability":0.912345,'
          b'"direction":"up","rule_flag":1,"model":"pair","source":{"partition":3,"offset":'
          b'123456},"ts":1764179385.123456,"detected_at":1764179385.135791}')


def per_record_us(seconds: list[float], n: int) -> str:
    return f"{statistics.median(seconds) * 1e6 / n:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    n = args.records
    keys = [b"s-%d" % (i % 1000) for i in range(n)]
    parts = [i % 6 for i in range(n)]
    with LocalBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        topics.ensure_topics(kafka, [topics.TopicSpec("outbox", 6),
                                       topics.TopicSpec("send", 6)])
        outbox = Outbox(kafka, ["outbox"])
        producer = clients.producer(kafka, acks="all", linger_ms=5, batch_size=256 * 1024,
                                     max_request_size=4 << 20)
        producer.partitions_for("send")
        appended, flushed, acked, built, sent, flushed_send = [], [], [], [], [], []
        try:
            for _ in range(args.rounds):  # interleaved, so both see the same machine
                append = outbox.append
                t0 = time.perf_counter()
                for key, part in zip(keys, parts, strict=True):
                    append("outbox", part, key, RECORD)
                t1 = time.perf_counter()
                mark = outbox.flush()
                t2 = time.perf_counter()
                outbox.wait(mark, 120)
                t3 = time.perf_counter()
                appended.append(t1 - t0)
                flushed.append(t2 - t0)
                acked.append(t3 - t0)

                builder = DefaultRecordBatchBuilder(MAGIC, 0, False, -1, -1, -1, 1 << 30)
                t0 = time.perf_counter()
                for i, key in enumerate(keys):
                    builder.append(i, None, key, RECORD, ())
                built.append(time.perf_counter() - t0)

                send = producer.send
                t0 = time.perf_counter()
                for key, part in zip(keys, parts, strict=True):
                    send("send", key=key, value=RECORD, partition=part)
                t1 = time.perf_counter()
                producer.flush()
                t2 = time.perf_counter()
                sent.append(t1 - t0)
                flushed_send.append(t2 - t0)
        finally:
            outbox.close()
            producer.close()
    say(f"{n:,} records of {len(RECORD)} bytes, median of {args.rounds} rounds (µs a record)\n")
    say(table(["path", "on the caller", "+ batches built and sent", "until acknowledged"], [
        ["Outbox.append", per_record_us(appended, n), per_record_us(flushed, n),
         per_record_us(acked, n)],
        ["DefaultRecordBatchBuilder.append alone", per_record_us(built, n), "", ""],
        ["KafkaProducer.send", per_record_us(sent, n), "", per_record_us(flushed_send, n)],
    ]))


if __name__ == "__main__":
    main()
