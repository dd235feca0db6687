"""The model lifecycle in a running group, against the real local broker: versions in the
registry, a promotion under load with a replica killed right after it, shadow, rollback, a
version that cannot load, and ``models push`` refusing what does not fit."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time

import pytest

from detector.cli.main import main
from detector.kafka.registry import Registry, Version
from detector.model.files import MODELS_DIR, sha256
from detector.model.serving import ModelStep
from detector.settings.kafka import KafkaSettings
from detector.testing.harness import events_of
from tests.support import (
    DetectorProcess,
    DetectorThread,
    copy_model,
    read_topic,
    send,
    settings,
    uniform_events,
    wait_for,
)

pytestmark = pytest.mark.broker


def push_shipped(registry: Registry, name: str, model: str) -> int:
    path = MODELS_DIR / f"{model}.keras"
    card = json.loads(path.with_suffix(".card.json").read_text())
    version, _ = registry.push(name, path.with_suffix(".tflite").read_bytes(), card, sha256(path))
    return version.version


def by_stream(outputs: list[dict]) -> dict[str, list[dict]]:
    """Each stream's outputs in seq order, duplicates included (first seen first)."""
    out: dict[str, list[dict]] = {}
    for rec in outputs:
        out.setdefault(rec["stream"], []).append(rec)
    return {s: sorted(recs, key=lambda r: r["seq"]) for s, recs in out.items()}


def check_lifecycle(outputs: list[dict], events: int, versions: list[int]) -> None:
    """Nothing lost; duplicates identical (flag and version); every flag the rule's (both
    shipped models are exact on the rule); each stream's versions in the order given."""
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for rec in outputs:
        key, value = (rec["stream"], rec["seq"]), (rec["flag"], rec["model_version"])
        assert seen.setdefault(key, value) == value, f"duplicates differ at {key}"
        assert rec["flag"] == rec["rule_flag"], rec
    assert len(seen) == events
    for stream, recs in by_stream(outputs).items():
        order = [r["model_version"] for r in recs]
        changes = [v for i, v in enumerate(order) if i == 0 or v != order[i - 1]]
        assert changes == versions[versions.index(changes[0]):][:len(changes)], (stream, changes)


def feed_slowly(kafka: KafkaSettings, records: list, chunks: int, pause_s: float
                ) -> threading.Thread:
    def run() -> None:
        step = max(1, len(records) // chunks)
        for i in range(0, len(records), step):
            send(kafka, kafka.values, records[i:i + step])
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_promotion_under_load_with_a_replica_killed_right_after(kafka):
    """seed v1 live, pair v2 promoted while two replicas serve; one is SIGKILLed as soon as it
    has swapped, a third takes its partitions. Right after its swap every stream is served by
    pair from state rebuilt from its recent values: every flag must still be the rule's."""
    registry = Registry(kafka, kafka.models)
    assert push_shipped(registry, "trend", "seed") == 1
    assert push_shipped(registry, "trend", "pair") == 2
    records = uniform_events(120, 150, seed=5)
    dets = [DetectorProcess(kafka, model="trend").start() for _ in range(2)]
    started = list(dets)
    try:
        wait_for(lambda: all(d.healthz() == 200 for d in dets), 90, what="two replicas ready")
        feeder = feed_slowly(kafka, records, 30, 0.4)
        wait_for(lambda: sum(d.processed() for d in dets) > len(records) // 4, 60,
                 what="a quarter processed")
        registry.change("trend", "promote", 2)
        victim = wait_for(lambda: next((d for d in dets if (d.metric(
            "detector_model_swaps_total") or 0) > 0), None), 60, every=0.05,
            what="a replica to swap")
        victim.kill()
        dets.remove(victim)
        dets.append(DetectorProcess(kafka, model="trend").start())
        started.append(dets[-1])
        feeder.join()
        wait_for(lambda: len(events_of(read_topic(kafka, kafka.flags, settle=0.5)))
                 >= len(records), 180, every=1, what="every event to have an output")
        for d in dets:
            assert d.terminate() == 0
    finally:
        for d in started:
            d.close()
        registry.close()
    outputs = [r.json() for r in read_topic(kafka, kafka.flags)]
    check_lifecycle(outputs, len(records), [1, 2])
    last = {s: recs[-1]["model_version"] for s, recs in by_stream(outputs).items()}
    assert set(last.values()) == {2}  # every partition of every replica moved
    alerts = [r.json() for r in read_topic(kafka, kafka.alerts)]
    assert alerts and all(a["model_version"] in (1, 2) for a in alerts)


@pytest.mark.slow
def test_shadow_then_rollback_in_one_detector(kafka, dip_model):
    """pair shadows seed: they agree (both exact on the rule). A model of another pattern
    shadows: its disagreements are counted. Promote then roll back: every stream back on v1."""
    registry = Registry(kafka, kafka.models)
    push_shipped(registry, "trend", "seed")
    push_shipped(registry, "trend", "pair")
    model, _ = dip_model
    card = json.loads(model.with_suffix(".card.json").read_text())
    dip, _ = registry.push("trend", model.with_suffix(".tflite").read_bytes(), card,
                           sha256(model))
    registry.change("trend", "shadow", 2)
    det = DetectorThread(settings(kafka, model="trend", candidate_topic=kafka.candidates),
                         None, serve_metrics=True).start()
    try:
        records = uniform_events(50, 120, seed=7)
        send(kafka, kafka.values, records[:3000])
        wait_for(lambda: det.value("detector_events_processed_total") >= 3000, 60,
                 what="the first part")
        # The candidate answers each batch right after the live model: its count follows.
        wait_for(lambda: det.value("detector_shadow_events_total") >= 2900, 30,
                 what="the candidate's answers")
        events = det.value("detector_shadow_events_total")
        assert det.value("detector_shadow_disagreements_total") <= 0.001 * events
        assert det.value("detector_model_info", {"name": "trend", "version": "2",
                                                  "role": "candidate"}) == 1
        candidates = read_topic(kafka, kafka.candidates, expect=int(events))
        assert {r.json()["model_version"] for r in candidates} == {2}
        registry.change("trend", "shadow", dip.version)
        wait_for(lambda: det.value("detector_model_info", {
            "name": "trend", "version": str(dip.version), "role": "candidate"}) == 1, 30,
            what="the new candidate")
        send(kafka, kafka.values, records[3000:4500])
        wait_for(lambda: det.value("detector_events_processed_total") >= 4500, 60,
                 what="the second part")
        assert det.value("detector_shadow_disagreements_total") > 100  # another pattern
        registry.change("trend", "unshadow")
        registry.change("trend", "promote", 2)
        wait_for(lambda: det.value("detector_model_swaps_total") >= 1, 30, what="the promotion")
        swapped = det.value("detector_model_swaps_total")  # partitions: all at one checkpoint
        send(kafka, kafka.values, records[4500:5200])
        wait_for(lambda: det.value("detector_events_processed_total") >= 5200, 60,
                 what="events under v2")
        registry.change("trend", "rollback")
        wait_for(lambda: det.value("detector_model_swaps_total") >= 2 * swapped, 30,
                 what="the rollback")
        send(kafka, kafka.values, records[5200:])
        wait_for(lambda: det.value("detector_events_processed_total") >= len(records), 60,
                 what="the rest")
        assert det.value("detector_model_info", {"name": "trend", "version": "1",
                                                  "role": "live"}) == 1
    finally:
        det.stop()
        registry.close()
    outputs = [r.json() for r in read_topic(kafka, kafka.flags)]
    check_lifecycle(outputs, len(records), [1, 2, 1])
    tail = [recs[-1]["model_version"] for recs in by_stream(outputs).values()]
    assert set(tail) == {1}


@pytest.mark.slow
def test_a_version_that_cannot_load_leaves_the_current_one_serving(kafka):
    registry = Registry(kafka, kafka.models)
    push_shipped(registry, "trend", "seed")
    seed_card = json.loads((MODELS_DIR / "seed.card.json").read_text())
    junk = b"these bytes are no model"
    broken = Version("trend", 2, hashlib.sha256(junk).hexdigest(),
                     seed_card["litert"]["keras_sha256"], seed_card, size=len(junk), chunks=1)
    registry._write([("chunk/trend/2/0", junk), ("version/trend/2", broken.record())])
    det = DetectorThread(settings(kafka, model="trend"), None, serve_metrics=True).start()
    try:
        send(kafka, kafka.values, uniform_events(10, 50, seed=3))
        wait_for(lambda: det.value("detector_events_processed_total") >= 500, 60, what="events")
        registry.change("trend", "promote", 2)
        wait_for(lambda: det.value("detector_model_load_failures_total") >= 1, 30,
                 what="the failed load")
        send(kafka, kafka.values, uniform_events(10, 100, seed=3)[500:])
        wait_for(lambda: det.value("detector_events_processed_total") >= 1000, 60,
                 what="events after")
        import urllib.request

        body = urllib.request.urlopen(
            f"http://127.0.0.1:{det.server.port}/healthz").read().decode()
        assert body.startswith("ready") and "v2 failed to load" in body
        assert det.value("detector_model_swaps_total") == 0
    finally:
        det.stop()
        registry.close()
    versions = {r.json()["model_version"] for r in read_topic(kafka, kafka.flags)}
    assert versions == {1}


def test_push_validates_and_counts_versions_per_name(kafka, tmp_path, capsys):
    base = ["--bootstrap-servers", kafka.bootstrap_servers, "--models-topic", kafka.models]
    assert main(["models", "push", "seed", "--name", "trend", *base]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"] == 1
    assert main(["models", "push", "pair", "--name", "trend", *base]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["version"] == 2 and len(out["sha256"]) == 64
    assert main(["models", "push", "pair", "--name", "other", *base]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"] == 1
    # Not a model; no .tflite beside it; a card that does not fit its step.
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    stale = tmp_path / "stale.keras"
    shutil.copy(MODELS_DIR / "seed.keras", stale)
    wrong = tmp_path / "wrong.keras"
    for suffix in (".keras", ".tflite"):
        shutil.copy((MODELS_DIR / "seed").with_suffix(suffix), wrong.with_suffix(suffix))
    card = json.loads((MODELS_DIR / "seed.card.json").read_text())
    wrong.with_suffix(".card.json").write_text(json.dumps({**card, "features": "pair"}))
    for path, says in ((junk, "is not a Keras model"), (stale, "no current .tflite"),
                       (wrong, "the pair feature set gives 2")):
        assert main(["models", "push", str(path), "--name", "trend", *base]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    assert main(["models", "promote", "trend", "9", *base]) == 2
    assert "has no version 9" in capsys.readouterr().err
    assert main(["models", "list", "--json", *base]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listing["trend"]["live"] == 1 and len(listing["trend"]["versions"]) == 2
    # A name that is neither shipped, nor a file, nor in the registry: one line, exit 2.
    assert main(["run", "--model", "nope", "--metrics-port", "0", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert "model 'nope': not one of seed, pair" in err and "nothing live under that name" in err


def test_push_and_promote_ask_for_force_and_a_second_push_says_what_it_is(kafka, tmp_path,
                                                                         capsys):
    """A model whose card misses its target, or one that detects something else than the
    live version of the name, is refused without --force (every detector following the
    name would serve it); the same file pushed twice is the version it already is."""
    base = ["--bootstrap-servers", kafka.bootstrap_servers, "--models-topic", kafka.models]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, *base])
        out, err = capsys.readouterr()
        return code, out, err.strip()

    assert run("models", "push", "seed", "--name", "trend")[0] == 0
    code, out, _ = run("models", "push", "seed", "--name", "trend")
    assert code == 0 and "is trend v1 already (the same step): nothing pushed; it is live" in out
    weak = copy_model(tmp_path, "pair", "weak", target={"accuracy": 0.999, "f1": 0.99,
                                                        "reached": False},
                      held_out={"accuracy": 0.97, "f1": 0.61})
    code, _, err = run("models", "push", weak, "--name", "trend")
    assert code == 2 and len(err.splitlines()) == 1
    assert ("does not reach its target (held out: accuracy 97.00%, f1 0.6100; target: "
            "accuracy 0.999, f1 0.99): `models push ... --force`") in err
    code, out, _ = run("models", "push", weak, "--name", "trend", "--force")
    assert code == 0 and "pushed" in out and "as trend v2" in out
    code, _, err = run("models", "promote", "trend", "2")
    assert code == 2 and "trend v2 does not reach its target" in err
    assert run("models", "promote", "trend", "2", "--force")[0] == 0
    # A pattern model under a name that serves trends, and the other way round.
    dip = copy_model(tmp_path, "pair", "dip", pattern="dip")
    assert run("models", "push", dip, "--name", "dip")[0] == 0
    code, _, err = run("models", "push", "seed", "--name", "dip")
    assert code == 2 and "dip serves the pattern 'dip' (v1 live);" in err
    assert "detects trends: `models push ... --force`" in err
    assert run("models", "push", "seed", "--name", "dip", "--force")[0] == 0
    code, _, err = run("models", "promote", "dip", "2")
    assert code == 2 and "dip v2 detects trends" in err
    assert run("models", "promote", "dip", "2", "--force")[0] == 0
    assert run("models", "list", "--json")[0] == 0


def test_a_model_path_pins_the_file_and_a_name_follows_the_registry(kafka, tmp_path):
    """``--model models/trend.keras`` serves that file even though the registry holds a live
    ``trend`` (and a promotion under that name moves nothing); ``--model trend`` follows the
    registry."""
    registry = Registry(kafka, kafka.models)
    pinned_file = copy_model(tmp_path, "seed", "trend")
    try:
        push_shipped(registry, "trend", "pair")
        send(kafka, kafka.values, uniform_events(5, 40, seed=4))
        pinned = DetectorThread(settings(kafka, model=pinned_file),
                                ModelStep.load(pinned_file)).start()
        try:
            assert pinned.pipeline.rollout.pinned
            wait_for(lambda: pinned.value("detector_events_processed_total") >= 200, 60)
            push_shipped(registry, "trend", "seed")
            registry.change("trend", "promote", 2)
            send(kafka, kafka.values, uniform_events(5, 60, seed=4)[200:])
            wait_for(lambda: pinned.value("detector_events_processed_total") >= 300, 60)
            time.sleep(1)  # several looks at the registry
            assert pinned.value("detector_model_swaps_total") == 0
            assert pinned.value("detector_model_info", {"name": "trend", "version": "0",
                                                       "role": "live"}) == 1
        finally:
            pinned.stop()
    finally:
        registry.close()
    flags = [r.json() for r in read_topic(kafka, kafka.flags)]
    assert len(flags) == 300 and {(f["model"], f["model_version"]) for f in flags} == {
        ("trend", 0)}
    follower = DetectorThread(settings(kafka, model="trend", group_id=kafka.name("other")),
                              None).start()
    try:
        assert not follower.pipeline.rollout.pinned and follower.pipeline.step.version == 2
    finally:
        follower.stop()
