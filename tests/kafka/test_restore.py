"""A state log of 2,000,000 records that compaction has not reduced, restored by a detector on
Apache Kafka without losing its place in the group: the restore runs between the loop's polls
(heartbeats go on), and its timeout is measured by progress, not a fixed 60 s
(``bench/restore.py`` reports the time and rate)."""

from __future__ import annotations

import pytest

from detector.kafka import topics
from detector.model.serving import ModelStep
from detector.testing.state_log import write_state_log
from tests.support import DetectorProcess, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RECORDS, STREAMS = 2_000_000, 20_000


def test_two_million_state_records_restore_without_the_member_being_expelled(kafka):
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6),
                                 topics.changelog(kafka.state, 6, "state")])
    last = write_state_log(kafka, kafka.state, 6, STREAMS, RECORDS,
                           ModelStep.load("seed").fingerprint)
    det = DetectorProcess(kafka).start()  # a 6 s session: a restore that held it is expelled
    try:
        wait_for(lambda: det.healthz() == 200, 600, every=1, what=lambda: det.output()[-2000:])
        m = det.metrics()
        assert m["detector_active_streams"] == STREAMS == len(last)
        assert m["detector_state_restore_records_total"] >= RECORDS
        assert not any(v for k, v in m.items() if k.startswith("detector_group_rejoins_total"))
        assert "lost: this member was dropped" not in det.output()
        assert "state restore" not in det.output()  # no failed restore, no recovery
        print(f"restored {RECORDS:,} records in {m['detector_state_restore_seconds_sum']:.0f} s")
    finally:
        det.close()
