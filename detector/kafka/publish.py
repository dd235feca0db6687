"""A poll's answers as records in the outbox: flags, run lifecycles, dead letters, and a
shadowing candidate's flags; with the metrics they move.

Every flag and run record names the model and the version that produced it. Output records go
to the same partition number as their input, so a stream's outputs stay in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from detector.kafka.outbox import Outbox
from detector.model.serving import ModelStep
from detector.ops.metrics import Metrics
from detector.settings.detector import DetectorSettings
from detector.stream import runs
from detector.stream.codec import (
    BadInput,
    dead_letter,
    encode_flag,
    encode_run,
    json_string,
    model_fields,
)
from detector.stream.engine import Batch, Result
from detector.stream.runs import EndedRun
from detector.stream.state import StreamStore
from detector.stream.state_keys import ModelMarker


class Publisher:
    def __init__(self, settings: DetectorSettings, outbox: Outbox, partitions: dict[str, int],
                 metrics: Metrics, wall_clock: Callable[[], float]):
        self.s = settings
        self.outbox = outbox
        self.partitions = partitions
        self.metrics = metrics
        self._now = wall_clock
        self._fields: dict[int, str] = {}  # id(model) -> its record fields, formatted once

    def dead_letter(self, bad: BadInput, record: Any) -> None:
        value, headers = dead_letter(bad, record.key, record.value, record.topic,
                                     record.partition, record.offset)
        n = self.partitions[self.s.dlq_topic]
        key = record.key if record.key is None or len(record.key) <= 1024 else record.key[:1024]
        self.outbox.append(self.s.dlq_topic, record.partition % n, key, value, headers)
        self.metrics.dlq.labels(bad.reason).inc()

    def _model_fields(self, step: ModelStep) -> str:
        fields = self._fields.get(id(step))
        if fields is None:
            fields = self._fields[id(step)] = model_fields(step.name, step.version, step.pattern)
        return fields

    def flags(self, batch: Batch, names: list[str], res: Result, step: ModelStep,
              topic: str | None = None) -> np.ndarray:
        """A flag record per processed event (to ``topic``, by default the output topic); the
        indices of the processed events."""
        done = np.nonzero(res.processed)[0]
        if len(done) == 0:
            return done
        append = self.outbox.append
        topic = topic or self.s.output_topic
        n_out = self.partitions.get(topic) or self.partitions[self.s.output_topic]
        detected_json = repr(self._now())
        fields = self._model_fields(step)
        keys, ts_all = batch.streams, batch.ts.tolist()
        # A pattern model's records have no trend rule to compare with.
        rules = [None] * len(done) if step.pattern else res.rule_flag[done].tolist()
        # Python lists once: indexing numpy arrays per event costs more than the encoding.
        for i, seq, value, flag, prob, direction, rule, p, offset in zip(
            done.tolist(), res.seq[done].tolist(), batch.value[done].tolist(),
            res.flag[done].tolist(), res.probability[done].tolist(),
            res.direction[done].tolist(), rules, batch.partition[done].tolist(),
            batch.offset[done].tolist(), strict=True,
        ):
            ts = ts_all[i]
            record = encode_flag(json_string(names[i]), seq, value, flag, prob, direction, rule,
                                 fields, p, offset, None if ts != ts else ts, detected_json)
            append(topic, p % n_out, keys[i], record)
        return done

    def answers(self, batch: Batch, names: list[str], res: Result, step: ModelStep) -> None:
        """The live model's answers: flags, runs and their metrics."""
        m = self.metrics
        for seconds, size in zip(res.inference_seconds, res.call_sizes, strict=True):
            m.inference_seconds.observe(seconds)
            m.batch_size.observe(size)
        m.duplicates.inc(int(res.duplicate.sum()))
        m.replayed.inc(int(res.replayed.sum()))
        m.partition_conflicts.inc(res.partition_conflicts)
        done = self.flags(batch, names, res, step)
        if len(done) == 0:
            return
        detected_at = self._now()
        self._runs(batch, names, res, step, detected_at)
        flags = res.flag[done]
        n_flag1 = int(flags.sum())
        m.events_processed.inc(len(done))
        m.flags.labels("1").inc(n_flag1)
        m.flags.labels("0").inc(len(done) - n_flag1)
        m.seq_gaps.inc(int(res.gap.sum()))
        if not step.pattern:
            m.rule_disagreements.inc(int((flags != res.rule_flag[done]).sum()))
        latencies = detected_at - batch.ts[done]
        m.observe_many(m.latency, latencies[~np.isnan(latencies)].tolist())

    def _runs(self, batch: Batch, names: list[str], res: Result, step: ModelStep,
              detected_at: float) -> None:
        """One alert record per run firing or resolved (``stream.runs``), in stream order."""
        topic = self.s.alert_topic
        n_alert = self.partitions[topic]
        m = self.metrics
        for run in res.runs:
            i = run.index
            ts = float(batch.ts[i])
            record = encode_run(names[i], run.status, run.direction, run.start_seq,
                                int(res.seq[i]), run.length, float(batch.value[i]),
                                step.name, None if ts != ts else ts, detected_at,
                                step.version, step.pattern)
            self.outbox.append(topic, int(batch.partition[i]) % n_alert, batch.streams[i], record)
            m.run_alerts.labels(run.status).inc()
            if run.status == "resolved":
                m.run_length.observe(run.length)

    def end_runs(self, store: StreamStore, partition: int, opened_by: ModelMarker,
                 reason: str) -> None:
        """End the open runs of a partition's streams (another model takes them over): the
        fired ones resolved under ``opened_by``."""
        self.ended(runs.end(store, np.nonzero(store.partition == partition)[0]), opened_by,
                   reason)

    def ended(self, ended: list[EndedRun], opened_by: ModelMarker, reason: str) -> None:
        """Resolutions of fired runs that another model ends (``stream.runs.end``), under the
        model that opened them, with the reason; ``seq`` is each run's last event's."""
        model, version, pattern = opened_by.name, opened_by.version, opened_by.pattern
        topic = self.s.alert_topic
        n_alert, now, m = self.partitions[topic], self._now(), self.metrics
        for run in ended:
            key = run.stream if isinstance(run.stream, bytes) else str(run.stream).encode()
            record = encode_run(key.decode(errors="replace"), "resolved", run.direction,
                                run.start_seq, run.seq, run.length, run.value, model, None,
                                now, version, pattern, reason)
            self.outbox.append(topic, run.partition % n_alert, key, record)
            m.run_alerts.labels("resolved").inc()
            m.run_length.observe(run.length)
