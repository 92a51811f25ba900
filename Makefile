# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck migrate serve dagster neo4j neo4j-stop clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/coagent demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/run_tests.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/coagent migrate

serve: $(STAMP)
	$(BIN)/coagent serve

dagster: $(STAMP)
	$(BIN)/coagent dagster

# Neo4j 5.26 Community + APOC + GDS from Maven jars (no Docker; needs Java 17/21 and Maven).
# `make test` starts and stops its own when NEO4J_URI is unset; these run one by hand.
neo4j:
	$(PYTHON) deploy/neo4j/neo4j_server.py start

neo4j-stop:
	$(PYTHON) deploy/neo4j/neo4j_server.py stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
