"""Requests to a consumer group's coordinator that kafka-python's admin client lacks or gets wrong.

``describe_group``: the group's state and member ids. kafka-python's ``describe_groups`` always
asks for the authorized operations and fails to decode the local broker's answer to that, so
the request is sent as it sends it, without them.

``join_as``: one JoinGroup under a given member id, and nothing after it. The local broker
(Tansu) keeps a leader that leaves while the group is forming as the group's leader, though it
is no longer a member; nobody else can then become leader, no assignment is ever made, and the
group never forms again (``tansu-broker/src/coordinator/group/administrator.rs``, the
``Forming`` state's ``leave``, which unlike every other path does not clear the leader). A
JoinGroup under the departed leader's id makes it a member again; silent from then on, its
session lapses, and a lapsed leader is cleared, so the next member to join leads. A broker that
does not have the fault answers UNKNOWN_MEMBER_ID, and nothing changes.
"""

from __future__ import annotations

from kafka.admin import KafkaAdminClient
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.protocol.admin import DescribeGroupsRequest
from kafka.protocol.api_key import ApiKey
from kafka.protocol.consumer import JoinGroupRequest

from detector.kafka.versions import PINNED


def describe_group(client: KafkaAdminClient, group: str) -> tuple[str, set[str]]:
    """The group's state (``Stable``, ``Empty``, ...) and its member ids."""

    async def describe() -> tuple[str, set[str]]:
        node = await client._find_coordinator_id(group)
        response = await client._manager.send(
            DescribeGroupsRequest(groups=[group], include_authorized_operations=False),
            node_id=node)
        found = response.groups[0]
        if found.error_code:
            raise KafkaError(f"DescribeGroups error {found.error_code}")
        return found.group_state, {m.member_id for m in found.members}

    return client._manager.run(describe)


def join_as(client: KafkaAdminClient, group: str, member_id: str, topics: list[str],
            session_timeout_ms: int) -> int:
    """Send one JoinGroup for ``group`` under ``member_id`` (subscribed to ``topics``, with
    the range assignor as our members use it) and return its error code."""
    request = JoinGroupRequest(
        group_id=group, session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=session_timeout_ms, member_id=member_id, group_instance_id=None,
        protocol_type="consumer",
        protocols=[(RangePartitionAssignor.name, RangePartitionAssignor.metadata(topics))],
        min_version=PINNED[ApiKey.JoinGroup][0], max_version=PINNED[ApiKey.JoinGroup][1])

    async def join() -> int:
        node = await client._find_coordinator_id(group)
        # A broker may hold a JoinGroup for up to the session timeout while members join.
        response = await client._manager.send(request, node_id=node,
                                              request_timeout_ms=session_timeout_ms + 10_000)
        return response.error_code

    return client._manager.run(join)
