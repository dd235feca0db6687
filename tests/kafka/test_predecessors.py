"""Dead members of this host removed from the group at start-up (``kafka.predecessors``)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from detector.kafka import clients
from detector.kafka.group_requests import describe_group
from detector.kafka.predecessors import MemberRecords, remove_dead
from tests.support import DetectorProcess, send, uniform_events, wait_for


def _describe(kafka, group: str) -> tuple[str, set[str]]:
    client = clients.admin(kafka)
    try:
        return describe_group(client, group)
    finally:
        client.close()


def _record(records: MemberRecords, member_id: str, **fields) -> None:
    records.directory.mkdir(parents=True, exist_ok=True)
    body = {"member_id": member_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started": None, **fields}
    (records.directory / f"{member_id}.json").write_text(json.dumps(body))


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_off_when_the_directory_setting_is_empty(tmp_path):
    assert MemberRecords.of("", "g") is None
    assert MemberRecords.of(str(tmp_path), "a/b").directory == tmp_path / "a%2Fb"


def test_only_members_of_ended_processes_on_this_host_are_dead(tmp_path):
    records = MemberRecords.of(str(tmp_path), "g")
    records.record("mine")
    _record(records, "ended", pid=_ended_pid())
    _record(records, "reused-pid", started=1)  # our pid, another start time: not us
    _record(records, "elsewhere", host="another-host", pid=_ended_pid())
    (records.directory / "damaged.json").write_text("{not json")
    _record(records, "bad-pid", pid="not a pid")
    _record(records, "bad-start", pid=_ended_pid(), started="yesterday")
    _record(records, "unknown-start")  # our pid, no start time recorded: taken as running
    assert set(records.dead()) == {"ended", "reused-pid"}


def test_a_new_member_id_replaces_the_old_record_and_leaving_forgets_it(tmp_path):
    records = MemberRecords.of(str(tmp_path), "g")
    records.record("first")
    records.record("second")
    assert [p.stem for p in records.directory.glob("*.json")] == ["second"]
    records.forget_own()
    assert not list(records.directory.glob("*.json"))


CHILD = """
import sys
from kafka import KafkaConsumer
from detector.kafka.predecessors import MemberRecords
c = KafkaConsumer(sys.argv[3], bootstrap_servers=sys.argv[1], group_id=sys.argv[4],
                  session_timeout_ms=30000, heartbeat_interval_ms=1000)
while not c.assignment():
    c.poll(100)
MemberRecords.of(sys.argv[2], sys.argv[4]).record(c.group_metadata().member_id)
print(c.group_metadata().member_id, flush=True)
while True:
    c.poll(200)
"""


@pytest.mark.broker
def test_a_killed_member_is_removed_and_a_running_one_is_not(kafka, tmp_path):
    send(kafka, kafka.values, [])
    child = subprocess.Popen([sys.executable, "-c", CHILD, kafka.bootstrap_servers,
                              str(tmp_path), kafka.values, kafka.group],
                             stdout=subprocess.PIPE, text=True)
    try:
        member = child.stdout.readline().strip()
        records = MemberRecords.of(str(tmp_path), kafka.group)
        assert remove_dead(kafka, kafka.group, records) == []  # still running
        assert _describe(kafka, kafka.group) == ("Stable", {member})
        child.kill()
        child.wait(10)
        assert remove_dead(kafka, kafka.group, records) == [member]
        assert _describe(kafka, kafka.group)[1] == set()  # its 30 s session had not ended
        assert not list(records.directory.glob("*.json"))
    finally:
        child.kill()
        child.wait(10)


@pytest.mark.broker
@pytest.mark.slow
def test_a_restarted_detector_removes_its_killed_predecessor(kafka, tmp_path):
    """The wiring: a detector records its member id on assignment; SIGKILLed, its successor
    on this host removes it from the group before joining, and processes."""
    send(kafka, kafka.values, uniform_events(streams=5, per_stream=20))
    env = {"DETECTOR_MEMBER_DIR": str(tmp_path)}
    first = DetectorProcess(kafka, **env).start()
    try:
        wait_for(lambda: first.processed() >= 100, 90, what="the first detector's progress")
        [path] = (tmp_path / kafka.group).glob("*.json")
        killed = json.loads(path.read_text())["member_id"]
        first.kill()
    finally:
        first.close()
    second = DetectorProcess(kafka, **env).start()
    try:
        send(kafka, kafka.values, uniform_events(streams=5, per_stream=20, seed=1))
        wait_for(lambda: second.processed() > 0, 90, what="the restarted detector's progress")
        assert f"removed 1 dead member(s) of group {kafka.group}" in second.output()
        members = _describe(kafka, kafka.group)[1]
        assert killed not in members and len(members) == 1
        assert second.terminate() == 0
        assert not list((tmp_path / kafka.group).glob("*.json"))  # left the group: forgotten
    finally:
        second.close()
