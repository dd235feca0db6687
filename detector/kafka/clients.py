"""Kafka clients, topics and readable connection errors, shared by the detector and the producer.

kafka-python reports a missing broker, a refused TLS handshake or a wrong password as one of
many exception types, sometimes after a long retry loop; everything here turns those into
``KafkaUnavailable`` with one line that says what to check, within the connect timeout.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from detector.errors import DetectorError
from detector.kafka import sasl
from detector.settings.kafka import KafkaSettings

log = logging.getLogger(__name__)


class KafkaUnavailable(DetectorError):
    """The cluster cannot be used; the message is one readable line."""


class KafkaRefused(DetectorError):
    """Kafka refuses something no retry will change (an ACL, a size limit, a fenced member):
    the program stops with this one line."""


#: Errors no retry cures, with what each means for the operator (a missing ACL on a topic or
#: a group is named by ``acl.refusal``).
FATAL: dict[type[Errors.KafkaError], str] = {
    Errors.ClusterAuthorizationFailedError: "not authorized on the cluster",
    Errors.TransactionalIdAuthorizationFailedError: "not authorized on the transactional id",
    Errors.MessageSizeTooLargeError: "a record is larger than the topic's max.message.bytes",
    Errors.RecordListTooLargeError: "a record batch is larger than the broker takes",
    Errors.FencedInstanceIdError: "another process runs with this --group-instance-id",
    Errors.ProducerFencedError: "another process took over this member's transactional id",
    Errors.UnsupportedVersionError: "the broker does not take a request this program sends",
}


def fatal(exc: BaseException) -> str | None:
    """One line for an error no retry cures (looking through ``cause`` and ``__cause__``), or
    None for one worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for kind, meaning in FATAL.items():
            if isinstance(current, kind):
                detail = str(current).removeprefix(f"[Error {kind.errno}] {kind.__name__}")
                detail = detail.strip(": ") or "no detail"
                return (f"Kafka refused: {meaning} ({kind.__name__.removesuffix('Error')}: "
                        f"{detail})")
        current = getattr(current, "cause", None) or current.__cause__
    return None


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context the settings describe (as kafka-python builds it)."""
    ctx = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        ctx.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    ctx.check_hostname = kafka.ssl_check_hostname
    return ctx


def preflight(kafka: KafkaSettings) -> None:
    """Reach a bootstrap server over TCP, and TLS when configured, within ``connect_timeout_s``.

    kafka-python only says "Unable to bootstrap" after its timeout, and a TLS client talking
    to a plaintext listener waits forever in the handshake; this check names the real cause
    at once (a refused connection is retried until the deadline: the broker may be starting).
    """
    servers = kafka.servers()
    deadline = time.monotonic() + kafka.connect_timeout_s
    use_tls = kafka.security_protocol.endswith("SSL")
    last: OSError | None = None
    while True:
        for host, port in servers:
            where = f"{host}:{port}"
            left = max(0.5, deadline - time.monotonic())
            try:
                sock = socket.create_connection((host, port), timeout=min(5.0, left))
            except OSError as exc:
                last = exc
                continue
            with sock:
                if not use_tls:
                    return
                sock.settimeout(min(10.0, max(3.0, left)))
                try:
                    with tls_context(kafka).wrap_socket(sock, server_hostname=host):
                        return
                except ssl.SSLCertVerificationError as exc:
                    raise KafkaUnavailable(
                        f"TLS: the certificate of Kafka at {where} does not verify "
                        f"({exc.verify_message}); check --ssl-cafile and --ssl-check-hostname"
                    ) from exc
                except ssl.SSLError as exc:
                    # A plaintext listener reads the ClientHello as a request and hangs up
                    # (Apache Kafka) or waits (see the timeout below)
                    closed = "EOF" in str(exc.reason or exc)
                    raise KafkaUnavailable(
                        f"TLS handshake with Kafka at {where} failed ({exc.reason or exc})"
                        + ("; is that listener TLS? (--security-protocol)" if closed else "")
                    ) from exc
                except TimeoutError as exc:
                    raise KafkaUnavailable(
                        f"TLS handshake with Kafka at {where} timed out: is that listener TLS? "
                        "(--security-protocol)"
                    ) from exc
                except OSError as exc:
                    raise KafkaUnavailable(
                        f"TLS handshake with Kafka at {where} failed ({exc}); is that listener "
                        "TLS? (--security-protocol)") from exc
        if time.monotonic() >= deadline:
            reason = f" ({last.strerror or last})" if last else ""
            raise KafkaUnavailable(
                f"cannot reach Kafka at {kafka.bootstrap_servers} within "
                f"{kafka.connect_timeout_s:g} s{reason}; is the broker running and is "
                "--bootstrap-servers right?"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def _client_errors() -> Iterator[list[str]]:
    """Collect kafka-python's own warnings while a client bootstraps: its exception after a
    failed bootstrap says only "Unable to bootstrap"; the cause is in its log."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("kafka")
    handler = Keep(logging.WARNING)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def describe_failure(kafka: KafkaSettings, exc: BaseException, log_lines: list[str]) -> str:
    """One line for a failure to reach or log in to the cluster, with the client's own cause."""
    where = kafka.bootstrap_servers
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    attempts = [m for m in log_lines if m.startswith(("Bootstrap connection", "Bootstrap attempt"))]
    cause = re.sub(r"\s*\(backoff [^)]*\)$", "", attempts[-1]).split(" failed: ", 1)[-1] \
        if attempts else ""
    if kafka.security_protocol.startswith("SASL") and attempts:
        return (f"Kafka at {where} did not accept the SASL login ({cause}); "
                f"{sasl.login_hint(kafka)}")
    if "disconnected" in cause:
        return (f"Kafka at {where} closed every connection ({cause}); does it want TLS or SASL "
                "(--security-protocol)?")
    if type(exc).__name__ in ("KafkaTimeoutError", "KafkaConnectionError"):
        return (f"cannot use Kafka at {where} within {kafka.connect_timeout_s:g} s "
                f"({cause or text}); is --bootstrap-servers right?")
    return f"Kafka at {where}: {type(exc).__name__}: {text}"


def guarded(kafka: KafkaSettings, make: Any, **options: Any) -> Any:
    """``make(**client options, **options)``, or KafkaUnavailable with one line: the login's
    token or library first, then the preflight, then kafka-python's own cause of a failed
    bootstrap."""
    try:
        login = sasl.options(kafka)
    except sasl.TokenUnavailable as exc:
        raise KafkaUnavailable(str(exc)) from exc
    preflight(kafka)
    timeout = int(kafka.connect_timeout_s * 1000)
    with _client_errors() as log_lines:
        try:
            return make(**kafka.client_options(), **login, bootstrap_timeout_ms=timeout,
                        **options)
        except (KafkaError, OSError, ValueError) as exc:
            raise KafkaUnavailable(describe_failure(kafka, exc, log_lines)) from exc


def admin(kafka: KafkaSettings) -> KafkaAdminClient:
    """An admin client, or KafkaUnavailable within ``connect_timeout_s``."""
    return guarded(kafka, KafkaAdminClient,
                  request_timeout_ms=max(int(kafka.connect_timeout_s * 1000), 5000))


def producer(kafka: KafkaSettings, **options: Any) -> KafkaProducer:
    return guarded(kafka, KafkaProducer, **options)


def consumer(kafka: KafkaSettings, **options: Any) -> KafkaConsumer:
    return guarded(kafka, KafkaConsumer, **options)


def position(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """``consumer``'s position in ``tp`` as its fetcher keeps it: past the last record it
    returned and past transaction markers. Read from its subscription state, without the
    round trips ``KafkaConsumer.position`` may make; None before it has one."""
    state = consumer._subscription.assignment.get(tp)
    pos = state.position if state is not None else None
    return None if pos is None else pos.offset


def await_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> None:
    """Wait until ``consumer``'s metadata knows ``topic``'s partitions, before its first join.
    kafka-python joins a group without waiting for the metadata of its subscription: a leader
    that joins first assigns a topic it knows no partitions of to nobody, and the group sits
    on an empty assignment until a metadata refresh (minutes) or a rejoin. Gives up silently
    after ``timeout_s`` (the join then goes on as before)."""
    cluster = consumer._cluster  # the consumer's own cache: ``partitions_for_topic`` would
    deadline = time.monotonic() + timeout_s  # block on a refresh without a timeout
    while not cluster.partitions_for_topic(topic):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return
        try:
            consumer._net.run(consumer._manager.wait_for, cluster.request_update(),
                              min(left_ms, 1000))
        except KafkaError:
            time.sleep(0.1)


def close_bounded(close: Callable[[], None], what: str, timeout_s: float = 5.0) -> None:
    """Close a client, waiting at most ``timeout_s`` and never raising: with the broker gone,
    kafka-python 3.0's consumer close waits without limit to leave its group, and the
    producer's raises once its flush times out (a daemon thread is left behind instead, and
    ends with the process)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            close()
        except Exception as exc:  # reported below: closing must not stop the shutdown
            errors.append(exc)

    thread = threading.Thread(target=run, name="close", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("%s did not close within %g s (broker unreachable?); leaving it", what,
                    timeout_s)
    elif errors:
        log.warning("closing %s failed: %s", what, errors[0])
