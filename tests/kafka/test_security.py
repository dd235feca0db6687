"""TLS and SASL on Apache Kafka: what works, and readable failures for what does not.

One node for the module with three listeners: PLAINTEXT, SSL (a certificate signed by a CA the
test makes) and SASL_PLAINTEXT with every mechanism Kafka runs without outside services: PLAIN
and SCRAM users, and OAUTHBEARER with Kafka's default validator, which takes unsecured JWTs
(``alg: none``) from a file or from a token endpoint the test runs; an authorizer with ACLs
behind them. GSSAPI (a KDC) and AWS_MSK_IAM (MSK) cannot run here: tests/kafka/test_sasl.py.
"""

import shutil
import threading
import time
from pathlib import Path

import pytest

from detector.cli.main import main as detector_main
from detector.settings.producer import ProducerSettings
from detector.testing.apache_kafka import KafkaCluster
from detector.testing.local_broker import free_port
from producer.cli import main as producer_main
from producer.publish import publish
from tests.oauth import TokenEndpoint, unsecured_jwt
from tests.support import DetectorThread, ScopedKafka, read_topic, settings, wait_for
from tests.tls_proxy import make_certificates

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]

#: SCRAM users made when the node is formatted. ``admin`` is a super user, as ANONYMOUS is
#: (the PLAINTEXT and SSL listeners' principal without a client certificate).
USERS = {"admin": "admin-secret", "alice": "alice-secret"}
#: PLAIN's users are the listener's JAAS configuration; OAUTHBEARER's principal is the token's
#: ``sub``, validated by Kafka's default (unsecured) OAUTHBEARER callback handler.
SASL_CONFIG = {
    "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
    "listener.name.sasl_plaintext.plain.sasl.jaas.config":
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{name}="{password}"' for name, password in USERS.items()) + ";",
    "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config":
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
}


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
        **SASL_CONFIG,
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


# --- every mechanism Kafka runs here: PLAIN, SCRAM, OAUTHBEARER ---------------------------


def published_and_read(kafka: ScopedKafka, count: int = 50) -> int:
    """Records written by the producer (as fast as it goes: the outbox) and read back."""
    sent = publish(ProducerSettings(kafka=kafka, topic=kafka.values, streams=5, rate=0,
                                    count=count, seed=1), threading.Event(),
                   progress=lambda _: None)
    assert sent == count
    return len(read_topic(kafka, kafka.values, expect=count))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"])
def test_a_login_with_each_mechanism_kafka_runs_here(secure, tmp_path, mechanism):
    """SCRAM-SHA-512 runs a detector above; OAUTHBEARER from a token file here, from a token
    endpoint below."""
    login = {"sasl_username": "admin", "sasl_password": USERS["admin"]}
    if mechanism == "OAUTHBEARER":
        token = tmp_path / "token"
        token.write_text(unsecured_jwt("admin"))
        login = {"sasl_oauth_token_file": str(token)}
    kafka = scoped(secure["sasl"], mechanism.lower(), security_protocol="SASL_PLAINTEXT",
                   sasl_mechanism=mechanism, **login)
    assert published_and_read(kafka) == 50


def test_oauthbearer_from_a_token_endpoint_asks_it_once_for_every_client(secure, capsys):
    def answer(request: dict) -> tuple[int, dict]:
        if request["authorization"] != "Basic ZGV0ZWN0b3I6Y2xpZW50LXNlY3JldA==":
            return 401, {"error": "invalid_client"}  # detector:client-secret, in base64
        return 200, {"access_token": unsecured_jwt("admin"), "token_type": "Bearer",
                     "expires_in": 3600}

    with TokenEndpoint(answer) as endpoint:
        kafka = scoped(secure["sasl"], "oidc", security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="OAUTHBEARER", sasl_oauth_token_url=endpoint.url,
                       sasl_username="detector", sasl_password="client-secret")
        assert published_and_read(kafka) == 50  # admin clients, an outbox, a consumer
        assert len(endpoint.requests) == 1
        line = fails_in_one_line(capsys, "--bootstrap-servers", secure["sasl"],
                                 "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism",
                                 "OAUTHBEARER", "--sasl-oauth-token-url", endpoint.url,
                                 "--sasl-username", "detector", "--sasl-password", "wrong",
                                 within=10)
    assert line == (f"detector: error: the OAuth token endpoint {endpoint.url} refused the "
                    "client credentials (HTTP 401: invalid_client); check --sasl-username and "
                    "--sasl-password")


def oauth_producer(secure: dict, token: Path, topic: str) -> list[str]:
    """The arguments of ``python -m producer`` logging in with the token file ``token``."""
    return ["--bootstrap-servers", secure["sasl"], "--security-protocol", "SASL_PLAINTEXT",
            "--sasl-mechanism", "OAUTHBEARER", "--sasl-oauth-token-file", str(token),
            "--topic", topic, "--count", "20", "--rate", "0", "--connect-timeout-s", "4"]


def test_the_token_file_is_read_at_each_login_and_its_subject_is_the_principal(
        secure, tmp_path, capsys):
    """An expired token is one line naming the token; the same file renewed serves the next
    login; a token for alice (no ACLs) logs in as alice, whom the authorizer refuses."""
    token = tmp_path / "token"
    args = oauth_producer(secure, token, "oauth-file-values")
    token.write_text(unsecured_jwt("admin", exp=time.time() - 60))
    assert producer_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not accept the SASL login" in err[0], err
    assert "check the token (--sasl-oauth-token-file or --sasl-oauth-token-url)" in err[0]

    token.write_text(unsecured_jwt("admin"))  # renewed in place
    assert producer_main(args) == 0
    capsys.readouterr()

    token.write_text(unsecured_jwt("alice"))
    assert producer_main(args) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "producer: error: Kafka refused: no ACL allows Write on topic oauth-file-values"]
