"""The PostgreSQL backend end to end (issue 14), on a throwaway cluster of the session
(conftest.pg_cluster: Tests/pg/cluster.sh, Unix socket only), which it stops and
starts: the database going away and coming back, two daemons on one database, ten daemons
migrating one database at once, and the password never reaching a log or an error."""
import subprocess
import time

from harness import binary, create_pg_database


def fcm(i):
    return {"platform": "fcm", "registration_id": f"pg-token-{i:08d}-abcdefghij", "user": f"u{i % 3}"}


def test_unreachable_database_answers_unavailable_then_recovers(pg_cluster, start_daemon):
    db = create_pg_database(pg_cluster.host)
    d = start_daemon(database=db)
    assert d.call({"cmd": "register", "devices": [fcm(1)]})["ok"]
    pg_cluster.ctl("halt")
    try:
        c = d.connect(timeout=30)
        for req in ({"cmd": "register", "devices": [fcm(2)]}, {"cmd": "devices", "user": "u1"}, {"cmd": "stats"}):
            t0 = time.monotonic()
            r = c.call(req)
            # Answered at once (a bound 10x what a healthy run takes), not after a hang.
            assert time.monotonic() - t0 < 10, req
            assert not r["ok"] and r["error"]["code"] == "unavailable", r
            assert r["error"]["retry_after_ms"] > 0, r
        assert c.call({"cmd": "ping"})["ok"], "the daemon itself keeps serving"
        h = c.call({"cmd": "health"})
        assert h["ok"] and h["healthy"] is False and h["database"]["ok"] is False, h
    finally:
        pg_cluster.ctl("resume")
    # Back without restarting the daemon: the next commands reconnect.
    deadline = time.monotonic() + 60
    while True:
        r = d.call({"cmd": "register", "devices": [fcm(2)]})
        if r["ok"] or time.monotonic() > deadline:
            break
        assert r["error"]["code"] == "unavailable", r
        time.sleep(0.2)
    assert r["ok"], r
    assert [x["registration_id"] for x in d.call({"cmd": "devices", "user": "u1"})["devices"]] == [fcm(1)["registration_id"]]
    assert d.call({"cmd": "devices", "user": "u2"})["devices"][0]["registration_id"] == fcm(2)["registration_id"]
    assert d.proc.poll() is None
    assert "PostgreSQL reachable again" in d.logs()


def test_two_daemons_on_one_database_see_each_other_at_once(pg_cluster, start_daemon):
    db = create_pg_database(pg_cluster.host)
    a = start_daemon(database=db)
    b = start_daemon(database=db)
    r = a.call({"cmd": "register", "devices": [fcm(i) for i in range(10)]})
    assert r["ok"] and r["created"] == 10
    ids = [x["id"] for x in r["devices"]]
    # Listed through B at once, by user and by id; a duplicate through B is refused.
    assert [x["id"] for x in b.call({"cmd": "devices", "user": "u0"})["devices"]] == [ids[i] for i in range(0, 10, 3)]
    assert b.call({"cmd": "register", "devices": [fcm(3)]})["error"]["code"] == "duplicate_registration"
    # Updated through B, seen through A; counts agree.
    assert b.call({"cmd": "update", "device": ids[0], "active": False})["ok"]
    assert a.call({"cmd": "devices", "ids": [ids[0]]})["devices"][0]["active"] is False
    assert a.call({"cmd": "stats"})["devices"] == b.call({"cmd": "stats"})["devices"]
    assert a.call({"cmd": "stats"})["devices"]["inactive"] == 1
    # Topics subscribed through A (APNs devices: recorded in the registry) are found through B.
    apns = a.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": f"{i:064x}"} for i in (1, 2)]})
    apns_ids = [x["id"] for x in apns["devices"]]
    r = a.call({"cmd": "subscribe", "ids": apns_ids, "topic": "news"})
    assert r["ok"] and r["succeeded"] == 2, r
    assert [x["id"] for x in b.call({"cmd": "subscribers", "topic": "news"})["devices"]] == apns_ids


def test_ten_daemons_starting_at_once_migrate_once(pg_cluster, start_daemon):
    db = create_pg_database(pg_cluster.host)
    daemons = [start_daemon(database=db, wait=False) for _ in range(10)]
    for d in daemons:
        d.wait_ready(timeout=60)
    rows = pg_cluster.psql(db, "SELECT version FROM pushline_schema_migrations ORDER BY version").split()
    assert rows == [str(v) for v in range(1, len(rows) + 1)] and rows, rows
    r = daemons[0].call({"cmd": "register", "devices": [fcm(1)]})
    assert r["ok"]
    assert daemons[9].call({"cmd": "devices", "ids": [r["devices"][0]["id"]]})["devices"], "shared registry"


def test_password_never_logged(pg_cluster, start_daemon, tmp_path):
    secret = "Sup3rSecretPw"
    db = create_pg_database(pg_cluster.host).replace("postgresql://pushline@", f"postgresql://pushline:{secret}@")
    d = start_daemon(database=db)  # trust authentication: the password is accepted and unused
    assert d.call({"cmd": "ping"})["ok"]
    d.stop()
    logs = d.logs()
    assert "postgresql://pushline:***@" in logs and secret not in logs, logs
    # check-config names the backend, hides the password.
    cfg = tmp_path / "c.json"
    cfg.write_text('{"database": "%s", "database_pool": 2}' % db)
    out = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "database: PostgreSQL postgresql://pushline:***@" in out.stdout and "(pool of 2)" in out.stdout, out.stdout
    assert secret not in out.stdout + out.stderr
    # Unreachable at start: exits 1 at once, the error names the problem, not the password.
    bad = f"postgresql://pushline:{secret}@/nodb?host={tmp_path}"
    p = subprocess.run([binary(), "serve", "--socket", str(tmp_path / "s"), "--database", bad],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "cannot open database" in p.stderr and secret not in p.stdout + p.stderr, p.stderr
    # A URI libpq cannot parse is a config error naming the key.
    cfg.write_text('{"database": "postgresql://h/db?nosuch=%s"}' % secret)
    out = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "database" in out.stderr, out.stderr
