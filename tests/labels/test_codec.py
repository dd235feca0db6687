"""The label record: every shape it may take, and one readable line for each that it may not."""

from __future__ import annotations

import json

import pytest

from detector.labels import codec
from detector.labels.codec import LabelError, RangeLabel, Verdict


def test_the_three_shapes_and_their_round_trip():
    seqs = codec.parse({"id": "a", "stream": "s-1", "from_seq": 40, "to_seq": 47,
                        "label": "pattern", "source": "on-call", "comment": "a real dip"})
    assert seqs == RangeLabel("a", "s-1", "pattern", 40, 47, False, "on-call", "a real dip")
    assert seqs.covers(40, None) and seqs.covers(47, None) and not seqs.covers(48, None)
    times = codec.parse({"id": "b", "stream": "cpu.web-1", "from_ts": "2026-12-05T12:00:00Z",
                         "to_ts": 1796472060, "label": "no_pattern"})
    assert times.by_time and times.start == 1796472000.0 and times.end == 1796472060.0
    assert times.covers(0, 1796472030.5) and not times.covers(0, None)  # no event time
    verdict = codec.parse({"id": "c", "stream": "s-1", "run_start_seq": 40, "verdict": "wrong",
                           "reviewer": "ignored: other fields are"})
    assert verdict == Verdict("c", "s-1", 40, "wrong")
    for label in (seqs, times, verdict):
        assert codec.decode(label.stream.encode(), codec.encode(label)) == label
    assert json.loads(codec.encode(seqs)) == {
        "id": "a", "stream": "s-1", "from_seq": 40, "to_seq": 47, "label": "pattern",
        "source": "on-call", "comment": "a real dip"}


@pytest.mark.parametrize(("body", "says"), [
    ({"stream": "s", "from_seq": 1, "to_seq": 2, "label": "pattern"}, "a label needs an id"),
    ({"id": "x", "from_seq": 1, "to_seq": 2, "label": "pattern"}, "a label needs a stream"),
    ({"id": "x", "stream": "s", "label": "pattern"}, "from_seq and to_seq, or from_ts"),
    ({"id": "x", "stream": "s", "from_seq": 1, "to_seq": 2, "run_start_seq": 3,
      "verdict": "right"}, "one of these, not several"),
    ({"id": "x", "stream": "s", "from_seq": 1, "label": "pattern"}, "missing to_seq"),
    ({"id": "x", "stream": "s", "from_seq": 5, "to_seq": 2, "label": "pattern"},
     "from_seq 5 is after to_seq 2"),
    ({"id": "x", "stream": "s", "from_seq": -1, "to_seq": 2, "label": "pattern"},
     "from_seq must be an integer in [0, 2^63), got -1"),
    ({"id": "x", "stream": "s", "from_seq": 1.5, "to_seq": 2, "label": "pattern"},
     "from_seq must be an integer"),
    ({"id": "x", "stream": "s", "from_seq": 1, "to_seq": 2, "label": "yes"},
     "label must be one of pattern, no_pattern, ignore, got 'yes'"),
    ({"id": "x", "stream": "s", "from_ts": "noon", "to_ts": 2, "label": "pattern"},
     "from_ts must be epoch seconds or an ISO-8601 time, got 'noon'"),
    ({"id": "x", "stream": "s", "run_start_seq": 4, "verdict": "maybe"},
     "verdict must be one of right, wrong"),
    ({"id": "x", "stream": "s", "run_start_seq": 4, "label": "pattern"},
     "a run's label is a verdict"),
    ({"id": "x", "stream": "s", "from_seq": 1, "to_seq": 2, "verdict": "right"},
     "a verdict is on a run"),
    ({"id": "x", "stream": "s" * 257, "from_seq": 1, "to_seq": 2, "label": "pattern"},
     "stream must be text of at most 256 characters"),
    ([1, 2], "a label is a JSON object, not list"),
])
def test_each_mistake_is_one_line(body, says):
    with pytest.raises(LabelError) as err:
        codec.parse(body)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_record_must_be_json_and_keyed_by_its_stream():
    with pytest.raises(LabelError, match="not a JSON label"):
        codec.decode(b"s", b"{oops")
    label = codec.encode(RangeLabel("a", "s-1", "pattern", 1, 2))
    with pytest.raises(LabelError, match="is not the label's stream 's-1'"):
        codec.decode(b"s-2", label)
    assert codec.decode(None, label).stream == "s-1"  # a tool that sets no key


def test_the_default_id_names_what_is_labeled():
    """Labeling the same range again gives the same id: it replaces the label."""
    assert codec.default_id("s-1", "seq:40-47") == "s-1@seq:40-47"
    assert codec.epoch_seconds("2026-12-05T12:00:00+01:00") == 1796468400.0
    assert codec.epoch_seconds(True) is None and codec.epoch_seconds(float("nan")) is None
