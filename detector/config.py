"""Settings as frozen dataclasses, and the one place that maps CLI flags and environment onto them.

Every field ``x_y`` of a settings class is the option ``--x-y`` and the environment variable
``<PREFIX>_X_Y`` (``DETECTOR_`` or ``PRODUCER_``); the command line wins over the environment,
the environment over the default. Nested settings (``kafka``) share the prefix. The README's
configuration tables are generated from these classes (``python -m detector config``), so
the documentation cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from detector.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError):
    """A wrong setting; the message is one readable line naming the option."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a wrong argument in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A settings field with its documentation (and allowed values) attached."""
    return field(default=default, metadata={"help": help, "choices": choices})


#: What runs the model (``detector.serving``); here so that reading settings imports no model code.
RUNTIMES = ("litert", "keras")
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
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ConfigError(f"{self.security_protocol} needs --sasl-username and --sasl-password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"--{name.replace('_', '-')}: file not found: {path}")
        _positive("connect_timeout_s", self.connect_timeout_s)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for KafkaConsumer, KafkaProducer and KafkaAdminClient."""
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


#: Both programs batch what they send. The local broker's fetches slow down with the number of
#: record batches a partition holds, so a long run on it wants fewer, larger batches.
LINGER_HELP = ("How long records gather into one batch per partition before they are sent: "
               "adds up to this much latency; fewer, larger batches cost the broker less.")


@dataclass(frozen=True)
class DetectorSettings:
    """``python -m detector run``."""

    group_id: str = opt("trend-detector", "Consumer group; detectors in one group share the work.")
    input_topic: str = opt("values", "Topic of input values.")
    output_topic: str = opt("trend-flags", "Topic of one flag record per valid input event.")
    alert_topic: str = opt("trend-alerts", "Topic of the flag records whose flag is 1.")
    dlq_topic: str = opt("values.dlq", "Dead-letter topic for input that cannot be processed.")
    state_topic: str | None = opt(None, "Compacted per-stream state topic (<group-id>.state).")
    model: str = opt("seed", "Model: seed, pair, raw or the path of a .keras file.")
    runtime: str = opt("litert", "What runs the model: litert (the converted .tflite, no "
                       "TensorFlow) or keras (needs TensorFlow).", RUNTIMES)
    partitions: int = opt(6, "Partitions of the input topic when the detector has to create it.")
    metrics_host: str = opt("127.0.0.1", "Address the metrics and /healthz endpoint binds to.")
    metrics_port: int = opt(9108, "Port of the metrics and /healthz endpoint (0 picks a free one).")
    max_poll_records: int = opt(2000, "Most records taken per poll: the largest batch.")
    poll_timeout_ms: int = opt(100, "How long a poll waits for records.")
    fetch_max_wait_ms: int = opt(
        10, "How long the broker may hold a fetch for more data; the local broker always "
        "waits this long, so it bounds latency there."
    )
    linger_ms: int = opt(5, LINGER_HELP)
    checkpoint_interval_ms: int = opt(
        2000, "Outputs acknowledged, changed state written, offsets committed this often (and "
        "on revoke and shutdown); a crash replays at most about this much input."
    )
    group_instance_id: str = opt(
        "", "Static group membership (KIP-345): an id unique in the group and stable across "
        "restarts; with Kafka 2.3+ a restarted member gets its partitions back without a "
        "rebalance of the others, but a stopped one no longer leaves the group (its "
        "partitions wait out the session timeout). {hostname} in it is replaced by the host "
        "name. Empty: dynamic."
    )
    session_timeout_ms: int = opt(10000, "Consumer group session timeout.")
    heartbeat_interval_ms: int = opt(3000, "Consumer group heartbeat interval.")
    retry_backoff_max_s: float = opt(10.0, "Longest wait between retries while the broker is gone.")
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        for name in ("group_id", "input_topic", "output_topic", "alert_topic", "dlq_topic"):
            if not getattr(self, name).strip():
                raise ConfigError(f"--{name.replace('_', '-')} is empty")
        if self.state_topic is None:
            object.__setattr__(self, "state_topic", f"{self.group_id}.state")
        # One environment for every replica of a compose service; each container's host name
        # is its own and survives a restart of the container.
        object.__setattr__(self, "group_instance_id",
                           self.group_instance_id.replace("{hostname}", socket.gethostname()))
        topics = [self.input_topic, self.output_topic, self.alert_topic, self.dlq_topic]
        if len(set([*topics, self.state_topic])) != 5:
            raise ConfigError("input, output, alert, dead-letter and state topics must differ")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port {self.metrics_port} is not a port number")
        for name in ("partitions", "max_poll_records", "poll_timeout_ms", "fetch_max_wait_ms",
                     "checkpoint_interval_ms",
                     "session_timeout_ms", "heartbeat_interval_ms", "retry_backoff_max_s"):
            _positive(name, getattr(self, name))
        _not_negative("linger_ms", self.linger_ms)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError("--heartbeat-interval-ms must be below --session-timeout-ms")


@dataclass(frozen=True)
class ProducerSettings:
    """``python -m producer``."""

    topic: str = opt("values", "Topic to write values to.")
    partitions: int = opt(6, "Partitions of the topic when the producer has to create it.")
    streams: int = opt(20, "Number of independent streams (keys s-0 .. s-N-1).")
    rate: float = opt(200.0, "Events per second over all streams; 0 = as fast as possible.")
    count: int = opt(0, "Events to send in all, then exit; 0 = run until stopped.")
    seed: int | None = opt(None, "Random seed; set it for a reproducible sequence.")
    pattern: str = opt("uniform", "Values: uniform (the seed's generator) or walk.",
                       ("uniform", "walk"))
    stream_prefix: str = opt("s-", "Prefix of stream ids.")
    linger_ms: int = opt(5, LINGER_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        if not self.topic.strip():
            raise ConfigError("--topic is empty")
        _positive("partitions", self.partitions)
        _positive("streams", self.streams)
        for name in ("rate", "count", "linger_ms"):
            _not_negative(name, getattr(self, name))


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be positive (got {value})")


def _not_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"--{name.replace('_', '-')} must not be negative (got {value})")


# --- the mapping of flags and environment onto settings ----------------------------------


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _base_type(hint: Any) -> type:
    """``int | None`` -> ``int``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _env_name(prefix: str, name: str) -> str:
    return f"{prefix}_{name.upper()}"


def _convert(text: str, kind: type, where: str) -> Any:
    if kind is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {text!r}") from None


def add_options(parser: argparse.ArgumentParser, cls: type, prefix: str) -> None:
    """Add ``--x-y`` for every (nested) field of ``cls``; defaults are resolved later."""
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            add_options(parser, hint, prefix)
            continue
        kind = _base_type(hint)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {_env_name(prefix, f.name)}; default {f.default}]"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag, type=str, default=None, metavar=kind.__name__.upper(),
                                help=help_text)


def build(cls: type[T], args: argparse.Namespace, prefix: str,
          environ: Mapping[str, str] | None = None) -> T:
    """The settings from parsed flags, then the environment, then defaults. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            values[f.name] = build(hint, args, prefix, environ)
            continue
        kind = _base_type(hint)
        flag = "--" + f.name.replace("_", "-")
        env = _env_name(prefix, f.name)
        given = getattr(args, f.name, None)
        if given is not None:
            value = given if isinstance(given, bool) else _convert(given, kind, flag)
        elif environ.get(env, "") != "":
            value = _convert(environ[env], kind, env)
        else:
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{flag}: {value!r} is not one of {', '.join(choices)}")
        values[f.name] = value
    return cls(**values)


def markdown_table(cls: type, prefix: str) -> str:
    """The README's configuration table for one program."""
    rows = ["| option | environment variable | default | meaning |", "|---|---|---|---|"]
    for f, hint in _fields(cls):
        if dataclasses.is_dataclass(hint):
            rows += markdown_table(hint, prefix).splitlines()[2:]
            continue
        default = "" if f.default in (None, "") else f"`{f.default}`"
        if isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        if f.name == "state_topic":
            default = "`<group-id>.state`"
        choices = f.metadata.get("choices")
        extra = f" One of {', '.join(choices)}." if choices else ""
        flag = f.name.replace("_", "-")
        env = _env_name(prefix, f.name)
        rows.append(f"| `--{flag}` | `{env}` | {default} | {f.metadata['help']}{extra} |")
    return "\n".join(rows)
