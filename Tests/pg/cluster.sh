#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl in a temporary directory,
# listening on a Unix socket only (listen_addresses = ''), trust authentication for local
# connections. initdb and postgres refuse to run as root: as root the cluster runs as the
# system user pushline-pgtest (created here if missing).
#
#   Tests/pg/cluster.sh start DIR   # prints the socket directory (DIR/sock); the role is `pushline`
#   Tests/pg/cluster.sh stop DIR | restart DIR | halt DIR (stop, keep the data) | resume DIR
set -euo pipefail
cmd=${1:?start|stop|halt|resume DIR}; dir=${2:?DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "cluster.sh: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }
as=()
if [ "$(id -u)" = 0 ]; then
  id pushline-pgtest >/dev/null 2>&1 || useradd -r -M -d /nonexistent -s /usr/sbin/nologin pushline-pgtest
  as=(runuser -u pushline-pgtest --)
fi
pgctl() { "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 "$@" >/dev/null; }
case "$cmd" in
  start)
    mkdir -p "$dir/sock"
    [ "$(id -u)" = 0 ] && chown -R pushline-pgtest "$dir"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U pushline -A trust --locale=C -E UTF8 --no-sync >/dev/null
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir/sock'
max_connections = 300
shared_buffers = 128MB
# Like SQLite's synchronous=NORMAL in WAL mode: a crash may lose the last commits, never corrupts.
synchronous_commit = off
CONF
    # Tests need no durability at all (PG_DURABLE=1, as bench/pg_bench.sh sets, keeps fsync on).
    if [ -z "${PG_DURABLE:-}" ]; then printf 'fsync = off\nfull_page_writes = off\n' >> "$dir/data/postgresql.conf"; fi
    pgctl start
    echo "$dir/sock";;
  stop) pgctl stop -m fast || true; rm -rf "$dir";;
  halt) pgctl stop -m fast;;
  resume) pgctl start;;
  restart) pgctl restart -m fast;;
  *) echo "cluster.sh: unknown command $cmd" >&2; exit 2;;
esac
