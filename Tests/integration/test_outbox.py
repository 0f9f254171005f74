"""The durable outbox (issue 13): `"async": true` sends, `job`/`jobs`/`cancel`, and delivery
that survives restarts, kill -9 and provider outages. Against the APNs fake (HTTP/2 + TLS, real
JWT checks) and the real binary. Time bounds are generous (10x or more what a healthy run takes)."""
import os
import signal
import time

import pytest

from harness import postgres_backend
from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs  # noqa: F401
from test_apns import by_token, cfg, fake, register, start_fake, tok  # noqa: F401  (fixtures)


def wait_job(d, job_id, states=("done",), timeout=120.0, conn=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        r = (conn or d).call({"cmd": "job", "job": job_id})
        assert r["ok"], r
        last = r["job"]
        if last["state"] in states:
            return last
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {states} after {timeout} s: {last}\n{d.logs()[-3000:]}")


def register_many(d, n, start=1, app="default"):
    ids = []
    for s in range(start, start + n, 5000):
        batch = [tok(i) for i in range(s, min(start + n, s + 5000))]
        ids += register(d, batch, app=app)
    return ids


def all_results(d, job_id, limit=1000):
    out, after = [], None
    while True:
        req = {"cmd": "job", "job": job_id, "results": True, "limit": limit}
        if after is not None:
            req["after"] = after
        r = d.call(req)
        assert r["ok"], r
        out += r["results"]
        if r["next"] is None:
            return out
        after = r["next"]


def test_async_send_is_queued_then_delivered_with_paged_results(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 50)
    r = d.call({"cmd": "send", "ids": ids, "message": "hello", "async": True})
    assert r["ok"], r
    assert r["job"]["state"] == "queued" and isinstance(r["job"]["id"], str)
    job = wait_job(d, r["job"]["id"])
    assert (job["devices"], job["sent"], job["failed"], job["pending"], job["canceled"]) == (50, 50, 0, 0, 0)
    assert job["started_at"] and job["finished_at"] and job["created_at"]
    got = by_token(fake.received())
    assert sorted(got) == sorted(tok(i) for i in range(1, 51))
    assert all(len(v) == 1 for v in got.values())
    res = all_results(d, r["job"]["id"], limit=20)
    assert [x["id"] for x in res] == ids
    assert all(x["status"] == "sent" and x["attempts"] == 1 and x["platform"] == "apns" for x in res)
    # Listing: the job is there, filtered by state.
    js = d.call({"cmd": "jobs", "state": "done"})
    assert [j["id"] for j in js["jobs"]] == [r["job"]["id"]]
    assert d.call({"cmd": "jobs", "state": "queued"})["jobs"] == []


def test_async_bulk_messages_and_tokens(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 3)
    r = d.call({"cmd": "bulk", "async": True, "messages": [
        {"ids": [ids[0]], "message": "one"},
        {"registration_ids": [tok(2), tok(999)], "platform": "apns", "message": "two"},
        {"tokens": [tok(500)], "platform": "apns", "message": "raw"}]})
    assert r["ok"], r
    job = wait_job(d, r["job"]["id"])
    assert (job["devices"], job["sent"], job["failed"]) == (4, 3, 1)
    res = all_results(d, r["job"]["id"])
    assert [(x["message"], x["status"]) for x in res] == [(0, "sent"), (1, "sent"), (1, "failed"), (2, "sent")]
    assert res[2]["reason"] == "not_registered"
    got = {x["token"]: x["payload"]["aps"]["alert"] for x in fake.received()}
    assert got == {tok(1): "one", tok(2): "two", tok(500): "raw"}


def test_async_refuses_what_sync_refuses_and_queues_nothing(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 2)
    cases = [
        ({"cmd": "send", "ids": ids, "message": "x", "async": True, "badge": "many"}, "invalid_argument"),
        ({"cmd": "send", "registration_ids": [tok(1)], "platform": "fcm", "message": "x", "async": True}, "provider_not_configured"),
        ({"cmd": "send", "ids": ids, "message": "x" * 5000, "async": True}, "payload_too_large"),
        ({"cmd": "send", "ids": ids, "message": "x", "async": True, "app": "nope"}, None),
        ({"cmd": "send", "ids": ids, "message": "x", "async": True, "idempotency_key": "k" * 256}, "invalid_argument"),
        ({"cmd": "send", "ids": ids, "message": "x", "async": True, "send_at": "tomorrow"}, "invalid_argument"),
        ({"cmd": "send", "ids": ids, "message": "x", "async": "yes"}, "invalid_argument"),
    ]
    for req, code in cases:
        a = d.call(req)
        assert not a["ok"], (req, a)
        sync_req = {k: v for k, v in req.items() if k not in ("async", "idempotency_key", "send_at")}
        if req.get("async") is True and "idempotency_key" not in req and "send_at" not in req:
            s = d.call(sync_req)
            assert not s["ok"] and s["error"]["code"] == a["error"]["code"], (req, a, s)
        if code:
            assert a["error"]["code"] == code, (req, a)
    assert d.call({"cmd": "jobs"})["jobs"] == []
    assert d.call({"cmd": "job", "job": "nope"})["error"]["code"] == "not_found"
    assert fake.received() == []


def test_idempotency_key_gives_one_job_and_one_delivery(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 10)
    req = {"cmd": "send", "ids": ids, "message": "once", "async": True, "idempotency_key": "order-981-shipped"}
    a = d.call(req)
    b = d.call(req)
    assert a["ok"] and b["ok"], (a, b)
    assert b["job"]["id"] == a["job"]["id"] and b.get("duplicate") is True and "duplicate" not in a
    # Another app's same key is another job.
    wait_job(d, a["job"]["id"])
    c = d.call(dict(req))
    assert c["job"]["id"] == a["job"]["id"] and c["duplicate"] is True
    time.sleep(1.0)
    got = by_token(fake.received())
    assert len(got) == 10 and all(len(v) == 1 for v in got.values())
    assert len(d.call({"cmd": "jobs"})["jobs"]) == 1


def test_send_at_not_before_and_across_a_restart(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 5)
    at = int(time.time()) + 3
    r = d.call({"cmd": "send", "ids": ids, "message": "later", "async": True, "send_at": at})
    assert r["ok"] and r["job"]["state"] == "scheduled", r
    d.restart()
    assert d.call({"cmd": "job", "job": r["job"]["id"]})["job"]["state"] == "scheduled"
    assert fake.received() == []
    job = wait_job(d, r["job"]["id"], timeout=60)
    assert job["sent"] == 5
    first = min(x["time"] for x in fake.received())
    assert first >= at, (first, at)


def test_cancel_half_way(start_daemon, fake):
    config = cfg(fake)
    config["max_line_bytes"] = 16 << 20
    d = start_daemon(config)
    ids = register_many(d, 20000)
    fake.control({"delay_ms": 300})
    r = d.call({"cmd": "send", "ids": ids, "message": "stop me", "async": True})
    deadline = time.time() + 60
    while time.time() < deadline and len(fake.received()) == 0:
        time.sleep(0.05)
    c = d.call({"cmd": "cancel", "job": r["job"]["id"]})
    assert c["ok"] and c["job"]["state"] == "canceled", c
    # The batches on the wire finish and count as sent; nothing else goes out.
    deadline = time.time() + 60
    while time.time() < deadline:
        job = d.call({"cmd": "job", "job": r["job"]["id"]})["job"]
        seen = len(by_token(fake.received()))
        if job["sent"] == seen:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    job = d.call({"cmd": "job", "job": r["job"]["id"]})["job"]
    assert job["state"] == "canceled"
    assert job["sent"] + job["failed"] + job["canceled"] == job["devices"] == 20000 and job["pending"] == 0
    assert job["canceled"] > 0, job
    assert len(by_token(fake.received())) == job["sent"] < 20000
    # A second cancel changes nothing.
    assert d.call({"cmd": "cancel", "job": r["job"]["id"]})["job"]["canceled"] == job["canceled"]


def test_expired_after_a_short_time_to_live(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 3)
    fake.control({"fail": [{"token": "*", "status": 503, "reason": "ServiceUnavailable", "count": -1}]})
    r = d.call({"cmd": "send", "ids": ids, "message": "soon stale", "async": True, "time_to_live": 4})
    job = wait_job(d, r["job"]["id"], timeout=60)
    assert (job["sent"], job["failed"]) == (0, 3)
    res = all_results(d, r["job"]["id"])
    assert all(x["reason"] == "expired" and x["last_reason"] == "ServiceUnavailable" and x["attempts"] >= 2 for x in res), res


def test_async_requires_nothing_of_sync_sends_which_stay_unchanged(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 3)
    r = d.call({"cmd": "send", "ids": ids, "message": "now"})
    assert r["ok"] and r["sent"] == 3 and "job" not in r
    r = d.call({"cmd": "send", "ids": ids, "message": "now", "async": False})
    assert r["ok"] and r["sent"] == 3 and "job" not in r


def test_kill_9_at_five_points_every_device_delivered_once_or_on_the_wire(start_daemon, fake):
    config = cfg(fake)
    config["max_line_bytes"] = 16 << 20
    d = start_daemon(config)
    n = 20000
    ids = register_many(d, n)
    fake.control({"delay_ms": 150})
    r = d.call({"cmd": "send", "ids": ids, "message": "survive", "async": True})
    assert r["ok"], r
    job_id = r["job"]["id"]
    kills = []
    # Right after the accept (nothing delivered yet), then at four points of the delivery.
    for threshold in (0, 3000, 7000, 11000, 15000):
        deadline = time.time() + 120
        while time.time() < deadline and len(fake.received()) < threshold:
            time.sleep(0.02)
        kills.append((time.time(), len(fake.received())))
        d.kill()
        d._conn = None
        d._spawn(True)
    job = wait_job(d, job_id, timeout=300)
    assert (job["devices"], job["sent"], job["failed"], job["pending"], job["canceled"]) == (n, n, 0, 0, 0), job
    got = by_token(fake.received())
    assert sorted(got) == sorted(tok(i) for i in range(1, n + 1))
    dups = {t: v for t, v in got.items() if len(v) > 1}
    # The connections a kill closed (the fake's connection_log).
    log = fake.state()["connection_log"]
    killed = {int(c) for c, e in log.items() if e["closed"] is not None and any(k - 0.5 <= e["closed"] <= k + 10 for k, _ in kills)}
    assert killed, (log, kills)
    # A duplicate is a request that was on the wire at a kill: one copy came on a connection a
    # kill closed (when the fake read or answered it says little: it lags by seconds while the
    # fake works through a backlog under load), its first copy reached the fake less than 30 s
    # before a kill (a batch under 150 ms answers takes well under that), and at most that
    # many per kill.
    for t, v in dups.items():
        first = min(x["arrived"] for x in v)
        where = [(x["time"], x["conn"], x["status"], x.get("reason")) for x in v]
        assert any(x["conn"] in killed for x in v), (t, where, kills, killed)
        assert any(k - first < 30 for k, _ in kills), (t, where, kills)
        assert len(v) <= len(kills) + 1
        # The re-send carries the first attempt's apns-id.
        assert len({x["apns_id"] for x in v}) == 1, v
    assert len(dups) <= len(kills) * 4 * 1000, len(dups)
    res = all_results(d, job_id)
    assert len(res) == n and all(x["status"] == "sent" for x in res)


def test_provider_outage_503_then_full_delivery_while_sync_fails_fast(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 200)
    fake.control({"fail": [{"token": "*", "status": 503, "reason": "ServiceUnavailable", "count": -1}]})
    outage_start = time.time()
    r = d.call({"cmd": "send", "ids": ids, "message": "during outage", "async": True})
    assert r["ok"], r
    t0 = time.monotonic()
    s = d.call({"cmd": "send", "ids": ids[:3], "message": "sync"})
    took = time.monotonic() - t0
    assert s["ok"] and s["failed"] == 3 and all(x["retryable"] for x in s["results"]), s
    assert took < 30, took
    while time.time() - outage_start < 30:
        time.sleep(0.5)
        assert d.call({"cmd": "job", "job": r["job"]["id"]})["job"]["sent"] == 0
    fake.control({"clear_fail": True})
    job = wait_job(d, r["job"]["id"], timeout=180)
    assert (job["sent"], job["failed"]) == (200, 0), job
    res = all_results(d, r["job"]["id"])
    assert all(x["attempts"] >= 2 for x in res)


def test_provider_drops_connections_then_full_delivery(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 200)
    fake.control({"drop_after": 1, "drop_times": 1_000_000})
    r = d.call({"cmd": "send", "ids": ids, "message": "through drops", "async": True})
    assert r["ok"], r
    t0 = time.monotonic()
    s = d.call({"cmd": "send", "ids": ids[:3], "message": "sync"})
    assert s["ok"] and s["failed"] == 3 and all(x["retryable"] for x in s["results"]), s
    assert time.monotonic() - t0 < 30
    time.sleep(30 - (time.monotonic() - t0))
    fake.control({"drop_after": None})
    job = wait_job(d, r["job"]["id"], timeout=180)
    assert (job["sent"], job["failed"]) == (200, 0), job


def start_large_job_slow_small_fast(start_daemon, fake, devices, delay_ms, on_the_wire, **extra):
    """A daemon with `devices` registered and an async send to all of them, against a fake that
    answers the first 10 tokens at once and the rest after `delay_ms`; returns once `on_the_wire`
    requests of it reached the fake: (daemon, device ids, the large job's accept)."""
    config = cfg(fake)
    config["max_line_bytes"] = 16 << 20
    config.update(extra)
    d = start_daemon(config)
    big = register_many(d, devices)
    fake.control({"delay_ms": delay_ms, "slow": [{"token": tok(i), "delay_ms": 0} for i in range(1, 11)]})
    a = d.call({"cmd": "send", "filter": {"app": "default"}, "message": "everyone", "async": True})
    assert a["ok"], a
    deadline = time.time() + 120
    while time.time() < deadline and len(fake.received()) < on_the_wire:
        time.sleep(0.05)
    return d, big, a


def test_fairness_small_job_during_a_large_one(start_daemon, fake):
    """Issue 13: a 10-device job accepted during a 200,000-device job is done within 1 s.

    The fake must not be what the small job waits for: it answers the large job after 2 s
    (so that job keeps the connection busy without saturating the Python fake, which answers
    about 1,000 requests/s on this machine) and the small job's devices at once. What is left
    is the daemon's part: waking, claiming, the transport's queue, committing the results.
    (Measured 1.35-1.75 s while the large job's requests took every stream and the small job's
    waited for the next wave of answers; 0.12-0.34 s since background requests leave a tenth
    of the streams free, TransportTests' backgroundRequestsLeaveStreamsFree. On PostgreSQL it
    took 0.9-3.3 s more: wake-ups by the NOTIFY of the daemon's own commits and the `poll_ms`
    tick each claimed an extra batch of the large job, up to 8 on the wire, and the small job
    waited for one to end (0.10-1.94 s); a wake-up with that many on the wire now claims the
    jobs not on the wire, OutboxWorker.claimLimit and the test below.)"""
    d, big, a = start_large_job_slow_small_fast(start_daemon, fake, 200000, 2000, 3000)
    small = big[:10]
    t0 = time.monotonic()
    w0 = time.time()
    b = d.call({"cmd": "send", "ids": small, "message": "urgent", "async": True})
    job = wait_job(d, b["job"]["id"], timeout=60)
    took = time.monotonic() - t0
    got = fake.received()
    urgent = [x for x in got if x["payload"]["aps"].get("alert") == "urgent"]
    last = max(x["arrived"] for x in urgent)
    ahead = [x for x in got if x["payload"]["aps"].get("alert") != "urgent" and w0 <= x["arrived"] <= last]
    print(f"10-device job done {took:.2f} s after accept, during a 200,000-device job; its requests reached the "
          f"fake {min(x['arrived'] for x in urgent) - w0:.2f}-{last - w0:.2f} s after accept, "
          f"{len(ahead)} of the large job's requests sent after the accept reached it first")
    big_job = d.call({"cmd": "job", "job": a["job"]["id"]})["job"]
    assert (job["devices"], job["sent"], job["failed"]) == (10, 10, 0), job
    assert big_job["state"] == "running" and big_job["pending"] > 100000, big_job
    # Not behind the large job's backlog: at most one claim of it (1,000 deliveries, claimed
    # before the small job's) went out between the accept and the small job's last request
    # (the daemon kept thousands waiting in its transport queue before: 1,500-3,400 went first,
    # and the job took 4-12 s).
    assert len(ahead) <= 1000, len(ahead)
    # A healthy run takes well under a second (a bound with 10x headroom: timing is noisy here).
    assert took < 10, took
    d.call({"cmd": "cancel", "job": a["job"]["id"]})


def test_small_jobs_claimed_while_the_wire_is_full_of_a_large_one(start_daemon, fake):
    """Issue 13/14, fairness: a small job accepted while every slot on the wire holds a batch of
    a large job still goes out at once (a wake-up then claims the jobs not on the wire).

    The fake holds the large job's requests 20 s (so no batch of it ends during the test) and
    answers the small jobs' devices at once. Each small job accepted adds a wake-up, and on
    PostgreSQL the NOTIFY of the daemon's own commits and the `poll_ms` tick (20 ms here) add
    more: before, each of them added a batch of the large job up to a cap, and a small job
    accepted then waited for one of them to end (20 s and more here, both backends; 1.0-3.2 s in
    the fairness test above on PostgreSQL). Now 0.10-0.12 s each."""
    extra = {"poll_ms": 20} if postgres_backend() is not None else {}
    d, big, a = start_large_job_slow_small_fast(start_daemon, fake, 20000, 20000, 100, shutdown_timeout_ms=1000, **extra)
    time.sleep(0.5)
    took = []
    for k in range(6):
        t0 = time.monotonic()
        b = d.call({"cmd": "send", "ids": big[:10], "message": f"urgent {k}", "async": True})
        assert b["ok"], b
        # Well beyond a healthy run (0.1-0.5 s), well below the 20 s the large job's batches take.
        job = wait_job(d, b["job"]["id"], timeout=10)
        took.append(time.monotonic() - t0)
        assert (job["devices"], job["sent"], job["failed"]) == (10, 10, 0), job
        time.sleep(0.2)
    print("small jobs done after " + ", ".join(f"{t:.2f}" for t in took) + " s, the wire full of a 20,000-device job")
    big_job = d.call({"cmd": "job", "job": a["job"]["id"]})["job"]
    assert big_job["state"] == "running" and big_job["pending"] > 10000, big_job
    d.call({"cmd": "cancel", "job": a["job"]["id"]})


@pytest.mark.skipif(postgres_backend() is not None,
                    reason="database_max_pages is SQLite's; on PostgreSQL test_fleet.py stops the server instead")
def test_full_database_is_unavailable_nothing_lost_and_serving_continues(start_daemon, fake):
    config = cfg(fake)
    config["database_max_pages"] = 400
    d = start_daemon(config)
    ids = register_many(d, 20)
    accepted = []
    error = None
    for k in range(5000):
        r = d.call({"cmd": "send", "ids": ids, "message": "x" * 1500 + str(k), "async": True, "send_at": int(time.time()) + 3600})
        if not r["ok"]:
            error = r["error"]
            break
        accepted.append(r["job"]["id"])
    assert error is not None, "the database never filled"
    assert error["code"] == "unavailable" and error["retry_after_ms"] > 0, error
    assert "full" in error["message"].lower(), error
    # Everything accepted is there; the daemon still answers, and sync sends still work.
    listed = set()
    after = None
    while True:
        q = {"cmd": "jobs", "limit": 1000}
        if after:
            q["after"] = after
        r = d.call(q)
        listed |= {j["id"] for j in r["jobs"]}
        after = r["next"]
        if not after:
            break
    assert set(accepted) <= listed and len(listed) == len(accepted)
    assert d.call({"cmd": "ping"})["ok"]
    s = d.call({"cmd": "send", "ids": ids[:2], "message": "sync still works"})
    assert s["ok"] and s["sent"] == 2, s
    # Freeing room (a cancel deletes nothing, so raise the cap by a restart) accepts again.
    d.stop()
    d.config["database_max_pages"] = 100000
    d._spawn(True)
    r = d.call({"cmd": "send", "ids": ids, "message": "room again", "async": True})
    assert r["ok"], r


def test_sigterm_leaves_the_rest_queued_and_a_restart_finishes(start_daemon, fake):
    config = cfg(fake)
    config["max_line_bytes"] = 16 << 20
    config["shutdown_timeout_ms"] = 10000
    d = start_daemon(config)
    ids = register_many(d, 20000)
    fake.control({"delay_ms": 200})
    r = d.call({"cmd": "send", "ids": ids, "message": "graceful", "async": True})
    deadline = time.time() + 60
    while time.time() < deadline and len(fake.received()) < 1000:
        time.sleep(0.02)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 25
    at_stop = len(fake.received())
    d._spawn(True)
    job = wait_job(d, r["job"]["id"], timeout=300)
    assert job["sent"] == 20000
    got = by_token(fake.received())
    assert len(got) == 20000
    # A clean stop finishes what is on the wire and records it: no duplicates at all.
    assert all(len(v) == 1 for v in got.values()), at_stop


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_queue_depth_and_oldest_age_in_metrics(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register_many(d, 7)
    text = d.call({"cmd": "metrics"})["text"]
    assert metric(text, "pushline_outbox_queued_notifications") == 0
    assert metric(text, "pushline_outbox_oldest_queued_age_seconds") == 0
    r = d.call({"cmd": "send", "ids": ids, "message": "later", "async": True, "send_at": int(time.time()) + 3600})
    assert r["ok"], r
    time.sleep(1.2)
    text = d.call({"cmd": "metrics"})["text"]
    assert metric(text, "pushline_outbox_queued_notifications") == 7
    assert metric(text, "pushline_outbox_live_jobs") == 1
    assert 1.0 <= metric(text, "pushline_outbox_oldest_queued_age_seconds") < 600
    d.call({"cmd": "cancel", "job": r["job"]["id"]})
    text = d.call({"cmd": "metrics"})["text"]
    assert metric(text, "pushline_outbox_queued_notifications") == 0


def test_a_round_longer_than_the_lease_sends_each_device_once(start_daemon, fake):
    """A batch still on the wire when its lease (`lease_ms`) runs out is not claimed again by
    the same daemon: the fake answers the slow job's devices after 4x the lease while other
    accepts keep waking the worker (each wake-up claims); every device reaches the fake once."""
    config = cfg(fake)
    config["lease_ms"] = 1000
    d = start_daemon(config)
    slow = register_many(d, 20)
    fast = register_many(d, 30, start=1001)
    fake.control({"slow": [{"token": tok(i), "delay_ms": 4000} for i in range(1, 21)]})
    a = d.call({"cmd": "send", "ids": slow, "message": "slow", "async": True})
    assert a["ok"], a
    deadline = time.time() + 60
    while time.time() < deadline and d.call({"cmd": "job", "job": a["job"]["id"]})["job"]["state"] != "running":
        time.sleep(0.05)
    time.sleep(0.3)
    # While the slow batch waits for its answers, small jobs keep the worker claiming.
    small = []
    for k in range(10):
        r = d.call({"cmd": "send", "ids": fast[3 * k:3 * k + 3], "message": f"fast {k}", "async": True})
        assert r["ok"], r
        small.append(r["job"]["id"])
        time.sleep(0.4)
    job = wait_job(d, a["job"]["id"], timeout=120)
    assert (job["devices"], job["sent"], job["failed"], job["pending"], job["canceled"]) == (20, 20, 0, 0, 0), job
    for j in small:
        s = wait_job(d, j, timeout=60)
        assert (s["devices"], s["sent"], s["failed"]) == (3, 3, 0), s
    got = by_token(fake.received())
    twice = {t: len(v) for t, v in got.items() if len(v) != 1}
    assert not twice, f"sent more than once: {twice}"
    assert sorted(got) == sorted([tok(i) for i in range(1, 21)] + [tok(i) for i in range(1001, 1031)])
    assert all(x["status"] == "sent" and x["attempts"] == 1 for x in all_results(d, a["job"]["id"]))


def voluntary_switches(pid):
    """Voluntary context switches of all the process's threads: each is a thread going to sleep,
    so it counts wake-ups (preemptions, which a loaded machine adds, are not counted)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def test_an_idle_daemon_sleeps_instead_of_polling(start_daemon, fake):
    """Issue 13: the outbox worker waited for work in 10 ms steps (about 400 voluntary context
    switches a second over the daemon's threads with nothing to do, on SQLite and PostgreSQL).
    It now sleeps until the next due time or an accept: 5-12 a second measured (both backends;
    the transport threads' 1 s ticks and PostgreSQL's `poll_ms` tick are most of it). `poll_ms`
    is raised here: on PostgreSQL each tick wakes the worker (the fallback where NOTIFY never
    comes), about 25 switches a second at the default 1 s. Bound: 60 a second."""
    config = cfg(fake)
    config["poll_ms"] = 5000
    d = start_daemon(config)
    ids = register_many(d, 3)
    # Work was done and finished (the worker has been busy), and a job is scheduled far ahead
    # (something is queued, nothing is due).
    r = d.call({"cmd": "send", "ids": ids, "message": "warm up", "async": True})
    wait_job(d, r["job"]["id"])
    assert d.call({"cmd": "send", "ids": ids, "message": "later", "async": True, "send_at": int(time.time()) + 3600})["ok"]
    time.sleep(1.5)
    pid = d.proc.pid
    s0, t0 = voluntary_switches(pid), time.monotonic()
    time.sleep(4)
    rate = (voluntary_switches(pid) - s0) / (time.monotonic() - t0)
    print(f"idle: {rate:.1f} voluntary context switches/s over the daemon's threads")
    assert rate < 60, rate


def test_an_idle_daemon_delivers_an_accept_at_once_and_send_at_on_time(start_daemon, fake):
    """The idle worker sleeps until the next due time (up to 5 s with nothing due): an accept
    must wake it, and a `send_at` must end its sleep. A healthy run delivers within 20-150 ms;
    a lost wake-up or an ignored due time shows as seconds. Bounds: 1 s and 1.5 s."""
    d = start_daemon(cfg(fake))
    ids = register_many(d, 4)
    for k in range(3):
        time.sleep(1.2)
        t0 = time.time()
        r = d.call({"cmd": "send", "ids": [ids[k]], "message": f"now {k}", "async": True})
        assert r["ok"], r
        wait_job(d, r["job"]["id"], timeout=60)
        got = [x for x in fake.received() if x["payload"]["aps"].get("alert") == f"now {k}"]
        assert len(got) == 1, got
        print(f"accept {k}: at the fake {got[0]['arrived'] - t0:.3f} s after the request")
        assert got[0]["arrived"] - t0 < 1.0, got[0]["arrived"] - t0
    # Due in 2-3 s while the worker sleeps (nothing else queued).
    at = int(time.time()) + 3
    r = d.call({"cmd": "send", "ids": [ids[3]], "message": "at", "async": True, "send_at": at})
    assert r["ok"] and r["job"]["state"] == "scheduled", r
    wait_job(d, r["job"]["id"], timeout=60)
    got = [x for x in fake.received() if x["payload"]["aps"].get("alert") == "at"]
    assert len(got) == 1, got
    print(f"send_at: at the fake {got[0]['arrived'] - at:.3f} s after send_at")
    assert 0 <= got[0]["arrived"] - at < 1.5, (got[0]["arrived"], at)
