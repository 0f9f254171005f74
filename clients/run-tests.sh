#!/bin/sh
# Runs the three client suites (Python, Ruby, shell) against a real `pushline serve`
# that each test starts on a temporary socket. The daemon binary: $PUSHLINE_BIN,
# else <repo>/.build/debug/pushline (run `swift build` first), else PATH.
# Runs every suite, then exits non-zero if any failed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PYTHON=${PYTHON:-python3}
RUBY=${RUBY:-ruby}
status=0
failed=''

if [ -z "${PUSHLINE_BIN:-}" ] && [ ! -x "$repo/.build/debug/pushline" ] && ! command -v pushline >/dev/null 2>&1; then
    echo "clients/run-tests.sh: no pushline binary: run 'swift build' first or set PUSHLINE_BIN" >&2
    exit 2
fi

echo "== Python client (pytest) =="
(cd "$here/python" && "$PYTHON" -m pytest -q -p no:cacheprovider tests) || { status=1; failed="$failed python"; }

echo "== Ruby client (minitest) =="
(cd "$here/ruby" && "$RUBY" -w -Ilib -Itest -e 'Dir.glob("test/**/*_test.rb").sort.each { |f| require File.expand_path(f) }') \
    || { status=1; failed="$failed ruby"; }

echo "== Shell client (pytest) =="
(cd "$here/shell" && "$PYTHON" -m pytest -q -p no:cacheprovider tests) || { status=1; failed="$failed shell"; }

echo "== Django example (manage.py test) =="
if "$PYTHON" -c 'import django' >/dev/null 2>&1; then
    (cd "$repo/examples/django" && PYTHONPATH="$here/python/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" manage.py test -v 1) \
        || { status=1; failed="$failed django-example"; }
else
    echo "skipped: Django is not installed (pip install django to run examples/django's test)"
fi

if [ "$status" -ne 0 ]; then
    echo "clients/run-tests.sh: FAILED:$failed" >&2
else
    echo "clients/run-tests.sh: all client suites passed"
fi
exit "$status"
