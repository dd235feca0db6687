"""Wrong arguments and settings: one clear line and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest

from detector.cli.main import main as detector_main
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
        (["run", "--model", "nope", "--metrics-port", "0"], 2, "unknown model"),
        (["alertmanager"], 2, "--url (DETECTOR_URL) is required"),
        (["alertmanager", "--url", "am:9093"], 2, "is not an http:// or https:// URL"),
        (["alertmanager", "--url", "http://am:9093", "--timeout-s", "x"], 2, "expected float"),
        (["alertmanager", "--url", "http://am:9093", "--resend-interval-s", "400"], 2,
         "--firing-ttl-s must exceed"),
        (["nonsense"], 2, "invalid choice"),
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


@pytest.mark.parametrize(("column", "says"), [("nope", "no column 'nope'"),
                                               ("note", "column 'note' is not numeric")])
def test_evaluate_a_wrong_column_is_one_line(tmp_path, capsys, column, says):
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text("temp,note\n20.5,a\n")
    assert detector_main(["evaluate", "--csv", str(csv_file), "--column", column]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
