"""The bundled broker, Tansu, as the programs meet it: recognised by its cluster id, given fewer
and larger batches, and a partition it stops serving reported by ``/healthz``."""

from __future__ import annotations

import json

import pytest

from detector.kafka import topics
from detector.kafka.outbox import Outbox
from detector.kafka.tansu import TANSU_LINGER_MS, is_tansu, linger_ms
from tests.support import DetectorThread, settings, wait_for

pytestmark = pytest.mark.broker


def test_tansu_is_recognised_and_gets_larger_batches_unless_set(tansu, kafka):
    assert is_tansu(tansu) and not is_tansu(kafka)
    linger, why = linger_ms(None, 5, tansu)
    assert linger == TANSU_LINGER_MS == 250 and "whose fetches slow down" in why
    assert linger_ms(7, 5, tansu) == (7, "")  # --linger-ms given: as given
    assert linger_ms(None, 5, kafka) == (5, "")  # Apache Kafka: the default


#: Batches of one record each in a partition: enough for Tansu's listing of them to outlast a
#: 10 ms fetch wait on this machine (16,000 already do, now and then).
BATCHES = 25_000


@pytest.mark.slow
def test_a_partition_tansu_stops_serving_makes_healthz_say_so(tansu, steps):
    """A fetch wait of 10 ms (the default before this was found) against a partition of
    25,000 batches: Tansu's fetches come back empty once listing them outlasts the wait (here
    from the first record on), the detector's checkpoints go on committing, and /healthz must
    not say ready; the lag metric shows the partition too, though it never returned a record."""
    topic = "values"
    topics.ensure_topics(tansu, [topics.TopicSpec(topic, 1)])
    out = Outbox(tansu, [topic])
    for i in range(BATCHES):
        out.append(topic, 0, b"s-0", json.dumps({"stream": "s-0", "seq": i,
                                                  "value": i % 7}).encode())
        mark = out.flush()  # one batch a record
        if i % 1000 == 999:  # acknowledged as they go: Tansu slows as the partition grows
            out.wait(mark, 120)
    out.wait(out.flush(), 120)
    out.close()
    det = DetectorThread(settings(tansu, fetch_max_wait_ms=10, partitions=1), steps("seed"))
    det.start()
    try:
        wait_for(lambda: "not moved for 3 checkpoints" in det.pipeline.not_ready_because(),
                 180, what="/healthz to report the stalled partition")
        assert det.value("detector_events_processed_total") < BATCHES
        assert det.value("detector_consumer_lag", {"partition": "0"}) > 0
        assert det.value("detector_ready") == 0
    finally:
        det.stop()


def test_tail_of_new_records_starts_at_the_end_a_fetch_reports(tansu):
    """Tansu's ListOffsets(latest) falls short of a partition's end (here by a batch of three,
    by many when it is busy): tail without --from-beginning must not print those old records
    as new."""
    import threading
    import time

    from detector.cli.tail import tail

    topics.ensure_topics(tansu, [topics.TopicSpec("alerts", 1)])
    out = Outbox(tansu, ["alerts"])
    for i in range(50):
        for j in range(3):
            out.append("alerts", 0, b"k", f"old {3 * i + j}".encode())
        out.flush()
    out.wait(out.flush(), 30)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: tail(tansu, "alerts", False, threading.Event(),
                                                  limit=1, out=lines.append))
    reader.start()
    time.sleep(5)  # tail finds where the partition ends (a fetch) before the new record
    out.append("alerts", 0, b"k", b"new")
    out.wait(out.flush(), 30)
    out.close()
    reader.join(60)
    assert lines == ["new"]

