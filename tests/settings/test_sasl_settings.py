"""Every SASL mechanism kafka-python has takes the settings it needs, and only those, each
refused in one line when wrong (exit 2), before any connection."""

import pytest

from detector.cli.main import main as detector_main
from detector.settings.fields import ConfigError
from detector.settings.kafka import SASL_MECHANISMS, KafkaSettings


def sasl(mechanism: str, protocol: str = "SASL_PLAINTEXT", **options) -> KafkaSettings:
    return KafkaSettings(security_protocol=protocol, sasl_mechanism=mechanism, **options)


def test_every_mechanism_of_kafka_python_is_offered():
    from kafka.net.sasl import SASL_MECHANISMS as KAFKA_PYTHONS

    assert set(SASL_MECHANISMS) == set(KAFKA_PYTHONS)


def test_each_mechanism_passes_what_it_needs_to_the_client(tmp_path):
    token = tmp_path / "token"
    token.write_text("a.b.c")
    scram = sasl("SCRAM-SHA-512", sasl_username="u", sasl_password="p").client_options()
    assert (scram["sasl_mechanism"], scram["sasl_plain_username"],
            scram["sasl_plain_password"]) == ("SCRAM-SHA-512", "u", "p")
    gssapi = sasl("GSSAPI", sasl_kerberos_service_name="kafka-prod",
                  sasl_kerberos_domain_name="kafka.example.com").client_options()
    assert (gssapi["sasl_kerberos_service_name"], gssapi["sasl_kerberos_domain_name"]) == (
        "kafka-prod", "kafka.example.com")
    assert "sasl_plain_username" not in gssapi
    oauth = sasl("OAUTHBEARER", sasl_oauth_token_file=str(token)).client_options()
    assert oauth["sasl_mechanism"] == "OAUTHBEARER" and "sasl_plain_password" not in oauth
    msk = sasl("AWS_MSK_IAM", "SASL_SSL", sasl_aws_region="eu-west-1").client_options()
    assert msk["sasl_mechanism"] == "AWS_MSK_IAM"


@pytest.mark.parametrize(("settings", "says"), [
    (dict(sasl_mechanism="PLAIN"), "needs --sasl-username and --sasl-password"),
    (dict(sasl_mechanism="OAUTHBEARER"),
     "OAUTHBEARER needs one of --sasl-oauth-token-file and --sasl-oauth-token-url"),
    (dict(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file="/no/token"),
     "--sasl-oauth-token-file: file not found: /no/token"),
    (dict(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_url="idp/token"),
     "--sasl-oauth-token-url 'idp/token' is not an http:// or https:// URL"),
    (dict(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_url="https://idp/token"),
     "--sasl-oauth-token-url needs --sasl-username and --sasl-password (the OAuth client id"),
    (dict(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_url="https://idp/token",
          sasl_oauth_token_file="TOKEN", sasl_username="c", sasl_password="s"),
     "needs one of --sasl-oauth-token-file and --sasl-oauth-token-url"),
    (dict(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file="TOKEN", sasl_username="c"),
     "--sasl-username applies only with --sasl-oauth-token-url"),
    (dict(sasl_mechanism="GSSAPI", sasl_kerberos_service_name=" "),
     "--sasl-kerberos-service-name is empty"),
    (dict(sasl_mechanism="GSSAPI", sasl_username="u"),
     "--sasl-username does not apply to --sasl-mechanism GSSAPI"),
    (dict(sasl_mechanism="AWS_MSK_IAM", sasl_aws_region="us-east-1"),
     "AWS_MSK_IAM needs --security-protocol SASL_SSL"),
    (dict(sasl_mechanism="AWS_MSK_IAM", security_protocol="SASL_SSL"),
     "AWS_MSK_IAM needs --sasl-aws-region"),
    (dict(sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="p",
          sasl_aws_region="us-east-1"),
     "--sasl-aws-region does not apply to --sasl-mechanism SCRAM-SHA-256"),
    (dict(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p",
          sasl_kerberos_domain_name="example.com"),
     "--sasl-kerberos-domain-name does not apply to --sasl-mechanism PLAIN"),
    (dict(security_protocol="SSL", sasl_mechanism="GSSAPI"),
     "--sasl-mechanism GSSAPI needs --security-protocol SASL_PLAINTEXT or SASL_SSL"),
    (dict(security_protocol="PLAINTEXT", sasl_oauth_token_file="TOKEN"),
     "--sasl-oauth-token-file needs --security-protocol SASL_PLAINTEXT or SASL_SSL"),
])
def test_wrong_sasl_settings_are_one_line_naming_the_option(settings, says, tmp_path):
    token = tmp_path / "token"
    token.write_text("a.b.c")
    settings = {k: str(token) if v == "TOKEN" else v for k, v in settings.items()}
    settings.setdefault("security_protocol", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError) as refused:
        KafkaSettings(**settings)
    assert says in str(refused.value)


def test_a_wrong_mechanism_setting_on_the_command_line_exits_2(capsys):
    code = detector_main(["tail", "--security-protocol", "SASL_SSL", "--sasl-mechanism",
                          "AWS_MSK_IAM"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["detector: error: --sasl-mechanism AWS_MSK_IAM needs "
                                 "--sasl-aws-region, the cluster's AWS region (such as "
                                 "us-east-1)"]
