"""The metrics object: bulk observations equal one-by-one ones; quantiles read as Prometheus's."""

import numpy as np
import pytest

from detector.ops.metrics import LATENCY_BUCKETS, Metrics, histogram_quantile


def test_observe_many_equals_observe_one_by_one():
    values = [*np.random.default_rng(0).exponential(0.05, 5000).tolist(), 0.0, 0.005, 99.0, -1.0]
    one, bulk = Metrics(), Metrics()
    for v in values:
        one.latency.observe(max(0.0, v))
    bulk.observe_many(bulk.latency, values)
    name = "detector_end_to_end_latency_seconds"
    assert bulk.buckets(name) == one.buckets(name)
    assert bulk.value(f"{name}_sum") == pytest.approx(one.value(f"{name}_sum"))
    assert bulk.value(f"{name}_count") == len(values)
    bulk.observe_many(bulk.latency, [])  # nothing happens
    assert bulk.value(f"{name}_count") == len(values)


def test_histogram_quantile_interpolates_within_a_bucket():
    m = Metrics()
    name = "detector_end_to_end_latency_seconds"
    before = m.buckets(name)
    assert histogram_quantile(0.99, before, before) is None
    m.observe_many(m.latency, [0.012] * 100)  # all in the (0.01, 0.025] bucket
    q = histogram_quantile(0.5, before, m.buckets(name))
    assert 0.01 < q <= 0.025
    assert LATENCY_BUCKETS[1] == 0.01


def test_every_reason_and_flag_is_exported_from_the_start():
    m = Metrics()
    assert m.value("detector_dlq_messages_total", {"reason": "not_json"}) == 0
    text = "\n".join(f"{s.name}{s.labels}" for fam in m.registry.collect() for s in fam.samples)
    assert "detector_dlq_messages_total{'reason': 'bad_value'}" in text
    assert "detector_flags_total{'flag': '1'}" in text


def test_help_texts_say_whether_a_counter_counts_records_or_events():
    """``_consumed`` counts input records (one may hold many events, or none that is valid);
    ``_processed`` counts events: their names stay, as the dashboard and rules use them."""
    helps = {f.name: f.documentation for f in Metrics().registry.collect()}
    assert helps["detector_events_consumed"].startswith("Input records polled from Kafka "
                                                        "(records, not events")
    assert helps["detector_events_processed"].startswith("Events applied to stream state, "
                                                         "each with a flag record (events, not "
                                                         "records")
