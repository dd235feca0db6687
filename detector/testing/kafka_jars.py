"""Apache Kafka's jars and the Java to run them: the pinned ``kafka/pom.xml`` beside this
module, fetched once from Maven Central (``mvn dependency:copy-dependencies``) into
``$DETECTOR_KAFKA_CACHE`` (default ``~/.cache/trend-detector``), ``kafka-<version>/libs``;
``DETECTOR_KAFKA_LIBS`` names the ``libs/`` of a Kafka distribution instead. What is missing
(Java 17+, Maven) is one line naming what to install."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

from detector.testing.local_broker import BrokerError

POM = Path(__file__).with_name("kafka") / "pom.xml"
CACHE_ENV = "DETECTOR_KAFKA_CACHE"
LIBS_ENV = "DETECTOR_KAFKA_LIBS"


def kafka_version() -> str:
    """The Kafka version the pom pins."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert found, f"no <kafka.version> in {POM}"
    return found.group(1)


def java() -> str:
    """The ``java`` of ``JAVA_HOME`` or the PATH, checked to be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    exe = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not exe or not os.access(exe, os.X_OK):
        raise BrokerError("Apache Kafka needs Java 17 or newer: install a JDK (Debian: "
                          "apt-get install openjdk-17-jdk-headless) or set JAVA_HOME")
    out = subprocess.run([exe, "-version"], capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)', out)
    if not found or int(found.group(1)) < 17:
        raise BrokerError(f"Apache Kafka needs Java 17 or newer; {exe} is "
                          f"{found.group(1) if found else 'of an unknown version'}")
    return exe


def libs() -> Path:
    """The directory of the broker's jars: ``$DETECTOR_KAFKA_LIBS``, or the cache, filled
    from Maven Central on first use (one fetch at a time: concurrent starters wait)."""
    given = os.environ.get(LIBS_ENV)
    if given:
        if not any(Path(given).glob("kafka_2.13-*.jar")):
            raise BrokerError(f"{LIBS_ENV}={given} holds no kafka_2.13 jar (the libs/ "
                              "directory of an Apache Kafka 4.x distribution)")
        return Path(given)
    version = kafka_version()
    home = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "trend-detector")
    target = home / f"kafka-{version}" / "libs"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("fetching Apache Kafka's jars needs Maven: install it (Debian: "
                          f"apt-get install maven), or set {LIBS_ENV} to a Kafka "
                          "distribution's libs/ directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        partial = target.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        print(f"Fetching Apache Kafka {version}'s jars from Maven Central into {target} "
              "(about 45 MB, once) ...", flush=True)
        done = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                               f"-DoutputDirectory={partial}"], capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"mvn could not fetch Apache Kafka {version}'s jars: {tail}")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        (target / ".complete").touch()
    return target
