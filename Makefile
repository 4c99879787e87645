# The two commands of the README:
#   make run    a worker delivering events (Redis and the sandbox started when needed);
#               installs the package alone (`pip install -e .`, no extras), as users deploy it
#   make test   the whole test suite, plus ruff and mypy; installs the dev and bench extras;
#               starts Redis and PostgreSQL (the outbox tests) when they do not answer
# Both share .venv; each installs what it needs once (a stamp file each), again when
# pyproject.toml changes.
#   make smoke  the wheel alone in fresh virtualenvs: newest versions, then the declared floors
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test smoke lint typecheck unit install clean bench-arq

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/limechat-events up

test: $(TEST_STAMP)
	scripts/ensure-redis
	scripts/ensure-postgres test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

smoke:
	scripts/smoke-artifact
	scripts/smoke-artifact --oldest

unit: $(TEST_STAMP)
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

# The naive arq job of the benchmarks (bench/naive_arq.py): arq pins redis<6, which our floor
# refuses, so it gets a virtualenv of its own.
bench-arq: .venv-arq/bin/arq
.venv-arq/bin/arq:
	$(PYTHON) -m venv .venv-arq
	.venv-arq/bin/python -m pip install --quiet arq httpx
