"""Prometheus metrics: one object over one registry, passed in, so tests read values directly.

No per-stream labels (a million streams would be a million series): streams show up only as
the ``detector_active_streams`` gauge. ``detector.ops.server`` serves them, with ``/healthz``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from detector.stream.codec import REASONS

# Bucket bounds chosen from measured values on a 2-core machine (bench/inference, bench/pipeline).
INFERENCE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
RUN_LENGTH_BUCKETS = (3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100, 200, 500, 1000)
RESTORE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: Why the alert bridge skips a record, and why a request to Alertmanager fails.
SKIP_REASONS = ("duplicate", "not_a_run_record")
POST_FAILURES = ("unreachable", "timeout", "rejected", "server_error")
#: Why a group member acted on a group that did not settle (``detector.kafka.group_watch``).
REJOIN_REASONS = ("leader_left", "no_progress", "idle_while_unconsumed")


class GroupMetrics:
    """How a member of a consumer group fares in it (``kafka.group_watch``), under ``prefix``."""

    def __init__(self, registry: CollectorRegistry, prefix: str, topic: str):
        r = registry
        self.assigned_partitions = Gauge(
            f"{prefix}_assigned_partitions",
            f"Partitions of the {topic} topic this member holds (0 while its group rebalances).",
            registry=r,
        )
        self.input_partitions = Gauge(
            f"{prefix}_input_partitions",
            f"Partitions of the {topic} topic: the group's members together should hold them all.",
            registry=r,
        )
        self.unsettled_seconds = Gauge(
            f"{prefix}_group_unsettled_seconds",
            "Seconds this member has waited for an assignment from its group (0 while it holds "
            "one).", registry=r,
        )
        self.leader = Gauge(
            f"{prefix}_group_leader", "1 while this member made its group's current assignment.",
            registry=r,
        )
        self.rejoins = Counter(
            f"{prefix}_group_rejoins",
            "Times this member found its group stuck and acted: leader_left (the leader left "
            "while the group was forming), no_progress (a new consumer), idle_while_unconsumed.",
            ["reason"], registry=r,
        )
        for reason in REJOIN_REASONS:
            self.rejoins.labels(reason)


class MetricSet:
    """Metrics on one registry (served by MetricsServer; read back by tests and the demo)."""

    registry: CollectorRegistry

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent)."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got


class Metrics(MetricSet):
    """Every metric the detector exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The names stay (the dashboard, the rules and the docs use them); the texts say what
        # each counts: a record can hold many events (OBJECT.*, a line-protocol record), and
        # a dead letter, duplicate or replay is consumed but not processed.
        self.events_consumed = Counter(
            "detector_events_consumed", "Input records polled from Kafka (records, not events: "
            "one record may hold many events, or none that is valid).", registry=r
        )
        self.events_processed = Counter(
            "detector_events_processed", "Events applied to stream state, each with a flag "
            "record (events, not records; duplicates, replays and dead letters not counted).",
            registry=r
        )
        self.flags = Counter(
            "detector_flags", "Output records by model flag.", ["flag"], registry=r
        )
        self.run_alerts = Counter(
            "detector_run_alerts", "Run lifecycle records sent to the alert topic.", ["status"],
            registry=r,
        )
        self.run_length = Histogram(
            "detector_run_length", "Values in each run that fired, at its resolution.",
            buckets=RUN_LENGTH_BUCKETS, registry=r,
        )
        self.runs_firing = Gauge(
            "detector_runs_firing", "Runs that have fired and are not resolved yet.", registry=r
        )
        self.evicted = Counter(
            "detector_streams_evicted", "Streams forgotten after --stream-ttl without events.",
            registry=r,
        )
        self.dlq = Counter(
            "detector_dlq_messages",
            "Input records (or lines of a line-protocol record) sent to the dead-letter topic.",
            ["reason"], registry=r,
        )
        self.skipped_fields = Counter(
            "detector_skipped_fields",
            "Entries of a --value-path OBJECT.*, or fields of a line of line protocol, that are "
            "not numbers: skipped, not events.", registry=r,
        )
        self.partition_conflicts = Counter(
            "detector_stream_partition_conflicts",
            "Events that came on another input partition than their stream's earlier ones "
            "(both partitions this member's): a producer that does not key a stream's records "
            "alike; that stream's order, and so its flags, do not hold.", registry=r,
        )
        self.duplicates = Counter(
            "detector_duplicates", "Events skipped: seq at or below the stream's last.", registry=r
        )
        self.replayed = Counter(
            "detector_replayed",
            "Redelivered events skipped: their offset was already covered by restored state.",
            registry=r,
        )
        self.seq_gaps = Counter(
            "detector_seq_gaps", "Events whose seq skipped past last seq + 1.", registry=r
        )
        self.rule_disagreements = Counter(
            "detector_rule_disagreements", "Events whose model flag differs from the exact rule.",
            registry=r,
        )
        self.inference_seconds = Histogram(
            "detector_inference_seconds", "Wall time of one compiled model call.",
            buckets=INFERENCE_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "detector_batch_size", "Events per compiled model call (streams batched together).",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            "detector_end_to_end_latency_seconds",
            "detected_at - ts of each event that carries an event time.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "detector_consumer_lag", "Records behind the partition's end.", ["partition"],
            registry=r,
        )
        self.active_streams = Gauge(
            "detector_active_streams", "Streams held in memory (assigned partitions).", registry=r
        )
        self.checkpoint_seconds = Histogram(
            "detector_checkpoint_seconds",
            "Flush outputs + write state + commit offsets, end to end.",
            buckets=CHECKPOINT_BUCKETS, registry=r,
        )
        self.restore_seconds = Histogram(
            "detector_state_restore_seconds", "Reading assigned partitions' state back, from "
            "the assignment until the last of them serves.", buckets=RESTORE_BUCKETS, registry=r,
        )
        self.restore_records = Counter(
            "detector_state_restore_records", "State topic records read back by restores.",
            registry=r,
        )
        self.ready = Gauge(
            "detector_ready", "1 while the detector is connected and consuming.", registry=r
        )
        self.transactions = Counter(
            "detector_transactions", "Checkpoints as Kafka transactions (exactly-once), by "
            "outcome: committed, or aborted (a rebalance, a failure; the next owner replays "
            "from the last commit).", ["outcome"], registry=r,
        )
        for outcome in ("committed", "aborted"):  # zero under at-least-once, not absent
            self.transactions.labels(outcome)
        self.transaction_commit_seconds = Histogram(
            "detector_transaction_commit_seconds", "Committing a checkpoint's transaction: its "
            "input offsets in (AddOffsetsToTxn, TxnOffsetCommit) and EndTxn.",
            buckets=CHECKPOINT_BUCKETS, registry=r,
        )
        self.produce_retries = Counter(
            "detector_produce_retries", "Record batches sent again after an error Kafka "
            "can recover from (a leader moved, a replica or a connection lost): idempotent, "
            "no recovery.", registry=r,
        )
        self.broker_errors = Counter(
            "detector_broker_errors", "Kafka operations that failed and sent the detector "
            "through a recovery (replay from the last commit), by error.", ["op"],
            registry=r,
        )
        self.group = GroupMetrics(r, "detector", "input")
        self.model_info = Gauge(
            "detector_model_info", "1 for each model serving (role live) or shadowing (role "
            "candidate), by name and registry version (0: a file or a shipped model).",
            ["name", "version", "role"], registry=r,
        )
        self.model_load_failures = Counter(
            "detector_model_load_failures",
            "Registry versions that could not be loaded or checked; the current one serves on.",
            registry=r,
        )
        self.model_swaps = Counter(
            "detector_model_swaps", "Partitions that changed model at a checkpoint.", registry=r,
        )
        self.state_rebuild_seconds = Histogram(
            "detector_state_rebuild_seconds",
            "Rebuilding streams' LSTM state from their recent values for another model.",
            buckets=RESTORE_BUCKETS, registry=r,
        )
        self.shadow_events = Counter(
            "detector_shadow_events", "Events the candidate model flagged beside the live one.",
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "detector_shadow_disagreements",
            "Events whose candidate flag differs from the live model's.", registry=r,
        )
        for reason in REASONS:
            self.dlq.labels(reason)
        for flag in ("0", "1"):
            self.flags.labels(flag)
        for status in ("firing", "resolved"):
            self.run_alerts.labels(status)

    @staticmethod
    def observe_many(histogram: Histogram, values: list[float]) -> None:
        """``observe`` for many values at once: one bucket count per bucket, not per value.

        Uses prometheus_client's own bucket and sum values (stable since 0.4; a test checks the
        result against one ``observe`` per value). Negative values count as 0.
        """
        if not values:
            return
        arr = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        bounds = histogram._upper_bounds
        counts = np.bincount(np.searchsorted(bounds, arr, side="left"), minlength=len(bounds))
        for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
            if count:
                bucket.inc(count)
        histogram._sum.inc(float(arr.sum()))

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """Cumulative ``(upper bound, count)`` pairs of a histogram, for quantiles over time."""
        for family in self.registry.collect():
            if family.name == name:
                return [(float(s.labels["le"]), s.value) for s in family.samples
                        if s.name == f"{name}_bucket"]
        raise KeyError(name)

    def set_lag(self, lags: Iterable[tuple[int, int]]) -> None:
        for partition, lag in lags:
            self.consumer_lag.labels(str(partition)).set(lag)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop lag series of partitions this member no longer owns (their new owner reports)."""
        for partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(str(partition))


class BridgeMetrics(MetricSet):
    """What ``python -m detector alertmanager`` exports: its posts, their failures, its runs."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "alert_bridge_records", "Run records read from the alert topic, by status.",
            ["status"], registry=r,
        )
        self.skipped = Counter(
            "alert_bridge_records_skipped",
            "Records not posted: duplicates of a record already handled, or not run records.",
            ["reason"], registry=r,
        )
        self.posts = Counter(
            "alert_bridge_posts", "Requests Alertmanager accepted.", registry=r
        )
        self.post_failures = Counter(
            "alert_bridge_post_failures", "Requests to Alertmanager that failed (retried).",
            ["reason"], registry=r,
        )
        self.alerts_sent = Counter(
            "alert_bridge_alerts_sent",
            "Alerts Alertmanager accepted, by status (re-posts of open runs included).",
            ["status"], registry=r,
        )
        self.post_seconds = Histogram(
            "alert_bridge_post_seconds", "Wall time of one request to Alertmanager.",
            buckets=CHECKPOINT_BUCKETS, registry=r,
        )
        self.open_runs = Gauge(
            "alert_bridge_open_runs", "Runs firing, as far as the bridge has read.", registry=r
        )
        self.pending = Gauge(
            "alert_bridge_pending_alerts", "Alerts waiting for Alertmanager to accept them.",
            registry=r,
        )
        self.ready = Gauge(
            "alert_bridge_ready",
            "1 while the bridge is in its group and Alertmanager accepts its posts.", registry=r,
        )
        self.group = GroupMetrics(r, "alert_bridge", "alert")
        for status in ("firing", "resolved"):
            self.records.labels(status)
            self.alerts_sent.labels(status)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for reason in POST_FAILURES:
            self.post_failures.labels(reason)


def histogram_quantile(q: float, before: list[tuple[float, float]],
                       after: list[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over the observations between two bucket snapshots."""
    counts = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower
