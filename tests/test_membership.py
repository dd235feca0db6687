"""Static group membership (--group-instance-id, KIP-345) on the local broker: a member killed and
started again with the same id gets its partitions back and the other member is not rebalanced."""

import re
import socket
import time

import pytest

from detector.config import DetectorSettings
from tests.support import DetectorProcess, send, uniform_events, wait_for

SESSION_MS = 6000


def assignments(det: DetectorProcess) -> list[list[int]]:
    return [sorted(int(p) for p in found.split(",") if p.strip())
            for found in re.findall(r"assigned partitions \[([^\]]*)\]", det.output())]


def test_hostname_in_the_instance_id_is_the_host_name():
    settings = DetectorSettings(group_instance_id="detector-{hostname}")
    assert settings.group_instance_id == f"detector-{socket.gethostname()}"
    assert DetectorSettings().group_instance_id == ""


@pytest.mark.broker
@pytest.mark.slow
def test_a_restarted_static_member_takes_its_partitions_back_without_a_rebalance(kafka):
    send(kafka, "values", uniform_events(30, 4))
    env = {"DETECTOR_SESSION_TIMEOUT_MS": str(SESSION_MS),
           "DETECTOR_HEARTBEAT_INTERVAL_MS": str(SESSION_MS // 3)}
    a = DetectorProcess(kafka, DETECTOR_GROUP_INSTANCE_ID="a", **env).start()
    b = DetectorProcess(kafka, DETECTOR_GROUP_INSTANCE_ID="b", **env).start()
    try:
        def split() -> bool:
            got = [assignments(d) for d in (a, b)]
            return all(g and g[-1] for g in got) and sorted(got[0][-1] + got[1][-1]) == \
                list(range(6))

        wait_for(split, 60, what=lambda: a.output()[-1500:] + b.output()[-1500:])
        mine, seen_by_b = assignments(a)[-1], len(assignments(b))
        a.kill()
        a.close()
        a = DetectorProcess(kafka, DETECTOR_GROUP_INSTANCE_ID="a", **env).start()
        wait_for(lambda: assignments(a), 60, what=lambda: a.output()[-1500:])
        assert assignments(a) == [mine]
        wait_for(lambda: a.healthz() == 200, 30, what="the restarted member ready")
        time.sleep(SESSION_MS / 1000 + 2)  # past the old member's session: still no rebalance
        assert len(assignments(b)) == seen_by_b, b.output()[-1500:]
    finally:
        for d in (a, b):
            if d.proc and d.proc.poll() is None:
                d.terminate()
            d.close()
