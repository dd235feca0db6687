"""``label``, ``score``, ``models backtest`` and ``train --from-kafka`` refuse what does not fit
with one line and exit 2, before they reach Kafka (no broker here: the address is closed)."""

from __future__ import annotations

import pytest

from detector.cli.labels import read_csv
from detector.cli.main import main
from detector.labels.codec import RangeLabel, Verdict

NOWHERE = ["--bootstrap-servers", "127.0.0.1:1", "--connect-timeout-s", "1"]


def run(argv: list[str]) -> int:
    """The exit code, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize(("argv", "says"), [
    (["label"], "label needs one of --stream S"),
    (["label", "--stream", "s", "--run", "s:1", "--right"], "label needs one of"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2"],
     "--stream needs --pattern, --no-pattern or --ignore"),
    (["label", "--stream", "s", "--pattern"], "--from-seq and --to-seq, or --from-ts"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2", "--from-ts", "3",
      "--to-ts", "4", "--pattern"], "--from-seq and --to-seq, or --from-ts"),
    (["label", "--stream", "s", "--from-seq", "x", "--to-seq", "2", "--pattern"],
     "from_seq must be an integer in [0, 2^63), got 'x'"),
    (["label", "--stream", "s", "--from-ts", "noon", "--to-ts", "2", "--no-pattern"],
     "from_ts must be epoch seconds or an ISO-8601 time"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2", "--right"],
     "--stream needs --pattern"),
    (["label", "--run", "s-1", "--wrong"], "expected STREAM:START_SEQ"),
    (["label", "--run", "s-1:4"], "--run needs --right or --wrong"),
    (["label", "--run", "s-1:4", "--right", "--pattern"], "--run needs --right or --wrong"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2", "--pattern",
      "--pattern", "--no-pattern"], "not allowed with argument"),
    (["label", "--csv", "x.csv", "--pattern"], "--kind does not apply with --csv"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2", "--pattern",
      "--labels-partitions", "0"], "--labels-partitions must be positive"),
    (["label", "--stream", "s", "--from-seq", "1", "--to-seq", "2", "--pattern",
      "--labels-retention", "soon"], "--labels-retention: 'soon' is not a duration"),
    (["score", "--json"], "--json needs --once"),
    (["score", "--output-topic", "x", "--candidate-topic", "x"],
     "label, output and candidate topics must differ"),
    (["score", "--label-lateness", "0"], "--label-lateness must be positive"),
    (["models", "backtest", "dip", "2"], "backtest needs --since DURATION"),
    (["models", "backtest", "dip", "2", "--since", "0"], "--since must be a duration above 0"),
    (["models", "backtest", "dip", "two", "--since", "1h"], "invalid int value: 'two'"),
    (["models", "backtest", "dip", "2", "--since", "1h", "--alert-min-length", "2"],
     "--alert-min-length must be at least 3"),
    (["train", "--from-kafka", "--out", "x"], "--from-kafka needs --name NAME"),
    (["train", "--from-kafka", "--name", "dip"], "--from-kafka needs --since DURATION"),
    (["train", "--from-kafka", "--name", "dip", "--since", "1h", "--csv", "x.csv"],
     "--csv does not apply with --from-kafka"),
    (["train", "--features", "seed", "--since", "1h"], "--since needs --from-kafka"),
    (["train", "--csv", "x.csv", "--label-column", "l", "--value-column", "v", "--name", "x",
      "--input-topic", "t"], "--input-topic needs --from-kafka"),
])
def test_what_does_not_fit_is_one_line_and_exit_2(argv, says, capsys):
    assert run([*argv, *NOWHERE]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_a_csv_of_labels_is_read_whole_and_checked_row_by_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("stream,from_seq,to_seq,label,run_start_seq,verdict,comment\n"
                    "s-1,40,47,pattern,,,a dip\n"
                    "\n"
                    "s-1,,,,52,wrong,\n")
    assert read_csv(path) == [RangeLabel("s-1@seq:40-47", "s-1", "pattern", 40, 47,
                                         comment="a dip"),
                              Verdict("s-1@run:52", "s-1", 52, "wrong")]



def test_a_csv_mistake_names_its_row(tmp_path, capsys):
    path = tmp_path / "labels.csv"
    assert main(["label", "--csv", str(path), *NOWHERE]) == 2
    assert "cannot read it" in capsys.readouterr().err
    path.write_text("stream,from_seq,to_seq,label\ns-1,1,2,pattern\ns-2,9,3,pattern\n")
    assert main(["label", "--csv", str(path), *NOWHERE]) == 2
    assert capsys.readouterr().err.strip() == (
        f"detector: error: {path}: row 3: from_seq 9 is after to_seq 3")
    path.write_text("stream,from_seq,to_seq,lable\n")
    assert main(["label", "--csv", str(path), *NOWHERE]) == 2
    assert "column 'lable' is not a label field" in capsys.readouterr().err
