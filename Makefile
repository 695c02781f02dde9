# Two entry points for a fresh machine:
#   make demo   create .venv, install (+ Debian's Fashion-MNIST), run the whole pipeline on this CPU
#   make test   create .venv, install with test extras (+ Debian's adb client, PostgreSQL server and Fashion-MNIST),
#               run the test suite
# Both are idempotent: a second run reinstalls only when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test install install-test adb fashion-mnist postgresql clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian's real adb client: the tests check the ADB device emulator against it.
adb:
	@command -v adb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb >/dev/null; }

# Debian's PostgreSQL server: tests/test_tune_postgres.py starts a throwaway cluster (initdb + pg_ctl in a temporary
# folder) and runs tune workers on it.
postgresql:
	@{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Debian's Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist): --data fashion-mnist, mobilekit compare.
fashion-mnist:
	@[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

demo: install fashion-mnist
	$(BIN)/python -m mobilekit.demo --out $(DEMO_OUT)

# One pytest worker per core (pytest-xdist), a test file per worker at a time so that a module's fixtures are built
# once; every test runs torch on one thread (tests/conftest.py), so two workers do not spin against each other.
test: install-test adb fashion-mnist postgresql
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: install
	for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
