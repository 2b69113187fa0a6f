# Everything a fresh machine needs: `make run` starts arkor allinone, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= conf/runtime.yaml

.PHONY: run test lint bench bench-deps system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# git-lfs drives the Git LFS tests; install Debian's package when it is missing.
system-deps:
	@command -v git-lfs >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq git-lfs >/dev/null; }

run: $(STAMP)
	$(BIN)/arkor allinone --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check arkor tests bench

test: $(STAMP) system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

# nginx is the benchmarks' reference server; install Debian's package when it is missing.
bench-deps:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx >/dev/null; }

bench: $(STAMP) bench-deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
