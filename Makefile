# Pushline: `make run` installs what is missing, builds and starts the daemon on its
# embedded default; `make test` runs every test. Both work on a fresh Debian machine.

SHELL      := /bin/bash
SWIFT      ?= swift
BUILD_DIR  ?= .build
PUSHLINE   := $(BUILD_DIR)/debug/pushline
APT_PKGS   := libcurl4-openssl-dev libssl-dev libsqlite3-dev pkg-config sqlite3 nginx libnginx-mod-http-js nghttp2-client ruby python3-pip socat netcat-openbsd
PIP_PKGS   := h2 cryptography pytest django
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON     ?= python3

.PHONY: all deps build release run test test-swift test-integration test-clients bench clean

all: build

# Installs the Debian and PyPI packages the build and the tests need (skips what is there).
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi
	@$(PYTHON) -c 'import h2, cryptography, pytest, django' 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(PIP_PKGS) || $(PYTHON) -m pip install -q --break-system-packages $(PIP_PKGS)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --static-swift-stdlib

# Builds and starts the daemon on its embedded default (./var/pushline.sock, ./var/pushline.db).
run: build
	$(PUSHLINE) serve

test: build
	$(SWIFT) test
	PUSHLINE_BIN=$(abspath $(PUSHLINE)) $(PYTHON) -m pytest -q Tests/integration
	@if [ -x clients/run-tests.sh ]; then PUSHLINE_BIN=$(abspath $(PUSHLINE)) clients/run-tests.sh; fi

bench: release
	bench/run-all.sh

clean:
	rm -rf $(BUILD_DIR) var
