"""The state topic's records merged back into a store, with compaction and stale writers in
mind: no broker (``tests/kafka/test_compaction.py`` runs the same on Apache Kafka)."""

import numpy as np

from detector.stream.state import StreamStore
from detector.stream.state_keys import (
    LEGACY_WRITER,
    ModelMarker,
    marker_key,
    new_writer,
    state_key,
    stream_of,
)
from detector.stream.state_restore import StateMerge

FP = b"modelfp!"


def record(stream: str, writer: int, last_offset: int, seen: int, partition: int = 0,
           fp: bytes = FP) -> tuple[bytes, bytes]:
    """One state record as a checkpoint writes it: (key, value)."""
    store = StreamStore(state_size=2)
    slot = store.lookup([stream.encode()], np.array([partition]))
    store.last_offset[slot] = last_offset
    store.seen[slot] = seen
    store.prev[slot] = 0.5
    store.writer[slot] = writer
    store.lstm[slot] = [seen, -seen]
    key, value, _ = store.snapshot(slot, fp).records(0, 1)[0]
    return key, value


def merged(*chunks: list[tuple[bytes, bytes | None]]) -> StreamStore:
    store = StreamStore(state_size=2)
    merge = StateMerge(store)
    for chunk in chunks:
        merge.apply(0, chunk)
    return store


def test_keys_carry_the_writer_and_give_the_stream_back():
    w = new_writer()
    assert w > LEGACY_WRITER and new_writer() != w
    assert stream_of(state_key(b"s-1", w), w) == b"s-1"
    assert stream_of(state_key(b"s-1", w), w + 1) is None  # a key of another writer
    assert state_key(b"s-1", LEGACY_WRITER) == b"s-1"
    assert len(marker_key(w)) == 8


def test_a_stale_writer_after_the_new_owner_does_not_win():
    """The compaction fault: the evicted member's stale record lands after the new owner's.
    Under one key per stream compaction would keep only the stale one; under a key per
    writer both survive, and the highest applied offset wins, in any order or chunking."""
    old, new = new_writer(), new_writer()
    owner = record("s", new, last_offset=900, seen=50)
    stale = record("s", old, last_offset=400, seen=20)
    for chunks in ([[owner, stale]], [[owner], [stale]], [[stale], [owner]]):
        store = merged(*chunks)
        assert store.get(b"s")["last_offset"] == 900 and store.get(b"s")["seen"] == 50
        assert store.get(b"s")["writer"] == new


def test_a_tombstone_removes_a_stream_only_for_its_winning_key():
    a, b = new_writer(), new_writer()
    first = record("s", a, last_offset=100, seen=5)
    moved = record("s", b, last_offset=200, seen=9)
    # the owner wrote under its key, then tombstoned the key it restored from: s stays
    store = merged([first, moved, (state_key(b"s", a), None)])
    assert store.get(b"s")["last_offset"] == 200
    # an idle stream forgotten: its winning key tombstoned, in another chunk
    store = merged([first, moved], [(state_key(b"s", b), None)])
    assert store.get(b"s") is None
    # and back again afterwards, from its first event
    store = merged([first, moved], [(state_key(b"s", b), None)],
                   [record("s", b, last_offset=300, seen=1)])
    assert store.get(b"s")["seen"] == 1


def test_records_before_version_4_are_the_legacy_writer():
    legacy = record("s", LEGACY_WRITER, last_offset=50, seen=3)
    assert legacy[0] == b"s"
    newer = record("s", new_writer(), last_offset=60, seen=4)
    store = merged([legacy, newer, (b"s", None)])
    assert store.get(b"s")["seen"] == 4


def test_the_marker_of_the_highest_epoch_wins_over_a_later_stale_one():
    store = StreamStore(state_size=2)
    merge = StateMerge(store)
    owner, stale = new_writer(), new_writer()
    mine = ModelMarker("trend", 2, b"fp2-----", epoch=4, generation=9)
    late = ModelMarker("trend", 3, b"fp3-----", epoch=3, generation=8)  # written afterwards
    merge.apply(0, [(marker_key(owner), mine.encode()), (marker_key(stale), late.encode())])
    assert merge.marker(0) == mine
    assert sorted(merge.marker_keys(0)) == sorted([marker_key(owner), marker_key(stale)])
    # equal epochs: the later generation; a tombstone drops a marker
    tie = ModelMarker("trend", 5, b"fp5-----", epoch=4, generation=10)
    merge.apply(0, [(marker_key(stale), tie.encode())])
    assert merge.marker(0) == tie
    merge.apply(0, [(marker_key(stale), None)])
    assert merge.marker(0) == mine


def test_damaged_and_foreign_records_are_counted_not_installed():
    store = StreamStore(state_size=2)
    merge = StateMerge(store)
    key, value = record("s", new_writer(), last_offset=1, seen=1)
    merge.apply(0, [(b"x", b"junk"), (key[:-1] + b"?", value), (None, value)])
    merge.apply(1, [record("t", new_writer(), last_offset=1, seen=1)])  # on another partition
    assert merge.rejected == 4 and len(store) == 0


def test_stale_lists_the_streams_another_model_wrote():
    store = StreamStore(state_size=2)
    merge = StateMerge(store)
    w = new_writer()
    merge.apply(0, [record("a", w, 1, 1), record("b", w, 1, 1, fp=b"othermod")])
    assert [store.keys[s] for s in merge.stale(0, FP)] == [b"b"]
    assert sorted(store.keys[s] for s in merge.stale(0, b"newmodel")) == [b"a", b"b"]
