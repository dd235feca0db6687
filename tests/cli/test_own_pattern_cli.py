"""``train``, ``evaluate`` and ``plot`` on a labeled CSV from the command line: what they write
and print, and one readable line (exit 2) for every mistake in the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from detector.cli.main import main
from tests.support import ROOT, write_labeled


def labeled_file(tmp_path, rows: list[str], header: str = "stream,value,label"):
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


GOOD = [f"a,{v},{int(v > 2)}" for v in (1, 3, 2, 4, 1, 5, 0, 3, 2, 6)]


def train(path, *extra: str) -> list[str]:
    return ["train", "--csv", str(path), "--value-column", "value", "--label-column", "label",
            "--stream-column", "stream", "--name", "mine", *extra]


@pytest.mark.parametrize(("rows", "header", "says"), [
    (GOOD, "stream,reading,label", "no column 'value'"),
    (["a,1,0", "a,nan,1", *GOOD], None, "row 3, column 'value': 'nan' is not a finite number"),
    (["a,1,0", "a,1e400,1", *GOOD], None, "row 3, column 'value': '1e400'"),
    (["a,1,0", "a,2,yes", *GOOD], None, "row 3, column 'label': label 'yes' is not 0 or 1"),
    (["a,1,0", "a,2,2", *GOOD], None, "label '2' is not 0 or 1"),
    ([f"a,{v},0" for v in range(20)], None, "every label in column 'label' is 0"),
    (["a,1,0", "a,2,1", "a,3,0"], None, "3 event(s); the model's window needs at least 8"),
    (["a,1,0", ",2,1", *GOOD], None, "row 3, column 'stream': no stream id"),
])
def test_every_mistake_in_the_file_is_one_line_and_exit_2(tmp_path, capsys, rows, header,
                                                          says):
    path = labeled_file(tmp_path, rows, header or "stream,value,label")
    assert main(train(path, "--out", str(tmp_path))) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.glob("*.keras"))


def test_options_that_do_not_fit_are_refused(tmp_path, capsys):
    path = labeled_file(tmp_path, GOOD)
    cases = [
        (["train", "--csv", str(path), "--value-column", "value", "--label-column", "label"],
         "--csv needs --name NAME"),
        (["train", "--csv", str(path), "--label-column", "label", "--name", "x"],
         "--label-column needs --value-column"),
        (["train", "--label-column", "label", "--value-column", "value", "--name", "x"],
         "--label-column needs --csv"),
        ([*train(path), "--features", "pair"], "--features does not apply with --csv"),
        (["evaluate", "--csv", str(path), "--value-column", "value"],
         "--value-column needs --label-column"),
        (["evaluate", "--csv", str(path), "--value-column", "value", "--label-column",
          "label", "--column", "value"], "--column does not apply with --label-column"),
        (["train"], "train needs --features seed|pair"),
        (["train", "--features", "pair", "--history", "12"], "--history needs --csv"),
        ([*train(path), "--history", "40"], "--history 40: a pattern may look at 2 .. 32"),
        ([*train(path), "--history", "1"], "--history 1: a pattern may look at 2 .. 32"),
        ([*train(path), "--history", "12"], "10 event(s); the model's window needs at least 12"),
    ]
    for argv, says in cases:
        assert main(argv) == 2, argv
        assert says in capsys.readouterr().err, argv


def test_a_model_that_cannot_reach_the_target_says_so_and_is_written(tmp_path, capsys):
    """Labels that no pattern of the values explains (a coin toss): the last line says the
    target is not reached, the card says so too, and every file is there."""
    rng = np.random.default_rng(1)
    streams = {f"s{i}": rng.random(300) for i in range(5)}
    path = write_labeled(tmp_path / "coin.csv", streams,
                         lambda v: (np.random.default_rng(len(v)).random(len(v)) < 0.5))
    assert main(train(path, "--out", str(tmp_path), "--epochs", "1")) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "DOES NOT reach the target" in last
    card = json.loads((tmp_path / "mine.card.json").read_text())
    assert card["target"]["reached"] is False
    for suffix in (".keras", ".tflite", ".card.json", ".curves.png"):
        assert (tmp_path / f"mine{suffix}").stat().st_size > 0


def test_training_is_deterministic_for_a_seed(tmp_path, capsys):
    rng = np.random.default_rng(2)
    streams = {f"s{i}": rng.random(200) for i in range(5)}
    path = write_labeled(tmp_path / "up.csv", streams,
                         lambda v: np.r_[0, np.diff(v) > 0].astype(int))
    cards = []
    for run in ("one", "two"):
        assert main(train(path, "--out", str(tmp_path / run), "--epochs", "2",
                          "--seed", "7")) == 0
        cards.append(json.loads((tmp_path / run / "mine.card.json").read_text()))
    capsys.readouterr()
    assert cards[0]["held_out"] == cards[1]["held_out"]
    import keras

    weights = [keras.saving.load_model(tmp_path / run / "mine.keras").get_weights()
               for run in ("one", "two")]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_evaluate_prints_figures_and_json_and_plot_draws_labels(dip_model, tmp_path, capsys):
    model, csv_path = dip_model
    base = ["--model", str(model), "--csv", str(csv_path), "--value-column", "value",
            "--label-column", "label", "--stream-column", "stream"]
    assert main(["evaluate", *base]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "F1" in text and "false alarms per 1,000" in text
    assert main(["evaluate", *base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("accuracy", "precision", "recall", "f1", "events", "streams"):
        assert key in report
    assert report["events"] == sum(s["events"] for s in report["streams"].values())
    assert all({"accuracy", "events"} <= set(s) for s in report["streams"].values())
    out = tmp_path / "dip.png"
    assert main(["plot", *base, "--stream", "real/co2_weekly:co2_ppm", "--events", "60",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", *base, "--stream", "nope", "--out", str(out)]) == 2
    assert "no such stream" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["--name", "a/b"], "--name 'a/b': a model's name is its files' name too"),
    (["--name", ".hidden"], "--name '.hidden': a model's name"),
    (["--name", "dip.keras"], "--name 'dip.keras': a model's name"),
    (["--out", "{file}"], "is a file; give a directory"),
    (["--stream-column", "label"], "--label-column and --stream-column are both 'label'"),
    (["--value-column", "label"], "--value-column and --label-column are both 'label'"),
])
def test_options_that_cannot_work_are_refused_before_any_work(tmp_path, capsys, argv, says):
    """Found before the file is read or TensorFlow imported, not at the end of training."""
    path = labeled_file(tmp_path, GOOD)
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    base = train(path, "--out", str(tmp_path / "models"))
    for option, value in zip(argv[::2], argv[1::2], strict=True):
        at = base.index(option) if option in base else None
        value = value.format(file=afile)
        if at is None:
            base += [option, value]
        else:
            base[at + 1] = value
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "models").exists() and afile.read_text() == "not a directory"


def test_ctrl_c_in_training_is_one_line_and_leaves_nothing_half_written(tmp_path):
    """Ctrl-C during the epochs: one line, exit 130, an earlier model of the name untouched and
    no new file or folder (the files are staged and moved in only when all are written)."""
    rng = np.random.default_rng(2)
    path = write_labeled(tmp_path / "up.csv", {f"s{i}": rng.random(3000) for i in range(10)},
                         lambda v: np.r_[0, np.diff(v) > 0].astype(int))
    out = tmp_path / "models"
    out.mkdir()
    (out / "mine.keras").write_bytes(b"an earlier model")
    proc = subprocess.Popen([sys.executable, "-m", "detector", *train(path, "--out", str(out),
                                                                      "--epochs", "200")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if "epoch 1/200" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["detector: train: interrupted"], err
    assert sorted(p.name for p in out.iterdir()) == ["mine.keras"]
    assert (out / "mine.keras").read_bytes() == b"an earlier model"
    assert not list(tmp_path.rglob(".training-*"))


def test_evaluate_a_pattern_model_never_against_the_trend_rule(dip_model, tmp_path, capsys):
    """On columns without labels a pattern model's flags are counted and nothing is compared
    with them; without data at all it is refused; a labeled file of one class (a quiet
    period) is scored for its false alarms."""
    model, _ = dip_model
    wide = tmp_path / "wide.csv"
    wide.write_text("temp,load\n" + "\n".join(f"{t},{load}" for t, load in
                                             zip([3, 1, 2, 5, 4, 6, 2, 3] * 10,
                                                 [1, 2, 3, 4, 5, 6, 7, 8] * 10, strict=True)))
    assert main(["evaluate", "--model", str(model), "--csv", str(wide)]) == 0
    out = capsys.readouterr().out
    assert "model dip detects the pattern 'dip' (its card):" in out
    assert "no labels given, so no agreement to show" in out
    assert "exact rule" not in out and "agreement with" not in out
    assert main(["evaluate", "--model", str(model), "--csv", str(wide), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["pattern"] == "dip" and got["agreement"] is None and got["events"] == 160
    # "load" climbs 1..8 and falls back to 1: a dip at each of its 9 falls but the first.
    assert got["streams"]["load"] == {"events": 80, "flags": 9}
    assert got["flags"] == 9 + got["streams"]["temp"]["flags"] > 9
    assert main(["evaluate", "--model", str(model)]) == 2
    assert "detects the pattern 'dip', not trends" in capsys.readouterr().err
    assert main(["plot", "--model", str(model), "--csv", str(wide), "--out",
                 str(tmp_path / "x.png")]) == 2  # it would draw the trend rule beside it
    assert "plot it on a labeled file" in capsys.readouterr().err
    quiet = write_labeled(tmp_path / "quiet.csv", {"q": np.array([3, 1, 2, 5, 4, 6] * 20, float)},
                          lambda v: np.zeros(len(v), int))
    base = ["evaluate", "--model", str(model), "--csv", str(quiet), "--value-column", "value",
            "--label-column", "label", "--stream-column", "stream"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "every label is 0: accuracy" in out and "false alarms per 1,000 events" in out
    assert main([*base, "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["labels"] == {"0": 120, "1": 0} and got["false_alarms_per_1000"] > 0
