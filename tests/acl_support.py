"""A Kafka node with an authorizer for the ACL tests (``tests/kafka/test_acls.py``): a SCRAM
user per program, whose ACLs a test sets through kafka-python's admin client as the super user;
and a stand-in for Alertmanager's API."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

from detector.kafka import acl, clients, topics
from detector.testing.apache_kafka import KafkaCluster
from tests.support import ScopedKafka, wait_for

PROGRAMS = ("detector", "models", "bridge", "producer", "tail")
#: SCRAM users made when the node is formatted; ``admin`` is a super user.
USERS = {name: f"{name}-secret" for name in ("admin", *PROGRAMS)}
_scopes = iter(range(1, 10_000))


class Cluster:
    """The node for one test: its names (``admin``: the super user's settings), the programs'
    logins under the same names, and their ACLs (none at the start of a test)."""

    def __init__(self, node: KafkaCluster):
        self.prefix = f"acl{next(_scopes):03d}-"
        self.admin = ScopedKafka(bootstrap_servers=node.bootstrap, connect_timeout_s=10,
                                 prefix=self.prefix)
        self.sasl = node.listener_bootstrap("SASL_PLAINTEXT")
        self.client = clients.admin(self.admin)
        for user in PROGRAMS:
            self.allow(user, [])

    def login(self, user: str) -> ScopedKafka:
        return ScopedKafka(bootstrap_servers=self.sasl, security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism="SCRAM-SHA-512", sasl_username=user,
                           sasl_password=USERS[user], connect_timeout_s=10, prefix=self.prefix)

    def allow(self, user: str, needs: list[acl.Need]) -> None:
        """``user``'s ACLs become exactly ``needs`` (once the broker's authorizer has them)."""
        principal = f"User:{user}"
        every = ACLFilter(principal, None, ACLOperation.ANY, ACLPermissionType.ANY,
                          ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
        self.client.delete_acls([every])
        wanted = {(ACLOperation[n.authorized_as], ResourceType[n.kind.upper()], n.name,
                   n.prefixed) for n in needs}
        if wanted:
            made = self.client.create_acls([
                ACL(principal, "*", op, ACLPermissionType.ALLOW, ResourcePattern(
                    kind, name, ACLResourcePatternType.PREFIXED if prefixed
                    else ACLResourcePatternType.LITERAL))
                for op, kind, name, prefixed in wanted])
            assert not made["failed"], made["failed"]

        def granted() -> set:
            found, _ = self.client.describe_acls(every)
            return {(a.operation, a.resource_pattern.resource_type,
                     a.resource_pattern.resource_name,
                     a.resource_pattern.pattern_type == ACLResourcePatternType.PREFIXED)
                    for a in found}

        wait_for(lambda: granted() == wanted, 10, what=f"the ACLs of {principal}")

    def remove(self, user: str, need: acl.Need) -> None:
        self.client.delete_acls([ACL(
            f"User:{user}", "*", ACLOperation[need.authorized_as], ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType[need.kind.upper()], need.name,
                            ACLResourcePatternType.PREFIXED if need.prefixed
                            else ACLResourcePatternType.LITERAL))])

    def create(self, *specs: topics.TopicSpec) -> None:
        topics.ensure_topics(self.admin, list(specs))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            mine = [t for t in self.client.list_topics() if t.startswith(self.prefix)]
            if mine:
                self.client.delete_topics(mine)
        self.client.close()


class StubAlertmanager:
    """Alertmanager's ``POST /api/v2/alerts``, accepting everything (what matters here is
    the Kafka side of the bridge)."""

    def __init__(self):
        self.alerts: list[dict] = []
        alerts = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                alerts.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format, *args) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
