"""A run belongs to the model that opened it: at a promotion, at a restart with another model
and at a restore under a model that did not write the state, an open run is resolved under
its own model with the reason, and the next model's runs start afresh. Never a run opened by
one model (or version) and resolved under another's name."""

from __future__ import annotations

import json

import pytest

from detector.kafka.registry import Registry
from detector.model.files import MODELS_DIR, sha256
from detector.model.serving import ModelStep
from tests.support import DetectorThread, copy_model, event, read_topic, send, settings, wait_for

pytestmark = pytest.mark.broker


def rising(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    """Stream "up" climbing without end: one trend run (or one run of pattern flags)."""
    return [event("up", t, float(t)) for t in range(start, stop)]


def runs_by_opener(kafka) -> dict[tuple[str, int], list[dict]]:
    """Every run record, by (stream, start_seq): a run's firing and its resolution."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in read_topic(kafka, kafka.alerts):
        rec = r.json()
        out.setdefault((rec["stream"], rec["start_seq"]), []).append(rec)
    return out


def assert_one_model_a_run(by_run: dict[tuple[str, int], list[dict]]) -> None:
    for key, recs in by_run.items():
        owners = {(r["model"], r["model_version"], r.get("pattern"), r.get("direction"))
                  for r in recs}
        assert len(owners) == 1, (key, recs)


def run_until(kafka, step, model: str, records: list, processed: int) -> DetectorThread:
    send(kafka, kafka.values, records)
    det = DetectorThread(settings(kafka, model=model), step).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= processed, 90,
                 what=f"{processed} events through {model}")
    finally:
        det.stop()
    return det


def test_a_promotion_resolves_open_runs_under_the_version_that_opened_them(kafka):
    registry = Registry(kafka, kafka.models)
    try:
        for model in ("seed", "pair"):
            path = MODELS_DIR / f"{model}.keras"
            registry.push("trend", path.with_suffix(".tflite").read_bytes(),
                          json.loads(path.with_suffix(".card.json").read_text()), sha256(path))
        send(kafka, kafka.values, rising(0, 40))
        det = DetectorThread(settings(kafka, model="trend"), None).start()
        try:
            wait_for(lambda: det.value("detector_events_processed_total") >= 40, 60)
            registry.change("trend", "promote", 2)
            wait_for(lambda: det.value("detector_model_swaps_total") >= 1, 60, what="the swap")
            send(kafka, kafka.values, rising(40, 80))
            wait_for(lambda: det.value("detector_events_processed_total") >= 80, 60)
        finally:
            det.stop()
    finally:
        registry.close()
    by_run = runs_by_opener(kafka)
    assert_one_model_a_run(by_run)
    first = by_run[("up", 2)]  # opened by v1 at its first flag, the third value
    assert [(r["status"], r["model_version"], r.get("reason")) for r in first] == [
        ("firing", 1, None), ("resolved", 1, "model_swap")]
    last_seq = first[1]["seq"]
    assert first[1]["length"] == last_seq + 1 and first[1]["value"] == float(last_seq)
    later = [recs for (stream, start), recs in by_run.items() if stream == "up" and start > 2]
    assert len(later) == 1 and later[0][0]["status"] == "firing"
    assert later[0][0]["model_version"] == 2 and later[0][0]["start_seq"] > last_seq


def test_a_restart_with_a_pattern_model_resolves_the_trend_run_under_its_own_model(
        kafka, tmp_path, steps):
    """State from ``seed``; the group restarted with a pattern model: the partition's marker
    names seed, which serves until the swap, where its open run is resolved under seed."""
    run_until(kafka, steps("seed"), "seed", rising(0, 30), 30)
    pattern = copy_model(tmp_path, "pair", "climb", pattern="climb")
    send(kafka, kafka.values, rising(30, 40))
    det = DetectorThread(settings(kafka, model=pattern), ModelStep.load(pattern)).start()
    try:  # seed serves the events that wait, until the swap at a checkpoint; then climb
        wait_for(lambda: det.value("detector_model_swaps_total") >= 1, 60, what="the swap")
        send(kafka, kafka.values, rising(40, 70))
        wait_for(lambda: det.value("detector_events_processed_total") >= 40, 60)
    finally:
        det.stop()
    by_run = runs_by_opener(kafka)
    assert_one_model_a_run(by_run)
    trend = by_run[("up", 2)]
    assert [(r["status"], r["model"], r.get("direction"), r.get("reason")) for r in trend] == [
        ("firing", "seed", "up", None), ("resolved", "seed", "up", "model_swap")]
    climbs = [recs for (stream, start), recs in by_run.items() if start != 2]
    assert climbs and all(r["model"] == "climb" and r["pattern"] == "climb"
                          and "direction" not in r for recs in climbs for r in recs)
    assert min(recs[0]["start_seq"] for recs in climbs) > trend[1]["seq"]


def test_a_restore_under_a_model_that_did_not_write_the_state_starts_runs_afresh(
        kafka, tmp_path, steps, caplog):
    """The marker names a file this detector cannot load (another machine's ``mine.keras``):
    the live model serves at once, the open run is resolved under ``mine`` with the reason,
    and the log says so once."""
    mine = copy_model(tmp_path, "seed", "mine")
    run_until(kafka, ModelStep.load(mine), mine, rising(0, 30), 30)
    caplog.set_level("INFO", logger="detector.kafka.rebalance")
    run_until(kafka, steps("pair"), "pair", rising(30, 50), 20)
    by_run = runs_by_opener(kafka)
    assert_one_model_a_run(by_run)
    assert [(r["status"], r["model"], r.get("reason")) for r in by_run[("up", 2)]] == [
        ("firing", "mine", None), ("resolved", "mine", "model_changed")]
    assert by_run[("up", 2)][1]["seq"] == 29
    later = [recs for (_, start), recs in by_run.items() if start != 2]
    assert later and all(r["model"] == "pair" for recs in later for r in recs)
    assert min(recs[0]["start_seq"] for recs in later) >= 30
    said = [r.getMessage() for r in caplog.records if "their runs start afresh" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("state another model wrote, restored under pair v0: partition ")
    assert "written by mine v0, 1 fired run(s) resolved under it" in said[0], said
