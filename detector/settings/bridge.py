"""``python -m detector alertmanager``: run records from the alert topic to Alertmanager."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from detector.settings.detector import (
    HEARTBEAT_HELP,
    MAX_POLL_HELP,
    MEMBER_DIR_HELP,
    METRICS_HOST_HELP,
    METRICS_PORT_HELP,
    SESSION_TIMEOUT_HELP,
    expand_member_dir,
    group_timing,
)
from detector.settings.fields import ConfigError, not_negative, opt, port, positive
from detector.settings.kafka import KafkaSettings


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
    max_poll_interval_ms: int = opt(300_000, MAX_POLL_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        expand_member_dir(self)
        if not self.url:
            raise ConfigError("--url (DETECTOR_URL) is required: Alertmanager's base URL")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url {self.url!r} is not an http:// or https:// URL")
        for name in ("group_id", "alert_topic"):
            if not getattr(self, name).strip():
                raise ConfigError(f"--{name.replace('_', '-')} is empty")
        for name in ("resend_interval_s", "firing_ttl_s", "timeout_s", "retry_backoff_max_s"):
            positive(name, getattr(self, name))
        not_negative("min_firing_s", self.min_firing_s)
        if self.firing_ttl_s <= self.resend_interval_s + self.timeout_s:
            raise ConfigError("--firing-ttl-s must exceed --resend-interval-s plus --timeout-s, "
                              "or open runs would resolve between two posts")
        if self.min_firing_s >= self.firing_ttl_s:
            raise ConfigError("--min-firing-s must be below --firing-ttl-s, or a held run "
                              "would resolve by itself before its resolution is posted")
        port(self.metrics_port)
        group_timing(self.session_timeout_ms, self.heartbeat_interval_ms)

