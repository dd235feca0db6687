"""What ``python -m detector score`` exports: the join of labels with the flags, the labels by
kind, and how the scorer reads its topics. One object over one registry, passed in, as the
detector's (``metrics.Metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

from detector.ops.metrics import MetricSet

#: The kinds of label ``score`` counts (``detector.labels.codec.KINDS``), and why a record of
#: the label topic is skipped.
LABEL_KINDS = ("pattern", "no_pattern", "ignore", "right", "wrong")
LABEL_SKIP_REASONS = ("not_json", "bad_label")
#: Rows of the join's figures: label values -> count.
Rows = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class _Joined:
    """``detector_label_events_total`` and ``detector_label_runs_total``, read from the
    scorer's figures at each scrape. They follow the labels in force: a label replaced by a
    later one of its id takes its events' outcomes with it, so a value can go down (rare;
    the panels divide totals, not rates)."""

    def __init__(self, events: Rows, runs: Rows):
        self.events, self.runs = events, runs

    def collect(self) -> Iterator[Metric]:
        for name, help, labels, rows in (
            ("detector_label_events", "Labeled events each model flagged, by its name, version "
             "and role (live, candidate) and the outcome against the labels (tp, fp, fn, tn); "
             "each (stream, seq, name, version) once.", ["name", "version", "role", "outcome"],
             self.events),
            ("detector_label_runs", "Run alerts with a verdict, by the name and version of the "
             "model that raised them and the verdict (right, wrong).",
             ["name", "version", "verdict"], self.runs),
        ):
            family = CounterMetricFamily(name, help, labels=labels)
            for values, n in rows():
                family.add_metric(list(values), n)
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ScoreMetrics(MetricSet):
    """What ``python -m detector score`` exports: the join's figures, the labels by kind, how
    labels and flags were read."""

    def __init__(self, events: Rows, runs: Rows, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        r.register(_Joined(events, runs))
        self.labels = Gauge(
            "detector_labels", "Labels in force, by kind: pattern, no_pattern, ignore (ranges "
            "of events), right, wrong (verdicts on runs).", ["kind"], registry=r)
        self.label_records = Counter(
            "detector_label_records", "Records read from the label topic.", registry=r)
        self.skipped = Counter(
            "detector_label_records_skipped", "Records of the label topic that are no label "
            "(not_json, bad_label), skipped and logged.", ["reason"], registry=r)
        self.too_late = Gauge(
            "detector_labels_too_late", "Labels some of whose events were no longer in the "
            "flag topics when looked for (retention, or before --label-lateness).", registry=r)
        self.waiting = Gauge(
            "detector_labels_waiting", "Labels waiting for the flag topics to be read back.",
            registry=r)
        self.flag_records = Counter(
            "detector_score_flag_records", "Flag records read as they came, by role.", ["role"],
            registry=r)
        self.readbacks = Counter(
            "detector_label_readbacks", "Read-backs of the flag topics for labels whose events "
            "had left the scorer's memory.", registry=r)
        self.readback_records = Counter(
            "detector_label_readback_records", "Flag records read again in read-backs.",
            registry=r)
        self.kept = Gauge(
            "detector_score_labeled_flags", "Flag records of labeled events held for the "
            "figures.", registry=r)
        self.ready = Gauge(
            "detector_score_ready", "1 while the scorer reads its topics and has no read-back "
            "waiting.", registry=r)
        for kind in LABEL_KINDS:
            self.labels.labels(kind)
        for reason in LABEL_SKIP_REASONS:
            self.skipped.labels(reason)
        for role in ("live", "candidate"):
            self.flag_records.labels(role)

