#!/usr/bin/env python3
"""The PostgreSQL outbox beside SQLite's (issue 14; not a test: it prints figures).

Against the nginx HTTP/2 TLS sink (bench/sink, APNs 200 with an apns-id and no body), with the
release daemon, in one run:

1. async single sends accepted over 4 pipelined socket connections (each keeps `--window`
   requests in flight), scheduled an hour ahead so the accept path alone is measured, every
   answer after its commit: on SQLite (synchronous=FULL) and on PostgreSQL (synchronous_commit
   on for the accept), accepts/s and the ratio. Target: >= 10,000/s on PostgreSQL.
2. a fleet on one PostgreSQL database: `--devices` (300,000) devices registered in batches of
   20,000 (devices/s), then an async send to all of them (`filter` by app) delivered by one
   daemon, then another one delivered by `--daemons` (3) daemons on the same database: the time
   from the request to the job's `done`, notifications/s, and the fleet's rate as a ratio of the
   single daemon's (target >= 0.9). Each daemon's share of the deliveries is printed too.

    bench/pg_outbox_bench.py --bin .build/release/pushline --pg-host SOCKDIR [--port 23000]

bench/pg_bench.sh starts the throwaway cluster and runs this after the register/send figures.
Figures on a loaded 2-core machine are indicative only.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Conn, concurrent_calls, cpu_s, outbox_bench_config, start_daemon, start_sink, stop_daemon, stop_sink  # noqa: E402
from outbox_bench import wait_done  # noqa: E402

_counter = iter(range(1, 1000))


def fresh_pg(host):
    name = f"pgob_{int(time.time())}_{next(_counter)}"
    subprocess.run(["psql", "-X", "-q", "-h", host, "-U", "pushline", "-d", "postgres", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return f"postgresql://pushline@/{name}?host={host}"


def daemon(args, port, ca, tag, database=None):
    work = Path(tempfile.mkdtemp(prefix=f"pushline-pgob-{tag}."))
    config = outbox_bench_config(work, port, ca)
    if database:
        config["database"] = database
    proc, sock = start_daemon(args.bin, work, config)
    return proc, sock, Conn(sock)


def register(c, n):
    ids = []
    t0 = time.time()
    for s in range(0, n, 20000):
        r = c.call({"cmd": "register", "devices": [
            {"platform": "apns", "registration_id": f"{i:064x}"} for i in range(s, min(n, s + 20000))]})
        assert r["ok"], r
        ids += [d["id"] for d in r["devices"]]
    return ids, n / (c.received_at - t0)


def accepts(args, port, ca, database):
    proc, sock, c = daemon(args, port, ca, "accept", database)
    try:
        ids, _ = register(c, 1000)
        later = int(time.time()) + 3600
        reqs = [{"cmd": "send", "ids": [ids[i % len(ids)]], "message": "hello", "async": True, "send_at": later}
                for i in range(args.accepts)]
        dt, out = concurrent_calls(sock, 4, reqs, window=args.window)
        ok = sum(1 for r in out if r.get("ok"))
        if ok != len(reqs):
            print("  failed:", [r for r in out if not r.get("ok")][:3])
    finally:
        stop_daemon(proc)
    return ok / dt, ok, ((pgbench_ceiling(database, args.accepts // 4, 1), pgbench_ceiling(database, args.accepts, 256))
                         if database else (None, None))


def pgbench_ceiling(database, n, per_tx):
    """PostgreSQL's own rate at storing the rows of `n` async accepts: pgbench, 4 clients (as the
    benchmark's 4 connections), each transaction `per_tx` of the accept's INSERTs into outbox_jobs
    with `synchronous_commit` on (as the daemon's accept): 1 is an accept a transaction (no group
    commit: the daemon may beat it), more is what a group commit of that size costs PostgreSQL.
    On the database the daemon just used. Rows/s, or None without pgbench."""
    pgbench = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    if not pgbench:
        return None
    later = (int(time.time()) + 3600) * 1000
    script = Path(tempfile.mkdtemp(prefix="pushline-pgbench.")) / "accept.sql"
    script.write_text(
        "BEGIN;\n"
        "SET LOCAL synchronous_commit = on;\n"
        "INSERT INTO outbox_jobs (id, app, messages, indexed, state, send_at, deadline, idem_key, estimate, created_at) "
        "SELECT md5(random()::text || clock_timestamp()::text || g), 'default', '[{\"ids\":[' || g || '],\"message\":\"hello\"}]', "
        f"false, 'queued', {later}, {later + 86_400_000}, NULL, 1, (extract(epoch from now()) * 1000)::bigint "
        f"FROM generate_series(1, {per_tx}) g;\n"
        "COMMIT;\n")
    out = subprocess.run([str(pgbench[-1]), "-n", "-c", "4", "-j", "2", "-t", str(max(1, n // 4 // per_tx)), "-f", str(script), database],
                         capture_output=True, text=True)
    m = re.search(r"tps = ([0-9.]+)", out.stdout)
    return float(m.group(1)) * per_tx if m else None


def sent_by(c):
    """This daemon's notifications sent so far (its metrics)."""
    text = c.call({"cmd": "metrics"})["text"]
    total = 0
    for line in text.splitlines():
        if line.startswith("pushline_notifications_total") and 'outcome="sent"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def deliver(c, n):
    t0 = time.time()
    r = c.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "async": True})
    assert r["ok"], r
    job, t_done = wait_done(c, r["job"]["id"], timeout=1200)
    assert job["sent"] == n, job
    return n / (t_done - t0), t_done - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release/pushline")
    ap.add_argument("--pg-host", required=True)
    ap.add_argument("--port", type=int, default=23000)
    ap.add_argument("--accepts", type=int, default=40_000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--devices", type=int, default=300_000)
    ap.add_argument("--daemons", type=int, default=3)
    ap.add_argument("--skip-accepts", action="store_true")
    ap.add_argument("--skip-fleet", action="store_true")
    args = ap.parse_args()
    port, ca, sink_dir = start_sink(args.port)
    try:
        if not args.skip_accepts:
            s_rate, s_ok, _ = accepts(args, port, ca, None)
            p_rate, p_ok, ceiling = accepts(args, port, ca, fresh_pg(args.pg_host))
            print(f"async single sends accepted (scheduled, 4 connections, window {args.window}): "
                  f"PostgreSQL {p_rate:,.0f}/s ({p_ok} ok) vs SQLite {s_rate:,.0f}/s ({s_ok} ok) = {p_rate / s_rate:.2f}x "
                  f"(target >= 10,000/s on PostgreSQL)", flush=True)
            one, grouped = ceiling
            if one and grouped:
                print(f"  PostgreSQL's ceilings (pgbench, 4 clients, the accept's INSERT into outbox_jobs, synchronous_commit on): "
                      f"one a transaction {one:,.0f}/s (the daemon = {p_rate / one:.2f}x), 256 a transaction {grouped:,.0f}/s "
                      f"(the daemon = {p_rate / grouped:.2f}x)", flush=True)
        if args.skip_fleet:
            return
        db = fresh_pg(args.pg_host)
        procs = []
        try:
            proc, sock, c = daemon(args, port, ca, "fleet-0", db)
            procs.append(proc)
            ids, reg = register(c, args.devices)
            n = len(ids)
            print(f"fleet: {n:,} devices registered (batches of 20,000) at {reg:,.0f} devices/s", flush=True)
            warm = c.call({"cmd": "send", "ids": ids[:10], "message": "warm"})
            assert warm["ok"], warm
            cpu0 = cpu_s(proc.pid)
            one, one_s = deliver(c, n)
            print(f"  1 daemon: {n:,} delivered in {one_s:.2f} s = {one:,.0f}/s "
                  f"({(cpu_s(proc.pid) - cpu0) / n * 1e6:.0f} us daemon CPU each)", flush=True)
            conns = [c]
            for k in range(1, args.daemons):
                p, _, ck = daemon(args, port, ca, f"fleet-{k}", db)
                procs.append(p)
                conns.append(ck)
                assert ck.call({"cmd": "send", "ids": ids[:10], "message": "warm"})["ok"]
            before = [sent_by(x) for x in conns]
            cpus = [cpu_s(p.pid) for p in procs]
            many, many_s = deliver(c, n)
            shares = [sent_by(x) - b for x, b in zip(conns, before)]
            cpu = sum(cpu_s(p.pid) - b for p, b in zip(procs, cpus))
            print(f"  {args.daemons} daemons: {n:,} delivered in {many_s:.2f} s = {many:,.0f}/s "
                  f"({cpu / n * 1e6:.0f} us daemon CPU each, all daemons); shares {shares}", flush=True)
            print(f"  {args.daemons} daemons / 1 daemon = {many / one:.2f}x (target >= 0.9)")
        finally:
            for p in procs:
                stop_daemon(p)
    finally:
        stop_sink(sink_dir)


if __name__ == "__main__":
    main()
