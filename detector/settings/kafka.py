"""How to reach the Kafka cluster: shared by the detector, the alert bridge and the producer."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from detector.settings.fields import ConfigError, opt, positive

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = (*PASSWORD_MECHANISMS, "OAUTHBEARER", "GSSAPI", "AWS_MSK_IAM")

#: The options of one mechanism (with a token endpoint, OAUTHBEARER's username and password
#: are the OAuth client id and secret).
_SASL_OPTIONS: dict[str, tuple[str, ...]] = {
    **{m: ("sasl_username", "sasl_password") for m in PASSWORD_MECHANISMS},
    "OAUTHBEARER": ("sasl_oauth_token_file", "sasl_oauth_token_url", "sasl_oauth_scope",
                    "sasl_username", "sasl_password"),
    "GSSAPI": ("sasl_kerberos_service_name", "sasl_kerberos_domain_name"),
    "AWS_MSK_IAM": ("sasl_aws_region",),
}
#: Options whose default is a value (not "none given").
_SASL_DEFAULTS = {"sasl_mechanism": "PLAIN", "sasl_kerberos_service_name": "kafka"}

_MECHANISM_HELP = (
    "SASL mechanism (with a SASL_* protocol); each takes the --sasl-* options that name it "
    "(PLAIN and SCRAM: --sasl-username and --sasl-password; GSSAPI needs the kerberos extra, "
    "AWS_MSK_IAM the aws extra).")


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; passed to every kafka-python client."""

    bootstrap_servers: str = opt("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.")
    security_protocol: str = opt("PLAINTEXT", "Kafka security protocol.", SECURITY_PROTOCOLS)
    sasl_mechanism: str = opt("PLAIN", _MECHANISM_HELP, SASL_MECHANISMS)
    sasl_username: str | None = opt(
        None, "SASL user name (PLAIN, SCRAM); with --sasl-oauth-token-url the OAuth client id.")
    sasl_password: str | None = opt(
        None, "SASL password (PLAIN, SCRAM); with --sasl-oauth-token-url the OAuth client "
        "secret.")
    sasl_oauth_token_file: str | None = opt(
        None, "OAUTHBEARER: a file holding the access token (a JWT), read again at every login, "
        "so that whatever renews it needs no restart of this program.")
    sasl_oauth_token_url: str | None = opt(
        None, "OAUTHBEARER: an OAuth 2 token endpoint, asked with the client-credentials grant "
        "(--sasl-username, --sasl-password); a token serves until four fifths of its lifetime "
        "have passed.")
    sasl_oauth_scope: str | None = opt(
        None, "OAUTHBEARER with --sasl-oauth-token-url: the scope to ask for (none if empty).")
    sasl_kerberos_service_name: str = opt(
        "kafka", "GSSAPI: the Kerberos service name of the brokers (their principal's first "
        "part).")
    sasl_kerberos_domain_name: str | None = opt(
        None, "GSSAPI: the host part of the brokers' principal (empty: each broker's host name).")
    sasl_aws_region: str | None = opt(
        None, "AWS_MSK_IAM: the cluster's AWS region, such as us-east-1 (credentials come from "
        "the usual AWS chain: environment, profile, instance role).")
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
        _check_sasl(self)
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
        outbox's network client; ``detector.kafka.sasl`` adds what is not a string (an
        OAUTHBEARER token provider, the region of AWS_MSK_IAM)."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism in PASSWORD_MECHANISMS:
                options.update(sasl_plain_username=self.sasl_username,
                               sasl_plain_password=self.sasl_password)
            elif self.sasl_mechanism == "GSSAPI":
                options.update(sasl_kerberos_service_name=self.sasl_kerberos_service_name,
                               sasl_kerberos_domain_name=self.sasl_kerberos_domain_name)
        if self.security_protocol.endswith("SSL"):
            options.update(
                ssl_cafile=self.ssl_cafile,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_check_hostname=self.ssl_check_hostname,
            )
        return options


# --- SASL: what each mechanism kafka-python has needs from the settings --------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(kafka: KafkaSettings, name: str) -> bool:
    value = getattr(kafka, name)
    return value not in (None, "", _SASL_DEFAULTS.get(name))


def _check_sasl(kafka: KafkaSettings) -> None:
    """ConfigError (one line naming the option) for SASL settings that cannot log in."""
    every = {name for names in _SASL_OPTIONS.values() for name in names} | {"sasl_mechanism"}
    mechanism = kafka.sasl_mechanism
    if not kafka.security_protocol.startswith("SASL"):
        given = sorted(n for n in every if _given(kafka, n))
        if given:
            what = _flag(given[0]) + (f" {mechanism}" if given[0] == "sasl_mechanism" else "")
            raise ConfigError(f"{what} needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
        return
    stray = sorted(n for n in every - {"sasl_mechanism", *_SASL_OPTIONS[mechanism]}
                   if _given(kafka, n))
    if stray:
        raise ConfigError(f"{_flag(stray[0])} does not apply to --sasl-mechanism {mechanism}")
    if mechanism in PASSWORD_MECHANISMS and not (kafka.sasl_username and kafka.sasl_password):
        raise ConfigError(f"{kafka.security_protocol} needs --sasl-username and "
                          f"--sasl-password (--sasl-mechanism {mechanism})")
    if mechanism == "OAUTHBEARER":
        _check_oauth(kafka)
    elif mechanism == "GSSAPI" and not kafka.sasl_kerberos_service_name.strip():
        raise ConfigError("--sasl-kerberos-service-name is empty: GSSAPI needs the brokers' "
                          "Kerberos service name (kafka by default)")
    elif mechanism == "AWS_MSK_IAM":
        if kafka.security_protocol != "SASL_SSL":
            raise ConfigError("--sasl-mechanism AWS_MSK_IAM needs --security-protocol SASL_SSL "
                              "(MSK takes IAM logins over TLS only)")
        if not kafka.sasl_aws_region:
            raise ConfigError("--sasl-mechanism AWS_MSK_IAM needs --sasl-aws-region, the "
                              "cluster's AWS region (such as us-east-1)")


def _check_oauth(kafka: KafkaSettings) -> None:
    token_file, url = kafka.sasl_oauth_token_file, kafka.sasl_oauth_token_url
    if bool(token_file) == bool(url):
        raise ConfigError("--sasl-mechanism OAUTHBEARER needs one of --sasl-oauth-token-file "
                          "and --sasl-oauth-token-url")
    if token_file:
        if not os.path.isfile(token_file):
            raise ConfigError(f"--sasl-oauth-token-file: file not found: {token_file}")
        for name in ("sasl_oauth_scope", "sasl_username", "sasl_password"):
            if _given(kafka, name):
                raise ConfigError(f"{_flag(name)} applies only with --sasl-oauth-token-url")
        return
    parts = urllib.parse.urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--sasl-oauth-token-url {url!r} is not an http:// or https:// URL")
    if not (kafka.sasl_username and kafka.sasl_password):
        raise ConfigError("--sasl-oauth-token-url needs --sasl-username and --sasl-password "
                          "(the OAuth client id and secret)")
