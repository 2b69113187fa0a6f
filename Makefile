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

# git-lfs drives the Git LFS tests, rclone, restic and s3cmd the S3 client tests (tests/s3), ip,
# tc (iproute2) and iptables the net test bed (tests/net): install Debian's packages when missing.
system-deps:
	@missing=""; for pair in git-lfs:git-lfs rclone:rclone restic:restic s3cmd:s3cmd \
	    ip:iproute2 tc:iproute2 iptables:iptables; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

run: $(STAMP)
	$(BIN)/arkor allinone --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check arkor tests bench
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The benchmarks' references: nginx, and memcached for the Swift SAIO (Swift itself goes into
# bench/.swift-venv from PyPI on first use). Debian's packages are installed when missing.
bench-deps:
	@{ [ -x /usr/sbin/nginx ] && command -v memcached >/dev/null 2>&1; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nginx memcached >/dev/null; }

bench: $(STAMP) bench-deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
