"""``python -m detector run``: topics, the model, the consumer group, timing."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass, field

from detector.settings.fields import (
    REPLICATION_HELP,
    ConfigError,
    duration_s,
    not_negative,
    opt,
    port,
    positive,
    replication,
)
from detector.settings.input import InputSettings
from detector.settings.kafka import KafkaSettings

#: What runs the model (``detector.model.serving``); here, so that reading settings imports no
#: model code.
RUNTIMES = ("litert", "keras")

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
MAX_POLL_HELP = (
    "The group's rebalance timeout (max.poll.interval.ms): how long the coordinator waits for "
    "a member to rejoin during a rebalance (a revoke writes its partitions' state first), and "
    "how long a member waits for a rebalance before it rejoins with a new consumer.")

def expand_member_dir(settings: object) -> None:
    object.__setattr__(settings, "member_dir",
                       settings.member_dir.replace("{tmp}", tempfile.gettempdir()))


def group_timing(session_timeout_ms: int, heartbeat_interval_ms: int) -> None:
    positive("session_timeout_ms", session_timeout_ms)
    positive("heartbeat_interval_ms", heartbeat_interval_ms)
    if heartbeat_interval_ms >= session_timeout_ms:
        raise ConfigError("--heartbeat-interval-ms must be below --session-timeout-ms")




@dataclass(frozen=True)
class DetectorSettings:
    """``python -m detector run``."""

    group_id: str = opt("trend-detector", "Consumer group; detectors in one group share the work.")
    input_topic: str = opt("values", "Topic of input values.")
    output_topic: str = opt("trend-flags", "Topic of one flag record per valid input event.")
    alert_topic: str = opt("trend-alerts", "Topic of trend-run alerts: one record when a run "
                           "fires, one when it is resolved.")
    dlq_topic: str = opt("values.dlq", "Dead-letter topic for input that cannot be processed.")
    state_topic: str | None = opt(None, "Compacted per-stream state topic (<group-id>.state).",
                                  shown="<group-id>.state")
    model: str = opt("seed", "Model: a name, or the path of a .keras file. A name follows the "
                     "model registry: its live version serves, and a new one takes over without "
                     "a restart; while the registry has none, the shipped model of that name "
                     "(seed, pair) serves. A path (with a / or ending in .keras) pins that file: "
                     "the registry is not followed.")
    models_topic: str = opt("detector-models", "The model registry: a compacted topic of model "
                            "versions and which of them is live (python -m detector models).")
    candidate_topic: str = opt("", "Where a shadowing candidate's flag records go (its "
                               "agreement with the live model is in the metrics either way); "
                               "empty: nowhere.")
    alert_min_length: int = opt(3, "Values a trend run must reach before it fires (3: at its "
                                "first flag 1).")
    alert_min_flags: int | None = opt(
        None, "Flags in a row a pattern model's run (a model trained on your labels) must reach "
        "before it fires. Unset: its card's alert_min_flags, else 1 (such a pattern often "
        "flags one event at a time).", shown="the card's, else 1")
    stream_ttl: str = opt("7d", "Forget a stream after this long without events (s, m, h or d "
                          "suffix; 0 = never): its state is deleted (a tombstone on the state "
                          "topic) and it starts afresh if it comes back.")
    runtime: str = opt("litert", "What runs the model: litert (the converted .tflite, no "
                       "TensorFlow) or keras (needs TensorFlow).", RUNTIMES)
    partitions: int = opt(6, "Partitions of the input topic when the detector has to create it.")
    replication_factor: int = opt(-1, REPLICATION_HELP)
    metrics_host: str = opt("127.0.0.1", METRICS_HOST_HELP)
    metrics_port: int = opt(9108, METRICS_PORT_HELP)
    max_poll_records: int = opt(2000, "Most records taken per poll: the largest batch.")
    poll_timeout_ms: int = opt(100, "How long a poll waits for records.")
    fetch_max_wait_ms: int = opt(
        500, "How long the broker may hold a fetch that finds no new records (Kafka's own "
        "default; records that arrive end the wait). On Tansu it also bounds the time a fetch "
        "may spend listing a partition's batches: a fetch that runs out of it comes back "
        "empty."
    )
    linger_ms: int | None = opt(
        None, "How long a poll's outputs may wait for the next polls' before they are sent (one "
        "batch per partition either way): 0 sends each poll's at once; more makes fewer, "
        "larger requests for up to that much latency. Unset: 0, and 250 on Tansu, whose "
        "fetches slow down with every batch a partition holds.", shown="0 (250 on Tansu)"
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
    max_poll_interval_ms: int = opt(300_000, MAX_POLL_HELP)
    isolation_level: str = opt(
        "read_committed", "How the input is read: read_committed skips records of aborted "
        "transactions and waits for open ones (a producer that writes in transactions never "
        "has a flag for what it took back); read_uncommitted reads them as they come.",
        ("read_committed", "read_uncommitted"))
    processing_guarantee: str = opt(
        "at-least-once", "at-least-once: after a crash or a rebalance, outputs of the events "
        "replayed come again (identical duplicates); exactly-once: each checkpoint is one "
        "Kafka transaction holding its outputs, state and input offsets, and read_committed "
        "consumers see every output once (needs Apache Kafka's transactions).",
        ("at-least-once", "exactly-once"))
    transactional_id: str = opt(
        "", "With exactly-once: this member's transactional id, unique in the group and "
        "stable across its restarts (a restart aborts what its predecessor left open). "
        "Empty: <group-id>-<group-instance-id>, or <group-id>-<host name>-<n> with n the "
        "lowest number free among this host's members (--member-dir).",
        shown="<group-id>-<host>-<n>")
    transaction_timeout_ms: int = opt(
        10_000, "With exactly-once: a transaction open longer is aborted by Kafka: how long a "
        "killed member's open transaction can hold read_committed readers (Kafka looks every "
        "10 s).")
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
        expand_member_dir(self)
        topics = [self.input_topic, self.output_topic, self.alert_topic, self.dlq_topic,
                  self.state_topic, self.models_topic, *([self.candidate_topic]
                                                          if self.candidate_topic else [])]
        if len(set(topics)) != len(topics):
            raise ConfigError("input, output, alert, dead-letter, state, models and candidate "
                              "topics must differ")
        if not self.models_topic.strip():
            raise ConfigError("--models-topic is empty")
        port(self.metrics_port)
        replication(self.replication_factor)
        for name in ("partitions", "max_poll_records", "poll_timeout_ms", "fetch_max_wait_ms",
                     "checkpoint_interval_ms", "retry_backoff_max_s", "max_poll_interval_ms"):
            positive(name, getattr(self, name))
        if self.linger_ms is not None:
            not_negative("linger_ms", self.linger_ms)
        group_timing(self.session_timeout_ms, self.heartbeat_interval_ms)
        if self.alert_min_flags is not None:
            positive("alert_min_flags", self.alert_min_flags)
        if self.alert_min_length < 3:
            raise ConfigError("--alert-min-length must be at least 3 (a run's first flag has "
                              f"three values; got {self.alert_min_length})")
        if self.processing_guarantee == "exactly-once":
            if self.isolation_level != "read_committed":
                raise ConfigError("--processing-guarantee exactly-once reads its input "
                                  "read_committed: --isolation-level read_uncommitted would "
                                  "flag records a producer aborts")
            if self.transaction_timeout_ms < 2 * self.checkpoint_interval_ms:
                raise ConfigError("--transaction-timeout-ms must be at least two checkpoint "
                                  f"intervals ({2 * self.checkpoint_interval_ms} ms)")
        ttl = duration_s("stream_ttl", self.stream_ttl)
        if ttl and ttl < 10 * self.checkpoint_interval_ms / 1000:
            raise ConfigError("--stream-ttl must be 0 or at least ten checkpoint intervals "
                              f"(got {self.stream_ttl})")

    @property
    def stream_ttl_s(self) -> float:
        """``stream_ttl`` in seconds; 0 = never forget."""
        return duration_s("stream_ttl", self.stream_ttl)


    @property
    def probe_topic(self) -> str:
        """Where exactly-once's probe writes its aborted record at start (``wiring.probe``)."""
        return f"{self.group_id}.txn-probe"
