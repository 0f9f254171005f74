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
# libFuzzer targets (Tests/fuzz/targets/), built in their own scratch directory.
FUZZ_TARGETS ?= json framing request apns fcm webpush wns
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH ?= .build-fuzz

.PHONY: all deps build release run test test-swift test-integration test-clients bench clean \
        fuzz fuzz-build test-fuzz-corpus test-sanitizers

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
	$(MAKE) test-fuzz-corpus

# Builds the fuzz targets against PushlineCore with coverage and AddressSanitizer (Tests/fuzz/build.sh);
# the product build is untouched.
fuzz-build: deps
	FUZZ_SCRATCH=$(FUZZ_SCRATCH) Tests/fuzz/build.sh $(FUZZ_TARGETS)

# Fuzzes each target for FUZZ_SECONDS (or FUZZ_RUNS inputs), from the committed corpus; prints
# inputs, time, coverage and crashes per target. A crash's input lands in $(FUZZ_SCRATCH)/crashes/:
# fix it, then commit the input under Tests/fuzz/corpus/<target>/ so that `make test` replays it.
fuzz: fuzz-build
	FUZZ_SCRATCH=$(FUZZ_SCRATCH) Tests/fuzz/fuzz.sh run $(FUZZ_TARGETS)

# Replays every committed fuzz input (seeds and former crashes) through its target once.
test-fuzz-corpus: fuzz-build
	FUZZ_SCRATCH=$(FUZZ_SCRATCH) Tests/fuzz/fuzz.sh replay $(FUZZ_TARGETS)

# The Swift tests under AddressSanitizer and ThreadSanitizer, each in its own scratch directory.
# -DPUSHLINE_TSAN swaps Synchronization.Mutex, whose futex locking TSan cannot see, for a pthread
# lock in PushlineCore (Sources/PushlineCore/Support/SanitizerMutex.swift). Two transport tests
# that bound elapsed time (1.5 s for what takes 1 s) are skipped: TSan's 5-15x slowdown exceeds the
# bound (2.8 s measured); `make test` runs them. LeakSanitizer reports only cycles in the test harness
# (XCTest, the sink processes of the transport tests): Tests/sanitizers/lsan.supp lists them.
SANITIZER_SKIP := --skip 'slowResponseTimesOut|timeInOwnQueueCountsAgainstDeadline'
test-sanitizers: deps
	LSAN_OPTIONS=suppressions=$(abspath Tests/sanitizers/lsan.supp):print_suppressions=0 \
	  $(SWIFT) test --sanitize=address --scratch-path .build-asan $(SANITIZER_SKIP)
	$(SWIFT) test --sanitize=thread --scratch-path .build-tsan -Xswiftc -DPUSHLINE_TSAN $(SANITIZER_SKIP)

bench: release
	bench/run-all.sh

clean:
	rm -rf $(BUILD_DIR) var
