"""Per-stream state arrays and the state-topic record codec."""

import numpy as np
import pytest

from detector.model.features import LONGEST
from detector.stream.state import (
    _HEADER,
    _V2_HEADER,
    _V3_HEADER,
    FIELDS,
    HISTORY,
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
    assert row["kept"] == HISTORY and np.isnan(row["hist"][:-HISTORY]).all()
    np.testing.assert_array_equal(row["hist"][-HISTORY:], [np.nan, np.nan, 1e300, -2.5, 0.0,
                                                           1e-300, 7.0, 0.75])
    assert decode_state(encoded(0))[1].size == 0


def older(version: int) -> bytes:
    """``encoded()`` in the layout of an older version (2: no recent values; 3: eight)."""
    new = encoded()
    header = _V2_HEADER if version == 2 else _V3_HEADER
    old = np.zeros(1, header)
    row = np.frombuffer(new, _HEADER, count=1)[0]
    for name in _V2_HEADER.names:
        old[name] = row[name]
    old["magic"] = b"TDS" + bytes([version])
    values = _HEADER.itemsize + 8 * HISTORY
    if version == 3:
        old["hist"] = np.frombuffer(new, "<f8", HISTORY, _HEADER.itemsize)
    return old.tobytes() + new[values:]


def test_a_version_3_record_restores_with_its_eight_values():
    row, lstm, fp = decode_state(older(3))
    assert fp == FP and row["kept"] == HISTORY and row["seen"] == 12
    np.testing.assert_array_equal(row["hist"][-HISTORY:], decode_state(encoded())[0]["hist"][
        -HISTORY:])
    assert np.isnan(row["hist"][:-HISTORY]).all()
    np.testing.assert_array_equal(lstm, np.arange(4, dtype=np.float32) / 7)
    store = StreamStore(state_size=4)
    store.put(["x"], [row], [lstm])
    assert store.history == HISTORY and store.get("x")["prev"] == 0.75


def test_as_many_recent_values_as_the_writer_kept_round_trip():
    """A store keeping 32 values (a long model served) writes them all; a store restoring
    such a record keeps as many from then on, and one that keeps 32 restores 8 as 8."""
    store = StreamStore(state_size=0)
    store.ensure_history(LONGEST)
    slot = store.lookup(["x"], np.array([1]))
    values = np.linspace(-3, 5, LONGEST)
    values[:3] = np.nan
    store.hist[slot] = values
    store.seen[slot] = 29
    data = store.snapshot(slot, FP).records(0, 1)[0][1]
    assert len(data) == _HEADER.itemsize + 8 * LONGEST
    row, lstm, _ = decode_state(data)
    assert row["kept"] == LONGEST and lstm.size == 0 and row["prev"] == 5.0
    fresh = StreamStore(state_size=0)
    fresh.put(["x"], [row], [lstm])
    assert fresh.history == LONGEST
    np.testing.assert_array_equal(fresh.get("x")["hist"], values)
    assert fresh.get("x")["prev"] == 5.0
    row8, lstm8, _ = decode_state(encoded(0))
    fresh.put(["y"], [row8], [lstm8])
    got = fresh.get("y")["hist"]
    assert np.isnan(got[:-HISTORY]).all() and got[-1] == 0.75


def test_a_version_2_record_restores_without_recent_values():
    """Records written before the history existed: every field, the LSTM state, no values."""
    old, lstm, fp = decode_state(older(2))
    assert fp == FP and old["seen"] == 12 and old["prev"] == 0.75
    assert np.isnan(old["hist"][:-1]).all() and old["hist"][-1] == 0.75  # only prev known
    assert old["writer"] == LEGACY_WRITER  # keyed by the bare stream id
    np.testing.assert_array_equal(lstm, np.arange(4, dtype=np.float32) / 7)
    store = StreamStore(state_size=4)
    store.put(["x"], [old], [lstm])
    restored = store.get("x")
    assert np.isnan(restored["hist"][:-1]).all() and restored["seen"] == 12
    assert restored["prev"] == restored["hist"][-1] == 0.75


def test_a_record_keeping_more_values_than_any_model_reads_is_rejected():
    data = bytearray(encoded())
    data[_HEADER.fields["kept"][1]] = LONGEST + 1
    with pytest.raises(StateRecordError, match="does not match its 33 recent values"):
        decode_state(bytes(data))


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


def test_older_records_restore_under_the_legacy_writer():
    for version in (2, 3):
        old, lstm, _ = decode_state(older(version))
        assert old["writer"] == LEGACY_WRITER and old["last_offset"] == 4096
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
