"""Per-stream state arrays and the state-topic record codec."""

import numpy as np
import pytest

from detector.state import STATE_MAGIC, StateRecordError, StreamState, StreamStore

FP = b"modelfp!"


def sample(size=4):
    return StreamState(0.75, True, 12, 11, 4096, 3, np.arange(size, dtype=np.float32) / 7)


def test_record_round_trips():
    state = sample()
    got, fp = StreamState.decode(state.encode(FP))
    assert fp == FP
    assert (got.prev, got.prev_up, got.seen, got.last_seq, got.last_offset, got.partition) == (
        0.75, True, 12, 11, 4096, 3)
    np.testing.assert_array_equal(got.lstm, state.lstm)
    empty, _ = StreamState.decode(sample(0).encode(FP))
    assert empty.lstm.size == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "tombstone"),
        (b"", "too short"),
        (b"hello world, this is not a state record at all........", "not a detector state"),
        (sample().encode(FP)[:-1], "does not match"),
        (sample().encode(FP) + b"\x00", "does not match"),
        (b"XXXX" + sample().encode(FP)[4:], "not a detector state"),
    ],
)
def test_foreign_or_corrupt_records_are_rejected(data, message):
    with pytest.raises(StateRecordError, match=message):
        StreamState.decode(data)


def test_out_of_range_fields_are_rejected():
    bad = StreamState(float("nan"), False, 1, 0, 0, 0, np.zeros(2, np.float32)).encode(FP)
    with pytest.raises(StateRecordError, match="out of range"):
        StreamState.decode(bad)
    huge = StreamState(0.5, False, 1, 0, 0, 40_000, np.zeros(2, np.float32)).encode(FP)
    with pytest.raises(StateRecordError, match="out of range"):
        StreamState.decode(huge)
    nan_lstm = StreamState(0.5, False, 1, 0, 0, 0, np.array([np.nan], np.float32)).encode(FP)
    with pytest.raises(StateRecordError, match="non-finite"):
        StreamState.decode(nan_lstm)
    assert STATE_MAGIC.startswith(b"TDS")


def test_store_slots_grow_drop_and_reuse():
    store = StreamStore(state_size=2, capacity=2)
    slots = store.lookup(["a", "b", "c", "a"], np.array([0, 1, 1, 0]))
    assert slots[0] == slots[3] and len(set(slots.tolist())) == 3
    assert len(store) == 3 and len(store.prev) >= 3
    store.dirty[slots] = True
    assert set(store.dirty_slots({1}).tolist()) == {slots[1], slots[2]}
    assert store.drop_partitions({1}) == 2
    assert len(store) == 1 and store.get("b") is None
    again = store.lookup(["d"], np.array([2]))
    assert again[0] in (slots[1], slots[2])  # a freed slot is reused
    assert store.get("d").seen == 0 and store.get("d").last_seq == -1  # and starts clean


def test_store_put_and_get():
    store = StreamStore(state_size=4)
    store.put(["s"], [sample()])
    got = store.get("s")
    assert got.last_offset == 4096 and got.prev_up is True
    np.testing.assert_array_equal(got.lstm, sample().lstm)
    assert not store.dirty.any()  # a restored state is already on the state topic
    store.put(["t"], [sample(0)])  # another model's layout: LSTM state starts fresh
    assert not store.get("t").lstm.any()
    store.clear()
    assert len(store) == 0


@pytest.mark.parametrize("size", [0, 32])
def test_bulk_encoding_equals_one_by_one(size):
    store = StreamStore(state_size=size)
    rng = np.random.default_rng(0)
    slots = store.lookup([f"s{i}" for i in range(50)], rng.integers(0, 6, 50))
    store.prev[slots] = rng.random(50)
    store.prev_up[slots] = rng.random(50) > 0.5
    store.seen[slots] = rng.integers(0, 1000, 50)
    store.last_seq[slots] = rng.integers(-1, 1000, 50)
    store.last_offset[slots] = rng.integers(-1, 10**9, 50)
    store.lstm[slots] = rng.normal(size=(50, size))
    snap = store.snapshot(slots, FP)
    assert len(snap) == 50
    assert snap.records(0, 20) + snap.records(20, 50) == [
        (store.keys[s].encode(), store.state_at(s).encode(FP), int(store.partition[s]))
        for s in slots]


class Clash:
    """An id whose hash collides with every other Clash: the index must still tell them apart."""

    def __init__(self, name: str):
        self.name = name

    def __hash__(self) -> int:
        return 42

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Clash) and other.name == self.name


def test_index_settles_many_ids_and_survives_hash_collisions():
    store = StreamStore(state_size=0)
    ids = [f"s-{i}".encode() for i in range(120_000)] + [Clash(str(i)) for i in range(5)]
    slots = store.lookup(ids, np.zeros(len(ids), np.int32))
    assert len(set(slots.tolist())) == len(ids) == len(store)
    assert len(store.index.hashes) > 50_000  # most ids have moved into the numpy arrays
    again = store.lookup(ids[::-1], np.zeros(len(ids), np.int32))
    assert again.tolist() == slots[::-1].tolist()  # the same id finds the same slot
    assert store.slot_of(Clash("3")) == slots[-2] and store.slot_of(Clash("9")) is None
    store.partition[slots[:1000]] = 5
    assert store.drop_partitions({5}) == 1000
    assert store.slot_of(ids[0]) is None and store.slot_of(ids[1000]) == slots[1000]
    assert len(store) == len(ids) - 1000


def test_index_same_new_stream_twice_in_one_batch():
    store = StreamStore(state_size=0)
    slots = store.lookup([b"a", b"b", b"a"], np.zeros(3, np.int32))
    assert slots[0] == slots[2] != slots[1]
