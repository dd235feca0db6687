"""The engine over whole streams at once equals the engine one event at a time: the same flags,
rule flags, seqs, duplicates, replays, gaps, run records and stored state, for ragged polls
where some streams carry hundreds of events, under both runtimes."""

import numpy as np
import pytest

from detector.stream.engine import Batch, Engine
from detector.stream.state import FIELDS, decode_state
from detector.training.evaluation import battery

MODELS = ("seed", "pair")
PROB_TOL = 1e-5
#: Compared exactly, event by event.
EXACT = ("processed", "duplicate", "replayed", "gap", "seq", "flag", "direction", "rule_flag")


def ragged(rng: np.random.Generator, n: int, streams: int, hot: float = 0.0, start: int = 0
           ) -> Batch:
    """A poll of ``n`` events: ``hot`` of them from stream 0, the rest spread unevenly; with
    repeated and stale seqs, an epoch change, input without seq, replayed offsets and ties."""
    weights = rng.pareto(1.0, streams) + 0.01
    weights[0] = 0
    ids = rng.choice(streams, n, p=weights / weights.sum())
    ids[rng.random(n) < hot] = 0
    count: dict[int, int] = {}
    seq = np.zeros(n, np.int64)
    for i, s in enumerate(ids.tolist()):
        seq[i] = count.get(s, 0)
        count[s] = seq[i] + 1
    seq[rng.random(n) < 0.03] -= rng.integers(1, 4)  # repeated or stale: duplicates
    restarted = (np.arange(n) > 0.8 * n) & (ids % 2 == 0)  # their producer restarted
    seq[restarted] -= seq[restarted].min()
    epoch = np.where(restarted, start + 1, start)
    epoch[rng.random(n) < 0.005] -= 1  # stale: an older producer's event
    seq[ids % 7 == 3] = -1  # streams without seq: the engine counts their events
    epoch[ids % 7 == 3] = -1
    offset = 2 * (np.arange(n) + 10 * start)
    # Below an earlier event's: replayed. Odd, so never another event's offset (the events of
    # one record share theirs: test_events_of_one_record_share_its_offset).
    offset[rng.random(n) < 0.02] -= 601
    values = np.round(rng.random(n) * 8) / 8  # many ties
    values[ids % 5 == 1] = rng.random(int((ids % 5 == 1).sum()))
    return Batch.of([f"s{s}" for s in ids.tolist()], values, seq=seq, partition=ids % 3,
                    offset=offset, epoch=epoch, ts=np.arange(n) * 0.5)


def part(batch: Batch, i: int) -> Batch:
    return Batch(batch.streams[i:i + 1], *(getattr(batch, f)[i:i + 1] for f in
                                           ("seq", "value", "partition", "offset", "epoch",
                                            "ts")))


def one_at_a_time(step, batches: list[Batch]) -> tuple[Engine, list[dict]]:
    engine, out = Engine(step, wall_clock=lambda: 1e9), []
    for batch in batches:
        got = {f: [] for f in (*EXACT, "probability")} | {"runs": []}
        for i in range(len(batch.streams)):
            res = engine.process(part(batch, i))
            for f in (*EXACT, "probability"):
                got[f].append(getattr(res, f)[0])
            got["runs"] += [r.__class__(i, *(getattr(r, f) for f in
                                             ("status", "direction", "start_seq", "start_ts",
                                              "length"))) for r in res.runs]
        out.append({f: np.array(v) if f != "runs" else v for f, v in got.items()})
    return engine, out


def whole(step, batches: list[Batch]) -> tuple[Engine, list]:
    engine = Engine(step, wall_clock=lambda: 1e9)
    return engine, [engine.process(b) for b in batches]


def assert_same(step, batches: list[Batch]) -> None:
    alone_engine, alone = one_at_a_time(step, batches)
    together_engine, together = whole(step, batches)
    for want, got in zip(alone, together, strict=True):
        for f in EXACT:
            np.testing.assert_array_equal(getattr(got, f), want[f], err_msg=f)
        done = want["processed"]
        np.testing.assert_allclose(got.probability[done], want["probability"][done],
                                   atol=PROB_TOL)
        assert sorted(got.runs, key=lambda r: (r.index, r.status != "resolved")) == want["runs"]
    a, b = alone_engine.store, together_engine.store
    for name in [f for f, _, _ in FIELDS if f not in ("scale", "run_start_ts")]:
        for key in a.keys:
            if key is not None:
                assert getattr(a, name)[a.slot_of(key)] == getattr(b, name)[b.slot_of(key)], name
    slots_a = [a.slot_of(k) for k in a.keys if k is not None]
    slots_b = [b.slot_of(k) for k in a.keys if k is not None]
    np.testing.assert_allclose(b.scale[slots_b], a.scale[slots_a], rtol=1e-13)
    np.testing.assert_array_equal(b.run_start_ts[slots_b], a.run_start_ts[slots_a])
    np.testing.assert_allclose(b.lstm[slots_b], a.lstm[slots_a], atol=PROB_TOL)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seed", range(3))
def test_ragged_polls_equal_one_event_at_a_time(steps, name, seed):
    rng = np.random.default_rng(seed)
    batches = [ragged(rng, 700, 40, 0.5), ragged(rng, 300, 40, 0, 100),
               ragged(rng, 400, 5, 0.9, 200)]
    assert_same(steps(name), batches)


def test_the_keras_runtime_too():
    from detector.model.serving import ModelStep

    step = ModelStep.load("pair", "keras")
    assert step.chunk > 0
    assert_same(step, [ragged(np.random.default_rng(5), 500, 10, hot=0.7)])


@pytest.mark.parametrize("name", MODELS)
def test_the_battery_in_polls_of_whole_streams_equals_one_event_per_poll(steps, name):
    """Every battery stream in polls of 5,000 consecutive events of few streams, against the
    same streams fed one event of each per poll."""
    streams = [v for p in battery().values() for v in p.values()]
    step = steps(name)
    names = [f"s{i}" for i in range(len(streams))]
    by_event = Engine(step)
    want = []
    for t in range(max(len(s) for s in streams)):
        live = [i for i, s in enumerate(streams) if t < len(s)]
        res = by_event.process(Batch.of([names[i] for i in live],
                                        np.array([streams[i][t] for i in live]),
                                        seq=np.full(len(live), t)))
        want += [(i, t, res.flag[j], res.probability[j]) for j, i in enumerate(live)]
    want.sort()
    ids = np.concatenate([np.full(len(s), i) for i, s in enumerate(streams)])
    seq = np.concatenate([np.arange(len(s)) for s in streams])
    values = np.concatenate(streams)
    by_stream = Engine(step)
    flags, probs = [], []
    for start in range(0, len(values), 5000):
        cut = slice(start, start + 5000)
        res = by_stream.process(Batch.of([names[i] for i in ids[cut]], values[cut],
                                         seq=seq[cut]))
        assert res.calls < 500
        flags.append(res.flag)
        probs.append(res.probability)
    np.testing.assert_array_equal(np.concatenate(flags), [w[2] for w in want])
    np.testing.assert_allclose(np.concatenate(probs), [w[3] for w in want], atol=PROB_TOL)


def test_a_hot_stream_needs_few_model_calls(steps):
    step = steps("pair")
    res = Engine(step).process(Batch.of(["hot"] * 5000 + [f"s{i}" for i in range(100)],
                                        np.random.default_rng(0).random(5100)))
    assert res.processed.all()
    assert res.calls <= 5000 // step.chunk + step.chunk
    assert sum(res.call_sizes) == 5100
    seed = Engine(steps("seed")).process(Batch.of(["hot"] * 5000,
                                                  np.random.default_rng(0).random(5000)))
    assert seed.calls == 1


def test_an_empty_poll_and_a_poll_of_duplicates_only(steps):
    engine = Engine(steps("pair"))
    assert engine.process(Batch.of([], np.zeros(0))).calls == 0
    engine.process(Batch.of(["a"] * 3, [1.0, 2.0, 3.0], seq=[0, 1, 2]))
    res = engine.process(Batch.of(["a"] * 3, [1.0, 2.0, 3.0], seq=[0, 1, 2]))
    assert res.duplicate.all() and res.calls == 0 and not res.processed.any()


def test_events_of_one_record_share_its_offset(steps):
    """Lines of one series in one line-protocol record: every one is an event in its batch,
    and every one is a replay once state covers that record."""
    engine = Engine(steps("pair"))
    batch = Batch.of(["a", "a", "b", "a"], [1.0, 2.0, 5.0, 3.0], offset=[5, 5, 5, 6])
    first = engine.process(batch)
    assert first.processed.all() and first.seq.tolist() == [0, 1, 0, 2]
    assert first.flag[3] == 1  # 1, 2, 3: the three are one stream, in order
    again = engine.process(batch)
    assert again.replayed.all()
    crashed = Engine(steps("pair"))
    crashed.process(Batch.of(["a", "a"], [1.0, 2.0], offset=[5, 5]))  # checkpointed, then lost
    _, record, _ = crashed.store.snapshot(np.array([crashed.store.slot_of("a")]),
                                          b"x" * 8).records(0, 1)[0]
    row, lstm, _ = decode_state(record)
    restored = Engine(steps("pair"))
    restored.store.put(["a"], [row], [lstm])
    res = restored.process(Batch.of(["a", "a", "a"], [1.0, 2.0, 3.0], offset=[5, 5, 6]))
    assert res.replayed.tolist() == [True, True, False] and res.seq[2] == 2
    assert res.flag[2] == first.flag[3]


def test_a_stream_on_two_partitions_is_counted_and_logged_once(steps, caplog, monkeypatch):
    import detector.stream.engine as engine_module

    monkeypatch.setattr(engine_module, "CONFLICTS_LOGGED", 3)
    engine = Engine(steps("seed"))
    res = engine.process(Batch.of(["a", "a", "b"], [1.0, 2.0, 3.0], partition=[0, 1, 1]))
    assert res.partition_conflicts == 1 and res.processed.all()
    assert engine.process(Batch.of(["a", "b"], [3.0, 4.0], partition=[0, 1])
                          ).partition_conflicts == 1  # "a" went on at partition 1
    logged = [r.getMessage() for r in caplog.records if "partition" in r.getMessage()]
    assert logged == ["stream 'a' arrives on input partitions 0 and 1: its order, and so its "
                      "flags, hold only within one partition; key its records by the stream "
                      "or by something its id contains"]
    caplog.clear()
    streams = [s for name in "cdefg" for s in (name, name)]
    res = engine.process(Batch.of(streams, np.ones(10), partition=[0, 2] * 5))
    assert res.partition_conflicts == 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].startswith("more than 3 streams arrive on two")
