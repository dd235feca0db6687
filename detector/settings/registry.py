"""``python -m detector models ...``: the model registry and how to reach it."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.settings.fields import REPLICATION_HELP, ConfigError, opt, replication
from detector.settings.kafka import KafkaSettings


@dataclass(frozen=True)
class RegistrySettings:
    models_topic: str = opt("detector-models", "The model registry: a compacted topic of model "
                            "versions and which of them is live.")
    replication_factor: int = opt(-1, REPLICATION_HELP)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        if not self.models_topic.strip():
            raise ConfigError("--models-topic is empty")
        replication(self.replication_factor)
