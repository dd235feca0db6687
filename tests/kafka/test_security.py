"""TLS and SASL: what works against the local broker, and readable failures for what does not.

The bundled broker cannot terminate TLS itself, so TLS runs through a terminator in front of it
(``tests/tls_proxy.py``); SASL cannot log anybody in on it (users cannot be created once
authentication is on), so SASL is tested for its failure: one clear line, a non-zero exit,
within the connect timeout.
"""

import shutil
import threading
import time

import pytest

from detector.cli.main import main as detector_main
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from detector.testing.local_broker import LocalBroker, free_port
from producer.publish import publish
from tests.support import DetectorThread, read_topic, settings, wait_for
from tests.tls_proxy import TLSProxy, make_certificates

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


@pytest.fixture
def tls(tmp_path):
    """A broker reachable only through TLS, and the certificates to talk to it."""
    certs = make_certificates(tmp_path)
    proxy_port = free_port()
    with LocalBroker(advertised_port=proxy_port) as broker:
        proxy = TLSProxy(proxy_port, broker.port, certs["cert"], certs["key"]).start()
        try:
            yield {"bootstrap": f"127.0.0.1:{proxy_port}", "plain": broker.bootstrap, **certs}
        finally:
            proxy.stop()


def fails_in_one_line(capsys, *args: str, within: float) -> str:
    """``detector run`` with ``args`` exits 1 within ``within`` seconds with one stderr line."""
    started = time.monotonic()
    assert detector_main(["run", *args, "--metrics-port", "0"]) == 1
    assert time.monotonic() - started < within
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_producer_and_detector_over_tls(tls, steps):
    kafka = KafkaSettings(bootstrap_servers=tls["bootstrap"], security_protocol="SSL",
                          ssl_cafile=str(tls["ca"]), connect_timeout_s=10)
    sent = publish(ProducerSettings(kafka=kafka, streams=5, rate=0, count=300, seed=3),
                   threading.Event(), progress=lambda _: None)
    assert sent == 300
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 300, 60)
    finally:
        det.stop()
    assert len(read_topic(kafka, "trend-flags", expect=300)) == 300


def test_wrong_certificate_authority_is_one_line_at_once(tls, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", tls["bootstrap"],
                             "--security-protocol", "SSL", "--ssl-cafile", str(tls["other_ca"]),
                             "--connect-timeout-s", "10", within=10)
    assert "certificate" in line and "does not verify" in line and "--ssl-cafile" in line


def test_tls_client_against_a_plaintext_listener_does_not_hang(tls, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", tls["plain"], "--security-protocol",
                             "SSL", "--ssl-cafile", str(tls["ca"]), "--connect-timeout-s", "4",
                             within=15)
    assert "is that listener TLS?" in line


def test_sasl_login_to_a_broker_without_sasl_is_one_line(broker, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", broker.bootstrap,
                             "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism",
                             "SCRAM-SHA-256", "--sasl-username", "alice", "--sasl-password",
                             "wrong", "--connect-timeout-s", "4", within=20)
    assert "did not accept the SASL login" in line and "UnsupportedSaslMechanism" in line


def test_wrong_password_against_an_authenticating_broker_is_one_line(capsys):
    with LocalBroker(extra_args=("--authentication",)) as broker:
        line = fails_in_one_line(capsys, "--bootstrap-servers", broker.bootstrap,
                                 "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism",
                                 "SCRAM-SHA-512", "--sasl-username", "alice", "--sasl-password",
                                 "not-her-password", "--connect-timeout-s", "4", within=20)
    assert line.startswith("detector: error: Kafka at") and "did not accept the SASL login" in line


def test_plain_client_against_an_authenticating_broker_is_one_line(capsys):
    with LocalBroker(extra_args=("--authentication",)) as broker:
        line = fails_in_one_line(capsys, "--bootstrap-servers", broker.bootstrap,
                                 "--connect-timeout-s", "3", within=20)
    assert "closed every connection" in line


def test_metrics_bind_to_loopback_unless_told_otherwise():
    from detector.settings.detector import DetectorSettings

    assert DetectorSettings().metrics_host == "127.0.0.1"
