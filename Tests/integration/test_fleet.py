"""A fleet (issue 14): three daemons on one PostgreSQL database (the session's throwaway cluster,
conftest.pg_cluster), each beside its own app server, sharing the registry, the outbox and the
events feed. Against the APNs fake (HTTP/2 + TLS, real JWT checks) and the real binary. Time
bounds are generous (10x or more what a healthy run takes)."""
import threading
import time

from harness import create_pg_database
from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs  # noqa: F401
from test_apns import by_token, cfg, fake, register, start_fake, tok  # noqa: F401  (fixtures)
from test_outbox import all_results, register_many, wait_job
from fcm_fake import FakeFCMProcess
from webwns_helpers import register_channels, wns_block, wns_fake  # noqa: F401  (fixtures)


def fleet(start_daemon, pg_cluster, fake, n=3, **extra):
    db = create_pg_database(pg_cluster.host)
    config = cfg(fake)
    config["max_line_bytes"] = 16 << 20
    config.update(extra)
    return db, [start_daemon(config, database=db) for _ in range(n)]


def test_register_on_a_list_and_send_on_b_async_on_c(pg_cluster, start_daemon, fake):
    _, (a, b, c) = fleet(start_daemon, pg_cluster, fake)
    ids = register(a, [tok(i) for i in range(1, 11)])
    assert [x["id"] for x in b.call({"cmd": "devices", "ids": ids})["devices"]] == ids
    r = b.call({"cmd": "send", "ids": ids, "message": "from B"})
    assert r["ok"] and r["sent"] == 10, r
    r = c.call({"cmd": "send", "ids": ids, "message": "async from C", "async": True})
    assert r["ok"], r
    # Any daemon of the fleet answers for the job, whichever delivered it.
    job = wait_job(a, r["job"]["id"])
    assert (job["devices"], job["sent"], job["failed"]) == (10, 10, 0), job
    got = by_token(fake.received())
    assert sorted(got) == sorted(tok(i) for i in range(1, 11))
    assert all(sorted(x["payload"]["aps"]["alert"] for x in v) == ["async from C", "from B"] for v in got.values())
    # Idempotency keys hold across daemons: the same key through A and B is one job.
    req = {"cmd": "send", "ids": ids[:2], "message": "once", "async": True, "idempotency_key": "fleet-1"}
    x, y = a.call(req), b.call(req)
    assert x["ok"] and y["ok"] and y["job"]["id"] == x["job"]["id"] and y.get("duplicate") is True, (x, y)
    # Canceled through B, seen through C.
    s = c.call({"cmd": "send", "ids": ids, "message": "later", "async": True, "send_at": int(time.time()) + 3600})
    assert b.call({"cmd": "cancel", "job": s["job"]["id"]})["job"]["state"] == "canceled"
    assert c.call({"cmd": "job", "job": s["job"]["id"]})["job"]["state"] == "canceled"


def all_at_once(daemons, request):
    """Sends `request` through every daemon at the same moment (one client thread each)."""
    conns = [d.connect(timeout=120) for d in daemons]
    barrier = threading.Barrier(len(daemons))
    out = [None] * len(daemons)

    def one(k):
        barrier.wait()
        out[k] = conns[k].call(dict(request, message=f"{request.get('message', 'x')} via {k}"))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(daemons))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in conns:
        c.close()
    return out


def test_one_apns_jwt_for_the_fleet_when_every_daemon_sends_at_once(pg_cluster, start_daemon, fake):
    # Apple (and the fake, --min-token-refresh-s 1200) accepts one new provider token per team
    # per 20 minutes: a daemon minting its own beside the fleet's would get 429
    # TooManyProviderTokenUpdates for 20 minutes. The three daemons are fresh (no token yet) and
    # all send at once: one JWT for the fleet, no 429.
    _, daemons = fleet(start_daemon, pg_cluster, fake)
    ids = register(daemons[0], [tok(i) for i in range(1, 41)])
    out = all_at_once(daemons, {"cmd": "send", "ids": ids, "message": "start"})
    failures = [x.get("reason") for r in out for x in r.get("results", []) if x["status"] != "sent"]
    assert all(r["ok"] and r["sent"] == len(ids) for r in out), failures[:3]
    got = fake.received()
    assert not [x for x in got if x["status"] == 429]
    st = fake.state()
    assert len(st["teams"][TEAM]["jwts"]) == 1 and st["teams"][TEAM]["rejected_updates"] == 0, st["teams"]
    [first] = {x["headers"]["authorization"] for x in got}

    # Apple calls the fleet's token expired: one daemon replaces it, the others adopt the
    # replacement (from the database) instead of minting tokens of their own.
    fake.clear()
    fake.control({"expire_current": True})
    out = all_at_once(daemons, {"cmd": "send", "ids": ids, "message": "after expiry"})
    failures = [x.get("reason") for r in out for x in r.get("results", []) if x["status"] != "sent"]
    assert all(r["ok"] and r["sent"] == len(ids) for r in out), failures[:3]
    got = fake.received()
    assert not [x for x in got if x["status"] == 429]
    ok = {x["headers"]["authorization"] for x in got if x["status"] == 200}
    assert len(ok) == 1 and first not in ok
    st = fake.state()
    assert st["teams"][TEAM]["updates"] == 1 and st["teams"][TEAM]["rejected_updates"] == 0, st["teams"]
    assert len(st["teams"][TEAM]["jwts"]) == 2 and st["conn_rejected_updates"] == 0
    # Later sends through any daemon: the same token.
    fake.clear()
    out = all_at_once(daemons, {"cmd": "send", "ids": ids[:5], "message": "later"})
    assert all(r["sent"] == 5 for r in out)
    assert {x["headers"]["authorization"] for x in fake.received()} == ok


def test_one_fcm_and_one_wns_access_token_for_the_fleet(pg_cluster, start_daemon, tmp_path, wns_fake):
    # Each service account (FCM) and client (WNS) has one OAuth access token for the whole fleet:
    # one daemon fetches it, the others use the one it stored, even when all three need it at once.
    fcm = FakeFCMProcess(tmp_path / "fcm", projects=["proj-a"])
    try:
        db = create_pg_database(pg_cluster.host)
        config = {"apps": {"default": {"fcm": fcm.fcm_block("proj-a"), "wns": wns_block(wns_fake)}}}
        daemons = [start_daemon(config, database=db) for _ in range(3)]
        r = daemons[0].call({"cmd": "register", "devices": [
            {"platform": "fcm", "registration_id": f"fcm-{i:05d}-" + "x" * 120} for i in range(20)]})
        assert r["ok"], r
        ids = [x["id"] for x in r["devices"]] + [dev["id"] for _, dev in register_channels(daemons[0], wns_fake, 5)]
        # A slow token endpoint: every daemon needs a token while the first request is in flight.
        fcm.control(op="token_delay_ms", ms=300)
        for round_, expected in (("start", 1), ("after revocation", 2)):
            if expected == 2:
                # Every access token revoked: the 401s of the three daemons lead to one new token each.
                fcm.control(op="expire_tokens")
                wns_fake.control("POST", "/revoke", {})
            out = all_at_once(daemons, {"cmd": "send", "ids": ids, "message": round_})
            failures = [x.get("reason") for r in out for x in r.get("results", []) if x["status"] != "sent"]
            assert all(r["ok"] and r["sent"] == len(ids) for r in out), failures[:3]
            assert fcm.stats()["token_requests"] == expected, (round_, fcm.stats())
            assert wns_fake.control("GET", "/stats")["token_requests"] == expected, round_
        # A daemon started later uses the stored tokens too.
        late = start_daemon(config, database=db)
        assert late.call({"cmd": "send", "ids": ids, "message": "late"})["sent"] == len(ids)
        assert fcm.stats()["token_requests"] == 2 and wns_fake.control("GET", "/stats")["token_requests"] == 2
    finally:
        fcm.stop()


def test_kill_9_of_one_daemon_half_way_the_others_finish_its_leases(pg_cluster, start_daemon, fake):
    # A short lease so that B and C take over A's rows in seconds, not 30 s.
    _, (a, b, c) = fleet(start_daemon, pg_cluster, fake, lease_ms=2000)
    n = 20000
    ids = register_many(a, n)
    # A short delay: three daemons keep up to 12 batches of 1,000 on the one fake at once, and a
    # backlog of many seconds would turn provider timeouts (retries) into extra copies.
    fake.control({"delay_ms": 20})
    r = a.call({"cmd": "send", "ids": ids, "message": "survive", "async": True})
    assert r["ok"], r
    job_id = r["job"]["id"]
    deadline = time.time() + 120
    while time.time() < deadline and len(fake.received()) < n // 2:
        time.sleep(0.02)
    kill_at = time.time()
    a.kill()
    job = wait_job(b, job_id, timeout=300)
    assert (job["devices"], job["sent"], job["failed"], job["pending"], job["canceled"]) == (n, n, 0, 0, 0), job
    got = by_token(fake.received())
    assert sorted(got) == sorted(tok(i) for i in range(1, n + 1))
    dups = {t: v for t, v in got.items() if len(v) > 1}
    # A's connections: the ones the kill closed (B and C keep theirs open).
    log = fake.state()["connection_log"]
    a_conns = {int(k) for k, e in log.items() if e["closed"] is not None and kill_at - 0.5 <= e["closed"] <= kill_at + 10}
    assert a_conns, log
    # Only what A had on the wire goes out twice: one copy came on one of A's connections (the
    # fake stamps a request when it answers it, which under load can be seconds after the kill,
    # so the copy's time only bounds it from below), twice at most, with the same apns-id, and no
    # more than A's batches in flight (4 of 1,000).
    for t, v in dups.items():
        first = min(x["time"] for x in v)
        assert kill_at - first < 30, (t, [x["time"] for x in v], kill_at)
        assert any(x["conn"] in a_conns for x in v), ([(round(x["time"] - kill_at, 2), x["conn"]) for x in v], a_conns)
        assert len(v) == 2, ([(round(x["time"] - kill_at, 2), x["status"], x["conn"]) for x in v])
        assert len({x["apns_id"] for x in v}) == 1, v
    assert len(dups) <= 4 * 1000, len(dups)
    res = all_results(c, job_id)
    assert len(res) == n and all(x["status"] == "sent" for x in res)
    print(f"duplicates after the kill: {len(dups)}")


def test_database_stopped_mid_traffic_unavailable_then_recovers_nothing_accepted_lost(pg_cluster, start_daemon, fake):
    _, daemons = fleet(start_daemon, pg_cluster, fake)
    ids = register_many(daemons[0], 30)
    accepted, answers, lock = [], {}, threading.Lock()
    stop = threading.Event()

    def traffic(d, k):
        conn = d.connect(timeout=30)
        i = 0
        while not stop.is_set():
            i += 1
            r = conn.call({"cmd": "send", "ids": [ids[(k * 7 + i) % len(ids)]], "message": f"{k}-{i}", "async": True})
            with lock:
                if r["ok"]:
                    accepted.append(r["job"]["id"])
                    answers["ok"] = answers.get("ok", 0) + 1
                else:
                    code = r["error"]["code"]
                    answers[code] = answers.get(code, 0) + 1
                    assert code == "unavailable" and r["error"]["retry_after_ms"] > 0, r
            time.sleep(0.01)

    threads = [threading.Thread(target=traffic, args=(d, k), daemon=True) for k, d in enumerate(daemons)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    pg_cluster.ctl("halt")
    try:
        time.sleep(3)
        with lock:
            during = dict(answers)
    finally:
        pg_cluster.ctl("resume")
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    print(f"answers: {answers}, while stopped: {during}")
    assert answers.get("unavailable", 0) > 0, answers
    assert set(answers) <= {"ok", "unavailable"}, answers
    # Accepts work again after the restart, through every daemon, none restarted.
    after = [d.call({"cmd": "send", "ids": ids[:1], "message": "after", "async": True}) for d in daemons]
    assert all(r["ok"] for r in after), after
    accepted += [r["job"]["id"] for r in after]
    for j in accepted:
        job = wait_job(daemons[len(j) % 3], j, timeout=120)
        assert (job["devices"], job["sent"]) == (1, 1), job
    assert all(d.proc.poll() is None for d in daemons)
    alerts = {x["payload"]["aps"]["alert"] for x in fake.received()}
    assert len(alerts) >= len(accepted) - 3  # every accepted job delivered ("after" thrice has one text)


def test_events_read_on_b_show_deactivations_made_through_a_in_order(pg_cluster, start_daemon, fake):
    _, (a, b, c) = fleet(start_daemon, pg_cluster, fake)
    n = 600
    ids = register_many(a, n)
    base = b.call({"cmd": "events", "after": 0})["next"]
    # A reader waiting on B is woken by A's commit (NOTIFY), well before its wait_ms.
    woke = {}

    def wait_on_b():
        t0 = time.monotonic()
        woke["r"] = b.connect(timeout=60).call({"cmd": "events", "after": base, "wait_ms": 25000})
        woke["t"] = time.monotonic() - t0

    t = threading.Thread(target=wait_on_b)
    t.start()
    time.sleep(0.5)
    fake.control({"unregister": [{"token": tok(i)} for i in range(1, n + 1)]})
    assert a.call({"cmd": "send", "ids": ids[:1], "message": "x"})["results"][0]["reason"] == "Unregistered"
    t.join(timeout=60)
    assert woke["r"]["ok"] and woke["r"]["events"][0]["device"] == ids[0], woke
    assert woke["t"] < 20, woke["t"]
    # Deactivations through A and C at once, in small sends, while B follows the feed by cursor:
    # B must see every event exactly once, in seq order (a skipped lower seq committed late would
    # be missing from what B collected).
    rest = ids[1:]
    halves = [rest[0::2], rest[1::2]]
    collected, cursor = [], base
    done = threading.Event()

    def sender(d, part):
        conn = d.connect(timeout=60)
        for k in range(0, len(part), 10):
            r = conn.call({"cmd": "send", "ids": part[k:k + 10], "message": "x"})
            assert r["ok"], r

    senders = [threading.Thread(target=sender, args=(d, p)) for d, p in zip((a, c), halves)]
    for s in senders:
        s.start()
    rc = b.connect(timeout=60)
    while True:
        finished = not any(s.is_alive() for s in senders)
        r = rc.call({"cmd": "events", "after": cursor, "limit": 50, "wait_ms": 200})
        assert r["ok"], r
        collected += r["events"]
        cursor = r["next"]
        if finished and not r["events"]:
            break
    done.set()
    everything = b.call({"cmd": "events", "after": base, "limit": 1000})["events"]
    assert [e["seq"] for e in collected] == [e["seq"] for e in everything]
    assert [e["seq"] for e in everything] == sorted(e["seq"] for e in everything)
    assert len({e["seq"] for e in everything}) == len(everything)
    deactivated = [e["device"] for e in everything if e["type"] == "device_deactivated"]
    assert sorted(deactivated) == sorted(ids) and len(deactivated) == n
    assert all(e["app"] == "default" and e["platform"] == "apns" and e["reason"] == "Unregistered" for e in everything)
    # The same feed from C.
    assert c.call({"cmd": "events", "after": base, "limit": 1000})["events"] == everything
