"""The scorer's memory of flag records: bounded, oldest read let go first, and it knows where
each partition's held records begin and the latest time it let go (where read-backs end)."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition

from detector.labels.window import Window

P0, P1 = TopicPartition("flags", 0), TopicPartition("flags", 1)


def records(first: int, n: int, key: bytes, ms: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(offset=first + i, timestamp=ms + i, key=key, value=b"%d" % i)
            for i in range(n)]


def test_the_oldest_records_go_first_and_the_start_follows():
    w = Window(5, {P0: 10, P1: 0}, started_ms=1000)
    w.add(P0, "live", records(10, 3, b"a", 2000))
    w.add(P1, "candidate", records(0, 2, b"b", 3000))
    assert w.size == 5 and w.start == {P0: 10, P1: 0} and w.boundary_ms == 1000
    assert list(w.find({b"b"})) == [("candidate", b"0"), ("candidate", b"1")]
    w.add(P0, "live", records(13, 1, b"a", 4000))  # over capacity: P0's first three go
    assert w.size == 3 and w.start == {P0: 13, P1: 0} and w.boundary_ms == 2002
    assert [v for _, v in w.find({b"a"})] == [b"0"]
    w.add(P1, "live", records(2, 6, b"c", 5000))  # more than it may hold: all go
    assert w.size == 0 and w.start == {P0: 14, P1: 8} and w.boundary_ms == 5005
    assert not list(w.find({b"a", b"b", b"c"}))
