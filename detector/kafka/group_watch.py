"""Watch that this member's consumer group makes progress, and un-stick it when it does not.

A member is *settled* while its group is stable and it holds its assignment. Rebalances unsettle
it for a few seconds (a dead member must lapse first; a slow member's revoke, which writes its
partitions' state, may take longer). A member that stays unsettled is stuck, and the watch
acts, logging one line and counting it in ``<prefix>_group_rejoins_total{reason}``:

- ``leader_left``, on the bundled Tansu only, after ``LEADER_LEFT_SESSIONS`` session timeouts:
  the leader named by this member's last JoinGroup response is no longer a member of the group.
  Tansu keeps a leader that leaves while the group is forming, and then no member can ever be
  assigned anything (``group_requests`` says where). A JoinGroup under the departed leader's
  id makes the broker drop it one session later, and the group forms. Apache Kafka has no
  such fault, and the repair never runs there (a cluster is Tansu by its id, ``tansu_cluster``
  unless its operator set another).
- ``no_progress``: anything else, once waiting longer than the group itself would: on Kafka
  the rebalance timeout (``--max-poll-interval-ms``, how long the coordinator waits for every
  member to rejoin) and a session timeout more; on Tansu ``STALL_SESSIONS`` session timeouts.
  The owner replaces its consumer (a new member id, a fresh join).

A member that is settled with nothing assigned while some partition of its input has lag and a
committed offset that does not move for ``STALL_SESSIONS`` is idle beside unconsumed work: it
rejoins too (``idle_while_unconsumed``), so that the group assigns again.

While it waits, the member says so in its log every ``LOG_EVERY_S`` with the group's state as
the coordinator reports it. The gauges say how long it has waited and what it holds, so the
dashboard and the alerting rules show a group that does not settle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import MemberState

from detector.kafka import clients
from detector.kafka.group_requests import describe_group, join_as
from detector.kafka.tansu import TANSU_CLUSTER_PREFIX
from detector.ops.metrics import GroupMetrics
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)

#: Session timeouts a member waits before it looks for a departed leader. A rebalance on the
#: local broker takes one to two session timeouts when a dead member has to lapse first.
LEADER_LEFT_SESSIONS = 3
#: Session timeouts a member may stay unsettled (or idle beside unconsumed partitions) before
#: it rejoins with a new consumer.
STALL_SESSIONS = 6
#: How often a waiting member logs that it waits, and an idle one looks at the group's commits.
LOG_EVERY_S = 10.0


class GroupWatch:
    """Per member: ``attach`` each new consumer, call ``tick`` between polls. ``tick`` returns
    a reason when the owner should replace its consumer."""

    def __init__(self, kafka: KafkaSettings, group_id: str, session_timeout_ms: int,
                 metrics: GroupMetrics, clock: Callable[[], float] = time.monotonic,
                 rebalance_timeout_ms: int = 300_000):
        self.kafka = kafka
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.leader_left_s = LEADER_LEFT_SESSIONS * session_timeout_ms / 1000
        self.stall_s = (rebalance_timeout_ms + session_timeout_ms) / 1000
        self.on_tansu: bool | None = None  # looked up at the first wait
        self._looked_for_leader = False  # in this wait
        self.metrics = metrics
        self._clock = clock
        self.consumer: KafkaConsumer | None = None
        self.leader = ""  # the leader named by this member's last JoinGroup response
        self.member_id = ""  # this member's id in that response
        self._since: float | None = clock()  # unsettled since (None: settled)
        self._last_log = clock()
        self._idle_check = clock()
        self._unmoved: dict[TopicPartition, tuple[int, float]] = {}  # committed, since when
        metrics.unsettled_seconds.set_function(self.waited_s)
        metrics.leader.set_function(lambda: float(bool(self.leader)
                                                  and self.leader == self.member_id))

    def attach(self, consumer: KafkaConsumer) -> None:
        """Watch ``consumer`` from now on; learn the leader from its JoinGroup responses."""
        self.consumer = consumer
        self.leader = self.member_id = ""
        self._since = self._since if self._since is not None else self._clock()
        coordinator = getattr(consumer, "_coordinator", None)
        process = getattr(coordinator, "_process_join_group_response", None)
        if process is None:  # another kafka-python: the generic rejoin still works
            log.warning("cannot see the group's JoinGroup responses in this kafka-python; "
                        "a departed leader will be handled by a plain rejoin")
            return

        def recorded(response, send_time):  # type: ignore[no-untyped-def]
            result = process(response, send_time)  # raises on an error response
            self.leader, self.member_id = response.leader, response.member_id
            return result

        coordinator._process_join_group_response = recorded

    def waited_s(self) -> float:
        """Seconds this member has been waiting for an assignment (0 while settled)."""
        since = self._since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    @property
    def settled(self) -> bool:
        return self._since is None

    def tick(self) -> str | None:
        """Look at the member (cheap); act when it has been stuck too long."""
        consumer = self.consumer
        if consumer is None:
            return None
        stable = consumer.group_metadata().state == MemberState.STABLE
        held = consumer.assignment() if stable else set()
        self.metrics.assigned_partitions.set(len(held))
        now = self._clock()
        if stable:
            self._since = None
            if held:
                self._unmoved.clear()
                return None
            return self._check_idle(consumer, now)
        if self._since is None:
            self._since = self._last_log = now
            self._looked_for_leader = False
        waited = now - self._since
        if self.on_tansu is None and waited >= 1.0:
            self._learn_broker()
        if self.on_tansu and waited >= self.leader_left_s and not self._looked_for_leader:
            self._looked_for_leader = True
            self._take_over_departed_leader(consumer, waited)
        elif waited >= self.stall_s:
            self._since = self._last_log = now  # another full wait before acting again
            self._looked_for_leader = False
            log.warning("no assignment after %.0f s (%s); rejoining with a new consumer",
                        waited, self._describe())
            self.metrics.rejoins.labels("no_progress").inc()
            return "no_progress"
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.info("waiting %.0f s for an assignment: %s", waited, self._describe())
        return None

    # --- what it does about it ----------------------------------------------------------------

    def _take_over_departed_leader(self, consumer: KafkaConsumer, waited: float) -> None:
        """If the leader of this member's last join has left the group, join under its id."""
        leader = self.leader
        if not leader or leader == self.member_id:
            return
        with self._admin() as client:
            if client is None:
                return
            try:
                state, members = describe_group(client, self.group_id)
                if state == "Stable" or leader in members:
                    return
                log.warning(
                    "no assignment after %.0f s: group %s is %s and its leader %s left it "
                    "while it was forming (Tansu then never forms it again); joining under "
                    "that id so that the coordinator drops it", waited, self.group_id, state,
                    leader)
                self.metrics.rejoins.labels("leader_left").inc()
                join_as(client, self.group_id, leader, sorted(consumer.subscription() or ()),
                        self.session_timeout_ms)
            except KafkaError as exc:
                log.warning("looking for a departed leader of group %s failed (%s)",
                            self.group_id, exc)

    def _check_idle(self, consumer: KafkaConsumer, now: float) -> str | None:
        """Settled with nothing assigned: fine, unless some partition goes unconsumed."""
        if now - self._idle_check < LOG_EVERY_S:
            return None
        self._idle_check = now
        try:
            tps = [TopicPartition(t, p) for t in consumer.subscription() or ()
                   for p in consumer.partitions_for_topic(t) or ()]
            ends = consumer.end_offsets(tps) if tps else {}
            # The group's commits, read through this member's own coordinator connection.
            committed = {tp: consumer.committed(tp) for tp in tps}
        except KafkaError as exc:
            log.debug("cannot read the group's offsets (%s)", exc)
            return None
        stuck: list[TopicPartition] = []
        for tp, end in ends.items():
            offset = -1 if committed.get(tp) is None else committed[tp]
            if end is None or end <= max(offset, 0):
                self._unmoved.pop(tp, None)
                continue
            seen = self._unmoved.get(tp)
            if seen is None or seen[0] != offset:
                self._unmoved[tp] = (offset, now)
            elif now - seen[1] >= self.stall_s:
                stuck.append(tp)
        if not stuck:
            return None
        self._unmoved.clear()
        log.warning("this member holds no partition while %s of %s %s unconsumed for %.0f s; "
                    "rejoining so that the group assigns again", len(stuck),
                    stuck[0].topic, "is" if len(stuck) == 1 else "are", self.stall_s)
        self.metrics.rejoins.labels("idle_while_unconsumed").inc()
        return "idle_while_unconsumed"

    def _learn_broker(self) -> None:
        """Whether the cluster is Tansu (its repair applies) and how long a stall is there."""
        with self._admin() as client:
            if client is None:
                return
            try:
                cluster_id = str(client.describe_cluster().get("cluster_id") or "")
            except KafkaError as exc:
                log.debug("cannot describe the cluster (%s)", exc)
                return
        self.on_tansu = cluster_id.startswith(TANSU_CLUSTER_PREFIX)
        if self.on_tansu:
            self.stall_s = STALL_SESSIONS * self.session_timeout_ms / 1000
            log.info("the broker is Tansu: a group whose leader left while it formed is "
                     "repaired after %.0f s", self.leader_left_s)

    def _describe(self) -> str:
        """The group as its coordinator sees it, in a few words."""
        with self._admin() as client:
            if client is None:
                return f"group {self.group_id} (coordinator unreachable)"
            try:
                state, members = describe_group(client, self.group_id)
            except KafkaError as exc:
                return f"group {self.group_id} (cannot describe it: {exc})"
        return f"group {self.group_id} is {state} with {len(members)} member(s)"

    def _admin(self) -> _Admin:
        return _Admin(self.kafka)


class _Admin:
    """An admin client for one look at the group, or None while the cluster is unreachable."""

    def __init__(self, kafka: KafkaSettings):
        self.kafka = kafka
        self.client: KafkaAdminClient | None = None

    def __enter__(self) -> KafkaAdminClient | None:
        try:
            self.client = clients.admin(self.kafka)
        except clients.KafkaUnavailable as exc:
            log.debug("cannot look at the group: %s", exc)
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            clients.close_bounded(self.client.close, "the admin client")
