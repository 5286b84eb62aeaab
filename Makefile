# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv and install into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format schemas catalog clean venv kafka-up kafka-down bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cityvitals needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cityvitals demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cityvitals schemas
	$(BIN)/cityvitals check
	$(BIN)/cityvitals catalog
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(STAMP)
	$(BIN)/cityvitals schemas --write

# Regenerate docs/catalog.md after changing the catalogue or the rules.
catalog: $(STAMP)
	$(BIN)/cityvitals catalog --write

# A local single-node Kafka broker (KRaft, 127.0.0.1, random ports) in .kafka/;
# kafka-up prints its bootstrap address. The first run fetches the jars with mvn.
kafka-up: $(STAMP)
	$(BIN)/python -m cityvitals.localkafka up

kafka-down: $(STAMP)
	$(BIN)/python -m cityvitals.localkafka down

# The benchmark (see BENCHMARKS.md): the flow against the naive baseline, Polars and DuckDB
# batch, and with Kafka in the loop: $KAFKA_BOOTSTRAP_SERVERS, else a local broker
# (.kafka-bench/, stopped afterwards). Writes bench.json.
# BENCH_ARGS adds options, e.g. BENCH_ARGS='--events 1000000 --sizes 100000,1000000:10000,100000'.
BENCH_ARGS ?=
bench: $(STAMP)
	@bootstrap="$$KAFKA_BOOTSTRAP_SERVERS"; started=; \
	if [ -z "$$bootstrap" ]; then \
	  bootstrap=$$($(BIN)/python -m cityvitals.localkafka up --dir .kafka-bench) && started=1 \
	  || { echo "no Kafka broker: the Kafka run is skipped" >&2; bootstrap=; }; \
	fi; \
	KAFKA_BOOTSTRAP_SERVERS=$$bootstrap $(BIN)/cityvitals bench --json bench.json $(BENCH_ARGS); \
	status=$$?; \
	if [ -n "$$started" ]; then $(BIN)/python -m cityvitals.localkafka down --dir .kafka-bench; fi; \
	exit $$status

clean:
	rm -rf $(VENV) data .pytest_cache
