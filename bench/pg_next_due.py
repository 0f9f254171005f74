#!/usr/bin/env python3
"""The outbox worker's `nextDue` on PostgreSQL with a large backlog (issue 14): EXPLAIN ANALYZE of the
query before (main's: one aggregate over every pending delivery) and after (the next unleased delivery per
running job through the `outbox_deliveries_due` index, plus the lease owners' `alive_until`), on one
running job with N pending deliveries of which some thousands are leased by three live daemons.

    bench/pg_next_due.py --bin .build/release/pushline [--rows 1000000] [--leased 24000]

Starts a throwaway cluster (Tests/pg/cluster.sh, PG_DURABLE=1), migrates a database by starting the
daemon once, fills it with SQL, and prints each query's plan and median execution time over 20 runs.
Indicative only: the machine is shared and the figures move with its load."""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# main's query before this change (1ab7605).
BEFORE = """
SELECT min(greatest(d.next_at, coalesce(d.lease_until + 1, 0))) FROM outbox_jobs j
JOIN outbox_deliveries d ON d.job = j.seq AND d.state = 0 WHERE j.state = 'running'
"""


def after_sql(now):
    # Keep in step with PostgresOutbox.nextDue.
    return """
SELECT least(
    (SELECT min(x.next_at) FROM outbox_jobs j CROSS JOIN LATERAL (
        SELECT d.next_at FROM outbox_deliveries d
        WHERE d.job = j.seq AND d.state = 0 AND d.lease_until IS NULL ORDER BY d.next_at LIMIT 1) x
     WHERE j.state = 'running'),
    (SELECT min(alive_until) + 1 FROM outbox_owners WHERE alive_until >= {now}))
""".format(now=now)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--leased", type=int, default=24_000)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    pgdir = tempfile.mkdtemp(prefix="pushline-nextdue.")
    os.chmod(pgdir, 0o755)
    cluster = os.path.join(ROOT, "Tests", "pg", "cluster.sh")
    sock = subprocess.run([cluster, "start", pgdir], check=True, capture_output=True, text=True,
                          env=dict(os.environ, PG_DURABLE="1")).stdout.strip()
    try:
        admin = f"postgresql://pushline@/postgres?host={sock}"
        subprocess.run(["psql", "-X", "-q", admin, "-c", "CREATE DATABASE nextdue"], check=True)
        uri = f"postgresql://pushline@/nextdue?host={sock}"
        work = tempfile.mkdtemp(prefix="pushline-nextdue-d.")
        d = subprocess.Popen([a.bin, "serve", "--database", uri, "--socket", os.path.join(work, "p.sock")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.exists(os.path.join(work, "p.sock")):
                break
            time.sleep(0.1)
        d.terminate()
        d.wait(30)

        def psql(sql):
            r = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", uri, "-c", sql], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"psql failed: {r.stderr.strip()}")
            return r.stdout.strip()

        now = int(time.time() * 1000)
        t0 = time.time()
        psql(f"""
            INSERT INTO outbox_jobs (id, app, messages, indexed, state, send_at, deadline, estimate, created_at,
                                     devices, resolved)
            VALUES ('bench', 'default', '[]', false, 'running', {now}, {now + 86400000}, {a.rows}, {now}, {a.rows}, true);
            INSERT INTO outbox_deliveries (job, n, device_id, state, next_at)
                SELECT (SELECT seq FROM outbox_jobs WHERE id = 'bench'), g, g, 0, {now} FROM generate_series(0, {a.rows - 1}) g;
            UPDATE outbox_deliveries SET lease_owner = 'host/d' || (n % 3), lease_until = {now} + 30000, fence = 1
                WHERE n < {a.leased};
            INSERT INTO outbox_owners VALUES ('host/d0', {now + 30000}), ('host/d1', {now + 30000}), ('host/d2', {now + 30000});
        """)
        psql("VACUUM ANALYZE outbox_deliveries")
        psql("ANALYZE outbox_jobs")
        print(f"filled {a.rows} pending deliveries ({a.leased} leased by 3 live daemons) in {time.time() - t0:.1f} s")
        def measure(title):
            print(f"-- {title}")
            for name, sql in (("before", BEFORE), ("after", after_sql(now))):
                plan = psql("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                times = []
                for _ in range(a.runs):
                    out = psql("EXPLAIN (ANALYZE, TIMING OFF) " + sql)
                    times += [float(l.split(":")[1].split()[0]) for l in out.splitlines() if l.startswith("Execution Time")]
                value = psql(sql)
                print(f"== {name}: median {statistics.median(times):.3f} ms over {len(times)} runs "
                      f"(min {min(times):.3f}, max {max(times):.3f}); next due in {int(value) - now} ms")
                print("\n".join("   " + l for l in plan.splitlines()))

        measure("unleased deliveries due now")
        # The case where the worker asks (idle): nothing claimable, the rest waits for a retry.
        psql(f"UPDATE outbox_deliveries SET next_at = {now} + 60000 WHERE lease_until IS NULL")
        psql("VACUUM ANALYZE outbox_deliveries")
        measure("unleased deliveries due in 60 s (retries), leased ones held by live daemons")
    finally:
        subprocess.run([cluster, "stop", pgdir], capture_output=True)


if __name__ == "__main__":
    main()
