# The few verbs people expect. Each target sets up what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup chromium postgresql run demo test lint bench clean

setup: $(VENV)/.installed node_modules/.installed chromium postgresql

$(VENV)/.installed: pyproject.toml
	python3 -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The Claude Code CLI, pinned in package.json / package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser the web app's end-to-end tests drive: Debian's chromium (Playwright is told
# where it is and never downloads one of its own).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing chromium for the web app's browser tests"; \
	    apt-get update && apt-get install -y chromium; \
	  else \
	    echo "The web app's browser tests need /usr/bin/chromium: run 'sudo apt-get install chromium' (not root here)"; \
	  fi; \
	fi

# PostgreSQL's binaries, for the tests (which start a server of their own): Debian's package,
# or any PostgreSQL 14+ whose bin directory CLAUDE_SERVER_TEST_PG_BIN names.
postgresql:
	@[ -n "$$CLAUDE_SERVER_TEST_PG_BIN" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q postgresql; \
	  else echo "PostgreSQL is missing for the tests: sudo apt-get install postgresql," \
	    "or set CLAUDE_SERVER_TEST_PG_BIN to a PostgreSQL bin directory" >&2; exit 1; fi; }

# The data (sessions.db, workspace/) in the repository, which ignores both;
# your own CLAUDE_SERVER_DATA_DIR (or --data-dir in ARGS) still wins.
run: setup
	CLAUDE_SERVER_DATA_DIR="$${CLAUDE_SERVER_DATA_DIR:-$(CURDIR)}" $(VENV)/bin/claude-server $(ARGS)

# The server against the fake Anthropic API: try it without an Anthropic key.
demo: setup
	$(PY) scripts/demo.py $(ARGS)

# One worker per core (TEST_WORKERS=0 runs them in this process); a test file stays on
# one worker, so a file's own servers are started once.
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

lint: setup
	$(VENV)/bin/ruff format --check claude_server tests bench open_webui scripts
	$(VENV)/bin/ruff check claude_server tests bench open_webui scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict open_webui/claude_code.py scripts/demo.py scripts/openwebui_setup.py

bench: setup
	$(PY) bench/latency.py
	$(PY) bench/forwarding.py
	$(PY) bench/load.py
	$(PY) bench/warm.py
	$(PY) bench/replicas.py

clean:
	rm -rf $(VENV) node_modules
