"""LiteRT against Keras: the same flags on fresh and real-like streams; the default runtime keeps
TensorFlow out of the detector process; what cannot be converted is served by Keras."""

import hashlib
import json
import logging
import shutil
import sys

import keras
import numpy as np
import pytest

from detector.model.files import MODELS_DIR, SHIPPED, card_path
from detector.model.serving import ModelError, ModelStep, tflite_path
from detector.stream.engine import Batch, Engine
from detector.training.evaluation import battery
from detector.training.export import export_tflite
from tests.support import DetectorProcess, read_topic, send, uniform_events, wait_for

MODELS = [m for m in SHIPPED if (MODELS_DIR / f"{m}.keras").exists()]
#: Measured on the shipped models over 100,000 fresh events: 99.9% of probabilities agree within
#: 1e-5 (at most 0.09% of events differ by more), the largest difference is 8e-5 (seed) and
#: 1.2e-4 (pair, its state carried over 1,000 steps). LiteRT's reference kernels differ from
#: Keras as much: it is the order of float32 sums, not the XNNPACK delegate.
PROB_TOL, PROB_MAX = 1e-5, 1e-3


@pytest.fixture(scope="module")
def both():
    """Each model under both runtimes (LiteRT converted at load when it ships no .tflite)."""
    return {m: {rt: ModelStep.load(m, rt) for rt in ("keras", "litert")} for m in MODELS}


def run_streams(step: ModelStep, streams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every stream through one engine, one event of each live stream per batch, in order."""
    engine, probs, flags = Engine(step), [], []
    for t in range(max(len(s) for s in streams)):
        live = [i for i, s in enumerate(streams) if t < len(s)]
        res = engine.process(Batch.of([f"s{i}" for i in live],
                                      np.array([streams[i][t] for i in live]),
                                      seq=np.full(len(live), t)))
        probs.append(res.probability)
        flags.append(res.flag)
    return np.concatenate(probs), np.concatenate(flags)


def assert_same(pair: dict[str, ModelStep], streams: list[np.ndarray], share_within: float = 0
                ) -> None:
    """Flags identical; all probabilities within PROB_MAX, ``share_within`` of them within
    PROB_TOL."""
    kp, kf = run_streams(pair["keras"], streams)
    lp, lf = run_streams(pair["litert"], streams)
    assert pair["litert"].runtime == "litert"
    assert np.isfinite(kp).all() == np.isfinite(lp).all()
    assert (kf != lf).sum() == 0
    diff = np.abs(lp - kp)[np.isfinite(kp)]
    assert (diff <= PROB_TOL).mean() >= share_within, (diff <= PROB_TOL).mean()
    assert diff.max() <= PROB_MAX, diff.max()


@pytest.mark.parametrize("name", MODELS)
def test_runtimes_agree_on_100k_fresh_events(both, name):
    streams = list(np.random.default_rng(7).random((100, 1000)))
    assert_same(both[name], streams, share_within=0.999)


@pytest.mark.parametrize("name", MODELS)
def test_runtimes_agree_on_the_battery(both, name):
    """The whole battery: public real series and every generated shape. A stream longer than
    2,500 values goes as several (each from a cold state): the engine takes a step per value,
    and the two longest real series (7,500 and 8,759 values) would take most of the time."""
    streams = [v[i:i + 2500] for part in battery().values() for v in part.values()
               for i in range(0, len(v), 2500)]
    assert_same(both[name], streams, share_within=0.999)


@pytest.mark.parametrize("name", MODELS)
def test_runtimes_agree_on_real_like_series(both, name):
    rng = np.random.default_rng(8)
    t = np.arange(400)
    streams = [
        rng.integers(0, 5, 400).astype(float),  # small counts: many exact repeats
        np.repeat(rng.integers(0, 100, 100), 4).astype(float),  # plateaus
        1e9 + rng.integers(-1000, 1000, 400).astype(float),  # 1e9-scale with small steps
        -50 + 10 * np.sin(t / 7) + rng.normal(0, 0.5, 400),  # negative temperatures
        -1e6 * rng.random(400),  # large negative
        np.cumsum(rng.normal(0, 1e-4, 400)),  # a slow walk with tiny steps
    ]
    assert_same(both[name], streams)


def test_same_interface_and_fingerprint_under_both_runtimes(both):
    for pair in both.values():
        k, lt = pair["keras"], pair["litert"]
        assert (k.features, k.state_size, k.name, k.fingerprint) == \
            (lt.features, lt.state_size, lt.name, lt.fingerprint)
        assert lt.zero_state(3).shape == (3, lt.state_size)
        prob, state = lt(np.zeros((0, k._run.width), np.float32), lt.zero_state(0))
        assert prob.shape == (0,) and state.shape == (0, lt.state_size)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A copy of the seed model with its .tflite and card entry written by export_tflite."""
    out = tmp_path_factory.mktemp("model")
    keras_path = out / "seed.keras"
    shutil.copy(MODELS_DIR / "seed.keras", keras_path)
    shutil.copy(card_path(MODELS_DIR / "seed.keras"), card_path(keras_path))
    series = [np.arange(100.0) % 7]
    export_tflite(keras_path, series=series, series_label="a sawtooth")
    return keras_path


def test_export_records_hashes_and_agreement_and_keeps_the_card(converted):
    card = json.loads(card_path(converted).read_text())
    original = json.loads(card_path(MODELS_DIR / "seed.keras").read_text())
    assert {k: v for k, v in card.items() if k != "litert"} == \
        {k: v for k, v in original.items() if k != "litert"}
    entry = card["litert"]
    assert entry["sha256"] == hashlib.sha256(tflite_path(converted).read_bytes()).hexdigest()
    assert entry["keras_sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()
    assert entry["events"] == 64 * 250 + 100 and "a sawtooth" in entry["measured_on"]
    assert 0 <= entry["max_abs_difference"]["probability"] < PROB_MAX
    assert entry["flags_differing"] == 0
    assert entry["whole_streams"]["flags_differing"] == 0
    assert 0 <= entry["whole_streams"]["max_abs_difference"]["probability"] < PROB_MAX


def test_stale_or_missing_tflite_is_converted_at_load(converted, tmp_path, caplog):
    stale = tmp_path / "seed.keras"
    shutil.copy(converted, stale)
    shutil.copy(card_path(converted), card_path(stale))
    tflite_path(stale).write_bytes(b"not the converted step")  # its sha256 is not the card's
    with caplog.at_level(logging.INFO, logger="detector.model.serving"):
        step = ModelStep.load(str(stale))
    assert step.runtime == "litert"
    assert [r.message for r in caplog.records if "converted at load" in r.message]


def test_without_tensorflow_a_model_needing_conversion_is_one_line(tmp_path, monkeypatch):
    bare = tmp_path / "bare.keras"
    shutil.copy(MODELS_DIR / "seed.keras", bare)
    for module in ("tensorflow", "detector.model.conversion", "detector.model.keras_step"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    with pytest.raises(ModelError, match="needs TensorFlow, which is not installed") as info:
        ModelStep.load(str(bare))
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="keras runtime needs TensorFlow"):
        ModelStep.load(str(bare), "keras")


def test_without_litert_the_default_runtime_is_one_line(monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "detector.model.litert"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModelError, match=r"needs ai-edge-litert.*--runtime keras"):
        ModelStep.load("seed")


@keras.saving.register_keras_serializable(package="test_litert")
class Erfinv(keras.layers.Layer):
    """A layer whose op (tf.Erfinv) has no LiteRT builtin."""

    def call(self, x):
        return keras.ops.erfinv(x * 0.5)


def test_a_model_that_cannot_be_converted_is_served_by_keras(tmp_path, caplog):
    model = keras.Sequential([keras.Input((3, 1)), Erfinv(), keras.layers.LSTM(4),
                              keras.layers.Dense(1, activation="sigmoid")])
    path = tmp_path / "odd.keras"
    model.save(path)
    with caplog.at_level(logging.INFO, logger="detector.model.serving"):
        step = ModelStep.load(str(path))
    assert step.runtime == "keras" and step.features == "seed"
    notices = [r.getMessage() for r in caplog.records if "cannot be converted" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "Erfinv" in notices[0] and "serving it with Keras" in notices[0]
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    want = model(x[:, :, None], training=False).numpy()[:, 0]
    np.testing.assert_allclose(step(x)[0], want, atol=1e-6)


def _mapped_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


@pytest.mark.broker
@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_a_running_detector_loads_tensorflow_only_under_keras(kafka, converted, runtime):
    """Checked from outside: the libraries mapped into the process (/proc/PID/maps)."""
    send(kafka, kafka.values, uniform_events(20, 10))
    det = DetectorProcess(kafka, model=str(converted), DETECTOR_RUNTIME=runtime).start()
    try:
        wait_for(lambda: det.processed() >= 200, 90, what=lambda: det.output()[-2000:])
        libs = _mapped_libraries(det.proc.pid)
        tensorflow = [lib for lib in libs if lib.startswith("libtensorflow")]
        litert = [lib for lib in libs if lib.startswith("libLiteRt")]
        assert bool(tensorflow) == (runtime == "keras"), sorted(libs)
        assert bool(litert) == (runtime == "litert"), sorted(libs)
        assert f"on {runtime}" in det.output()
        assert len(read_topic(kafka, kafka.flags, expect=200)) == 200
    finally:
        det.terminate()
        det.close()


def test_one_step_shared_by_threads_gives_each_its_own_answer(both):
    """The interpreter's tensors are shared: concurrent calls of different sizes must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    step = both[MODELS[-1]]["litert"]
    rng = np.random.default_rng(9)
    jobs = [(rng.random((n, step._run.width)).astype(np.float32),
             rng.random((n, step.state_size)).astype(np.float32)) for n in (1, 7, 64, 300) * 10]
    alone = [step(x, s) for x, s in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: step(*job), jobs))
    for (p1, s1), (p2, s2) in zip(alone, together, strict=True):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(s1, s2)


def test_a_file_converted_before_the_chunk_signature_still_serves(both):
    """A .tflite holding only the step, under its old key: one event of each stream per call,
    the same flags."""
    import tensorflow as tf

    from detector.model.keras_step import KerasStep
    from detector.model.litert import LiteRTStep

    keras_step = both["pair"]["keras"]
    step = KerasStep(keras_step.model)

    def _stateful(x, state):
        return step._stateful(x, state)

    function = tf.function(_stateful, input_signature=[
        tf.TensorSpec((None, step.width), tf.float32, name="x"),
        tf.TensorSpec((None, step.state_size), tf.float32, name="state")])
    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in step.model.weights]
    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], holder).convert()
    old = LiteRTStep(content)
    assert old.chunk == 0 and old.state_size == step.state_size
    current = both["pair"]["litert"]
    served = ModelStep(old, "pair", "pair", current.fingerprint, "litert", current.path)
    values = np.random.default_rng(3).random(300)
    batch = Batch.of(["hot"] * 300, values)
    got, want = Engine(served).process(batch), Engine(current).process(batch)
    assert got.calls == 300 and want.calls < 300
    assert (got.flag == want.flag).all()
    np.testing.assert_allclose(got.probability, want.probability, atol=PROB_TOL)
