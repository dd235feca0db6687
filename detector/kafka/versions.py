"""The versions of the requests this project builds itself, and a check that a broker takes them.

kafka-python negotiates the version of every request it sends; the outbox and the group
requests build theirs, within the ranges below. Apache Kafka 4 dropped old versions of many
requests (KIP-896: Produce below v3, JoinGroup below v2), so a broker outside a range is
refused at start with one line, not met with an error per request later.
"""

from __future__ import annotations

from kafka.protocol.api_key import ApiKey

from detector.kafka import clients
from detector.settings.kafka import KafkaSettings

#: Request -> (lowest, highest) version this project sends.
PINNED: dict[ApiKey, tuple[int, int]] = {
    ApiKey.Produce: (3, 9),  # the outbox: record batches v2 (v3+), without v10+'s fields
    ApiKey.JoinGroup: (0, 7),  # group_requests.join_as
}


def refused(offered: dict[ApiKey, tuple[int, int]]) -> list[str]:
    """What a broker offering ``offered`` (request -> its lowest, highest) does not take."""
    out = []
    for key, (low, high) in PINNED.items():
        theirs = offered.get(key)
        if theirs is None or theirs[1] < low or theirs[0] > high:
            shown = f"v{theirs[0]}-{theirs[1]}" if theirs else "none"
            out.append(f"{key.name} v{low}-{high} (it takes {shown})")
    return out


def check(kafka: KafkaSettings) -> None:
    """KafkaUnavailable with one line when the cluster does not take the pinned versions."""
    client = clients.admin(kafka)
    try:
        offered = client.api_versions()
    finally:
        clients.close_bounded(client.close, "the admin client")
    missing = refused(offered)
    if missing:
        raise clients.KafkaUnavailable(
            f"Kafka at {kafka.bootstrap_servers} does not take the requests this detector "
            f"sends: {'; '.join(missing)}")
