"""The `events` feed (issue 13): device deactivations from synchronous sends, read by cursor,
long-polled with `wait_ms`, kept `event_retention`. Against the real daemon and the APNs fake
(HTTP/2 over TLS, real JWT checks, Apple's error bodies). Time bounds are upper bounds with
ample headroom (a woken wait returns in milliseconds; the bound is seconds)."""
import socket
import subprocess
import threading
import time

from apns_fake import KEY_ID, TEAM, TOPIC  # noqa: F401
from harness import binary
from test_apns import cfg, fake, register, send, start_fake, tok  # noqa: F401  (fixtures)


def events(d, conn=None, **args):
    r = (conn or d).call({"cmd": "events", **args})
    assert r["ok"], r
    return r


def fail_tokens(fake, tokens, reason="BadDeviceToken"):
    fake.control({"fail": [{"token": t, "status": 400, "reason": reason, "count": -1} for t in tokens]})


def test_deactivations_from_sync_sends_appear_once_in_order(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 11)]
    ids = register(d, tokens)
    empty = events(d)
    assert empty["events"] == [] and empty["next"] == 0
    fail_tokens(fake, [tokens[2], tokens[5]])
    later = int(time.time() * 1000) + 60_000
    fake.control({"unregister": [{"token": tokens[7], "timestamp": later}]})
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "hi"})
    assert r["ok"] and r["failed"] == 3, r
    # A second send to the same devices: already inactive, no second event.
    assert send(d, [tokens[2], tokens[5], tokens[7]], message="again")["failed"] == 3
    # A device the client deactivates itself gives no event (the app made that change).
    assert d.call({"cmd": "update", "device": ids[0], "active": False})["ok"]
    # Then one more deactivation by a later send: after the first three.
    fail_tokens(fake, [tokens[9]], reason="DeviceTokenNotForTopic")
    assert send(d, [tokens[9]], message="x")["failed"] == 1

    r = events(d, after=0, limit=1000)
    evs = r["events"]
    assert [e["type"] for e in evs] == ["device_deactivated"] * 4, evs
    assert [e["device"] for e in evs[:3]] == sorted([ids[2], ids[5], ids[7]])
    assert evs[3]["device"] == ids[9]
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert r["next"] == seqs[-1]
    by_dev = {e["device"]: e for e in evs}
    assert by_dev[ids[2]]["reason"] == "BadDeviceToken"
    assert by_dev[ids[7]]["reason"] == "Unregistered"
    assert by_dev[ids[9]]["reason"] == "DeviceTokenNotForTopic"
    for e in evs:
        assert e["app"] == "default" and e["platform"] == "apns"
        assert e["registration_id"] == tokens[ids.index(e["device"])]
        # RFC 3339 UTC with milliseconds, as the registry's own times.
        assert len(e["at"]) == 24 and e["at"].endswith("Z") and e["at"][10] == "T", e["at"]
    # Nothing newer: an empty page keeps the cursor.
    again = events(d, after=r["next"])
    assert again["events"] == [] and again["next"] == r["next"]


def test_limit_pages_and_bad_arguments(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 6)]
    register(d, tokens)
    fail_tokens(fake, tokens)
    assert send(d, tokens, message="x")["failed"] == 5
    pages, after = [], 0
    while True:
        r = events(d, after=after, limit=2)
        if not r["events"]:
            assert r["next"] == after
            break
        pages.append([e["seq"] for e in r["events"]])
        after = r["next"]
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [s for p in pages for s in p]
    assert flat == sorted(flat) and len(set(flat)) == 5
    bad = [
        ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "10"}, "limit"),
        ({"after": -1}, "after"), ({"after": "abc"}, "after"), ({"wait_ms": -1}, "wait_ms"),
        ({"wait_ms": 60_001}, "wait_ms"), ({"wait_ms": 1.5}, "wait_ms"), ({"cursor": 3}, "cursor"),
        ({"after": flat[-1] + 1000}, "after"),
    ]
    for args, field in bad:
        r = d.call({"cmd": "events", **args})
        assert r["ok"] is False and r["error"]["code"] == "invalid_argument", (args, r)
        assert r["error"]["field"] == field, (args, r)
        assert field in r["error"]["message"], (args, r)
    # A cursor beyond every event ever written names the newest seq.
    r = d.call({"cmd": "events", "after": flat[-1] + 1000})
    assert str(flat[-1]) in r["error"]["message"]
    # The newest seq itself is a valid cursor.
    assert events(d, after=flat[-1])["events"] == []


def test_cursor_resumes_across_a_restart(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 5)]
    ids = register(d, tokens)
    fail_tokens(fake, tokens[:2])
    assert send(d, tokens[:2], message="x")["failed"] == 2
    first = events(d)
    assert [e["device"] for e in first["events"]] == ids[:2]
    cursor = first["next"]
    d.restart()
    # The cursor the app stored is still valid; nothing new yet.
    assert events(d, after=cursor)["events"] == []
    fail_tokens(fake, tokens[2:3])
    assert send(d, tokens[2:3], message="y")["failed"] == 1
    r = events(d, after=cursor)
    assert [e["device"] for e in r["events"]] == [ids[2]]
    assert r["events"][0]["seq"] > cursor
    # Reading from the start still gives all three, in order.
    assert [e["device"] for e in events(d)["events"]] == ids[:3]


def test_waiting_call_wakes_on_a_new_event(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 3)]
    ids = register(d, tokens)
    fail_tokens(fake, tokens)
    waiter = d.connect(timeout=60)
    out = {}

    def wait():
        t0 = time.monotonic()
        out["r"] = waiter.call({"cmd": "events", "after": 0, "wait_ms": 30_000})
        out["took"] = time.monotonic() - t0

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.5)
    assert "r" not in out, out  # still waiting: nothing to read yet
    sent_at = time.monotonic()
    assert send(d, tokens[:1], message="x")["failed"] == 1
    th.join(30)
    assert not th.is_alive()
    woke_after = time.monotonic() - sent_at
    assert out["r"]["ok"] and [e["device"] for e in out["r"]["events"]] == [ids[0]], out
    # Woken by the commit, not by the 30 s deadline.
    assert woke_after < 10, woke_after
    waiter.close()


def test_waiting_call_returns_empty_after_wait_ms(start_daemon):
    d = start_daemon()
    c = d.connect(timeout=30)
    t0 = time.monotonic()
    r = c.call({"cmd": "events", "after": 0, "wait_ms": 400})
    took = time.monotonic() - t0
    assert r["ok"] and r["events"] == [] and r["next"] == 0, r
    assert took >= 0.39, took  # it did wait
    assert took < 15, took


def test_waiting_calls_hold_no_thread_and_pipelined_answers_stay_in_order(start_daemon, fake):
    d = start_daemon(cfg(fake))
    # 40 readers waiting at once (more than the database and I/O threads, and more than the
    # machine's cores): every other command still answers at once on other connections.
    waiters = [d.connect(timeout=60) for _ in range(40)]
    for w in waiters:
        w.send({"cmd": "events", "wait_ms": 20_000})
    time.sleep(0.3)
    t0 = time.monotonic()
    ids = register(d, [tok(1)])
    assert d.call({"cmd": "stats"})["ok"]
    assert d.call({"cmd": "devices"})["devices"][0]["id"] == ids[0]
    assert time.monotonic() - t0 < 10
    # One event wakes them all.
    fail_tokens(fake, [tok(1)])
    assert send(d, [tok(1)], message="x")["failed"] == 1
    for w in waiters:
        r = w.recv()
        assert r["ok"] and len(r["events"]) == 1, r
        w.close()
    # Pipelined behind a waiting call on the same connection, a request runs at once but its
    # answer is written after the waiting call's (answers keep request order).
    c = d.connect(timeout=30)
    c.send({"id": 1, "cmd": "events", "after": 1, "wait_ms": 1500})
    c.send({"id": 2, "cmd": "register", "platform": "apns", "registration_id": tok(2)})
    time.sleep(0.3)
    # The register has already happened (another connection sees the device)...
    assert [x["registration_id"] for x in d.call({"cmd": "devices"})["devices"]] == [tok(1), tok(2)]
    # ...and its answer follows the events answer.
    assert c.recv()["id"] == 1
    assert c.recv()["id"] == 2
    c.close()


def test_waiting_call_ends_promptly_on_shutdown(start_daemon):
    d = start_daemon()
    c = d.connect(timeout=60)
    c.send({"id": "w", "cmd": "events", "wait_ms": 60_000})
    time.sleep(0.3)
    t0 = time.monotonic()
    d.proc.send_signal(15)
    r = c.recv()
    assert r["id"] == "w" and r["ok"] and r["events"] == [] and r["next"] == 0, r
    assert d.proc.wait(30) == 0
    assert time.monotonic() - t0 < 20  # not the 60 s wait


def waiting_calls(d):
    for line in d.call({"cmd": "metrics"})["text"].splitlines():
        if line.startswith("pushline_events_waiting "):
            return float(line.split()[1])
    raise AssertionError("pushline_events_waiting not in metrics")


def open_fds(d):
    import os
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


def test_waiting_calls_of_clients_that_hang_up_end_at_once(start_daemon):
    d = start_daemon()
    assert waiting_calls(d) == 0
    fds0 = open_fds(d)
    conns = [d.connect(timeout=60) for _ in range(60)]
    for c in conns:
        c.send({"cmd": "events", "wait_ms": 60_000})
    # A padded line (longer than what the I/O thread parses itself) waits the same way.
    padded = d.connect(timeout=60)
    padded.send_raw(b'{"cmd": "events", "wait_ms": 60000' + b" " * 6000 + b"}\n")
    deadline = time.monotonic() + 30
    while waiting_calls(d) < 61 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting_calls(d) == 61
    t0 = time.monotonic()
    for c in conns + [padded]:
        c.close()
    deadline = time.monotonic() + 30
    while waiting_calls(d) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    took = time.monotonic() - t0
    print(f"61 waiting calls of clients that hung up ended {took:.2f} s after the hang-up (their wait_ms: 60 s)")
    assert waiting_calls(d) == 0, d.logs()[-2000:]
    assert took < 20, took  # a healthy run: well under a second; the calls' own wait is 60 s
    assert open_fds(d) <= fds0 + 1  # + the metrics connection at most
    # A client that only closed its writing side still reads its answer.
    h = d.connect(timeout=60)
    h.send({"id": "half", "cmd": "events", "wait_ms": 1500})
    import socket
    h.sock.shutdown(socket.SHUT_WR)
    t1 = time.monotonic()
    r = h.recv()
    assert r["id"] == "half" and r["ok"] and r["events"] == [], r
    assert time.monotonic() - t1 >= 1.4
    h.close()
    # More hang-ups, then SIGTERM at once: the stop is not held up by them.
    for _ in range(30):
        c = d.connect(timeout=60)
        c.send({"cmd": "events", "wait_ms": 60_000})
        c.close()
    t2 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t2 < 20


def test_retention_prunes_old_events_and_cursors_stay_valid(start_daemon, fake):
    config = cfg(fake)
    config["event_retention"] = "1s"
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, 4)]
    ids = register(d, tokens)
    fail_tokens(fake, tokens)
    assert send(d, tokens[:2], message="x")["failed"] == 2
    first = events(d)["events"]
    assert len(first) == 2
    cursor = first[-1]["seq"]
    # Pruned within a few pruning rounds (every second for a 1 s retention).
    deadline = time.monotonic() + 30
    while events(d)["events"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events(d)["events"] == []
    assert "events pruned" in d.logs()
    # The old cursor is still valid (seq is never reused) and new events come after it.
    assert events(d, after=cursor)["events"] == []
    assert send(d, tokens[2:], message="y")["failed"] == 1
    r = events(d, after=cursor)
    assert [e["device"] for e in r["events"]] == [ids[2]] and r["events"][0]["seq"] > cursor


def test_event_retention_config_errors(tmp_path):
    import json
    for value, needle in [("7x", "event_retention"), (0, "event_retention"), ("abc", "event_retention"),
                          (True, "event_retention")]:
        p = tmp_path / "c.json"
        p.write_text(json.dumps({"event_retention": value}))
        r = subprocess.run([binary(), "check-config", str(p)], capture_output=True, text=True)
        assert r.returncode != 0, (value, r.stdout, r.stderr)
        assert needle in r.stdout + r.stderr, (value, r.stdout, r.stderr)
    p = tmp_path / "ok.json"
    p.write_text('{"event_retention": "12h"}')
    r = subprocess.run([binary(), "check-config", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_deactivations_from_async_jobs_appear_once_then_job_done(start_daemon, fake):
    # The outbox's deliveries deactivate through the same registry call as synchronous sends:
    # one device_deactivated per dead device (none again when a second job names them), then
    # the job's job_done, all in seq order, and a waiting reader is woken by them.
    from test_outbox import wait_job
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 21)]
    ids = register(d, tokens)
    dead = [tokens[3], tokens[11], tokens[17]]
    fail_tokens(fake, dead)
    waiter = d.connect(timeout=60)
    waiter.send({"cmd": "events", "wait_ms": 30_000})
    r = d.call({"cmd": "bulk", "ids": ids, "message": "async", "async": True})
    assert r["ok"], r
    job_id = r["job"]["id"]
    woke = waiter.recv()
    assert woke["ok"] and woke["events"], woke
    wait_job(d, job_id)
    # A second job to the same devices: the dead ones are inactive now, no new deactivation.
    r2 = d.call({"cmd": "bulk", "ids": ids, "message": "again", "async": True})
    wait_job(d, r2["job"]["id"])
    evs = events(d)["events"]
    deact = [e for e in evs if e["type"] == "device_deactivated"]
    assert sorted(e["device"] for e in deact) == sorted(ids[tokens.index(t)] for t in dead)
    assert all(e["reason"] == "BadDeviceToken" for e in deact)
    done = [e for e in evs if e["type"] == "job_done"]
    assert [e["job"] for e in done] == [job_id, r2["job"]["id"]]
    # Each deactivation comes before its job's job_done; seqs strictly increase.
    first_done = evs.index(done[0])
    assert all(evs.index(e) < first_done for e in deact)
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    waiter.close()
