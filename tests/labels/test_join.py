"""The join of labels with flag records, without a broker: the truth the labels give an event,
each (stream, seq, name, version) counted once, unlabeled events never counted, outcomes that
follow a label replaced, verdicts on the runs they name; and, for any order of arrival, the
figures of a plain offline computation of the same join."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.labels.book import IGNORED, UNKNOWN, LabelBook
from detector.labels.codec import RangeLabel, Verdict
from detector.labels.figures import Counts
from detector.labels.matcher import NO_RUN, NOT_SEEN, Flag, Matcher, decode_flag, report
from detector.stream.codec import encode_flag, json_string, model_fields
from tests.labels.joined import offline


def test_the_latest_covering_label_decides_and_a_stale_record_does_not():
    book = LabelBook()
    book.add(RangeLabel("a", "s", "pattern", 0, 10), (1, 0, 0))
    book.add(RangeLabel("b", "s", "no_pattern", 5, 6), (2, 0, 1))
    book.add(RangeLabel("c", "s", "ignore", 8, 8), (3, 0, 2))
    assert [book.truth("s", q, None) for q in (0, 5, 7, 8, 11)] == [1, 0, 1, IGNORED, UNKNOWN]
    seq = np.arange(12)
    assert book.truths("s", seq, np.full(12, np.nan)).tolist() == \
        [book.truth("s", int(q), None) for q in seq]
    # The same id again replaces it, wherever it was; an older record of it changes nothing.
    assert book.add(RangeLabel("b", "s", "pattern", 6, 6), (4, 0, 3)) == (
        True, RangeLabel("b", "s", "no_pattern", 5, 6))
    assert book.add(RangeLabel("b", "s", "ignore", 0, 100), (0, 0, 9)) == (False, None)
    assert book.truth("s", 5, None) == 1 and len(book) == 3
    assert book.kinds["no_pattern"] == 0 and book.kinds["pattern"] == 2


def flag(stream: str, seq: int, value: int, version: int = 1, ts: float | None = None) -> Flag:
    return Flag(stream, seq, ts, "dip", version, value)


def test_duplicates_count_once_and_unlabeled_events_never():
    m = Matcher()
    m.add_label(RangeLabel("a", "s", "pattern", 0, 3), (1, 0, 0))
    m.add_label(RangeLabel("b", "s", "no_pattern", 4, 5), (2, 0, 1))
    for f in (flag("s", 0, 1), flag("s", 0, 1), flag("s", 1, 0), flag("s", 4, 1),
              flag("s", 5, 0), flag("s", 9, 1), flag("t", 0, 1)):
        m.offer("live", f)
    m.offer("candidate", flag("s", 0, 1))  # the same (stream, seq, name, version): once
    m.offer("candidate", flag("s", 1, 1, version=2))
    assert m.figures() == {("dip", "1", "live"): Counts(tp=1, fp=1, fn=1, tn=1),
                           ("dip", "2", "candidate"): Counts(tp=1)}
    assert m.kept() == 5  # seq 9 and stream t: no label, not kept
    # A label replaced takes its events' outcomes with it.
    m.add_label(RangeLabel("a", "s", "no_pattern", 0, 3), (3, 0, 2))
    assert m.figures()[("dip", "1", "live")] == Counts(fp=2, tn=2)
    m.add_label(RangeLabel("a", "s", "ignore", 0, 3), (4, 0, 3))
    assert m.figures() == {("dip", "1", "live"): Counts(fp=1, tn=1)}
    assert report(m, 0)["labeled_events"] == {"pattern": 0, "no_pattern": 2}


def test_a_verdict_is_on_the_run_the_live_flag_started():
    m = Matcher()
    m.add_label(Verdict("v1", "s", 7, "wrong"), (1, 0, 0))
    m.add_label(Verdict("v2", "s", 9, "right"), (2, 0, 1))
    m.add_label(Verdict("v3", "s", 12, "right"), (3, 0, 2))
    m.offer("live", flag("s", 7, 1))
    m.offer("live", flag("s", 9, 0))
    m.offer("candidate", flag("s", 12, 1, version=2))  # a candidate raises no alert
    assert m.verdicts() == {("dip", "1", "wrong"): 1}
    assert m.verdicts_without_run() == {NO_RUN: 1, NOT_SEEN: 1}


def test_a_time_label_covers_events_by_their_own_time():
    m = Matcher()
    m.add_label(RangeLabel("t", "s", "pattern", 100.0, 200.0, by_time=True), (1, 0, 0))
    for seq, ts in ((0, 99.0), (1, 100.0), (2, 200.0), (3, None)):
        m.offer("live", flag("s", seq, 1, ts=ts))
    assert m.figures() == {("dip", "1", "live"): Counts(tp=2)}


def test_a_flag_record_of_the_detector_decodes():
    record = encode_flag(json_string("s-1"), 42, 0.5, 1, 0.9, 1, None,
                         model_fields("dip", 3, "dip"), 2, 7, None, "1.0")
    assert decode_flag(record) == Flag("s-1", 42, None, "dip", 3, 1)
    assert decode_flag(b"not json") is None and decode_flag(b'{"stream": "s"}') is None


events = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 12), st.integers(0, 1),
                   st.integers(1, 2), st.sampled_from(["live", "candidate"]))
ranges = st.tuples(st.sampled_from(["r1", "r2", "r3", "r4"]), st.sampled_from(["a", "b"]),
                   st.integers(0, 12), st.integers(0, 5),
                   st.sampled_from(["pattern", "no_pattern", "ignore"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(events, max_size=40), st.lists(ranges, max_size=8), st.randoms())
def test_any_order_of_arrival_gives_the_offline_join(flag_specs, label_specs, rnd):
    """Flags (with identical duplicates, on either topic) and labels (with replacements) in any
    order, then every flag offered again, as the scorer's window and read-back do: the figures
    of the offline join."""
    value: dict[tuple, int] = {}  # duplicates are identical: the first copy's flag
    flags = [(role, flag(s, q, value.setdefault((s, q, v), f), v))
             for s, q, f, v, role in flag_specs]
    labels = [(RangeLabel(i, s, k, a, a + n), (t, 0, t))
              for t, (i, s, a, n, k) in enumerate(label_specs)]
    arrivals = [("flag", x) for x in flags] + [("label", x) for x in labels]
    rnd.shuffle(arrivals)
    m = Matcher()
    for kind, item in arrivals:
        if kind == "label":
            m.add_label(*item)
        else:
            m.offer(*item)
    for role, f in flags:
        m.offer(role, f)
    assert m.figures() == offline(flags, labels)
