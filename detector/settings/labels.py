"""The ground truth's programs: ``label`` (writes labels), ``score`` (joins them with the flags),
``models backtest`` and ``train --from-kafka`` (replay the input's history against them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.settings.detector import METRICS_HOST_HELP, METRICS_PORT_HELP
from detector.settings.fields import (
    ConfigError,
    duration_s,
    markdown_table,
    opt,
    port,
    positive,
)
from detector.settings.input import InputSettings
from detector.settings.kafka import KafkaSettings

LABELS_TOPIC_HELP = ("Topic of ground-truth labels (python -m detector label): keyed by stream, "
                     "retained by time; a later label with the same id replaces an earlier one.")
INPUT_TOPIC_HELP = "Topic of input values, read from --since on (the detector's --input-topic)."


def _not_empty(settings: object, *names: str) -> None:
    for name in names:
        if not getattr(settings, name).strip():
            raise ConfigError(f"--{name.replace('_', '-')} is empty")


@dataclass(frozen=True)
class LabelTopicSettings:
    """The label topic, and how to create it when a writer or the scorer finds it missing."""

    labels_topic: str = opt("detector-labels", LABELS_TOPIC_HELP)
    labels_partitions: int = opt(6, "Partitions of the label topic when it has to be created.")
    labels_retention: str = opt(
        "30d", "How long the label topic keeps labels when it has to be created (s, m, h or d "
        "suffix): a label is scored while the flags of its events are retained, and trains "
        "while the input's are.")

    def __post_init__(self) -> None:
        _not_empty(self, "labels_topic")
        positive("labels_partitions", self.labels_partitions)
        positive("labels_retention", duration_s("labels_retention", self.labels_retention))

    @property
    def retention_ms(self) -> int:
        return int(duration_s("labels_retention", self.labels_retention) * 1000)


@dataclass(frozen=True)
class LabelSettings:
    """``python -m detector label``."""

    labels: LabelTopicSettings = field(default_factory=LabelTopicSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)


@dataclass(frozen=True)
class ScoreSettings:
    """``python -m detector score``."""

    labels: LabelTopicSettings = field(default_factory=LabelTopicSettings)
    output_topic: str = opt("trend-flags", "The live model's flag records (the detector's "
                            "--output-topic).")
    candidate_topic: str = opt("", "The candidate's flag records (the detector's "
                               "--candidate-topic); empty: the live model's only.")
    window_flags: int = opt(
        100_000, "Flag records kept in memory, so that a label arriving soon after its events "
        "is scored at once; for older events the flag topics are read back from the label's "
        "time.")
    label_lateness: str = opt(
        "24h", "How long before a label was written its events may lie: the flag topics are "
        "read back that far at most; a label whose events lie further back, or beyond the "
        "topics' retention, is counted as too late.")
    metrics_host: str = opt("127.0.0.1", METRICS_HOST_HELP)
    metrics_port: int = opt(9110, METRICS_PORT_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        _not_empty(self, "output_topic")
        topics = [self.labels.labels_topic, self.output_topic, self.candidate_topic]
        if len(set(topics)) != len(topics):
            raise ConfigError("label, output and candidate topics must differ")
        positive("window_flags", self.window_flags)
        positive("label_lateness", self.lateness_s)
        port(self.metrics_port)

    @property
    def lateness_s(self) -> float:
        return duration_s("label_lateness", self.label_lateness)


@dataclass(frozen=True)
class HistorySettings:
    """``python -m detector train --from-kafka``: the input's history and its labels."""

    input_topic: str = opt("values", INPUT_TOPIC_HELP)
    labels_topic: str = opt("detector-labels", LABELS_TOPIC_HELP)
    mapping: InputSettings = field(default_factory=InputSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        _not_empty(self, "input_topic", "labels_topic")
        if self.input_topic == self.labels_topic:
            raise ConfigError("input and label topics must differ")


@dataclass(frozen=True)
class BacktestSettings:
    """``python -m detector models backtest``: two registry versions over the input's history."""

    input_topic: str = opt("values", INPUT_TOPIC_HELP)
    labels_topic: str = opt("detector-labels", LABELS_TOPIC_HELP)
    models_topic: str = opt("detector-models", "The model registry the versions are read from.")
    alert_min_length: int = opt(3, "Values a run must reach before it fires, as the detector's "
                                "--alert-min-length: the alerts per stream-day are counted so.")
    mapping: InputSettings = field(default_factory=InputSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        _not_empty(self, "input_topic", "labels_topic", "models_topic")
        if len({self.input_topic, self.labels_topic, self.models_topic}) != 3:
            raise ConfigError("input, label and models topics must differ")
        if self.alert_min_length < 3:
            raise ConfigError(f"--alert-min-length must be at least 3 (got "
                              f"{self.alert_min_length})")


#: The programs of the ground truth, for ``python -m detector config``.
LABEL_PROGRAMS = (("Labels (`python -m detector label`)", LabelSettings),
                  ("Scorer (`python -m detector score`)", ScoreSettings),
                  ("Backtest (`python -m detector models backtest`)", BacktestSettings),
                  ("Training from Kafka (`python -m detector train --from-kafka`)",
                   HistorySettings))


def label_tables(detector_table: str) -> str:
    """Their configuration tables, without the rows the detector's table has already (the
    input and Kafka options, alike in every program): said once, under the tables."""
    shown = set(detector_table.splitlines()[2:])
    out = []
    for title, cls in LABEL_PROGRAMS:
        rows = markdown_table(cls, "DETECTOR").splitlines()
        out += [f"\n### {title}\n", *rows[:2], *(r for r in rows[2:] if r not in shown)]
    out.append("\nEach also takes the options of the detector's table above that it needs, "
               "under the same variables: the Kafka options (all four), `--metrics-host` "
               "(`score`), and the input options `--input-format` to `--epoch-path` (`models "
               "backtest`, `train --from-kafka`).")
    return "\n".join(out)
