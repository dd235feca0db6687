"""Exactly-once on Apache Kafka (``--processing-guarantee exactly-once``): each checkpoint one
transaction of its outputs, state and input offsets; a read_committed reader sees every flag
and every run's firing and resolution once, whatever the members and brokers go through.

The round (three nodes): under live input, six members SIGKILLed (each replaced), two stopped
past their session (zombies, then continued), the broker leading most partitions killed and
back, and a model promotion. Once in ``make test``, five times in ``make test-faults``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections import Counter

import pytest

from detector.kafka import clients, topics
from detector.kafka.registry import Registry
from detector.stream.codec import decode_run
from detector.stream.engine import Batch, Engine
from detector.stream.mapping import decode_event
from tests.kafka.test_broker_faults import feed_acked, leaders
from tests.kafka.test_rollout import push_shipped
from tests.support import (
    DetectorProcess,
    ScopedKafka,
    all_closed,
    covered,
    expected_flags,
    read_topic,
    send,
    settings,
    uncovered,
    uniform_events,
    wait_for,
)

# make test-faults runs the three-node tests one at a time, on one worker (xdist_group)
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.xdist_group("three-nodes")]

STREAMS, PER_STREAM, RATE = 48, 500, 400.0  # 24,000 events over about 60 s


def eos(member_dir: str, **env: str) -> dict[str, str]:
    return {"DETECTOR_PROCESSING_GUARANTEE": "exactly-once", "DETECTOR_MEMBER_DIR": member_dir,
            **env}


def expected_runs(step, records: list[tuple[bytes, bytes]]) -> Counter:
    """(stream, start seq, status) of every run record an uninterrupted run writes."""
    events = [decode_event(k, v) for k, v in records]
    res = Engine(step, alert_min_length=3).process(
        Batch.of([e.stream for e in events], [e.value for e in events],
                 seq=[e.seq for e in events]))
    return Counter((events[r.index].stream, r.start_seq, r.status) for r in res.runs)


def exactly_once(kafka: ScopedKafka, step, records: list[tuple[bytes, bytes]]) -> None:
    """Every flag once and equal to an uninterrupted run's; every run record once."""
    flags = read_topic(kafka, kafka.flags, settle=2.0, timeout=120)
    seen = Counter((r.json()["stream"], r.json()["seq"]) for r in flags)
    want = expected_flags(step, records)
    assert set(seen) == set(want) and max(seen.values()) == 1, \
        f"{len(seen)} of {len(want)} events, {sum(seen.values()) - len(seen)} duplicates"
    assert all(r.json()["flag"] == want[(r.json()["stream"], r.json()["seq"])] for r in flags)
    runs, swapped = Counter(), set()
    for r in read_topic(kafka, kafka.alerts, settle=2.0, timeout=60):
        run = decode_run(r.value)
        runs[(run.stream, run.start_seq, run.status)] += 1
        if run.reason:  # resolved at the promotion (a run is its model's): one starts afresh
            swapped.add(run.stream)
    assert max(runs.values()) == 1, [k for k, n in runs.items() if n > 1][:10]
    fired = {k[:2] for k in runs if k[2] == "firing"}
    assert {k[:2] for k in runs if k[2] == "resolved"} <= fired
    want = expected_runs(step, records)
    assert (Counter({k: n for k, n in runs.items() if k[0] not in swapped})
            == Counter({k: n for k, n in want.items() if k[0] not in swapped})), \
        "run records of streams the promotion did not cut differ from an uninterrupted run"


def eos_round(kafka: ScopedKafka, cluster, step, seed: int) -> None:
    records = uniform_events(STREAMS, PER_STREAM, seed=seed)
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6)])
    registry = Registry(kafka, kafka.models)
    push_shipped(registry, "trend", "seed")
    push_shipped(registry, "trend", "pair")  # v2, promoted halfway
    env = eos(tempfile.mkdtemp())
    dets = [DetectorProcess(kafka, model="trend", **env).start() for _ in range(2)]
    started = list(dets)

    def replace(det: DetectorProcess) -> None:
        det.kill()
        dets.remove(det)
        dets.append(DetectorProcess(kafka, model="trend", **env).start())
        started.append(dets[-1])

    def zombie(det: DetectorProcess) -> None:
        os.kill(det.proc.pid, signal.SIGSTOP)
        time.sleep(9)  # past its 6 s session: the group moves on without it
        os.kill(det.proc.pid, signal.SIGCONT)

    feeder = threading.Thread(target=feed_acked, args=(kafka, records, RATE), daemon=True)
    try:
        with all_closed(started):
            wait_for(lambda: all(d.healthz() == 200 for d in dets), 90,
                     what="two members ready")
            feeder.start()
            for at, fault in enumerate(["kill", "stop", "kill", "broker", "kill", "promote",
                                        "kill", "stop", "kill", "kill"]):
                time.sleep(4)
                if fault == "kill":
                    replace(dets[(seed + at) % len(dets)])
                elif fault == "stop":
                    zombie(dets[(seed + at) % len(dets)])
                elif fault == "broker":
                    node = leaders(kafka).most_common(1)[0][0]
                    cluster.kill(node)
                    time.sleep(6)
                    cluster.start_node(node)
                else:
                    registry.change("trend", "promote", 2)
            feeder.join(240)
            want = expected_flags(step, records)
            wait_for(lambda: covered(kafka, kafka.flags, want), 240, every=2,
                     what=lambda: uncovered(kafka, kafka.flags, want))
            aborted = sum(v for d in dets for k, v in d.metrics().items()
                          if k.startswith("detector_transactions_total") and "aborted" in k)
    finally:
        registry.close()
    exactly_once(kafka, step, records)
    print(f"round {seed}: every flag and run once; {aborted:g} transactions aborted by the "
          "members still running")


#: Not yet reliable (issue 33 stays open): in 2 of 12 rounds here, the outputs of about a second
#: of input around the broker's kill (344 events) never became visible. ``make test-eos`` runs
#: them; make test and .ci/run do not.
@pytest.mark.eos
@pytest.mark.timeout(600)
def test_exactly_once_through_kills_zombies_a_broker_and_a_promotion(kafka3, kafka_cluster,
                                                                      steps):
    eos_round(kafka3, kafka_cluster, steps("seed"), seed=1)


@pytest.mark.eos
@pytest.mark.timeout(600)
@pytest.mark.parametrize("round_no", range(2, 7))
def test_exactly_once_rounds(kafka3, kafka_cluster, steps, round_no):
    eos_round(kafka3, kafka_cluster, steps("seed"), seed=round_no)


def test_a_zombie_is_fenced_and_none_of_its_writes_become_visible(kafka, steps):
    """A member stopped past its session while its transaction is open, continued after the
    group moved on: its commit is refused (KIP-447: a stale generation), its transaction
    aborted, and a read_committed reader sees every flag once."""
    records = uniform_events(24, 300, seed=11)
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6)])
    env = eos(tempfile.mkdtemp())
    dets = [DetectorProcess(kafka, **env).start() for _ in range(2)]
    feeder = threading.Thread(target=feed_acked, args=(kafka, records, 300.0), daemon=True)
    with all_closed(dets):
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two members ready")
        feeder.start()
        time.sleep(5)
        zombie = dets[0]
        os.kill(zombie.proc.pid, signal.SIGSTOP)
        wait_for(lambda: dets[1].metric("detector_assigned_partitions") == 6, 60,
                 what="the other member to take every partition")
        time.sleep(3)
        os.kill(zombie.proc.pid, signal.SIGCONT)
        wait_for(lambda: (zombie.metric('detector_transactions_total{outcome="aborted"}')
                          or 0) >= 1, 60, what="the zombie's transaction aborted")
        feeder.join(120)
        want = expected_flags(steps("seed"), records)
        wait_for(lambda: covered(kafka, kafka.flags, want), 120, every=1,
                 what=lambda: uncovered(kafka, kafka.flags, want))
        exactly_once(kafka, steps("seed"), records)


def test_outputs_are_visible_again_within_30_s_of_a_sigkill(kafka, steps):
    """A member killed in the middle of its transaction (and not restarted): Kafka aborts
    the transaction after its timeout, and read_committed readers see new flags again."""
    records = uniform_events(24, 400, seed=9)  # about 48 s at 200/s
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.values, 6)])
    env = eos(tempfile.mkdtemp())
    dets = [DetectorProcess(kafka, **env).start() for _ in range(2)]
    arrivals: list[tuple[float, int]] = []
    halt = threading.Event()
    reader = threading.Thread(target=tail_committed, args=(kafka, arrivals, halt), daemon=True)
    feeder = threading.Thread(target=feed_acked, args=(kafka, records, 200.0), daemon=True)
    try:
        with all_closed(dets):
            wait_for(lambda: all(d.healthz() == 200 for d in dets), 90,
                     what="two members ready")
            reader.start()
            feeder.start()
            time.sleep(8)
            killed_at = time.monotonic()
            dets[0].kill()
            wait_for(lambda: {p for t, p in arrivals if t > killed_at + 1} == set(range(6)), 40,
                     every=0.5, what="new flags on every partition")
            visible_after = max(min(t for t, p in arrivals if t > killed_at + 1 and p == part)
                                for part in range(6)) - killed_at
            feeder.join(120)
    finally:
        halt.set()
    print(f"every partition's flags visible again {visible_after:.1f} s after the SIGKILL")
    assert visible_after < 30


def tail_committed(kafka: ScopedKafka, arrivals: list[tuple[float, int]],
                   halt: threading.Event) -> None:
    """When each flag became visible to a read_committed reader, by partition."""
    from kafka import TopicPartition

    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", fetch_max_wait_ms=50)
    tps = [TopicPartition(kafka.flags, p) for p in range(6)]
    wait_for(lambda: topics.partition_count(kafka, kafka.flags), 30)
    consumer.assign(tps)
    while not halt.is_set():
        for tp, recs in consumer.poll(timeout_ms=200).items():
            arrivals.extend((time.monotonic(), tp.partition) for _ in recs)
    consumer.close(autocommit=False)


def test_a_broker_that_shows_aborted_records_is_refused_in_one_line(tansu, capsys):
    """The bundled Tansu answers the transaction requests, but its read_committed readers see
    aborted records: exactly-once there would silently be at-least-once."""
    from detector.cli.main import main

    s = settings(tansu)
    send(tansu, s.input_topic, [])
    code = main(["run", "--bootstrap-servers", tansu.bootstrap_servers, "--metrics-port", "0",
                 "--processing-guarantee", "exactly-once", "--connect-timeout-s", "10"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "exactly-once needs a broker that does transactions" in err[0]


def test_exactly_once_with_read_uncommitted_input_is_refused_in_one_line(capsys):
    from detector.cli.main import main

    assert main(["run", "--processing-guarantee", "exactly-once", "--isolation-level",
                 "read_uncommitted"]) == 2
    assert "reads its input read_committed" in capsys.readouterr().err
