# Two commands do all set-up: `make run` and `make test`. Each creates .venv when missing and
# installs (again only when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python -m bot serve

doctor: $(VENV)/.installed-run
	$(BIN)/python -m bot doctor

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/webhook_intake.py
	$(BIN)/python bench/comment_latency.py
	$(BIN)/python bench/slot_search.py
	$(BIN)/python bench/booking.py
	$(BIN)/python bench/api_calls.py
	$(BIN)/python bench/a2a_roundtrip.py
	$(BIN)/python bench/chat_mirror.py
	$(BIN)/python bench/api_reads.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
