"""One place maps flags and environment onto the frozen settings; the README documents all."""

import argparse
import dataclasses
import socket

import pytest

from detector.settings.bridge import BridgeSettings
from detector.settings.detector import DetectorSettings
from detector.settings.fields import ConfigError, add_options, build, markdown_table
from detector.settings.kafka import KafkaSettings
from detector.settings.producer import ProducerSettings
from tests.support import ROOT


def parse(cls, prefix, argv, env):
    p = argparse.ArgumentParser()
    add_options(p, cls, prefix)
    return build(cls, p.parse_args(argv), prefix, env)


def test_flag_beats_environment_beats_default():
    s = parse(DetectorSettings, "DETECTOR", ["--group-id", "cli"],
              {"DETECTOR_GROUP_ID": "env", "DETECTOR_METRICS_PORT": "9200",
               "DETECTOR_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
               "DETECTOR_SSL_CHECK_HOSTNAME": "false"})
    assert s.group_id == "cli"
    assert s.metrics_port == 9200
    assert s.state_topic == "cli.state"
    assert s.kafka.client_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert s.kafka.ssl_check_hostname is False
    assert parse(DetectorSettings, "DETECTOR", [], {}) == DetectorSettings()


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DetectorSettings().group_id = "x"


def test_security_options_reach_the_client():
    k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                      sasl_username="u", sasl_password="p", ssl_check_hostname=False)
    opts = k.client_options()
    assert opts["sasl_mechanism"] == "SCRAM-SHA-256"
    assert opts["sasl_plain_username"] == "u" and opts["ssl_check_hostname"] is False
    assert "sasl_mechanism" not in KafkaSettings().client_options()


def test_bad_boolean_in_the_environment():
    with pytest.raises(ConfigError, match="DETECTOR_SSL_CHECK_HOSTNAME: expected true or false"):
        parse(DetectorSettings, "DETECTOR", [], {"DETECTOR_SSL_CHECK_HOSTNAME": "maybe"})


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    for cls, prefix in ((DetectorSettings, "DETECTOR"), (BridgeSettings, "DETECTOR"),
                        (ProducerSettings, "PRODUCER")):
        table = markdown_table(cls, prefix)
        for row in table.splitlines()[2:]:
            assert row in readme, (f"README configuration table lacks: {row} "
                                   "(paste the output of `python -m detector config`)")


def test_hostname_in_the_group_instance_id_is_this_host_name():
    """One compose environment for every replica still gives each its own static id."""
    settings = DetectorSettings(group_instance_id="detector-{hostname}")
    assert settings.group_instance_id == f"detector-{socket.gethostname()}"
    assert DetectorSettings().group_instance_id == ""


@pytest.mark.parametrize("servers", ["localhost", "k1:9092,k2", ":9092", "k1:0", "k1:65536",
                                     "k1:port"])
def test_a_bootstrap_server_is_host_and_port(servers):
    """A wrong bootstrap server is a wrong setting (exit 2), found when the settings are read,
    not later by the connection check (exit 1)."""
    with pytest.raises(ConfigError, match=r"--bootstrap-servers: .* is not host:port"):
        KafkaSettings(bootstrap_servers=servers)
    assert KafkaSettings(bootstrap_servers=" k1:9092, [::1]:9093").servers() == [
        ("k1", 9092), ("::1", 9093)]


def test_help_and_table_show_a_resolved_default_as_it_resolves():
    p = argparse.ArgumentParser()
    add_options(p, DetectorSettings, "DETECTOR")
    help_text = " ".join(p.format_help().split())
    assert "[env DETECTOR_STATE_TOPIC; default <group-id>.state]" in help_text
    assert "[env DETECTOR_SASL_USERNAME]" in help_text  # no default: none shown
    assert "[env DETECTOR_SSL_CHECK_HOSTNAME; default true]" in help_text
    assert "| `--state-topic` | `DETECTOR_STATE_TOPIC` | `<group-id>.state` |" in markdown_table(
        DetectorSettings, "DETECTOR")
