"""`topic` with `"async": true` (issue 13): refused before queueing as a synchronous `topic` is,
then Google's topic message once (the app has FCM) and the registry's APNs subscribers in
chunks through the outbox, with `send_at`, `idempotency_key`, `job` results, restarts. The real
daemon against the fake APNs and FCM (HTTP/2 + TLS). Time bounds are 10x or more a healthy run."""
import json
import subprocess
import time

import pytest

from harness import binary
from test_outbox import all_results, wait_job
from test_topics_all_platforms import apns, fcm, ftok, register, tok  # noqa: F401  (fixtures)


def config(apns, fcm=None):
    app = {"apns": apns.apns_block()}
    if fcm is not None:
        app["fcm"] = fcm.fcm_block("proj-a")
    return {"apps": {"default": app}, "max_line_bytes": 16 << 20}


def topic_messages(fcm, topic=None, condition=None):
    out = []
    for m in fcm.messages():
        body = m["message"]["message"] if "message" in m["message"] else m["message"]
        if (topic and body.get("topic") == topic) or (condition and body.get("condition") == condition):
            out.append(m)
    return out


def subscribe_apns(d, n, topic, start=1):
    ids = []
    for s in range(start, start + n, 5000):
        ids += register(d, "apns", [tok(i) for i in range(s, min(start + n, s + 5000))], user="u")
    r = d.call({"cmd": "subscribe", "topic": topic, "users": ["u"]})
    assert r["ok"] and r["failed"] == 0, r
    return ids


def apns_by_token(apns):
    got = {}
    for x in apns.received():
        if x["status"] == 200:
            got.setdefault(x["token"], []).append(x)
    return got


def test_async_topic_sends_the_fcm_topic_once_and_every_apns_subscriber(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    ids = subscribe_apns(d, 30, "news")
    register(d, "apns", [tok(999)])  # not subscribed
    [f] = register(d, "fcm", [ftok(1)])
    assert d.call({"cmd": "subscribe", "topic": "news", "ids": [f]})["succeeded"] == 1
    r = d.call({"cmd": "topic", "topic": "news", "message": "Extra edition", "async": True})
    assert r["ok"] and r["job"]["state"] == "queued", r
    job = wait_job(d, r["job"]["id"])
    # The FCM topic message counts as one device of the job.
    assert (job["devices"], job["sent"], job["failed"], job["pending"], job["canceled"]) == (31, 31, 0, 0, 0), job
    assert job["app"] == "default"
    got = apns_by_token(apns)
    assert sorted(got) == sorted(tok(i) for i in range(1, 31))
    assert all(len(v) == 1 and v[0]["payload"]["aps"]["alert"] == "Extra edition" for v in got.values())
    sent = topic_messages(fcm, topic="news")
    assert len(sent) == 1 and sent[0]["status"] == 200, sent
    # Results: the FCM topic message first (no id, its topic as registration_id), then the subscribers.
    res = all_results(d, r["job"]["id"], limit=7)
    assert res[0]["id"] is None and res[0]["platform"] == "fcm" and res[0]["registration_id"] == "/topics/news", res[0]
    assert res[0]["status"] == "sent" and res[0]["attempts"] == 1 and res[0]["app"] == "default", res[0]
    assert [x["id"] for x in res[1:]] == ids and all(x["status"] == "sent" and x["platform"] == "apns" for x in res[1:])
    # job_done event, as for an async send.
    ev = d.call({"cmd": "events", "after": 0})
    assert [e["job"] for e in ev["events"] if e["type"] == "job_done"] == [r["job"]["id"]], ev


def test_async_topic_condition_without_fcm_and_with_fcm_retries(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    a, b = register(d, "apns", [tok(1), tok(2)])
    assert d.call({"cmd": "subscribe", "topic": "news", "ids": [a, b]})["succeeded"] == 2
    assert d.call({"cmd": "subscribe", "topic": "sport", "ids": [a]})["succeeded"] == 1
    # Google's first two answers are 503: the topic message is retried until it goes out.
    fcm.control(op="fail", count=2, status=503, code="UNAVAILABLE", retry_after=1)
    cond = "'news' in topics && !('sport' in topics)"
    r = d.call({"cmd": "topic", "condition": cond, "message": "x", "async": True})
    assert r["ok"], r
    job = wait_job(d, r["job"]["id"], timeout=120)
    assert (job["devices"], job["sent"], job["failed"]) == (2, 2, 0), job
    assert sorted(apns_by_token(apns)) == [tok(2)]
    assert [m["status"] for m in topic_messages(fcm, condition=cond)][-1] == 200
    res = all_results(d, r["job"]["id"])
    assert res[0]["registration_id"] == cond and res[0]["status"] == "sent" and res[0]["attempts"] >= 1, res


def test_async_topic_fcm_outage_retries_the_topic_message_to_its_deadline(start_daemon, apns, fcm):
    # Google keeps answering 503: the topic message is retried by the outbox (attempts > 1)
    # until the notification's deadline, then fails `expired`; the APNs subscribers are sent.
    d = start_daemon(config(apns, fcm))
    subscribe_apns(d, 3, "news")
    fcm.control(op="fail", count=100000, status=503, code="UNAVAILABLE")
    r = d.call({"cmd": "topic", "topic": "news", "message": "x", "async": True, "time_to_live": 5})
    job = wait_job(d, r["job"]["id"], timeout=120)
    assert (job["devices"], job["sent"], job["failed"]) == (4, 3, 1), job
    res = all_results(d, r["job"]["id"])
    head = res[0]
    assert head["registration_id"] == "/topics/news" and head["status"] == "failed", head
    assert head["reason"] == "expired" and head["attempts"] >= 2 and head["retryable"] is False, head
    assert len(topic_messages(fcm, topic="news")) >= 2
    assert sorted(apns_by_token(apns)) == sorted(tok(i) for i in range(1, 4))


def test_async_topic_without_fcm_fans_out_only(start_daemon, apns):
    d = start_daemon(config(apns))
    ids = subscribe_apns(d, 5, "deals")
    r = d.call({"cmd": "topic", "topic": "deals", "message": "Sale", "async": True})
    job = wait_job(d, r["job"]["id"])
    assert (job["devices"], job["sent"]) == (5, 5), job
    assert [x["id"] for x in all_results(d, r["job"]["id"])] == ids
    # No subscriber and no FCM: refused as the synchronous topic refuses it, nothing queued.
    a = d.call({"cmd": "topic", "topic": "empty", "message": "x", "async": True})
    s = d.call({"cmd": "topic", "topic": "empty", "message": "x"})
    assert a["error"]["code"] == s["error"]["code"] == "provider_not_configured" and a["error"]["platform"] == "fcm", (a, s)
    assert len(d.call({"cmd": "jobs"})["jobs"]) == 1


def test_async_topic_refuses_what_sync_refuses_and_queues_nothing(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    subscribe_apns(d, 2, "news")
    cases = [
        {"cmd": "topic", "condition": "'a' in topics &&", "message": "x"},
        {"cmd": "topic", "condition": "'a' in topics || 'b' in topics || 'c' in topics || 'd' in topics || 'e' in topics || 'f' in topics",
         "message": "x"},
        {"cmd": "topic", "topic": "news", "app": "nope", "message": "x"},
        {"cmd": "topic", "topic": "bad topic!", "message": "x"},
        {"cmd": "topic", "message": "x"},
        {"cmd": "topic", "topic": "news", "condition": "'a' in topics", "message": "x"},
        {"cmd": "topic", "topic": "news", "message": "x", "badge": "many"},
        {"cmd": "topic", "topic": "news", "message": "x" * 5000},
        {"cmd": "topic", "topic": "news", "message": "x", "colour": "red"},
        {"cmd": "topic", "topic": "news", "message": "x", "results": "none"},
    ]
    for req in cases:
        s = d.call(req)
        a = d.call({**req, "async": True, "idempotency_key": "k1", "send_at": int(time.time())})
        assert not s["ok"] and not a["ok"], (req, s, a)
        assert a["error"]["code"] == s["error"]["code"], (req, s, a)
        assert a["error"].get("field") == s["error"].get("field"), (req, s, a)
    for req, field in [({"send_at": "soon"}, "send_at"), ({"idempotency_key": "k" * 256}, "idempotency_key"),
                       ({"async": "yes"}, "async")]:
        a = d.call({"cmd": "topic", "topic": "news", "message": "x", "async": True, **req})
        assert a["error"]["code"] == "invalid_argument" and field in a["error"]["message"], a
    assert d.call({"cmd": "jobs"})["jobs"] == []
    assert apns.received() == [] and topic_messages(fcm, topic="news") == []
    # "async": false is the synchronous topic.
    r = d.call({"cmd": "topic", "topic": "news", "message": "now", "async": False})
    assert r["ok"] and r["sent"] == 3 and "job" not in r, r


def test_async_topic_send_at_and_idempotency(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    subscribe_apns(d, 4, "news")
    at = int(time.time()) + 3
    req = {"cmd": "topic", "topic": "news", "message": "later", "async": True, "send_at": at, "idempotency_key": "ed-7"}
    r = d.call(req)
    assert r["ok"] and r["job"]["state"] == "scheduled", r
    again = d.call(req)
    assert again["ok"] and again["duplicate"] is True and again["job"]["id"] == r["job"]["id"], again
    d.restart()
    assert d.call({"cmd": "job", "job": r["job"]["id"]})["job"]["state"] == "scheduled"
    assert d.call(req)["duplicate"] is True
    assert apns.received() == [] and topic_messages(fcm, topic="news") == []
    job = wait_job(d, r["job"]["id"], timeout=60)
    assert (job["devices"], job["sent"]) == (5, 5), job
    assert min(x["time"] for x in apns.received()) >= at
    time.sleep(1.0)
    got = apns_by_token(apns)
    assert len(got) == 4 and all(len(v) == 1 for v in got.values())
    assert len(topic_messages(fcm, topic="news")) == 1
    assert len(d.call({"cmd": "jobs"})["jobs"]) == 1


def test_async_topic_cancel(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    subscribe_apns(d, 3, "news")
    r = d.call({"cmd": "topic", "topic": "news", "message": "never", "async": True, "send_at": int(time.time()) + 30})
    c = d.call({"cmd": "cancel", "job": r["job"]["id"]})
    assert c["ok"] and c["job"]["state"] == "canceled", c
    time.sleep(1.0)
    assert apns.received() == [] and topic_messages(fcm, topic="news") == []


def test_async_topic_kill_9_in_the_middle_loses_nothing(start_daemon, apns, fcm):
    d = start_daemon(config(apns, fcm))
    n = 12000
    subscribe_apns(d, n, "news")
    apns.control({"delay_ms": 150})
    r = d.call({"cmd": "topic", "topic": "news", "message": "survive", "async": True})
    assert r["ok"], r
    for threshold in (2000, 6000):
        deadline = time.time() + 120
        while time.time() < deadline and len(apns.received()) < threshold:
            time.sleep(0.02)
        d.kill()
        d._conn = None
        d._spawn(True)
    job = wait_job(d, r["job"]["id"], timeout=300)
    assert (job["devices"], job["sent"], job["failed"], job["pending"]) == (n + 1, n + 1, 0, 0), job
    assert sorted(apns_by_token(apns)) == sorted(tok(i) for i in range(1, n + 1))
    ok = [m for m in topic_messages(fcm, topic="news") if m["status"] == 200]
    assert 1 <= len(ok) <= 3, ok  # once, or again only if it was on the wire at a kill


def test_job_retention_takes_durations(tmp_path):
    for value, ok in [("45s", True), ("30m", True), ("12h", True), ("7d", True), (3600, True),
                      ("7x", False), (0, False), ("abc", False), (True, False), ("367d", False)]:
        p = tmp_path / "c.json"
        p.write_text(json.dumps({"job_retention": value}))
        r = subprocess.run([binary(), "check-config", str(p)], capture_output=True, text=True)
        assert (r.returncode == 0) == ok, (value, r.stdout, r.stderr)
        if not ok:
            assert "job_retention" in r.stdout + r.stderr, (value, r.stdout, r.stderr)
