"""How long a detector takes to restore a large state log, and whether it keeps its place in
the group meanwhile (issue 31, item 2).

    python bench/restore.py [--records 2000000] [--streams 20000] [--broker kafka|tansu]

A state topic of ``--records`` state records (``--streams`` streams, each written
``records / streams`` times: a log compaction has not reduced) is written straight to a fresh
broker; then a detector process is started in the group and restores it. Reported: the write
rate, the restore's time and rate (its own metrics), the time until the detector is ready,
and whether it was expelled or rejoined meanwhile (it must not be).
"""

from __future__ import annotations

import argparse
import time

from detector.kafka import topics
from detector.model.serving import ModelStep
from detector.testing.harness import DetectorProcess, wait_for
from detector.testing.state_log import write_state_log

from common import add_broker_option, broker_name, fmt_rate, save, say, start_broker, table

#: A test's session: a restore that held the heartbeat this long would be expelled.
SESSION = {"DETECTOR_SESSION_TIMEOUT_MS": "6000", "DETECTOR_HEARTBEAT_INTERVAL_MS": "2000"}


def restore(kafka, records: int, streams: int, partitions: int = 6,  # type: ignore[no-untyped-def]
            progress=say) -> dict:
    """Write the log, start a detector, measure its restore."""
    from tests.support import ScopedKafka  # names of its own on a shared broker

    scoped = kafka if isinstance(kafka, ScopedKafka) else ScopedKafka(**kafka.__dict__)
    topics.ensure_topics(scoped, [topics.TopicSpec(scoped.values, partitions),
                                  topics.changelog(scoped.state, partitions, "state")])
    seed = ModelStep.load("seed")
    started = time.monotonic()
    write_state_log(scoped, scoped.state, partitions, streams, records, seed.fingerprint,
                    progress=lambda n: progress(f"  wrote {n:,} state records"))
    wrote_s = time.monotonic() - started
    det = DetectorProcess(scoped, **scoped.env(), **SESSION).start()
    try:
        wait_for(lambda: det.healthz() == 200, 1800, every=0.5,
                 what=lambda: det.output()[-2000:])
        ready_s = time.monotonic() - det.started
        m = det.metrics()
        restored = m.get("detector_state_restore_records_total", 0)
        seconds = m.get("detector_state_restore_seconds_sum", 0)
        rejoins = sum(v for k, v in m.items() if k.startswith("detector_group_rejoins_total"))
        expelled = det.output().count("lost: this member was dropped")
        streams_held = m.get("detector_active_streams", 0)
    finally:
        det.close()
    return {"records": records, "streams": streams, "write_s": round(wrote_s, 1),
            "restore_records": int(restored), "restore_s": round(seconds, 1),
            "restore_rate": round(restored / seconds) if seconds else None,
            "ready_s": round(ready_s, 1), "rejoins": int(rejoins), "expelled": expelled,
            "streams_held": int(streams_held)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--streams", type=int, default=20_000)
    add_broker_option(p)
    args = p.parse_args()
    say(f"restore of {args.records:,} state records of {args.streams:,} streams on "
        f"{broker_name(args.broker)}")
    from detector.settings.kafka import KafkaSettings

    with start_broker(args.broker) as broker:
        result = restore(KafkaSettings(bootstrap_servers=broker.bootstrap), args.records,
                         args.streams)
    say(table(["records", "streams", "write s", "restore s", "records/s", "ready after s",
               "rejoins", "expelled"],
              [[f"{result['records']:,}", f"{result['streams']:,}", result["write_s"],
                result["restore_s"], fmt_rate(result["restore_rate"] or 0),
                result["ready_s"], result["rejoins"], result["expelled"]]]))
    save("latest-restore", {"broker": broker_name(args.broker), "result": result},
         f"python bench/restore.py --records {args.records} --streams {args.streams} "
         f"--broker {args.broker}")


if __name__ == "__main__":
    main()
