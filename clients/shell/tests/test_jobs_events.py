"""pushline-send with protocol 1.2: the events feed (one event per line, cursor file, --follow
long-polling across a daemon restart), async sends and job/jobs/cancel, against a real daemon
and the repository's fake APNs. The async-job tests need a daemon with the outbox (issue 13's
async jobs): they talk to the real daemon and fail, not skip, against one without it."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

import apns  # clients/testsupport/apns.py
from conftest import SCRIPT, Runner
from daemon import Daemon


@pytest.fixture
def env(workdir):
    if not apns.available():
        pytest.skip("Tests/fakes/fake_apns.py is not in this tree")
    fake = apns.FakeAPNs(workdir).start()
    d = Daemon(workdir, config=fake.config())
    try:
        d.start()
        yield Runner(d), fake, d
    finally:
        d.stop()
        fake.stop()


def tok(i):
    return f"{i:064x}"


def register(run, tokens):
    r = run.request({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in tokens]})
    assert r["ok"], r
    return [x["id"] for x in r["devices"]]


def kill(fake, tokens):
    body = json.dumps({"fail": [{"token": t, "status": 400, "reason": "BadDeviceToken", "count": -1} for t in tokens]})
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{fake.admin_port}/control", data=body.encode(),
                                                  method="POST"), timeout=5).read()


def deactivate(run, fake, tokens):
    kill(fake, tokens)
    r = run.request({"cmd": "send", "platform": "apns", "registration_ids": tokens, "message": "x"})
    assert r["ok"] and r["failed"] == len(tokens), r


@pytest.mark.parametrize("transport", ["pushline", "socat"])
def test_events_one_per_line_with_a_cursor_file(env, workdir, transport):
    run, fake, d = env
    tokens = [tok(0x10 + i) for i in range(3)]
    ids = register(run, tokens)
    deactivate(run, fake, tokens[:2])
    cursor = os.path.join(workdir, "cursor")
    t = {"PUSHLINE_TRANSPORT": transport}
    r = run("--events", "--cursor-file", cursor, env=t)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["device"] for e in lines] == ids[:2] and all(e["type"] == "device_deactivated" for e in lines)
    assert open(cursor).read().strip() == str(lines[-1]["seq"])
    # Nothing new: no lines, the cursor stays.
    r = run("--events", "--cursor-file", cursor, env=t)
    assert r.returncode == 0 and r.stdout == ""
    deactivate(run, fake, tokens[2:])
    r = run("--events", "--cursor-file", cursor, env=t)
    assert [json.loads(x)["device"] for x in r.stdout.splitlines()] == [ids[2]]
    r = run("--events", "--after", "0", "--limit", "1", env=t)
    assert len(r.stdout.splitlines()) == 1


def test_events_bad_arguments(env):
    run, _, _ = env
    r = run("--events", "--wait-ms", "90000")
    assert r.returncode == 1 and "wait_ms" in r.stderr
    r = run("--events", "--after", "x")
    assert r.returncode == 2 and "--after" in r.stderr
    r = run("--events", "--user", "42")
    assert r.returncode == 2


def test_follow_long_polls_and_survives_a_restart(env, workdir):
    run, fake, d = env
    tokens = [tok(0x20 + i) for i in range(2)]
    ids = register(run, tokens)
    cursor = os.path.join(workdir, "cursor")
    out = open(os.path.join(workdir, "follow.out"), "w+")
    p = subprocess.Popen(["sh", SCRIPT, "--follow", "--wait-ms", "20000", "--cursor-file", cursor], stdout=out,
                         stderr=subprocess.DEVNULL, env=run.env, start_new_session=True)
    try:
        def lines():
            out.flush()
            with open(out.name) as f:
                return [json.loads(x) for x in f.read().splitlines()]

        def wait_for(n, timeout=20):
            deadline = time.monotonic() + timeout
            while len(lines()) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            return lines()

        time.sleep(0.5)
        assert lines() == []
        t0 = time.monotonic()
        deactivate(run, fake, tokens[:1])
        assert [e["device"] for e in wait_for(1)] == [ids[0]]
        assert time.monotonic() - t0 < 15  # woken by the event, not a 20 s poll
        d.restart()
        deactivate(run, fake, tokens[1:])
        got = wait_for(2, timeout=40)
        assert [e["device"] for e in got] == ids
        # The script prints a batch first and then moves the cursor (a crash in between prints the
        # batch again rather than skipping it), so the file may trail the output by a moment.
        deadline = time.monotonic() + 10
        while open(cursor).read().strip() != str(got[-1]["seq"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open(cursor).read().strip() == str(got[-1]["seq"])
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
        out.close()


# -- async jobs (need the outbox in the daemon) ------------------------------------


def test_async_send_job_jobs_cancel(env):
    run, fake, _ = env
    ids = register(run, [tok(0x30), tok(0x31)])
    r = run("--device", str(ids[0]), "--device", str(ids[1]), "--message", "later", "--async",
            "--idempotency-key", "deploy-7")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]["id"]
    again = json.loads(run("--device", str(ids[0]), "--device", str(ids[1]), "--message", "later",
                           "--idempotency-key", "deploy-7").stdout)
    assert again["job"]["id"] == job and again["duplicate"] is True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = json.loads(run("--job", job).stdout)
        if st.get("state", st.get("job", {}).get("state")) == "done":
            break
        time.sleep(0.2)
    assert len([x for x in fake.received() if x["token"] in (tok(0x30), tok(0x31))]) == 2
    assert job in run("--jobs").stdout
    later = json.loads(run("--device", str(ids[0]), "--message", "in an hour",
                           "--send-at", str(int(time.time()) + 3600)).stdout)
    assert later["job"]["state"] == "scheduled"
    r = run("--cancel", later["job"]["id"])
    assert r.returncode == 0, r.stderr
    assert "canceled" in run("--job", later["job"]["id"]).stdout
    assert '"job_done"' in run("--events").stdout


def test_async_topic_job(env):
    # --topic with --async/--idempotency-key/--send-at: a job to the topic's registry subscribers.
    run, fake, _ = env
    ids = register(run, [tok(0x40), tok(0x41), tok(0x42)])
    r = run.request({"cmd": "subscribe", "topic": "news", "ids": ids[:2]})
    assert r["ok"] and r["succeeded"] == 2, r
    r = run("--topic", "news", "--message", "extra", "--async", "--idempotency-key", "ed-1")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]["id"]
    again = json.loads(run("--topic", "news", "--message", "extra", "--idempotency-key", "ed-1").stdout)
    assert again["job"]["id"] == job and again["duplicate"] is True
    deadline = time.monotonic() + 30
    st = {}
    while time.monotonic() < deadline:
        st = json.loads(run("--job", job).stdout)
        st = st.get("job", st)
        if st.get("state") == "done":
            break
        time.sleep(0.2)
    assert (st["state"], st["devices"], st["sent"]) == ("done", 2, 2), st
    assert sorted(x["token"] for x in fake.received()) == [tok(0x40), tok(0x41)]
    later = json.loads(run("--topic", "news", "--message", "later", "--send-at", str(int(time.time()) + 3600)).stdout)
    assert later["job"]["state"] == "scheduled"


def test_follow_stops_at_once_on_sigterm_during_a_long_poll(env):
    # SIGTERM to the script alone (not its process group) while a 30 s long poll is under way:
    # it exits at once, not when the poll ends (sh runs a trap only after a foreground command).
    run, _, _ = env
    p = subprocess.Popen(["sh", SCRIPT, "--follow", "--wait-ms", "30000"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=run.env)
    time.sleep(1.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait(25) == 130
    assert time.monotonic() - t0 < 10
