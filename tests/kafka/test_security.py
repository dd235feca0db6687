"""TLS and SASL on Apache Kafka: what works, and readable failures for what does not.

One node for the module with three listeners: PLAINTEXT, SSL (a certificate signed by a CA the
test makes) and SASL_PLAINTEXT with SCRAM users; an authorizer with ACLs behind them.
"""

import shutil
import threading
import time

import pytest

from detector.cli.main import main as detector_main
from detector.settings.producer import ProducerSettings
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.local_broker import free_port
from producer.publish import publish
from tests.support import DetectorThread, ScopedKafka, read_topic, settings, wait_for
from tests.tls_proxy import make_certificates

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

#: SCRAM users made when the node is formatted. ``admin`` is a super user, as ANONYMOUS is
#: (the PLAINTEXT and SSL listeners' principal without a client certificate).
USERS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """The node, its listeners' bootstrap addresses and the certificates."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    keystore = certs["cert"].with_name("keystore.pem")  # the key and its certificate, PEM
    keystore.write_text(certs["key"].read_text() + certs["cert"].read_text())
    config = {
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": str(keystore),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin;User:ANONYMOUS",
    }
    listeners = {"SSL": free_port(), "SASL_PLAINTEXT": free_port()}
    with KafkaCluster(config=config, listeners=listeners, scram_users=USERS) as node:
        yield {"plain": node.bootstrap, "ssl": node.listener_bootstrap("SSL"),
               "sasl": node.listener_bootstrap("SASL_PLAINTEXT"), **certs}


def scoped(bootstrap: str, name: str, **options) -> ScopedKafka:
    return ScopedKafka(bootstrap_servers=bootstrap, connect_timeout_s=10, prefix=f"{name}-",
                       **options)


def fails_in_one_line(capsys, *args: str, within: float) -> str:
    """``detector run`` with ``args`` exits 1 within ``within`` seconds with one stderr line."""
    started = time.monotonic()
    assert detector_main(["run", *args, "--metrics-port", "0"]) == 1
    assert time.monotonic() - started < within
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT"])
def test_producer_and_detector_over_tls_and_sasl(secure, steps, protocol):
    if protocol == "SSL":
        kafka = scoped(secure["ssl"], "tls", security_protocol="SSL",
                       ssl_cafile=str(secure["ca"]))
    else:
        kafka = scoped(secure["sasl"], "scram", security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="SCRAM-SHA-512", sasl_username="admin",
                       sasl_password=USERS["admin"])
    sent = publish(ProducerSettings(kafka=kafka, topic=kafka.values, streams=5, rate=0,
                                    count=300, seed=3),
                   threading.Event(), progress=lambda _: None)
    assert sent == 300
    det = DetectorThread(settings(kafka), steps("seed")).start()
    try:
        wait_for(lambda: det.value("detector_events_processed_total") >= 300, 60)
    finally:
        det.stop()
    assert len(read_topic(kafka, kafka.flags, expect=300)) == 300


def test_wrong_certificate_authority_is_one_line_at_once(secure, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", secure["ssl"],
                             "--security-protocol", "SSL", "--ssl-cafile", str(secure["other_ca"]),
                             "--connect-timeout-s", "10", within=10)
    assert "certificate" in line and "does not verify" in line and "--ssl-cafile" in line


def test_tls_client_against_a_plaintext_listener_does_not_hang(secure, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", secure["plain"], "--security-protocol",
                             "SSL", "--ssl-cafile", str(secure["ca"]), "--connect-timeout-s", "4",
                             within=15)
    assert "is that listener TLS?" in line


def test_sasl_login_to_a_listener_without_sasl_is_one_line(secure, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", secure["plain"],
                             "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism",
                             "SCRAM-SHA-256", "--sasl-username", "alice", "--sasl-password",
                             "wrong", "--connect-timeout-s", "4", within=20)
    # Kafka answers a SASL handshake on a plaintext listener with IllegalSaslState
    assert "did not accept the SASL login" in line and "IllegalSaslState" in line


def test_wrong_password_against_an_authenticating_broker_is_one_line(secure, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", secure["sasl"],
                             "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism",
                             "SCRAM-SHA-512", "--sasl-username", "alice", "--sasl-password",
                             "not-her-password", "--connect-timeout-s", "4", within=20)
    assert line.startswith("detector: error: Kafka at") and "did not accept the SASL login" in line


def test_plain_client_against_an_authenticating_broker_is_one_line(secure, capsys):
    line = fails_in_one_line(capsys, "--bootstrap-servers", secure["sasl"],
                             "--connect-timeout-s", "3", within=20)
    assert "closed every connection" in line


def test_metrics_bind_to_loopback_unless_told_otherwise():
    from detector.settings.detector import DetectorSettings

    assert DetectorSettings().metrics_host == "127.0.0.1"
