#!/usr/bin/env bash
# PostgreSQL beside SQLite in the same run (issue 14): batched register (20,000 devices a request)
# and a synchronous send to every device (filter: platform apns) against the nginx HTTP/2 TLS sink
# (bench/sink, APNs answers 200 with HEADERS only), then PostgreSQL's figures as a ratio of
# SQLite's. Targets: register >= 50,000 devices/s on PostgreSQL; send >= 0.8x SQLite's rate.
# Then bench/pg_outbox_bench.py on the same cluster: async single sends accepted (>= 10,000/s on
# PostgreSQL, beside SQLite's rate) and 3 daemons vs 1 delivering a 300,000-device async job
# (>= 0.9x). PG_OUTBOX=0 skips that part; PG_FLEET_DEVICES sets its job size.
#
#   bench/pg_bench.sh [size] [connections]     (defaults: 100000 2; PORT=23044, the outbox part PORT+1)
#
# The throwaway cluster (Tests/pg/cluster.sh with PG_DURABLE=1: fsync on, synchronous_commit off,
# comparable to SQLite's WAL + synchronous=NORMAL) listens on a Unix socket in a temp dir, on the
# same machine: a LAN round trip would add to every query. Not a test: figures depend on the load.
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-100000}"
conns="${2:-2}"
port="${PORT:-23044}"

if [ -z "${PUSHLINE_BIN:-}" ]; then
    swift build -c release --product pushline >/dev/null
    PUSHLINE_BIN="$(swift build -c release --show-bin-path)/pushline"
fi

pgdir=$(mktemp -d /tmp/pushline-pgbench.XXXXXX)
chmod 755 "$pgdir"
sock=$(PG_DURABLE=1 Tests/pg/cluster.sh start "$pgdir")
read -r _ port ca dir < <(bench/sink/start.sh "$port")
trap 'bench/sink/stop.sh "$dir"; Tests/pg/cluster.sh stop "$pgdir"' EXIT

out=$(mktemp -d)
echo "== SQLite"
python3 bench/scale_bench.py --bin "$PUSHLINE_BIN" --port "$port" --ca "$ca" --sizes "$size" --connections "$conns" \
    --no-topic --json-out "$out/sqlite.json"
echo "== PostgreSQL ($("/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -V | tail -n 1)/bin/postgres" --version | cut -d' ' -f3), Unix socket, database_pool 4)"
python3 bench/scale_bench.py --bin "$PUSHLINE_BIN" --port "$port" --ca "$ca" --sizes "$size" --connections "$conns" \
    --no-topic --pg-host "$sock" --json-out "$out/pg.json"
python3 - "$out" "$size" <<'PY'
import json, sys
out, n = sys.argv[1], sys.argv[2]
s = json.load(open(f"{out}/sqlite.json"))[n]
p = json.load(open(f"{out}/pg.json"))[n]
print(f"== PostgreSQL / SQLite at {int(n):,} devices")
print(f"  batched register: {p['register']:,.0f} vs {s['register']:,.0f} devices/s = {p['register'] / s['register']:.2f}x (target >= 50,000/s on PostgreSQL)")
print(f"  batched register on PostgreSQL / its ceiling (psql \\copy of the same rows): {p['register']:,.0f} / {p['register_ceiling']:,.0f} = {p['register'] / p['register_ceiling']:.2f}x")
print(f"  synchronous send: {p['send']:,.0f} vs {s['send']:,.0f} /s = {p['send'] / s['send']:.2f}x (target >= 0.8x)")
print(f"  dry-run send:     {p['dry']:,.0f} vs {s['dry']:,.0f} /s = {p['dry'] / s['dry']:.2f}x")
print(f"  devices by user (median): {p['devices']:.2f} vs {s['devices']:.2f} ms; stats (median): {p['stats']:.2f} vs {s['stats']:.2f} ms")
PY
rm -rf "$out"
if [ "${PG_OUTBOX:-1}" != 0 ]; then
    echo "== outbox: PostgreSQL beside SQLite, and a fleet on one PostgreSQL database"
    python3 bench/pg_outbox_bench.py --bin "$PUSHLINE_BIN" --pg-host "$sock" --port $((${PORT:-23044} + 1)) \
        --devices "${PG_FLEET_DEVICES:-300000}"
fi
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
