"""Idle streams are forgotten: tombstones on the state topic, memory flat under churn."""

import json

import numpy as np
import pytest

from detector.kafka.checkpoint import Checkpointer
from detector.stream.engine import Batch, Engine
from tests.support import DetectorThread, read_topic, send, settings, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_memory_stays_flat_while_many_streams_pass_through(steps):
    """300,000 distinct streams, about 2,000 alive at a time: slots and index are reused."""
    clock = Clock()
    engine = Engine(steps("seed"), wall_clock=clock)
    checkpoints = Checkpointer(engine.store, lambda _: b"fp",
                               lambda p: np.full(len(p), 7, np.uint64), "state", 1.0, 60.0,
                               stream_ttl_s=5.0, wall_clock=clock)
    capacity = []
    for start in range(0, 300_000, 20_000):
        ids = [f"churn-{i}" for i in range(start, start + 20_000)]
        for chunk in range(0, 20_000, 2_000):  # each stream sends 3 events, then goes quiet
            names = ids[chunk:chunk + 2_000] * 3
            engine.process(Batch.of(names, np.random.default_rng(chunk).random(6_000),
                                    seq=np.repeat(np.arange(3), 2_000)))
            clock.now += 1.0
            pending = checkpoints._snapshot(0, {})
            assert all(key.startswith(b"churn-") and value is None
                       for key, _, value in pending.extra)
        capacity.append(engine.store.capacity)
    assert checkpoints.take_evicted() >= 290_000
    assert len(engine.store) <= 12_000
    assert capacity[-1] == capacity[5] <= 16_384  # no growth after the first few rounds
    assert len(engine.store.index) == len(engine.store)


@pytest.mark.broker
def test_idle_stream_gets_a_tombstone_and_starts_afresh(kafka, steps):
    def events(stream, seqs, values):
        return [(stream.encode(), json.dumps({"stream": stream, "seq": s, "value": v}).encode())
                for s, v in zip(seqs, values, strict=True)]

    send(kafka, kafka.values, events("idle", range(4), [1, 2, 3, 4]))
    det = DetectorThread(settings(kafka, stream_ttl="3s"), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 4, 60)
        wait_for(lambda: det.value("detector_streams_evicted_total") >= 1, 30,
                 what="the idle stream to be forgotten")
        assert det.value("detector_active_streams") == 0
        send(kafka, kafka.values, events("idle", range(4, 7), [5, 6, 7]))  # it comes back, rising
        wait_for(lambda: det.value("detector_events_processed_total") >= 7, 60)
    finally:
        det.stop()
    # its records: under "idle" and the writer token of this ownership of its partition
    state = [r for r in read_topic(kafka, kafka.state) if r.key[:-8] == b"idle"]
    assert state[-1].value is not None  # written again since
    assert any(r.value is None for r in state)  # the tombstone
    flags = {r.json()["seq"]: r.json() for r in read_topic(kafka, kafka.flags, expect=7)}
    assert [flags[s]["rule_flag"] for s in range(7)] == [0, 0, 1, 1, 0, 0, 1]  # afresh at 4
    assert flags[4]["direction"] == "flat"
