"""``python -m producer``: random streams or a CSV's columns, to the input topic."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.settings.detector import LINGER_HELP
from detector.settings.fields import (
    REPLICATION_HELP,
    ConfigError,
    not_negative,
    opt,
    positive,
    replication,
)
from detector.settings.kafka import KafkaSettings


@dataclass(frozen=True)
class ProducerSettings:
    """``python -m producer``."""

    topic: str = opt("values", "Topic to write values to.")
    partitions: int = opt(6, "Partitions of the topic when the producer has to create it.")
    streams: int = opt(20, "Number of independent random streams (keys s-0 .. s-N-1).")
    rate: float = opt(200.0, "Events per second over all streams; 0 = as fast as possible "
                      "(record batches built per partition, as the detector sends them).")
    count: int = opt(0, "Events to send in all, then exit; 0 = run until stopped.")
    seed: int | None = opt(None, "Random seed; set it for a reproducible sequence.")
    pattern: str = opt("uniform", "Values: uniform (the seed's generator) or walk.",
                       ("uniform", "walk"))
    stream_prefix: str | None = opt(
        None, "Prefix of stream ids (random streams: s- when not given; CSV columns: none).")
    from_csv: str | None = opt(
        None, "Replay this CSV file (a header row, then one row per step) instead of random "
        "values, then exit: its --column(s), every numeric column when none is named, or with "
        "--value-column the long format (one row an event, as train and evaluate read it).")
    column: tuple[str, ...] = opt(
        (), "A CSV column to replay as a stream; repeat the flag for more (environment: "
        "comma-separated).")
    value_column: str | None = opt(
        None, "With --from-csv in long format: the column of the values (other columns, such "
        "as a label, are not sent).")
    stream_column: str | None = opt(
        None, "With --value-column: the column of the stream ids, each stream's events in the "
        "order of its rows (default: the whole file is one stream, named after the value "
        "column).")
    linger_ms: int | None = opt(None, LINGER_HELP + " Unset: 5, and 250 on Tansu, whose fetches "
                                "slow down with every batch a partition holds.",
                                shown="5 (250 on Tansu)")
    replication_factor: int = opt(-1, REPLICATION_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        if not self.topic.strip():
            raise ConfigError("--topic is empty")
        replication(self.replication_factor)
        for name in ("column", "value_column"):
            if getattr(self, name) and self.from_csv is None:
                raise ConfigError(f"--{name.replace('_', '-')} needs --from-csv FILE")
        if self.stream_column is not None and self.value_column is None:
            raise ConfigError("--stream-column needs --value-column (the long format)")
        if self.column and self.value_column is not None:
            raise ConfigError("--column (a column a stream) and --value-column (one row an "
                              "event) are two layouts of a CSV: give one")
        if self.value_column is not None and self.value_column == self.stream_column:
            raise ConfigError(f"--value-column and --stream-column are both "
                              f"{self.value_column!r}: a column has one role")
        positive("partitions", self.partitions)
        positive("streams", self.streams)
        for name in ("rate", "count", "linger_ms"):
            if getattr(self, name) is not None:
                not_negative(name, getattr(self, name))

