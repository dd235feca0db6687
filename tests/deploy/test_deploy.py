"""The ``docker compose`` deployment, proven where no Docker engine runs.

- Debian's ``docker-compose`` accepts ``docker-compose.yml``; ``promtool`` accepts the
  Prometheus configuration and passes the alerting rules' unit tests; ``amtool`` accepts the
  Alertmanager configuration (each test skips with one line when its tool is missing).
- The alerting rules query only metrics the programs export.
- The compose file's wiring holds together: topics, ports, the scrape target, Grafana's mounts,
  the datasource uid the dashboard refers to.
- The producer and detector services' own commands, with their own environment (only the
  bootstrap address and the metrics port changed), turn values into flags on Apache Kafka.
- A real Prometheus server scrapes that detector, loads and evaluates the alerting rules, and
  every PromQL expression of the Grafana dashboard returns data through Prometheus's HTTP API.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from detector.kafka import clients, topics
from detector.kafka.registry import Registry
from detector.labels import topic
from detector.labels.codec import RangeLabel, Verdict
from detector.model.files import MODELS_DIR, sha256
from detector.ops.metrics import BridgeMetrics, Metrics
from detector.settings import fields
from detector.settings.bridge import BridgeSettings
from detector.settings.kafka import KafkaSettings
from detector.settings.labels import LabelTopicSettings, ScoreSettings
from detector.testing.apache_kafka import KafkaCluster, kafka_version
from detector.testing.harness import read_topic, wait_for
from detector.testing.local_broker import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "detector.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules" / "detector.test.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
#: The run lifecycle's metrics (issue 13), exported by the detector once that lands.
RUN_METRICS = {"detector_run_alerts_total", "detector_run_length_bucket", "detector_runs_firing"}
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "trend-detector.json"

#: What Grafana puts in place of its built-in variables, for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "1m"}


def load_yaml(path: Path):
    yaml = pytest.importorskip("yaml", reason="PyYAML missing: pip install pyyaml (dev extra)")
    return yaml.safe_load(path.read_text())


def services() -> dict:
    return load_yaml(COMPOSE)["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def option_value(args: list[str], name: str) -> str:
    """The value of ``name=value`` in a command line."""
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


def option(args: list[str], name: str) -> str:
    """The value after ``name`` in a command line."""
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of every panel, rows included."""
    def panels(items: list[dict]):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in panels(board["panels"])
            for t in p.get("targets", []) if t.get("expr")]


def expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a dashboard variable this test cannot fill in: {expr}"
    return expr


# --- the tools' own checks -----------------------------------------------------------------


def test_docker_compose_accepts_the_file():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose missing (apt-get install docker-compose)")
    # Debian's docker-compose runs on the system Python: keep this interpreter's paths out.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout


def test_promtool_accepts_the_prometheus_config():
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool missing (apt-get install prometheus)")
    out = subprocess.run([exe, "check", "config", str(PROMETHEUS_YML)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout


def test_promtool_passes_the_alerting_rules_unit_tests():
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool missing (apt-get install prometheus)")
    out = subprocess.run([exe, "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    # Every rule has at least one test.
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    rules = {r["alert"] for g in load_yaml(RULES)["groups"] for r in g["rules"]}
    assert rules == tested, rules ^ tested


def test_amtool_accepts_the_alertmanager_config():
    exe = shutil.which("amtool")
    if exe is None:
        pytest.skip("amtool missing (apt-get install prometheus-alertmanager)")
    out = subprocess.run([exe, "check-config", str(ALERTMANAGER_YML)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout


def test_alerting_rules_query_only_exported_metrics():
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {f.name + suffix for m in (Metrics(), BridgeMetrics()) for f in m.registry.collect()
                for suffix in suffixes[f.type]} | {"up"}
    exprs = " ".join(r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"])
    used = set(re.findall(r"\b(?:detector|alert_bridge)_\w+|\bup\b", exprs))
    missing = used - exported
    assert missing <= RUN_METRICS, f"rules query metrics nobody exports: {missing - RUN_METRICS}"
    if missing:
        pytest.skip(f"{sorted(missing)} come with the detector's run lifecycle (issue 13)")


# --- the wiring, read from the files -------------------------------------------------------


def test_compose_wiring_holds_together():
    s = services()
    assert {"kafka", "kafka-init", "producer", "detector", "prometheus", "grafana",
            "alertmanager", "alertmanager-bridge", "webhook-example"} <= set(s)
    for name, svc in s.items():
        for key, value in environment(svc).items():
            assert isinstance(value, str), f"{name}: {key} should be a quoted string"

    kafka = s["kafka"]
    # the version the suite runs (the pinned pom): compose is what the tests tested
    assert kafka["image"] == s["kafka-init"]["image"] == f"apache/kafka:{kafka_version()}"
    assert "9092:9092" in kafka["ports"]
    assert "healthcheck" in kafka
    kenv = environment(kafka)
    assert "EXTERNAL://localhost:9092" in kenv["KAFKA_ADVERTISED_LISTENERS"]
    assert "broker,controller" in kenv["KAFKA_PROCESS_ROLES"]
    factors = [k for k in kenv if k.endswith("REPLICATION_FACTOR")]
    assert len(factors) >= 3 and all(kenv[k] == "1" for k in factors)

    # One image from one Dockerfile for the producer, the detector and the bridge.
    for name in ("producer", "detector", "alertmanager-bridge"):
        build = s[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert s["producer"]["image"] == s["detector"]["image"] == s["alertmanager-bridge"]["image"]
    assert command(s["producer"]) == ["python", "-m", "producer"]
    assert command(s["detector"]) == ["python", "-m", "detector", "run"]
    # The registry gets the shipped model the detectors follow before they start.
    models = s["models-init"]
    assert command(models)[:4] == ["python", "-m", "detector", "models"]
    assert option(command(models), "--name") == environment(s["detector"])["DETECTOR_MODEL"]
    assert environment(models)["DETECTOR_MODELS_TOPIC"] == \
        environment(s["detector"])["DETECTOR_MODELS_TOPIC"]
    assert "models-init" in s["detector"]["depends_on"]

    # The input topic: created by kafka-init with 6 partitions, written and read by the programs.
    init = command(s["kafka-init"])
    penv, denv = environment(s["producer"]), environment(s["detector"])
    assert option(init, "--topic") == penv["PRODUCER_TOPIC"] == denv["DETECTOR_INPUT_TOPIC"]
    assert option(init, "--partitions") == "6"
    internal = penv["PRODUCER_BOOTSTRAP_SERVERS"]
    assert option(init, "--bootstrap-server") == internal == denv["DETECTOR_BOOTSTRAP_SERVERS"]
    assert f"INTERNAL://{internal}" in kenv["KAFKA_ADVERTISED_LISTENERS"]

    # Scalable: no fixed name, no host port; metrics reachable from Prometheus's container.
    detector = s["detector"]
    assert "container_name" not in detector and "ports" not in detector
    assert denv["DETECTOR_METRICS_HOST"] == "0.0.0.0"
    port = int(denv["DETECTOR_METRICS_PORT"])

    # Prometheus finds every replica by the service name, on the metrics port.
    prom = load_yaml(PROMETHEUS_YML)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    sd = jobs["detector"]["dns_sd_configs"]
    assert sd == [{**sd[0], "names": ["detector"], "type": "A", "port": port}]
    assert "9090:9090" in s["prometheus"]["ports"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in s["prometheus"]["volumes"]}
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_YML
    # ... loads the rules (paths relative to its configuration) and sends to Alertmanager.
    (rule_file,) = prom["rule_files"]
    inside = Path("/etc/prometheus") / rule_file
    assert (ROOT / mounts[str(inside.parent)]).resolve() / inside.name == RULES
    am_port = 9093
    assert f"{am_port}:{am_port}" in s["alertmanager"]["ports"]
    assert prom["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": [f"alertmanager:{am_port}"]}]}]

    # Alertmanager: its configuration mounted where its command reads it; the example
    # receiver is the webhook-example service.
    am = s["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    mounts = {v.split(":")[1]: (ROOT / v.split(":")[0]).resolve() for v in am["volumes"]}
    assert mounts[option_value(command(am), "--config.file")] == ALERTMANAGER_YML
    hooks = [w["url"] for r in load_yaml(ALERTMANAGER_YML)["receivers"]
             for w in r.get("webhook_configs", [])]
    assert hooks == [f"http://webhook-example:{s['webhook-example']['expose'][0]}/"]

    # The bridge: the program accepts its environment; it reads the detector's alert topic in
    # a group of its own, posts to the alertmanager service, and Prometheus scrapes it.
    bridge = s["alertmanager-bridge"]
    assert command(bridge) == ["python", "-m", "detector", "alertmanager"]
    benv = environment(bridge)
    settings = fields.build(BridgeSettings, argparse.Namespace(), "DETECTOR", benv)
    assert settings.url == f"http://alertmanager:{am_port}"
    assert settings.alert_topic == denv["DETECTOR_ALERT_TOPIC"]
    assert settings.group_id != denv["DETECTOR_GROUP_ID"]
    assert settings.kafka.bootstrap_servers == internal
    assert settings.metrics_host == "0.0.0.0"
    assert jobs["alertmanager-bridge"]["static_configs"] == [
        {"targets": [f"alertmanager-bridge:{settings.metrics_port}"]}]
    assert str(settings.metrics_port) in bridge["expose"]

    # The scorer: the program accepts its environment; it joins the labels with the detector's
    # flags and its candidate's, and Prometheus scrapes it.
    scorer = s["scorer"]
    assert command(scorer) == ["python", "-m", "detector", "score"]
    sc = fields.build(ScoreSettings, argparse.Namespace(), "DETECTOR", environment(scorer))
    assert sc.output_topic == denv["DETECTOR_OUTPUT_TOPIC"]
    assert sc.candidate_topic == denv["DETECTOR_CANDIDATE_TOPIC"]
    assert sc.kafka.bootstrap_servers == internal and sc.metrics_host == "0.0.0.0"
    assert jobs["scorer"]["static_configs"] == [{"targets": [f"scorer:{sc.metrics_port}"]}]
    assert str(sc.metrics_port) in scorer["expose"]

    # Grafana: anonymous viewers, the provisioning and dashboards directories mounted.
    grafana = s["grafana"]
    genv = environment(grafana)
    assert "3000:3000" in grafana["ports"]
    assert genv["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert genv["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {v.split(":")[1]: (ROOT / v.split(":")[0]).resolve() for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    providers = [p for f in (GRAFANA / "provisioning" / "dashboards").glob("*.yml")
                 for p in load_yaml(f)["providers"]]
    assert [mounts[p["options"]["path"]] for p in providers] == [DASHBOARD.parent]
    home = Path(genv["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert mounts[str(home.parent)] / home.name == DASHBOARD

    # Every panel and query uses the provisioned datasource, by its fixed uid.
    sources = [d for f in (GRAFANA / "provisioning" / "datasources").glob("*.yml")
               for d in load_yaml(f)["datasources"]]
    assert len(sources) == 1 and sources[0]["url"] == "http://prometheus:9090"
    uid = sources[0]["uid"]
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]

    # The panels the issue asks for, by what they query.
    exprs = " ".join(e for _, e in dashboard_queries())
    for needle in ("detector_events_consumed_total",
                   'detector_flags_total{flag="1"}', "detector_rule_disagreements_total",
                   "histogram_quantile(0.5, sum by (le) (rate(detector_inference_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) (rate(detector_inference_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) "
                   "(rate(detector_end_to_end_latency_seconds_bucket",
                   "sum by (partition) (detector_consumer_lag)",
                   "sum by (reason) (rate(detector_dlq_messages_total",
                   "detector_active_streams", "max by (instance) (detector_ready)",
                   "sum(detector_runs_firing)",
                   "sum by (status) (rate(detector_run_alerts_total",
                   "histogram_quantile(0.5, sum by (le) (rate(detector_run_length_bucket",
                   "sum(detector_assigned_partitions)", "max(detector_input_partitions)",
                   "detector_group_unsettled_seconds", "detector_group_rejoins_total",
                   "detector_model_info", "detector_shadow_disagreements_total",
                   "detector_model_load_failures_total",
                   'detector_label_events_total{outcome="tp"}', "detector_label_runs_total",
                   "sum by (kind) (detector_labels)"):
        assert needle in exprs, f"no panel queries {needle}"


# --- the services' own commands against the local broker -----------------------------------


class Service:
    """A compose service's command with its environment, as a local process.

    Only the bootstrap address (and the detector's metrics port, which must be free here)
    differ from the compose file; the rest of this process's DETECTOR_*/PRODUCER_* is removed.
    """

    def __init__(self, name: str, bootstrap: str, workdir: Path, metrics_port: int | None = None):
        svc = services()[name]
        prefix = "PRODUCER" if command(svc)[2] == "producer" else "DETECTOR"
        env = environment(svc)
        assert f"{prefix}_BOOTSTRAP_SERVERS" in env
        env[f"{prefix}_BOOTSTRAP_SERVERS"] = bootstrap
        if metrics_port is not None:
            env[f"{prefix}_METRICS_PORT"] = str(metrics_port)
        self.compose_env = env
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DETECTOR_", "PRODUCER_"))} | env
        self.svc = svc
        cmd = command(svc)
        assert cmd[0] == "python", cmd
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("wb")
        # The image's working directory holds no source: neither does this one.
        self.proc = subprocess.Popen([sys.executable, *cmd[1:]], env=self.env, cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def healthcheck(self) -> int:
        """Run the service's compose healthcheck command here; its exit code."""
        test = self.svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python", test
        return subprocess.run([sys.executable, *test[2:]], env=self.env, timeout=30,
                              capture_output=True).returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@dataclass
class Stack:
    kafka: KafkaSettings
    detector: Service
    producer: Service
    metrics_port: int
    scorer: Service
    scorer_port: int

    def logs(self) -> str:
        return (f"\n--- detector:\n{self.detector.output()}\n--- producer:\n"
                f"{self.producer.output()}\n--- scorer:\n{self.scorer.output()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Apache Kafka, kafka-init's topic, then the producer and detector services.

    One for the module, on a node of its own (the compose file's own topic names): the
    Prometheus test scrapes the detector that the flags test proved, and both share one start.
    """
    workdir = tmp_path_factory.mktemp("compose")
    with KafkaCluster() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, connect_timeout_s=10)
        init = command(services()["kafka-init"])
        topics.ensure_topics(kafka, [topics.TopicSpec(option(init, "--topic"),
                                                          int(option(init, "--partitions")))])
        port = free_port()
        # models-init pushes the shipped model to the registry before the detector starts.
        models = Service("models-init", broker.bootstrap, workdir)
        assert models.proc.wait(120) == 0, models.output()
        # pair shadows the live seed, as `models push pair --name seed` and `models shadow
        # seed 2` would make it: the dashboard's agreement panel has data.
        registry = Registry(kafka, models.compose_env["DETECTOR_MODELS_TOPIC"])
        pair = MODELS_DIR / "pair.keras"
        registry.push("seed", pair.with_suffix(".tflite").read_bytes(),
                      json.loads(pair.with_suffix(".card.json").read_text()), sha256(pair))
        registry.change("seed", "shadow", 2)
        registry.close()
        detector = Service("detector", broker.bootstrap, workdir, metrics_port=port)
        producer = Service("producer", broker.bootstrap, workdir)
        scorer_port = free_port()
        scorer = Service("scorer", broker.bootstrap, workdir, metrics_port=scorer_port)
        try:
            yield Stack(kafka, detector, producer, port, scorer, scorer_port)
        finally:
            producer.stop()
            detector.stop()
            scorer.stop()


@pytest.mark.broker
def test_compose_services_turn_values_into_flags(stack):
    env = stack.detector.compose_env
    topic = env["DETECTOR_OUTPUT_TOPIC"]
    wait_for(lambda: topics.partition_count(stack.kafka, topic), 90, what=f"topic {topic}")
    flags = read_topic(stack.kafka, topic, expect=200, timeout=90)
    assert len(flags) >= 200, f"{len(flags)} flag records{stack.logs()}"
    for record in flags:
        body = record.json()
        assert body["flag"] in (0, 1) and body["rule_flag"] in (0, 1), body
        assert body["model"] == env["DETECTOR_MODEL"]
        assert body["model_version"] == 1  # the registry's, pushed by models-init
    assert stack.producer.proc.poll() is None, stack.logs()
    # The detector's compose healthcheck passes against the running detector.
    wait_for(lambda: stack.detector.healthcheck() == 0, timeout=60, every=1,
             what=lambda: f"the detector's compose healthcheck to pass{stack.logs()}")
    # Topics the detector creates follow the input topic's partitions (6, from kafka-init).
    for topic in ("DETECTOR_OUTPUT_TOPIC", "DETECTOR_ALERT_TOPIC", "DETECTOR_DLQ_TOPIC"):
        assert topics.partition_count(stack.kafka, env[topic]) == 6


# --- a real Prometheus and the dashboard's queries -----------------------------------------


def write_labels(stack: Stack) -> None:
    env = stack.scorer.compose_env
    denv = stack.detector.compose_env
    alerts = read_topic(stack.kafka, denv["DETECTOR_ALERT_TOPIC"], expect=1, timeout=60)
    assert alerts, f"no run alert{stack.logs()}"
    run = alerts[0].json()
    labels = [RangeLabel("a", "s-1", "pattern", 0, 10**6),
              RangeLabel("b", "s-2", "no_pattern", 0, 10**6),
              Verdict("c", run["stream"], run["start_seq"], "right")]
    topic.write(stack.kafka, LabelTopicSettings(labels_topic=env["DETECTOR_LABELS_TOPIC"]),
                labels)


def prometheus_config(path: Path, targets: dict[str, str]) -> None:
    """deploy/prometheus/prometheus.yml, with the jobs of ``targets`` (the detector's DNS
    discovery too) made static targets here and the rule files found from wherever this copy
    is written."""
    config = load_yaml(PROMETHEUS_YML)
    import yaml  # present: load_yaml skips otherwise

    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_YML.parent / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path.write_text(yaml.safe_dump(config))


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    except urllib.error.HTTPError as exc:  # a bad expression: Prometheus says why
        raise AssertionError(f"{expr}: {exc.read().decode(errors='replace')}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


def has_data(result: list[dict]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


@pytest.fixture
def prometheus_bin() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus missing (apt-get install prometheus)")
    return exe


@pytest.mark.broker
def test_every_dashboard_query_returns_data(prometheus_bin, stack, tmp_path):
    exe = prometheus_bin
    queries = [(title, expand(expr)) for title, expr in dashboard_queries()]
    assert len({t for t, _ in queries}) >= 10, queries
    config = tmp_path / "prometheus.yml"
    prometheus_config(config, {"detector": f"127.0.0.1:{stack.metrics_port}",
                               "scorer": f"127.0.0.1:{stack.scorer_port}"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: answers(f"{base}/-/ready"), timeout=30,
                 what=lambda: "Prometheus to start: "
                 + (tmp_path / "prometheus.log").read_text()[-2000:])
        wait_for(lambda: query(base, 'up{job="detector"} == 1'), timeout=30,
                 what=lambda: f"Prometheus to scrape the detector{stack.logs()}")
        # The dead-letter panel has data only once something was dead-lettered.
        input_topic = stack.detector.compose_env["DETECTOR_INPUT_TOPIC"]
        producer = clients.producer(stack.kafka)
        producer.send(input_topic, key=b"s-bad", value=b"this is not JSON")
        producer.flush()
        producer.close()
        # ... the ground truth's only once there are labels: ranges of both kinds, and a
        # verdict on a run the detector alerted.
        write_labels(stack)

        results: dict[str, list[dict]] = {}

        def all_have_data() -> bool:
            results.update({expr: query(base, expr) for _, expr in queries})
            return all(has_data(r) for r in results.values())

        try:
            wait_for(all_have_data, timeout=45, every=1, what="every dashboard query")
        except TimeoutError:
            empty = [f"{title}: {expr}" for title, expr in queries if not has_data(results[expr])]
            raise AssertionError("dashboard queries without data:\n  " + "\n  ".join(empty)
                                 + stack.logs()) from None
        # The alerting rules load and evaluate without error.
        def rules_healthy() -> list[dict]:
            body = json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10).read())
            rules = [r for g in body["data"]["groups"] for r in g["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else []

        rules = wait_for(rules_healthy, timeout=30, what="the alerting rules to evaluate")
        assert {r["name"] for r in rules} == {
            r["alert"] for g in load_yaml(RULES)["groups"] for r in g["rules"]}
        reasons = {r["metric"].get("reason") for title, expr in queries
                   if "reason" in expr for r in results[expr]}
        assert "not_json" in reasons, reasons
        ready = [r for _, expr in queries if "detector_ready" in expr for r in results[expr]]
        assert [float(r["value"][1]) for r in ready] == [1.0], ready
    finally:
        server.terminate()
        server.wait(30)
