# Pushline: `make run` installs what building and running need (not the test tools),
# builds and starts the daemon on its embedded default; `make test` installs the test
# tools and runs every test. Both need a Swift 6 toolchain (`make check-swift` says
# what is missing) and work on a fresh Debian machine.

SHELL      := /bin/bash
SWIFT      ?= swift
BUILD_DIR  ?= .build
PUSHLINE   := $(BUILD_DIR)/debug/pushline
APT_PKGS   := libcurl4-openssl-dev libssl-dev libsqlite3-dev libpq-dev pkg-config sqlite3 nginx libnginx-mod-http-js nghttp2-client ruby python3-pip socat netcat-openbsd
PIP_PKGS   := h2 cryptography pytest django
# import-dpn's tests: databases made by the real django-push-notifications 3.3 (Django migrations),
# on SQLite and on PostgreSQL (Django's PostgreSQL backend needs psycopg).
PIP_PKGS   += django-push-notifications==3.3.0 'psycopg[binary]'
# What building and running need (a subset of APT_PKGS, which adds the test tools).
BUILD_PKGS := libcurl4-openssl-dev libssl-dev libsqlite3-dev libpq-dev pkg-config
# The PostgreSQL backend's tests: a throwaway cluster (initdb, pg_ctl; Tests/pg/cluster.sh) and psql.
APT_PKGS   += postgresql postgresql-client
# Integration tests run on PostgreSQL too (a second pass of these files, PUSHLINE_TEST_BACKEND=postgres).
PG_INTEGRATION := test_foundation.py test_scale.py test_bulk.py test_topics_all_platforms.py test_protocol_1_1.py \
                  test_apns.py test_outbox.py test_events.py test_apns_token_refresh.py test_fcm.py test_wns.py
# Operations tests: promtool and a real Prometheus (metrics), dpkg-deb is in dpkg.
APT_PKGS   += prometheus
# The Rails example's controller test (clients/ruby/test/rails_controller_test.rb).
APT_PKGS   += ruby-rails
PREFIX     ?= /usr/local
DESTDIR    ?=
RELEASE    := $(BUILD_DIR)/release/pushline
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON     ?= python3
# libFuzzer targets (Tests/fuzz/targets/), built in their own scratch directory.
FUZZ_TARGETS ?= json framing request apns fcm webpush wns
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH ?= .build-fuzz

.PHONY: all deps build-deps check-swift build release run test test-swift test-integration test-clients bench clean install deb \
        test-packaging fuzz fuzz-build test-fuzz-corpus test-sanitizers

all: build

# Fails with what to do when no Swift 6 toolchain is on PATH (or SWIFT=...).
check-swift:
	@if ! command -v $(SWIFT) >/dev/null 2>&1; then \
	  echo "make: no Swift toolchain: '$(SWIFT)' is not on PATH." >&2; \
	  echo "Pushline needs Swift 6.0 or later: https://www.swift.org/install/linux/ (swiftly, or the" >&2; \
	  echo "tarball for Debian 12 unpacked under /opt/swift with /opt/swift/usr/bin on PATH); or run make SWIFT=/path/to/swift." >&2; \
	  exit 1; fi
	@v=$$($(SWIFT) --version 2>&1 | sed -n 's/.*Swift version \([0-9][0-9]*\)\..*/\1/p' | head -n 1); \
	if [ -z "$$v" ] || [ "$$v" -lt 6 ]; then \
	  echo "make: '$(SWIFT)' is Swift $${v:-of unknown version}; Pushline needs Swift 6.0 or later: https://www.swift.org/install/linux/" >&2; \
	  exit 1; fi

# Installs the Debian packages building and running need (skips what is there).
build-deps:
	@missing=""; for p in $(BUILD_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

# Installs the Debian and PyPI packages the build and the tests need (skips what is there).
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi
	@$(PYTHON) -c 'import h2, cryptography, pytest, django, push_notifications, psycopg' 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(PIP_PKGS) || $(PYTHON) -m pip install -q --break-system-packages $(PIP_PKGS)

build: check-swift build-deps
	$(SWIFT) build

release: check-swift build-deps
	$(SWIFT) build -c release --static-swift-stdlib

# Builds and starts the daemon on its embedded default (./var/pushline.sock, ./var/pushline.db).
run: build
	$(PUSHLINE) serve

# A throwaway PostgreSQL cluster (Unix socket in a temp dir, stopped and removed at the end) serves
# the Swift storage conformance suite (SQLite and PostgreSQL) and a second pass of the registry's
# integration tests on PostgreSQL; test_postgres.py starts a cluster of its own (it stops it).
test: deps build
	@pgdir=$$(mktemp -d /tmp/pushline-pg.XXXXXX) && chmod 755 $$pgdir && \
	  sock=$$(Tests/pg/cluster.sh start $$pgdir) && trap "Tests/pg/cluster.sh stop $$pgdir" EXIT && \
	  echo "PostgreSQL test cluster: $$sock" && \
	  PUSHLINE_TEST_PG_HOST=$$sock PUSHLINE_TEST_REQUIRE_PG=1 $(SWIFT) test && \
	  PUSHLINE_BIN=$(abspath $(PUSHLINE)) $(PYTHON) -m pytest -q Tests/integration && \
	  PUSHLINE_TEST_BACKEND=postgres PUSHLINE_TEST_PG_HOST=$$sock \
	    PUSHLINE_BIN=$(abspath $(PUSHLINE)) $(PYTHON) -m pytest -q $(addprefix Tests/integration/,$(PG_INTEGRATION))
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

# The release binary (Swift runtime linked statically), the shell client and the
# `pushline help` text under $(DESTDIR)$(PREFIX).
install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/pushline
	install -m 755 $(RELEASE) $(DESTDIR)$(PREFIX)/bin/pushline
	install -m 755 clients/shell/pushline-send $(DESTDIR)$(PREFIX)/bin/pushline-send
	contrib/help-text.sh $(RELEASE) > $(DESTDIR)$(PREFIX)/share/doc/pushline/pushline-help.txt
	@echo "installed $(DESTDIR)$(PREFIX)/bin/pushline"

# A Debian package built with dpkg-deb (contrib/deb/build.sh): ./pushline_VERSION_ARCH.deb.
deb: release
	contrib/deb/build.sh $(RELEASE) $(BUILD_DIR)/deb

# Runs `make install` into a temp prefix and `make deb`, installs the .deb with dpkg -i,
# runs the daemon from it as the pushline user, then purges it (.ci/run calls this).
test-packaging: deps release
	$(PYTHON) -m pytest -q Tests/packaging

bench: release
	bench/run-all.sh

clean:
	rm -rf $(BUILD_DIR) var
