"""What no retry cures stops a program with one line and a non-zero exit, on Apache Kafka: an
existing topic whose settings break what it is for, a record over the topic's limit, a second
process under one static member id. Where the settings cannot be read (Tansu), one warning."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from detector.kafka import topics
from tests.support import (
    ROOT,
    DetectorProcess,
    DetectorThread,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker


def one_error_line(det: DetectorProcess, timeout: float = 90) -> str:
    """The detector exits non-zero; its one error line."""
    code = det.proc.wait(timeout)
    errors = [line for line in det.output().splitlines() if line.startswith("detector: error")]
    assert code != 0 and len(errors) == 1, det.output()[-3000:]
    assert "Traceback" not in det.output()
    return errors[0]


def test_an_existing_state_topic_that_deletes_is_refused_in_one_line(kafka):
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.state, 6,
                                                  {"cleanup.policy": "delete"})])
    det = DetectorProcess(kafka).start()
    try:
        line = one_error_line(det)
    finally:
        det.close()
    assert det.proc.returncode == 2
    assert f"topic {kafka.state} has cleanup.policy=delete, but it must be compact" in line
    assert "quiet streams' state would be deleted by retention" in line


def test_an_existing_registry_topic_that_deletes_is_refused_in_one_line(kafka):
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.models, 1,
                                                  {"cleanup.policy": "compact,delete"})])
    done = subprocess.run([sys.executable, "-m", "detector", "models", "list",
                           "--bootstrap-servers", kafka.bootstrap_servers,
                           "--models-topic", kafka.models], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"detector: error: topic {kafka.models} has cleanup.policy=compact,delete, but it must "
        "be compact: the registry's models would be deleted by retention (kafka-configs.sh "
        f"--alter --entity-type topics --entity-name {kafka.models} --add-config "
        "cleanup.policy=compact)"], done.stderr


def test_settings_a_broker_does_not_answer_are_one_warning(tansu, steps, caplog):
    """Tansu answers DescribeConfigs with nothing for a topic created without settings (as
    an operator may make the state topic): the detector says so once and goes on."""
    s = settings(tansu)
    topics.ensure_topics(tansu, [topics.TopicSpec(s.state_topic, 6)])
    send(tansu, s.input_topic, uniform_events(streams=3, per_stream=10))
    with caplog.at_level(logging.WARNING, logger="detector.kafka.topics"):
        det = DetectorThread(s, steps("seed")).start()
        try:
            wait_for(lambda: det.value("detector_events_processed_total") >= 30, 60)
        finally:
            det.stop()
    said = [r.getMessage() for r in caplog.records if "answers no settings" in r.getMessage()]
    assert len(said) == 1 and s.state_topic in said[0], said


def test_a_record_over_the_topics_limit_stops_the_detector_in_one_line(kafka):
    """The flags topic takes records of at most 200 bytes; a flag record is larger."""
    topics.ensure_topics(kafka, [topics.TopicSpec(kafka.flags, 6,
                                                  {"max.message.bytes": "200"})])
    send(kafka, kafka.values, uniform_events(streams=3, per_stream=10))
    det = DetectorProcess(kafka).start()
    try:
        line = one_error_line(det)
    finally:
        det.close()
    assert det.proc.returncode == 1
    assert "Kafka refused: a record is larger than the topic's max.message.bytes" in line
    assert kafka.flags in line


@pytest.mark.slow
def test_a_second_process_with_the_same_static_id_fences_the_first_in_one_line(kafka):
    send(kafka, kafka.values, uniform_events(streams=3, per_stream=10))
    static = {"DETECTOR_GROUP_INSTANCE_ID": "detector-1"}
    first = DetectorProcess(kafka, **static).start()
    second = None
    try:
        wait_for(lambda: first.healthz() == 200, 60, what="the first member ready")
        second = DetectorProcess(kafka, **static).start()
        line = one_error_line(first)
        assert "another process runs with this --group-instance-id" in line, line
        wait_for(lambda: second.healthz() == 200, 60, what="the second member ready")
    finally:
        first.close()
        if second is not None:
            second.close()
