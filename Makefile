# The two commands a newcomer needs: `make run` (the whole system locally) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench chaos clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## API + $(WORKERS) workers against PostgreSQL and RabbitMQ on localhost
	$(BIN)/python -m scripts.run_local

test: $(STAMP)  ## the whole suite against real PostgreSQL and RabbitMQ
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

chaos: $(STAMP)  ## soak under failure: TASKS (default 2000) while killing workers and cutting links
	$(BIN)/python -m scripts.chaos --tasks $(or $(TASKS),2000)

bench: $(STAMP)  ## throughput, latency, scale and memory against the bare design (needs wrk)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: sudo apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run $(if $(PROFILE),--profile)
