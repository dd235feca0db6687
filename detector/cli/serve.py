"""The long-running programs: ``run`` (the detector) and ``alertmanager`` (the alert bridge)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from detector.cli.common import Command, setup_logging, stop_on_signals
from detector.settings.bridge import BridgeSettings
from detector.settings.detector import DetectorSettings
from detector.settings.fields import add_options, build

if TYPE_CHECKING:
    from detector.model.serving import ModelStep


def cmd_run(args: argparse.Namespace) -> int:
    from detector.ops.process_tuning import cap_malloc_arenas, settle_garbage_collector

    cap_malloc_arenas()  # before any thread starts
    settings = build(DetectorSettings, args, "DETECTOR")
    setup_logging()
    log = logging.getLogger("detector")
    from detector.kafka.pipeline import Pipeline
    from detector.ops.metrics import Metrics
    from detector.ops.server import MetricsServer

    step = initial_model(settings)
    metrics = Metrics()
    stop = stop_on_signals()
    pipeline = Pipeline(settings, step, metrics, stop)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port,
                           pipeline.not_ready_because, lambda: pipeline.rollout.failure).start()
    try:
        pipeline.connect()
        settle_garbage_collector()
        step = pipeline.step
        follows = (f"the file {settings.model}, pinned (the registry is not followed)"
                   if pipeline.rollout.pinned else
                   f"following its name in the registry {settings.models_topic}")
        log.info("model %s v%d (%s features, %d state floats per stream) on %s; %s; metrics on "
                 "%s", step.name, step.version, step.features, step.state_size, step.runtime,
                 follows, server.url)
        log.info("consuming %s as group %s; flags to %s, alerts to %s, dead letters to %s",
                 settings.input_topic, settings.group_id, settings.output_topic,
                 settings.alert_topic, settings.dlq_topic)
        pipeline.run()
    finally:
        server.stop()
    log.info("stopped cleanly")
    return 0


def initial_model(settings: DetectorSettings) -> ModelStep | None:
    """The shipped model or file ``--model`` names; None for a name only the model registry
    can hold (``Pipeline.connect`` reads it, and says so if it has none)."""
    from detector.model.files import SHIPPED, ModelError, is_path
    from detector.model.serving import ModelStep

    try:
        return ModelStep.load(settings.model, settings.runtime)
    except ModelError:
        if settings.model in SHIPPED or is_path(settings.model):
            raise
        return None


def cmd_alertmanager(args: argparse.Namespace) -> int:
    settings = build(BridgeSettings, args, "DETECTOR")
    setup_logging()
    log = logging.getLogger("detector")
    from detector.alerts.bridge import Bridge
    from detector.ops.metrics import BridgeMetrics
    from detector.ops.server import MetricsServer

    metrics = BridgeMetrics()
    stop = stop_on_signals()
    bridge = Bridge(settings, metrics, stop)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port,
                           bridge.not_ready_because).start()
    try:
        bridge.connect()
        log.info("run records from %s (group %s) to Alertmanager at %s; metrics on %s",
                 settings.alert_topic, settings.group_id, settings.url, server.url)
        bridge.run()
    finally:
        server.stop()
    log.info("stopped cleanly")
    return 0


def add_commands(command: Command) -> None:
    run = command("run", cmd_run, "Consume values, publish flags and alerts. Every option "
                  "--x-y is also the environment variable DETECTOR_X_Y.")
    add_options(run, DetectorSettings, "DETECTOR")

    bridge = command("alertmanager", cmd_alertmanager,
                     "Post the alert topic's runs to Alertmanager (one alert per run, firing "
                     "then resolved). Every option --x-y is also the environment variable "
                     "DETECTOR_X_Y.")
    add_options(bridge, BridgeSettings, "DETECTOR")
