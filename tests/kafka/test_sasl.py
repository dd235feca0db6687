"""The SASL logins' parts that need no broker: OAUTHBEARER's token file and token endpoint
(an HTTP server of the test's), and what GSSAPI and AWS_MSK_IAM hand kafka-python's own
mechanisms. Neither GSSAPI (a KDC) nor AWS_MSK_IAM (MSK) can run here: their libraries are
replaced by stand-ins that record what kafka-python asks of them. Logins on Apache Kafka:
tests/kafka/test_security.py."""

from __future__ import annotations

import base64
import importlib.machinery
import json
import sys
import types

import pytest
from kafka.net.sasl import get_sasl_mechanism

from detector.errors import MissingExtra
from detector.kafka import sasl
from detector.settings.kafka import KafkaSettings
from tests.oauth import TokenEndpoint, unsecured_jwt


def test_a_token_file_is_read_again_at_every_login(tmp_path):
    path = tmp_path / "token"
    path.write_text("first.token.\n")
    provider = sasl.TokenFile(str(path))
    assert provider.token() == "first.token."
    path.write_text("second.token.")  # renewed by whatever keeps it fresh
    assert provider.token() == "second.token."
    path.write_text("  \n")
    with pytest.raises(sasl.TokenUnavailable, match=f"token file {path} is empty"):
        provider.token()
    path.unlink()
    with pytest.raises(sasl.TokenUnavailable, match=f"cannot read the OAUTHBEARER token file "
                                                    f"{path} \\(No such file"):
        provider.token()


def test_client_credentials_are_asked_once_per_token_lifetime():
    now = [1000.0]
    issued = iter(["t1", "t2"])
    with TokenEndpoint(lambda _: (200, {"access_token": next(issued), "token_type": "Bearer",
                                        "expires_in": 100})) as server:
        provider = sasl.ClientCredentials(server.url, "detector", "s3cret:/", "kafka",
                                          clock=lambda: now[0])
        assert [provider.token() for _ in range(3)] == ["t1"] * 3
        assert len(server.requests) == 1
        request = server.requests[0]
        assert request["form"] == "grant_type=client_credentials&scope=kafka"
        assert request["content_type"] == "application/x-www-form-urlencoded"
        # RFC 6749 2.3.1: id and secret form-urlencoded, then HTTP basic
        assert base64.b64decode(request["authorization"].removeprefix("Basic ")) == \
            b"detector:s3cret%3A%2F"
        now[0] += 79
        assert provider.token() == "t1"
        now[0] += 2  # past 80% of its 100 s
        assert provider.token() == "t2" and len(server.requests) == 2


def test_a_token_without_expires_in_lives_until_its_jwt_expiry():
    now = [1000.0]
    token = unsecured_jwt("detector", 1050.0)
    with TokenEndpoint(lambda _: (200, {"access_token": token})) as server:
        provider = sasl.ClientCredentials(server.url, "c", "s", clock=lambda: now[0])
        provider.token()
        now[0] += 39
        provider.token()
        assert len(server.requests) == 1
        now[0] += 2
        provider.token()
        assert len(server.requests) == 2
        assert "scope" not in server.requests[0]["form"]


@pytest.mark.parametrize(("status", "reply", "says"), [
    (401, {"error": "invalid_client"}, "refused the client credentials (HTTP 401: "
     "invalid_client); check --sasl-username and --sasl-password"),
    (500, "oops", "failed (HTTP 500)"),
    (200, {"token_type": "Bearer"}, "answered without an access_token"),
])
def test_a_token_endpoint_that_gives_no_token_is_one_line(status, reply, says):
    with TokenEndpoint(lambda _: (status, reply)) as server, \
            pytest.raises(sasl.TokenUnavailable) as failed:
        sasl.ClientCredentials(server.url, "c", "s").token()
    assert str(failed.value) == f"the OAuth token endpoint {server.url} {says}"


def test_the_token_is_fetched_when_a_client_is_made_not_at_its_first_login():
    """``options`` asks for the token on the caller's thread: an endpoint that refuses is one
    line before any connection; one provider serves every client of the process."""
    with TokenEndpoint(lambda _: (200, {"access_token": "t", "expires_in": 3600})) as server:
        kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                              sasl_oauth_token_url=server.url, sasl_username="id-1",
                              sasl_password="x")
        first, second = sasl.options(kafka), sasl.options(kafka)
        assert first["sasl_oauth_token_provider"] is second["sasl_oauth_token_provider"]
        assert len(server.requests) == 1
        # kafka-python's own OAUTHBEARER mechanism sends it
        mechanism = get_sasl_mechanism("OAUTHBEARER")(**first)
        assert mechanism.auth_bytes() == b"n,,\x01auth=Bearer t\x01\x01"


# --- GSSAPI and AWS_MSK_IAM: what kafka-python's mechanisms are given -----------------------


def fake_module(monkeypatch, name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attributes.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.mark.parametrize(("mechanism", "module", "extra"), [
    ("GSSAPI", "gssapi", "kerberos"), ("AWS_MSK_IAM", "botocore", "aws")])
def test_a_mechanism_whose_library_is_missing_names_the_extra(monkeypatch, mechanism, module,
                                                             extra):
    monkeypatch.setitem(sys.modules, module, None)  # not installed
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism=mechanism,
                          sasl_aws_region="eu-west-1" if mechanism == "AWS_MSK_IAM" else None)
    with pytest.raises(MissingExtra) as missing:
        sasl.options(kafka)
    assert str(missing.value) == (f"--sasl-mechanism {mechanism} needs {module}: pip install "
                                  f"'trend-detector[{extra}]'")


def test_gssapi_asks_kerberos_for_the_service_principal_of_the_settings(monkeypatch):
    asked: list[str] = []

    class Name:
        def __init__(self, text, name_type=None):
            asked.append(text)

        def canonicalize(self, mech):
            return self

    class SecurityContext:
        def __init__(self, name, usage):
            self.complete = False

        def step(self, token):
            return b"first-kerberos-token"

    fake_module(monkeypatch, "gssapi", Name=Name, SecurityContext=SecurityContext,
                NameType=types.SimpleNamespace(hostbased_service="hostbased"),
                MechType=types.SimpleNamespace(kerberos="krb5"))
    for settings, principal in (({}, "kafka@broker-1.example.com"),
                                ({"sasl_kerberos_service_name": "kafka-prod",
                                  "sasl_kerberos_domain_name": "kafka.example.com"},
                                 "kafka-prod@kafka.example.com")):
        kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI", **settings)
        assert sasl.options(kafka) == {}
        mechanism = get_sasl_mechanism("GSSAPI")(host="broker-1.example.com",
                                                 **kafka.client_options())
        assert asked[-1] == principal
        assert mechanism.auth_bytes() == b"first-kerberos-token"


def test_aws_msk_iam_signs_for_the_region_of_the_settings(monkeypatch):
    class Session:
        def __init__(self):
            self.config = {"region": None}  # nothing configured for botocore itself

        def set_config_variable(self, name, value):
            self.config[name] = value

        def get_config_variable(self, name):
            return self.config[name]

        def get_credentials(self):
            frozen = types.SimpleNamespace(access_key="AKIDEXAMPLE", secret_key="secret",
                                           token=None)
            return types.SimpleNamespace(get_frozen_credentials=lambda: frozen)

    fake_module(monkeypatch, "botocore")
    fake_module(monkeypatch, "botocore.session", Session=Session)
    host = "boot-abc.c2.kafka-serverless.eu-west-1.amazonaws.com"
    kafka = KafkaSettings(bootstrap_servers=f"{host}:9098", security_protocol="SASL_SSL",
                          sasl_mechanism="AWS_MSK_IAM", sasl_aws_region="eu-west-1")
    options = {**kafka.client_options(), **sasl.options(kafka)}
    mechanism = get_sasl_mechanism("AWS_MSK_IAM")(host=host, **options)
    first = json.loads(mechanism.auth_bytes())
    assert first["host"] == host and first["action"] == "kafka-cluster:Connect"
    assert first["x-amz-credential"].startswith("AKIDEXAMPLE/")
    assert first["x-amz-credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    # kafka-python's mechanism alone finds no region in this configuration
    del options["sasl_oauth_token_provider"]
    with pytest.raises(Exception, match="Unable to determine region"):
        get_sasl_mechanism("AWS_MSK_IAM")(host=host, **options).auth_bytes()
