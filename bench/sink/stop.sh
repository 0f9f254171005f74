#!/usr/bin/env bash
# Stops the sink started by bench/sink/start.sh: bench/sink/stop.sh <dir>
set -euo pipefail
dir="${1:?usage: stop.sh <dir printed by start.sh>}"
if [ -s "$dir/nginx.pid" ]; then
    pid="$(cat "$dir/nginx.pid")"
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
case "$dir" in /tmp/pushline-sink.*) rm -rf "$dir" ;; esac
