"""A restarted detector removes its dead predecessors from the group instead of waiting for them.

A member that dies without leaving (SIGKILL, out of memory, a crashed container) stays in its
group until its session times out, and a replacement that joins meanwhile waits for it: on
Kafka for the rest of the session, on the local broker longer (its join stalls on the dead
leader until the session ends, then starts over: about 11 s with a 6 s session, against 3 s for
a join into a group without the dead member). So every detector records its member id in a
directory on its host (``--member-dir``), and a detector starting up looks there first: a member
recorded by a process that no longer runs on this host is dead for certain, and if the group
is ``Stable`` and still lists it, the coordinator is asked to remove it (a LeaveGroup naming
its member id, as an administrator's ``remove_group_members`` sends it). Only ``Stable``: the
local broker keeps a removed leader as its leader when the group is mid-rebalance, and the
group then never forms again.

A record is ``<member_dir>/<group>/<member id>.json`` with the host name, the process id and
the process's start time (so a reused process id is not taken for the old process; in a
restarted container the detector may well be pid 1 again). A record from another host is
left alone: whether its process runs cannot be seen from here. With static membership
(``--group-instance-id``) nothing is recorded: a returning static member replaces itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kafka import KafkaConsumer
from kafka.admin import MemberToRemove

from detector.kafka import clients
from detector.kafka.group_requests import describe_group
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)


def _started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces


def _runs(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a record on this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    now = _started(pid)
    return started is None or now is None or now == started


@dataclass
class MemberRecords:
    """This host's records of the group's members, one file each."""

    directory: Path
    _recorded: str = ""

    @classmethod
    def of(cls, member_dir: str, group: str) -> MemberRecords | None:
        """The group's records, or None when recording is off (``--member-dir ''``)."""
        return cls(Path(member_dir) / quote(group, safe="")) if member_dir else None

    def assigned(self, consumer: KafkaConsumer) -> None:
        """Called on each assignment: record the consumer's member id if it is a new one."""
        member_id = consumer.group_metadata().member_id
        if member_id and member_id != self._recorded:
            self.record(member_id)
            self._recorded = member_id

    def record(self, member_id: str) -> None:
        """Record this process as ``member_id`` (replacing its earlier id, if any)."""
        self.forget_own()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{quote(member_id, safe='')}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"member_id": member_id, "host": socket.gethostname(),
                                       "pid": os.getpid(), "started": _started(os.getpid())}))
            tmp.replace(path)
        except OSError as exc:  # recording only speeds up a restart: never fail for it
            log.warning("cannot record the group member id in %s (%s)", self.directory, exc)

    def forget_own(self) -> None:
        """Remove this process's records (it left the group, or has a new member id)."""
        pid = os.getpid()
        for path, rec in self._read():
            if rec.get("pid") == pid and rec.get("host") == socket.gethostname():
                path.unlink(missing_ok=True)

    def dead(self) -> dict[str, Path]:
        """Member ids recorded by processes of this host that no longer run, with their files."""
        host = socket.gethostname()
        return {rec["member_id"]: path for path, rec in self._read()
                if rec.get("host") == host and not _runs(rec["pid"], rec.get("started"))}

    def _read(self) -> list[tuple[Path, dict]]:
        out = []
        with contextlib.suppress(OSError):
            for path in self.directory.glob("*.json"):
                with contextlib.suppress(OSError, ValueError):
                    rec = json.loads(path.read_text())
                    if (isinstance(rec, dict) and isinstance(rec.get("member_id"), str)
                            and isinstance(rec.get("pid"), int)
                            and isinstance(rec.get("started"), int | None)):
                        out.append((path, rec))
        return out


def claim_slot(member_dir: str, group: str, limit: int = 64) -> tuple[int, object]:
    """The lowest number no running member of ``group`` on this host holds, and the open file
    whose lock holds it for this process's life (released when the process ends, however):
    part of a transactional id that a restart on this host takes up again."""
    import fcntl

    directory = Path(member_dir or tempfile.gettempdir()) / quote(group, safe="")
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(limit):
        handle = open(directory / f"slot-{slot}.lock", "a")  # noqa: SIM115 - held on purpose
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return slot, handle
    raise OSError(f"more than {limit} members of group {group} run on this host")


def remove_dead(kafka: KafkaSettings, group: str, records: MemberRecords) -> list[str]:
    """Ask the coordinator to remove this host's dead members of ``group``; return those
    removed. Never raises: without it the join only waits longer."""
    dead = records.dead()
    if not dead:
        return []
    removed: list[str] = []
    try:
        client = clients.admin(kafka)
    except clients.KafkaUnavailable as exc:
        log.warning("cannot remove dead members of group %s: %s", group, exc)
        return []
    try:
        state, members = describe_group(client, group)
        listed = [m for m in dead if m in members]
        if listed and state == "Stable":
            answers = client.remove_group_members(
                group, [MemberToRemove(member_id=m) for m in listed])
            # keyed by MemberToRemove (LeaveGroup v3+) or by member id (older brokers)
            removed = [getattr(key, "member_id", key) for key, error in answers.items()
                       if error.errno == 0]
        elif listed:
            log.info("group %s is %s: its %d dead member(s) are left to their session timeout",
                     group, state, len(listed))
    except Exception as exc:  # any failure: a shortcut must never stop a start
        log.warning("cannot remove dead members of group %s (%s: %s)", group,
                    type(exc).__name__, exc)
    finally:
        clients.close_bounded(client.close, "the admin client")
    for path in dead.values():  # dead either way: removed now, or gone when its session ends
        path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d dead member(s) of group %s left by earlier processes on this host",
                 len(removed), group)
    return removed

