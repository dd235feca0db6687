"""A consumer group that members join and leave under live input never stops for good
(``detector.kafka.group_watch``), on Apache Kafka.

The bundled Tansu broker keeps a leader that leaves while the group is forming as its leader,
and no member is ever assigned anything again; the members find the departed leader and repair
the group. That test keeps Tansu: it is about Tansu's fault. ``test_churn_rounds`` repeats the
operator's scenario of kills, joins and stops under live input on Apache Kafka: once in ``make
test``, fifteen times in ``make test-faults``.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import threading
import time

import pytest

from detector.kafka import clients
from detector.kafka.group_requests import describe_group
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.testing.harness import (
    audit,
    covered,
    expected_flags,
    read_topic,
    uncovered,
    wait_for,
)
from producer.publish import publish
from tests.support import DetectorProcess, DetectorThread, all_closed, settings

pytestmark = pytest.mark.broker


def group_state(kafka: KafkaSettings) -> str:
    client = clients.admin(kafka)
    try:
        return describe_group(client, settings(kafka).group_id)[0]
    finally:
        client.close()


def feed(kafka: KafkaSettings, events: int, streams: int, rate: float, seed: int
         ) -> threading.Thread:
    """The producer in a thread, started."""
    s = ProducerSettings(kafka=kafka, topic=settings(kafka).input_topic, streams=streams,
                         rate=rate, count=events, seed=seed)
    thread = threading.Thread(target=publish, args=(s, threading.Event()),
                              kwargs={"progress": lambda _: None}, daemon=True)
    thread.start()
    return thread


def check_outputs(kafka: KafkaSettings, step, events: int) -> None:
    """Every input event has an output, duplicates agree, flags equal an uninterrupted run."""
    s = settings(kafka)
    inputs = [(r.key, r.value) for r in read_topic(kafka, s.input_topic, expect=events)]
    want = expected_flags(step, inputs)
    wait_for(lambda: covered(kafka, s.output_topic, want), 120, every=1,
             what=lambda: uncovered(kafka, s.output_topic, want))
    result = audit(read_topic(kafka, s.output_topic, settle=1), want)
    assert result.expected == events
    assert result.clean, result


@pytest.mark.slow
def test_leader_leaving_a_forming_group_does_not_stop_it(tansu, steps):
    """The leader stops while a new member's join holds the group forming: on Tansu the group
    would never form again. The others find the departed leader, the group forms, and nothing
    is lost. Tansu's own fault, so Tansu's test."""
    kafka = tansu
    step = steps("seed")
    s = settings(kafka, member_dir=tempfile.mkdtemp())
    leader = DetectorThread(s, step).start()
    wait_for(lambda: leader.value("detector_assigned_partitions") == 6, 60, what="first member")
    other = DetectorThread(s, step).start()
    both = [leader, other]
    wait_for(lambda: sum(d.value("detector_assigned_partitions") for d in both) == 6
             and all(d.pipeline.ready for d in both), 60, what="two members holding all")
    assert leader.value("detector_group_leader") == 1
    producer = feed(kafka, 6000, 60, 300, seed=3)
    time.sleep(2)
    joiner = DetectorThread(s, step).start()
    wait_for(lambda: group_state(kafka) != "Stable", 30, every=0.05, what="the group forming")
    leader.stop()  # it leaves the group while the group is forming
    members = [other, joiner]
    wait_for(lambda: sum(d.value("detector_assigned_partitions") for d in members) == 6, 120,
             every=0.5, what="the two others to hold every partition again")
    assert sum(d.value("detector_group_rejoins_total", {"reason": "leader_left"})
               for d in members) >= 1
    producer.join()
    check_outputs(kafka, step, 6000)
    for d in members:
        d.stop()


@pytest.mark.slow
def test_a_member_slow_to_rejoin_within_the_rebalance_timeout_causes_no_rejoin(kafka, steps):
    """A member whose loop is busy for 60 s when a rebalance starts: Kafka waits for it (the
    rebalance timeout, --max-poll-interval-ms, 300 s), and so does every member's watch (six
    session timeouts, 36 s here, used to make the others leave and join again)."""
    step = steps("seed")
    s = settings(kafka, member_dir=tempfile.mkdtemp())
    slow = DetectorThread(s, step).start()
    wait_for(lambda: slow.value("detector_assigned_partitions") == 6, 60, what="first member")
    producer = feed(kafka, 6000, 60, 100, seed=5)
    busy = threading.Event()
    follow = slow.pipeline._follow

    def once_slow() -> None:  # the loop away from its poll for a minute, once
        if not busy.is_set():
            busy.set()
            time.sleep(60)
        follow()

    slow.pipeline._follow = once_slow  # type: ignore[method-assign]
    wait_for(busy.is_set, 10, what="the first member to be busy")
    joiner = DetectorThread(s, step).start()
    both = [slow, joiner]
    wait_for(lambda: all(d.value("detector_assigned_partitions") for d in both)
             and all(d.pipeline.ready for d in both), 150, every=0.5,
             what="both members holding partitions after the slow one's minute")
    assert joiner.pipeline.watch.waited_s() == 0
    producer.join()
    check_outputs(kafka, step, 6000)
    assert sum(d.value("detector_group_rejoins_total", {"reason": r}) for d in both
               for r in ("leader_left", "no_progress", "idle_while_unconsumed")) == 0
    for d in both:
        d.stop()


@pytest.mark.slow
def test_a_member_with_nothing_to_hold_stays_ready_and_looks_at_the_group(kafka, steps):
    """More members than partitions: the idle one holds nothing, is ready, and its look at
    the group's commits (every 10 s) finds nothing unconsumed."""
    s = settings(kafka, partitions=1, member_dir=tempfile.mkdtemp())
    first = DetectorThread(s, steps("seed")).start()
    wait_for(lambda: first.value("detector_assigned_partitions") == 1, 60, what="first member")
    second = DetectorThread(s, steps("seed")).start()
    both = [first, second]
    wait_for(lambda: sorted(d.value("detector_assigned_partitions") for d in both) == [0, 1]
             and all(d.pipeline.ready for d in both), 60, what="one member idle, both ready")
    producer = feed(kafka, 1000, 10, 200, seed=4)
    idle = next(d for d in both if d.value("detector_assigned_partitions") == 0)
    time.sleep(12)  # past the idle member's first look at the group's commits
    producer.join()
    check_outputs(kafka, steps("seed"), 1000)
    assert idle.thread.is_alive() and idle.pipeline.ready and idle.pipeline.watch.settled
    assert sum(idle.value("detector_group_rejoins_total", {"reason": r})
               for r in ("leader_left", "no_progress", "idle_while_unconsumed")) == 0
    for d in both:
        d.stop()


# --- the operator's scenario, many times ----------------------------------------------------

EVENTS, STREAMS, RATE = 36_000, 600, 1_500


def leader_of(dets: list[DetectorProcess]) -> DetectorProcess | None:
    for det in dets:
        if det.metric("detector_group_leader") == 1:
            return det
    return None


def churn_round(kafka: KafkaSettings, step, seed: int) -> None:
    """Three detectors; at 5 s one is SIGKILLed, at 10 s a fourth starts, the leader gets
    SIGTERM as soon as the fourth's join holds the group forming, at 19 s a fifth starts."""
    rng = random.Random(seed)
    dets = [DetectorProcess(kafka).start() for _ in range(3)]
    started = list(dets)
    with all_closed(started):
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="three ready")
        producer = feed(kafka, EVENTS, STREAMS, RATE, seed)
        t0 = time.monotonic()

        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(5)
        leader = leader_of(dets)
        victim = rng.choice([d for d in dets if d is not leader])
        victim.kill()
        dets.remove(victim)
        at(10)
        dets.append(DetectorProcess(kafka).start())
        started.append(dets[-1])
        # If the join came and went unseen, the leader stops into a stable group.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: group_state(kafka) != "Stable", 6, every=0.05, what="forming")
        leader = leader_of(dets) or dets[0]
        assert leader.terminate() == 0
        dets.remove(leader)
        at(19)
        dets.append(DetectorProcess(kafka).start())
        started.append(dets[-1])
        producer.join()
        check_outputs(kafka, step, EVENTS)


@pytest.mark.slow
def test_churn_round(kafka, steps):
    """One round of the operator's scenario."""
    churn_round(kafka, steps("seed"), seed=0)


@pytest.mark.faults
@pytest.mark.parametrize("round_no", range(1, 16))
def test_churn_rounds(kafka, steps, round_no):
    """``make test-faults``: fifteen more rounds, each with a group and topics of its own."""
    churn_round(kafka, steps("seed"), seed=round_no)
