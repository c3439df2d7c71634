# The two commands of the README:
#   make run   - install, migrate, load the demo city and serve http://127.0.0.1:5000 (SQLite)
#   make test  - install the test dependencies and run every test
#                (again on PostgreSQL when TEST_DATABASE_URL is set, as .ci/run does)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
FLASK   = $(BIN)/flask --app wsgi
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test install install-test lint messages bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pybabel compile --use-fuzzy -d eldercare/translations >/dev/null 2>&1 || true

install-test: $(BIN)/python
	bash scripts/system-deps.sh
	$(BIN)/pip install --quiet -e ".[test,bench]"

run: install
	$(FLASK) db upgrade
	$(FLASK) demo
	$(FLASK) run --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/ruff check .
	env -u TEST_DATABASE_URL $(BIN)/python -m pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL ($$TEST_DATABASE_URL), browser tests excluded =="; \
		$(BIN)/python -m pytest -m "not e2e"; \
	fi

messages: $(BIN)/python
	$(BIN)/pybabel extract -F babel.cfg -k _l -o eldercare/translations/messages.pot .
	$(BIN)/pybabel update -i eldercare/translations/messages.pot -d eldercare/translations

bench: install-test
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
