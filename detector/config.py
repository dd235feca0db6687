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
import tempfile
import types
import typing
import urllib.parse
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


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None,
        empty_ok: bool = False) -> Any:
    """A settings field with its documentation (and allowed values) attached.

    ``empty_ok``: an empty environment variable is a value (``""``: none), not "unset";
    for paths where empty says that the input has no such field.
    """
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "empty_ok": empty_ok})


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


#: Both programs batch what they send. The local broker's fetches slow down with the number of
#: record batches a partition holds, so a long run on it wants fewer, larger batches.
LINGER_HELP = ("How long records gather into one batch per partition before they are sent: "
               "adds up to this much latency; fewer, larger batches cost the broker less.")

METRICS_HOST_HELP = "Address the metrics and /healthz endpoint binds to."
METRICS_PORT_HELP = "Port of the metrics and /healthz endpoint (0 picks a free one)."
SESSION_TIMEOUT_HELP = "Consumer group session timeout."
MEMBER_DIR_HELP = (
    "Where each member of the group records its member id on its host; one starting up asks "
    "the group to remove members recorded there whose process has died, rather than wait out "
    "their sessions (dynamic membership only). {tmp} is the temporary directory (TMPDIR, else "
    "/tmp). Empty: off.")
HEARTBEAT_HELP = "Consumer group heartbeat interval."


INPUT_FORMATS = ("json", "number")
#: A numeric event time's unit, and its divisor to epoch seconds.
TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
#: The producer's contract: the id is the record's ``stream`` field, equal to the record key.
DEFAULT_STREAM_ID = "{stream}"


@dataclass(frozen=True)
class InputSettings:
    """How an input record becomes events (``detector/mapping.py``); the defaults are the
    producer's own records."""

    input_format: str = opt(
        "json", "Record value: a JSON object, or a bare number (UTF-8 text such as 23.5) whose "
        "stream id is the record key.", INPUT_FORMATS)
    stream_id: str = opt(
        DEFAULT_STREAM_ID, "Template of the stream id: {key} (the record key), {field} (with "
        "--value-path OBJECT.*) and dotted JSON paths such as {name} or {tags.host}. The "
        "default {stream} must equal the record key.")
    value_path: str = opt(
        "value", "Dotted JSON path of the value; OBJECT.* (such as fields.*) makes every "
        "numeric entry of OBJECT an event of its own stream.")
    seq_path: str = opt(
        "seq", "Dotted JSON path of the per-stream sequence number; empty: the input has "
        "none (the partition offset orders a stream).", empty_ok=True)
    time_path: str = opt(
        "ts", "Dotted JSON path of the optional event time (a number in --time-unit, or an "
        "ISO-8601 string); empty: none.", empty_ok=True)
    time_unit: str = opt("s", "Unit of a numeric event time.", tuple(TIME_UNITS))
    epoch_path: str = opt(
        "epoch", "Dotted JSON path of the optional producer epoch (an integer that grows "
        "with each producer start); empty: none.", empty_ok=True)

    def __post_init__(self) -> None:
        from detector.mapping import InputMapping  # here: the mapping imports this module

        InputMapping(self)  # raises ConfigError on a template or path that cannot work


@dataclass(frozen=True)
class DetectorSettings:
    """``python -m detector run``."""

    group_id: str = opt("trend-detector", "Consumer group; detectors in one group share the work.")
    input_topic: str = opt("values", "Topic of input values.")
    output_topic: str = opt("trend-flags", "Topic of one flag record per valid input event.")
    alert_topic: str = opt("trend-alerts", "Topic of trend-run alerts: one record when a run "
                           "fires, one when it is resolved.")
    dlq_topic: str = opt("values.dlq", "Dead-letter topic for input that cannot be processed.")
    state_topic: str | None = opt(None, "Compacted per-stream state topic (<group-id>.state).")
    model: str = opt("seed", "Model: seed, pair or the path of a .keras file.")
    alert_min_length: int = opt(3, "Values a run must reach before it fires (3: at its first "
                                "flag 1).")
    stream_ttl: str = opt("7d", "Forget a stream after this long without events (s, m, h or d "
                          "suffix; 0 = never): its state is deleted (a tombstone on the state "
                          "topic) and it starts afresh if it comes back.")
    runtime: str = opt("litert", "What runs the model: litert (the converted .tflite, no "
                       "TensorFlow) or keras (needs TensorFlow).", RUNTIMES)
    partitions: int = opt(6, "Partitions of the input topic when the detector has to create it.")
    metrics_host: str = opt("127.0.0.1", METRICS_HOST_HELP)
    metrics_port: int = opt(9108, METRICS_PORT_HELP)
    max_poll_records: int = opt(2000, "Most records taken per poll: the largest batch.")
    poll_timeout_ms: int = opt(100, "How long a poll waits for records.")
    fetch_max_wait_ms: int = opt(
        10, "How long the broker may hold a fetch for more data; the local broker always "
        "waits this long, so it bounds latency there."
    )
    linger_ms: int = opt(
        0, "How long a poll's outputs may wait for the next polls' before they are sent (one "
        "batch per partition either way): 0 sends each poll's at once; more makes fewer, "
        "larger requests for up to that much latency."
    )
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
    member_dir: str = opt("{tmp}/detector-members", MEMBER_DIR_HELP)
    session_timeout_ms: int = opt(10000, SESSION_TIMEOUT_HELP)
    heartbeat_interval_ms: int = opt(3000, HEARTBEAT_HELP)
    retry_backoff_max_s: float = opt(10.0, "Longest wait between retries while the broker is gone.")
    mapping: InputSettings = field(default_factory=InputSettings)
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
        _expand_member_dir(self)
        topics = [self.input_topic, self.output_topic, self.alert_topic, self.dlq_topic]
        if len(set([*topics, self.state_topic])) != 5:
            raise ConfigError("input, output, alert, dead-letter and state topics must differ")
        _port(self.metrics_port)
        for name in ("partitions", "max_poll_records", "poll_timeout_ms", "fetch_max_wait_ms",
                     "checkpoint_interval_ms", "retry_backoff_max_s"):
            _positive(name, getattr(self, name))
        _not_negative("linger_ms", self.linger_ms)
        _group_timing(self.session_timeout_ms, self.heartbeat_interval_ms)
        if self.alert_min_length < 3:
            raise ConfigError("--alert-min-length must be at least 3 (a run's first flag has "
                              f"three values; got {self.alert_min_length})")
        ttl = duration_s("stream_ttl", self.stream_ttl)
        if ttl and ttl < 10 * self.checkpoint_interval_ms / 1000:
            raise ConfigError("--stream-ttl must be 0 or at least ten checkpoint intervals "
                              f"(got {self.stream_ttl})")

    @property
    def stream_ttl_s(self) -> float:
        """``stream_ttl`` in seconds; 0 = never forget."""
        return duration_s("stream_ttl", self.stream_ttl)


@dataclass(frozen=True)
class BridgeSettings:
    """``python -m detector alertmanager``: run records from the alert topic to Alertmanager."""

    url: str | None = opt(None, "Alertmanager's base URL, e.g. http://alertmanager:9093 "
                          "(required).")
    group_id: str = opt("trend-alertmanager",
                        "Consumer group of the bridge, its own (not the detectors').")
    alert_topic: str = opt("trend-alerts", "Topic of the run records (firing, resolved).")
    resend_interval_s: float = opt(
        60.0, "A firing alert is posted again this often while its run is open.")
    firing_ttl_s: float = opt(
        300.0, "A firing alert's endsAt lies this far ahead, so Alertmanager resolves it by "
        "itself once the bridge stops re-posting it.")
    min_firing_s: float = opt(
        0.0, "Hold a resolution until its firing alert was accepted this long ago, so that "
        "Alertmanager notifies runs shorter than its group_wait too (set it above the route's "
        "group_wait plus group_interval); 0: post at once.")
    timeout_s: float = opt(10.0, "How long one request to Alertmanager may take.")
    retry_backoff_max_s: float = opt(
        30.0, "Longest wait between retries while Alertmanager is down or failing.")
    metrics_host: str = opt("127.0.0.1", METRICS_HOST_HELP)
    metrics_port: int = opt(9109, METRICS_PORT_HELP)
    member_dir: str = opt("{tmp}/detector-members", MEMBER_DIR_HELP)
    session_timeout_ms: int = opt(10000, SESSION_TIMEOUT_HELP)
    heartbeat_interval_ms: int = opt(3000, HEARTBEAT_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        _expand_member_dir(self)
        if not self.url:
            raise ConfigError("--url (DETECTOR_URL) is required: Alertmanager's base URL")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url {self.url!r} is not an http:// or https:// URL")
        for name in ("group_id", "alert_topic"):
            if not getattr(self, name).strip():
                raise ConfigError(f"--{name.replace('_', '-')} is empty")
        for name in ("resend_interval_s", "firing_ttl_s", "timeout_s", "retry_backoff_max_s"):
            _positive(name, getattr(self, name))
        _not_negative("min_firing_s", self.min_firing_s)
        if self.firing_ttl_s <= self.resend_interval_s + self.timeout_s:
            raise ConfigError("--firing-ttl-s must exceed --resend-interval-s plus --timeout-s, "
                              "or open runs would resolve between two posts")
        if self.min_firing_s >= self.firing_ttl_s:
            raise ConfigError("--min-firing-s must be below --firing-ttl-s, or a held run "
                              "would resolve by itself before its resolution is posted")
        _port(self.metrics_port)
        _group_timing(self.session_timeout_ms, self.heartbeat_interval_ms)


@dataclass(frozen=True)
class ProducerSettings:
    """``python -m producer``."""

    topic: str = opt("values", "Topic to write values to.")
    partitions: int = opt(6, "Partitions of the topic when the producer has to create it.")
    streams: int = opt(20, "Number of independent random streams (keys s-0 .. s-N-1).")
    rate: float = opt(200.0, "Events per second over all streams; 0 = as fast as possible "
                      "(record batches built per partition, as the detector sends; a failed "
                      "request stops the producer instead of being retried).")
    count: int = opt(0, "Events to send in all, then exit; 0 = run until stopped.")
    seed: int | None = opt(None, "Random seed; set it for a reproducible sequence.")
    pattern: str = opt("uniform", "Values: uniform (the seed's generator) or walk.",
                       ("uniform", "walk"))
    stream_prefix: str | None = opt(
        None, "Prefix of stream ids (random streams: s- when not given; CSV columns: none).")
    from_csv: str | None = opt(
        None, "Replay the --column(s) of this CSV file (a header row, then one row per step) "
        "instead of random values, then exit.")
    column: tuple[str, ...] = opt(
        (), "A CSV column to replay as a stream; repeat the flag for more (environment: "
        "comma-separated).")
    linger_ms: int = opt(5, LINGER_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        if not self.topic.strip():
            raise ConfigError("--topic is empty")
        if self.from_csv is not None and not self.column:
            raise ConfigError("--from-csv needs at least one --column")
        if self.column and self.from_csv is None:
            raise ConfigError("--column needs --from-csv FILE")
        _positive("partitions", self.partitions)
        _positive("streams", self.streams)
        for name in ("rate", "count", "linger_ms"):
            _not_negative(name, getattr(self, name))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(name: str, text: str) -> float:
    """``30s``, ``15m``, ``24h``, ``7d`` or a bare number of seconds, as seconds."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')}: {text!r} is not a duration such as "
                          "30s, 15m, 24h or 7d") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"--{name.replace('_', '-')} must be a finite duration >= 0")
    return value


def _port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"--metrics-port {value} is not a port number")


def _expand_member_dir(settings: DetectorSettings | BridgeSettings) -> None:
    object.__setattr__(settings, "member_dir",
                       settings.member_dir.replace("{tmp}", tempfile.gettempdir()))


def _group_timing(session_timeout_ms: int, heartbeat_interval_ms: int) -> None:
    _positive("session_timeout_ms", session_timeout_ms)
    _positive("heartbeat_interval_ms", heartbeat_interval_ms)
    if heartbeat_interval_ms >= session_timeout_ms:
        raise ConfigError("--heartbeat-interval-ms must be below --session-timeout-ms")


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
    """``int | None`` -> ``int``; ``tuple[str, ...]`` -> ``tuple``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


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
    if kind is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
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
        elif kind is tuple:
            parser.add_argument(flag, action="append", default=None, metavar="NAME",
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
            value = (given if isinstance(given, bool) else tuple(given) if kind is tuple
                     else _convert(given, kind, flag))
        elif environ.get(env, "") != "" or (env in environ and f.metadata["empty_ok"]):
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
        default = "" if f.default in (None, (), "") else f"`{f.default}`"
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
