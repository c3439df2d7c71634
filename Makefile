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
# The demo's card gateway: localstripe (a Stripe-compatible test server, eldercare/dev_gateway.py),
# started the way the tests start it; card 4242 4242 4242 4242 pays, 4000 0000 0000 0341 is declined.
GATEWAY_PORT ?= 8420

.PHONY: run test install install-test catalogs bytecode lint messages bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[demo]"
	$(MAKE) catalogs bytecode

install-test: $(BIN)/python
	bash scripts/system-deps.sh
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(MAKE) catalogs bytecode

# The app never compiles its catalogs at start (it warns when one is stale): installing does.
catalogs: $(BIN)/python
	$(BIN)/pybabel -q compile -d eldercare/translations

# pip compiles the libraries' bytecode when it installs them, but not an editable project's own
# modules; where PYTHONDONTWRITEBYTECODE is set (containers often set it) every `flask` command
# would otherwise recompile ours from source, about a fifth of a second each time. Python still
# recompiles any module whose source is newer than its cached bytecode.
bytecode: $(BIN)/python
	$(BIN)/python -m compileall -q eldercare vouchers marketplace assessment migrations wsgi.py

# The platform as production runs it: the web server, the scheduler (notices, first vouchers,
# the monthly catch-up, card holds ...) and the demo card gateway, all stopped by one Ctrl-C;
# scripts/run_platform.py starts them (and is what tests/test_run_platform.py runs).
run: install
	$(FLASK) db upgrade
	$(FLASK) demo
	$(BIN)/python scripts/run_platform.py --host $(HOST) --port $(PORT) \
		--gateway-port $(GATEWAY_PORT) --state-dir instance

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
	$(MAKE) catalogs

bench: install-test
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
