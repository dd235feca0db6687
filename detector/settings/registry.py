"""``python -m detector models ...``: the model registry and how to reach it."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.settings.fields import ConfigError, opt
from detector.settings.kafka import KafkaSettings


@dataclass(frozen=True)
class RegistrySettings:
    models_topic: str = opt("detector-models", "The model registry: a compacted topic of model "
                            "versions and which of them is live.")
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        if not self.models_topic.strip():
            raise ConfigError("--models-topic is empty")
