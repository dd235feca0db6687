"""Per-stream state arrays and the state-topic record codec."""

import numpy as np
import pytest

from detector.stream.state import (
    _HEADER,
    _V2_HEADER,
    _V3_HEADER,
    FIELDS,
    STATE_MAGIC,
    StateRecordError,
    StreamStore,
    decode_state,
)
from detector.stream.state_keys import LEGACY_WRITER

FP = b"modelfp!"


def encoded(size: int = 4, **fields) -> bytes:
    """One stream's state record, through the store (the only writer of records)."""
    store = StreamStore(state_size=size)
    slot = store.lookup(["x"], np.array([3]))
    values = {"prev": 0.75, "prev_dir": -1, "scale": 0.125, "seen": 12, "last_seq": 11,
              "last_epoch": 99, "last_offset": 4096, "run_dir": 1, "run_len": 4,
              "run_start_seq": 8, "run_start_ts": 1.5, "run_fired": True,
              "last_active": 1e9, **fields}
    for name, value in values.items():
        getattr(store, name)[slot] = value
    store.lstm[slot] = np.arange(size, dtype=np.float32) / 7
    store.hist[slot] = [np.nan, np.nan, 1e300, -2.5, 0.0, 1e-300, 7.0, float(store.prev[slot][0])]
    return store.snapshot(slot, FP).records(0, 1)[0][1]


def test_record_round_trips_every_field():
    row, lstm, fp = decode_state(encoded())
    assert fp == FP
    assert {name: row[name].item() for name, _, _ in FIELDS} == {
        "prev": 0.75, "prev_dir": -1, "scale": 0.125, "seen": 12, "last_seq": 11,
        "last_epoch": 99, "last_offset": 4096, "partition": 3, "run_dir": 1, "run_len": 4,
        "run_start_seq": 8, "run_start_ts": 1.5, "run_fired": True, "last_active": 1e9,
        "writer": 0}
    np.testing.assert_array_equal(lstm, np.arange(4, dtype=np.float32) / 7)
    np.testing.assert_array_equal(row["hist"], [np.nan, np.nan, 1e300, -2.5, 0.0, 1e-300, 7.0,
                                                0.75])
    assert decode_state(encoded(0))[1].size == 0


def test_a_version_2_record_restores_without_recent_values():
    """Records written before the history existed: every field, the LSTM state, no values."""
    new = encoded()
    v2 = np.zeros(1, _V2_HEADER)
    row = np.frombuffer(new, _HEADER, count=1)[0]
    for name in _V2_HEADER.names:
        v2[name] = row[name]
    v2["magic"] = b"TDS\x02"
    data = v2.tobytes() + new[_HEADER.itemsize:]
    old, lstm, fp = decode_state(data)
    assert fp == FP and old["seen"] == 12 and old["prev"] == 0.75
    assert np.isnan(old["hist"][:-1]).all() and old["hist"][-1] == 0.75  # only prev known
    assert old["writer"] == LEGACY_WRITER  # keyed by the bare stream id
    np.testing.assert_array_equal(lstm, np.arange(4, dtype=np.float32) / 7)
    store = StreamStore(state_size=4)
    store.put(["x"], [old], [lstm])
    restored = store.get("x")
    assert np.isnan(restored["hist"][:-1]).all() and restored["seen"] == 12
    assert restored["prev"] == restored["hist"][-1] == 0.75


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "tombstone"),
        (b"", "too short"),
        (b"hello world, this is not a state record at all........" * 3, "not a detector state"),
        (encoded()[:-1], "does not match"),
        (encoded() + b"\x00", "does not match"),
        (b"XXXX" + encoded()[4:], "not a detector state"),
        (b"TDS\x01" + encoded()[4:], "not a detector state"),  # the layout before ties
    ],
)
def test_foreign_or_corrupt_records_are_rejected(data, message):
    with pytest.raises(StateRecordError, match=message):
        decode_state(data)


@pytest.mark.parametrize("fields", [{"prev": float("nan")}, {"prev_dir": 3}, {"scale": -1.0},
                                    {"seen": -5}])
def test_out_of_range_fields_are_rejected(fields):
    with pytest.raises(StateRecordError, match="out of range"):
        decode_state(encoded(**fields))


def test_non_finite_lstm_state_is_rejected():
    data = bytearray(encoded(1))
    data[-4:] = np.array([np.nan], "<f4").tobytes()
    with pytest.raises(StateRecordError, match="non-finite"):
        decode_state(bytes(data))
    assert STATE_MAGIC.startswith(b"TDS")


def test_store_slots_grow_drop_and_reuse():
    store = StreamStore(state_size=2, capacity=2)
    slots = store.lookup(["a", "b", "c", "a"], np.array([0, 1, 1, 0]))
    assert slots[0] == slots[3] and len(set(slots.tolist())) == 3
    assert len(store) == 3 and store.capacity >= 3
    store.dirty[slots] = True
    store.seen[slots] = 7
    assert set(store.dirty_slots({1}).tolist()) == {slots[1], slots[2]}
    assert store.drop_partitions({1}) == 2
    assert len(store) == 1 and store.get("b") is None
    again = store.lookup(["d"], np.array([2]))
    assert again[0] in (slots[1], slots[2])  # a freed slot is reused
    assert store.get("d")["seen"] == 0 and store.get("d")["last_seq"] == -1  # and starts clean


def test_store_put_and_get():
    store = StreamStore(state_size=4)
    row, lstm, _ = decode_state(encoded())
    store.put(["s"], [row], [lstm])
    got = store.get("s")
    assert got["last_offset"] == 4096 and got["prev_dir"] == -1 and got["run_fired"]
    np.testing.assert_array_equal(got["lstm"], lstm)
    assert not store.dirty.any()  # a restored state is already on the state topic
    store.put(["t"], [row], [None])  # written by another model: its LSTM state starts fresh
    assert not store.get("t")["lstm"].any() and store.get("t")["seen"] == 12
    store.clear()
    assert len(store) == 0


def test_idle_streams_are_found_and_dropped():
    store = StreamStore(state_size=0)
    slots = store.lookup(["old", "new"], np.array([0, 1]))
    store.last_active[slots] = [100.0, 200.0]
    idle = store.idle_slots(before=150.0)
    assert idle.tolist() == [slots[0]]
    assert store.drop(idle) == 1 and store.get("old") is None and store.get("new") is not None


def test_a_version_3_record_restores_under_the_legacy_writer():
    new = encoded()
    row = np.frombuffer(new, _HEADER, count=1)[0]
    v3 = np.zeros(1, _V3_HEADER)
    for name in _V3_HEADER.names:
        v3[name] = row[name]
    v3["magic"] = b"TDS\x03"
    old, lstm, _ = decode_state(v3.tobytes() + new[_HEADER.itemsize:])
    assert old["writer"] == LEGACY_WRITER and old["last_offset"] == 4096
    np.testing.assert_array_equal(old["hist"], row["hist"])
    np.testing.assert_array_equal(lstm, np.arange(4, dtype=np.float32) / 7)


def test_bulk_encoding_equals_one_by_one():
    store = StreamStore(state_size=32)
    rng = np.random.default_rng(0)
    slots = store.lookup([f"s{i}" for i in range(50)], rng.integers(0, 6, 50))
    store.prev[slots] = rng.random(50)
    store.seen[slots] = rng.integers(0, 1000, 50)
    store.lstm[slots] = rng.normal(size=(50, 32))
    store.writer[slots] = 2**63 + 5
    snap = store.snapshot(slots, FP)
    both = snap.records(0, 20) + snap.records(20, 50)
    assert [key for key, _, _ in both] == [f"s{i}".encode() + (2**63 + 5).to_bytes(8, "big")
                                           for i in range(50)]
    for (_, value, p), slot in zip(both, slots.tolist(), strict=True):
        row, lstm, _ = decode_state(value)
        assert p == store.partition[slot] and row["seen"] == store.seen[slot]
        np.testing.assert_array_equal(lstm, store.lstm[slot])


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


def test_a_model_marker_round_trips_its_pattern_and_an_older_one_has_none():
    from detector.stream.state_keys import ModelMarker

    marker = ModelMarker("dip", 3, b"\x01" * 8, epoch=2, generation=5, pattern="dip")
    assert ModelMarker.decode(marker.encode()) == marker
    older = ModelMarker("seed", 0, b"\x02" * 8).encode()  # written before markers had one
    assert b"pattern" not in older and ModelMarker.decode(older).pattern == ""
