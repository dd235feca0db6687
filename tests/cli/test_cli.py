"""Wrong arguments and settings: one clear line and a non-zero exit, never a traceback."""

import argparse
import json
import socket
import subprocess
import sys

import pytest

from detector.cli.main import main as detector_main
from detector.cli.main import parser as detector_parser
from detector.testing.local_broker import free_port
from producer.cli import main as producer_main
from tests.support import ROOT


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["evaluate", "--model", "nope"], 2, "unknown model 'nope'"),
        (["evaluate", "--model", "/no/such/model.keras"], 2, "model file not found"),
        (["plot", "--model", "missing.keras"], 2, "model file not found"),
        (["evaluate", "--events", "-5"], 2, "must be a positive integer"),
        (["evaluate", "--streams", "0"], 2, "must be a positive integer"),
        (["evaluate", "--seed", "-1"], 2, "must be zero or positive"),
        (["train", "--features", "lstm"], 2, "invalid choice"),
        (["train", "--features", "seed", "--epochs", "-2"], 2, "must be a positive integer"),
        (["run", "--metrics-port", "70000"], 2, "not a port number"),
        (["run", "--max-poll-records", "-1"], 2, "must be positive"),
        (["run", "--security-protocol", "TLS"], 2, "not one of"),
        (["run", "--security-protocol", "SASL_PLAINTEXT"], 2, "needs --sasl-username"),
        (["run", "--ssl-cafile", "/no/ca.pem", "--security-protocol", "SSL"], 2, "not found"),
        (["run", "--output-topic", "values"], 2, "must differ"),
        (["run", "--model", "nope.keras", "--metrics-port", "0"], 2, "model file not found"),
        (["alertmanager"], 2, "--url (DETECTOR_URL) is required"),
        (["alertmanager", "--url", "am:9093"], 2, "is not an http:// or https:// URL"),
        (["alertmanager", "--url", "http://am:9093", "--timeout-s", "x"], 2, "expected float"),
        (["alertmanager", "--url", "http://am:9093", "--resend-interval-s", "400"], 2,
         "--firing-ttl-s must exceed"),
        (["nonsense"], 2, "invalid choice"),
        # A prefix of an option is not the option: a typo, not a guess.
        (["run", "--bootstrap-server", "k1:9092"], 2, "unrecognized arguments: --bootstrap-server"),
        (["evaluate", "--csv", "f.csv", "--value-col", "v", "--label-column", "l"], 2,
         "unrecognized arguments: --value-col"),
        (["tail", "--from-begin"], 2, "unrecognized arguments: --from-begin"),
        (["models", "list", "--js"], 2, "unrecognized arguments: --js"),
        # Options that do not apply are refused, not ignored.
        (["evaluate", "--column", "x"], 2, "--column needs --csv"),
        (["evaluate", "--battery", "--column", "x"], 2, "--column needs --csv"),
        (["evaluate", "--csv", "f.csv", "--events", "10"], 2, "--events does not apply with --csv"),
        (["evaluate", "--battery", "--streams", "3"], 2,
         "--streams does not apply with --battery"),
        (["evaluate", "--battery", "--csv", "f.csv"], 2, "not allowed with argument"),
        (["plot", "--column", "x"], 2, "--column needs --csv"),
        (["plot", "--start", "0"], 2, "--start needs --csv"),
        (["plot", "--csv", "f.csv", "--seed", "3"], 2, "--seed does not apply with --csv"),
        (["demo", "--column", "x"], 2, "--column needs --csv"),
        (["demo", "--csv", "f.csv", "--column", "x", "--streams", "3"], 2,
         "--streams does not apply with --csv"),
        (["demo", "--alert-min-length", "2"], 2, "--alert-min-length must be at least 3"),
        # A bootstrap server without a port is a wrong setting like any other: exit 2, at once.
        (["run", "--bootstrap-servers", "localhost"], 2,
         "--bootstrap-servers: 'localhost' is not host:port (such as localhost:9092)"),
        (["tail", "--bootstrap-servers", "k1:9092,k2"], 2, "'k2' is not host:port"),
        (["tail", "--bootstrap-servers", "k1:99999"], 2, "'k1:99999' is not host:port"),
        (["alertmanager", "--url", "http://am:9093", "--bootstrap-servers", ":9092"], 2,
         "is not host:port"),
    ],
)
def test_detector_wrong_arguments(argv, code, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(detector_main(argv))
    assert exit_info.value.code == code
    assert says in one_line(capsys)


def test_alertmanager_bridge_without_a_broker_is_one_line(capsys):
    port = free_port()
    assert detector_main(["alertmanager", "--url", "http://127.0.0.1:9", "--metrics-port", "0",
                          "--bootstrap-servers", f"127.0.0.1:{port}",
                          "--connect-timeout-s", "1"]) == 1
    assert "cannot reach Kafka" in one_line(capsys)


@pytest.mark.parametrize("command", [["run"], ["alertmanager", "--url", "http://127.0.0.1:9"]])
def test_a_metrics_port_already_taken_is_a_setting_to_change(command, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert detector_main([*command, "--metrics-port", str(port)]) == 2
    says = one_line(capsys)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in says
    assert "set another --metrics-port" in says


def test_wrong_environment_variable_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("DETECTOR_METRICS_PORT", "abc")
    assert detector_main(["run"]) == 2
    assert "DETECTOR_METRICS_PORT: expected int, got 'abc'" in one_line(capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--streams", "-3"], "--streams must be positive"),
        (["--rate", "-1"], "--rate must not be negative"),
        (["--count", "-10"], "--count must not be negative"),
        (["--pattern", "sine"], "not one of uniform, walk"),
        (["--partitions", "x"], "expected int"),
    ],
)
def test_producer_wrong_arguments(argv, says, capsys):
    assert producer_main(argv) == 2
    assert says in one_line(capsys)


def test_producer_takes_no_abbreviated_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        producer_main(["--stream", "3"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --stream 3" in one_line(capsys)


def test_producer_bootstrap_server_without_a_port_is_a_setting(capsys):
    assert producer_main(["--bootstrap-servers", "localhost"]) == 2
    assert "'localhost' is not host:port" in one_line(capsys)


def test_producer_without_a_broker_is_one_line(capsys):
    port = free_port()
    assert producer_main(["--bootstrap-servers", f"127.0.0.1:{port}",
                          "--connect-timeout-s", "2"]) == 1
    assert "cannot reach Kafka" in one_line(capsys)


def test_entry_points_and_the_producer_never_import_tensorflow():
    code = ("import sys, producer.cli, producer.publish, detector.cli, detector.cli.tail, "
            "detector.alerts.bridge; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    for module in ("detector", "producer"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        assert "usage:" in out.stdout


def test_evaluate_a_csv_prints_per_stream_agreement_and_json(tmp_path, capsys):
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp,load,note\n20.5,3,a\n20.5,4,b\n21.0,,c\n21.5,5,d\n21.0,5,e\n")
    assert detector_main(["evaluate", "--model", "seed", "--csv", str(csv_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["streams"]) == {"temp", "load"}  # "note" is not numeric
    assert result["events"] == 9 and result["streams"]["load"]["events"] == 4
    assert result["accuracy"] == 1.0 and set(result["errors_by_kind"]) == {
        "near_tie", "repeat", "other"}
    assert detector_main(["evaluate", "--model", "pair", "--csv", str(csv_file),
                          "--column", "temp"]) == 0
    out = capsys.readouterr().out
    assert "agreement with the exact rule: 100.0000%" in out and "temp" in out


def test_evaluate_names_each_column_it_skips_with_its_first_bad_cell(tmp_path, capsys):
    """Every numeric column: one with a bad cell (1e400 overflows, N/A) is left out, and said."""
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp,load,queue,empty\n20.5,3,1,\n21.0,1e400,2,\n21.5,5,N/A,\n")
    assert detector_main(["evaluate", "--csv", str(csv_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("3 events in 1 streams")
    assert out[1:4] == ["  column 'load' skipped: data row 2 has '1e400'",
                        "  column 'queue' skipped: data row 3 has 'N/A'",
                        "  column 'empty' skipped: no values"]
    assert detector_main(["evaluate", "--csv", str(csv_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["streams"]) == {"temp"}
    assert result["skipped_columns"] == {"load": "data row 2 has '1e400'",
                                         "queue": "data row 3 has 'N/A'", "empty": "no values"}


def test_evaluate_a_csv_without_a_numeric_column_says_why_of_each(tmp_path, capsys):
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("when,note\n2024-01-01,a\n")
    assert detector_main(["evaluate", "--csv", str(csv_file)]) == 2
    assert one_line(capsys).endswith(
        "no numeric column (column 'when' skipped: data row 1 has '2024-01-01'; column 'note' "
        "skipped: data row 1 has 'a')")


def test_evaluate_two_columns_of_one_name_is_one_line(tmp_path, capsys):
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp,load,temp\n1,2,3\n2,3,4\n")
    for argv in ([], ["--column", "temp"]):
        assert detector_main(["evaluate", "--csv", str(csv_file), *argv]) == 2
        assert "the header has 2 columns named 'temp' (columns 1, 3)" in one_line(capsys)


def test_evaluate_the_battery_says_what_it_holds(capsys):
    """The real series are package data: the battery finds them where the package is."""
    assert detector_main(["evaluate", "--battery", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = list(result["streams"])
    assert len(names) == 99 and result["skipped_columns"] == {}
    assert sum(n.startswith("real/") for n in names) == 33
    assert sum(n.startswith("generated/") for n in names) == 66
    assert detector_main(["evaluate", "--battery", "--model", "pair"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith(
        "model pair on the battery: 33 public real series from 14 files (detector/task/"
        "real_series, sources in its SOURCES.md) and 66 generated streams of every shape "
        "(detector/task/shapes.py): ")
    assert header.endswith(" events in 99 streams")


def test_a_keras_file_that_is_not_a_model_says_so(tmp_path, capsys):
    """Keras reports any file that is not a zip archive as "File not found"."""
    for content in (b"not a model", b"PK\x05\x06" + b"\0" * 18):  # text; an empty zip
        path = tmp_path / "model.keras"
        path.write_bytes(content)
        assert detector_main(["evaluate", "--model", str(path)]) == 2
        assert one_line(capsys) == (
            f"detector: error: {path} is not a Keras model: a .keras file is a zip archive "
            "holding config.json, as model.save() writes it")


def test_commands_print_nothing_on_stderr():
    """LiteRT's C++ runtime announces its CPU delegate on stderr in every process; not here."""
    run = subprocess.run([sys.executable, "-m", "detector", "evaluate", "--model", "pair",
                          "--events", "1000"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "accuracy against the exact rule" in run.stdout


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in detector_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_gives_every_option_a_text_and_its_real_default(name):
    parser = subcommands()[name]
    for action in parser._actions:
        assert action.help, f"{name} {action.option_strings} has no help text"
    text = parser.format_help()
    assert "default None" not in text and "default: None" not in text, text
    for action in parser._actions:
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in parser._get_formatter()._expand_help(action), action


def test_tail_help_lists_only_its_own_options_and_the_connection():
    text = subcommands()["tail"].format_help()
    for option in ("--topic", "--from-beginning", "--limit", "--bootstrap-servers",
                   "--security-protocol", "--ssl-cafile"):
        assert option in text
    for option in ("--group-id", "--model", "--state-topic", "--alert-min-length",
                   "--metrics-port", "--value-path"):
        assert option not in text
    assert len(text.splitlines()) < 90  # the connection: TLS, and every SASL mechanism's


def test_run_help_gives_the_state_topic_default():
    text = " ".join(subcommands()["run"].format_help().split())
    assert "[env DETECTOR_STATE_TOPIC; default <group-id>.state]" in text


def test_run_help_says_a_path_pins_the_model_and_a_name_follows_the_registry():
    text = " ".join(subcommands()["run"].format_help().split())
    assert ("A name follows the model registry: its live version serves, and a new one takes "
            "over without a restart; while the registry has none, the shipped model of that "
            "name (seed, pair) serves. A path (with a / or ending in .keras) pins that file: "
            "the registry is not followed.") in text


@pytest.mark.parametrize(("column", "says"), [("nope", "no column 'nope'"),
                                               ("note", "column 'note' is not numeric")])
def test_evaluate_a_wrong_column_is_one_line(tmp_path, capsys, column, says):
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp,note\n20.5,a\n")
    assert detector_main(["evaluate", "--csv", str(csv_file), "--column", column]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
