# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv and install into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format schemas catalog clean venv kafka-up kafka-down

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

clean:
	rm -rf $(VENV) data .pytest_cache
