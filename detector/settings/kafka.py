"""How to reach the Kafka cluster: shared by the detector, the alert bridge and the producer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from detector.settings.fields import ConfigError, opt, positive

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; passed to every kafka-python client."""

    bootstrap_servers: str = opt("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.")
    security_protocol: str = opt("PLAINTEXT", "Kafka security protocol.", SECURITY_PROTOCOLS)
    sasl_mechanism: str = opt("PLAIN", "SASL mechanism (with a SASL_* protocol).", SASL_MECHANISMS)
    sasl_username: str | None = opt(None, "SASL user name.")
    sasl_password: str | None = opt(None, "SASL password.")
    ssl_cafile: str | None = opt(None, "CA certificate (PEM) that signed the broker's certificate.")
    ssl_certfile: str | None = opt(None, "Client certificate (PEM), for mutual TLS.")
    ssl_keyfile: str | None = opt(None, "Client private key (PEM), for mutual TLS.")
    ssl_check_hostname: bool = opt(True, "Check the broker certificate's host name.")
    connect_timeout_s: float = opt(
        15.0, "How long to wait for the cluster at start before giving up with an error."
    )

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("--bootstrap-servers is empty")
        self.servers()
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ConfigError(f"{self.security_protocol} needs --sasl-username and --sasl-password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"--{name.replace('_', '-')}: file not found: {path}")
        positive("connect_timeout_s", self.connect_timeout_s)

    def servers(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each bootstrap server; ConfigError for one that is not
        host:port (kafka-python would guess port 9092; the preflight check needs the port)."""
        out = []
        for server in (s.strip() for s in self.bootstrap_servers.split(",")):
            host, _, port = server.rpartition(":")
            if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--bootstrap-servers: {server!r} is not host:port (such as "
                                  "localhost:9092)")
            out.append((host.strip("[]"), int(port)))
        return out

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for KafkaConsumer, KafkaProducer, KafkaAdminClient and the
        outbox's network client."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol.endswith("SSL"):
            options.update(
                ssl_cafile=self.ssl_cafile,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
        return options

