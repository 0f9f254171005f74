"""WebPush over the daemon socket against the fake push service (Tests/fakes/fake_webpush.py).

The fake decrypts every body (RFC 8291) with the subscription's private key and verifies
the VAPID JWT, so these tests check what the browser's service worker would receive."""
import json
import os
import stat
import subprocess
import time

from harness import binary
from webwns_helpers import (  # noqa: F401  (fixtures)
    register_subscriptions, vapid, vapid_generate, webpush_block, webpush_fake,
)


def start(start_daemon, fake, key_path, **extra):
    return start_daemon(config={"apps": {"default": {"webpush": webpush_block(fake, key_path, **extra)}}})


def test_vapid_generate_and_show(tmp_path, start_daemon, webpush_fake):
    key_path, app_key = vapid_generate(tmp_path)
    assert key_path == str(tmp_path / "vapid_private.pem")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert open(key_path).read().startswith("-----BEGIN PRIVATE KEY-----")
    assert len(app_key) == 87 and app_key.startswith("B")  # 65-byte point, base64url, 0x04 prefix
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"apps": {"web": {"webpush": webpush_block(webpush_fake, key_path)}}}))
    shown = subprocess.run([binary(), "vapid", "show", "--config", str(cfg), "--app", "web"],
                           capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == app_key
    again = subprocess.run([binary(), "vapid", "generate", "--out", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
    # The key the daemon signs with is the one browsers were given: the fake checks k= against the JWT.
    d = start(start_daemon, webpush_fake, key_path)
    (sid, dev), = register_subscriptions(d, webpush_fake, 1)
    assert d.call({"cmd": "send", "ids": [dev["id"]], "message": "m"})["sent"] == 1
    rec = webpush_fake.received(sid)[0]
    assert rec["ok"] and f"k={app_key}" in rec["headers"]["authorization"]


def test_send_delivers_the_service_worker_json(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0], ttl=600)
    subs = register_subscriptions(d, webpush_fake, 2, user="42")
    subs += register_subscriptions(d, webpush_fake, 1, user="42", std_base64=True)
    r = d.call({"id": 1, "cmd": "send", "users": ["42"], "message": "Your order shipped", "title": "Shop",
                "tag": "order-981", "icon": "/img/icon.png", "url": "https://shop.example/o/981",
                "extra": {"order": 981}, "priority": "high", "webpush_topic": "order981"})
    assert r["ok"] and r["sent"] == 3 and r["failed"] == 0, r
    assert sorted(x["id"] for x in r["results"]) == sorted(dev["id"] for _, dev in subs)
    expected = {"title": "Shop", "message": "Your order shipped", "body": "Your order shipped", "tag": "order-981",
                "icon": "/img/icon.png", "url": "https://shop.example/o/981", "order": 981}
    for sid, _ in subs:
        recs = webpush_fake.received(sid)
        assert len(recs) == 1
        rec = recs[0]
        assert rec["ok"], rec["error"]
        assert json.loads(rec["plaintext"]) == expected
        assert rec["claims"]["aud"] == webpush_fake.origin and rec["claims"]["sub"] == "mailto:ops@example.com"
        assert 0 < rec["claims"]["exp"] - time.time() <= 24 * 3600
        h = rec["headers"]
        assert h["ttl"] == "600" and h["urgency"] == "high" and h["topic"] == "order981"
        assert h["content-encoding"] == "aes128gcm" and rec["size"] <= 4096


def test_raw_payload_and_time_to_live(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    (sid, dev), = register_subscriptions(d, webpush_fake, 1)
    r = d.call({"cmd": "send", "ids": [dev["id"]], "payload": "just text ✓", "time_to_live": 0, "urgency": "low"})
    assert r["sent"] == 1, r
    rec = webpush_fake.received(sid)[0]
    assert rec["plaintext"] == "just text ✓" and rec["headers"]["ttl"] == "0" and rec["headers"]["urgency"] == "low"


def test_gone_and_not_found_deactivate(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    subs = register_subscriptions(d, webpush_fake, 3, user="7")
    webpush_fake.script(subs[0][0], [{"status": 410}])
    webpush_fake.control("POST", "/unsubscribe", {"id": subs[1][0], "status": 404})
    r = d.call({"cmd": "send", "users": ["7"], "message": "hello"})
    by_id = {x["id"]: x for x in r["results"]}
    gone, missing, ok = (by_id[dev["id"]] for _, dev in subs)
    assert gone["status"] == "failed" and gone["deactivated"] is True and gone["retryable"] is False
    assert missing["status"] == "failed" and missing["deactivated"] is True
    assert ok["status"] == "sent"
    listed = {x["id"]: x for x in d.call({"cmd": "devices", "user": "7"})["devices"]}
    assert listed[subs[0][1]["id"]]["active"] is False and listed[subs[0][1]["id"]]["inactive_reason"]
    assert listed[subs[1][1]["id"]]["active"] is False
    assert listed[subs[2][1]["id"]]["active"] is True
    # A user send now reaches only the active subscription.
    r = d.call({"cmd": "send", "users": ["7"], "message": "again"})
    assert [x["id"] for x in r["results"]] == [subs[2][1]["id"]] and r["sent"] == 1


def test_retries_honour_retry_after_and_413_fails(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    subs = register_subscriptions(d, webpush_fake, 3)
    webpush_fake.script(subs[0][0], [{"status": 429, "headers": {"retry-after": "1"}}, {"status": 502}])
    webpush_fake.script(subs[1][0], [{"status": 413}])
    webpush_fake.script(subs[2][0], [{"status": 503}] * 10)
    t0 = time.time()
    r = d.call({"cmd": "send", "ids": [dev["id"] for _, dev in subs], "message": "m"})
    took = time.time() - t0
    res = {x["id"]: x for x in r["results"]}
    assert res[subs[0][1]["id"]]["status"] == "sent"
    assert [x["status"] for x in webpush_fake.received(subs[0][0])] == [429, 502, 201]
    assert took >= 1.0  # Retry-After: 1 was honoured
    big = res[subs[1][1]["id"]]
    assert big["status"] == "failed" and big["reason"] == "payload_too_large" and not big.get("deactivated")
    busy = res[subs[2][1]["id"]]
    assert busy["status"] == "failed" and busy["retryable"] is True
    assert 2 <= len(webpush_fake.received(subs[2][0])) <= 4  # bounded


def test_payload_over_4096_encrypted_is_refused_before_sending(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    (sid, dev), = register_subscriptions(d, webpush_fake, 1)
    r = d.call({"cmd": "send", "ids": [dev["id"]], "payload": "x" * 3994})
    assert r["ok"] is False and r["error"]["code"] == "payload_too_large", r
    assert r["error"]["size"] == 4097 and r["error"]["limit"] == 4096
    assert webpush_fake.received(sid) == []
    assert d.call({"cmd": "send", "ids": [dev["id"]], "payload": "x" * 3993})["sent"] == 1
    assert webpush_fake.received(sid)[0]["size"] == 4096


def test_dry_run_sends_nothing(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    (sid, dev), = register_subscriptions(d, webpush_fake, 1)
    r = d.call({"cmd": "send", "ids": [dev["id"]], "message": "m", "dry_run": True})
    assert r["ok"] and r["results"][0]["status"] == "sent" and r["results"][0].get("dry_run") is True
    assert webpush_fake.received(sid) == []


def test_bulk_to_many_subscriptions(start_daemon, webpush_fake, vapid):
    d = start(start_daemon, webpush_fake, vapid[0])
    subs = register_subscriptions(d, webpush_fake, 150)
    r = d.call({"cmd": "bulk", "filter": {"platform": "webpush"}, "message": "sale", "extra": {"n": 1}})
    assert r["ok"] and r["sent"] == 150 and len(r["results"]) == 150, {k: r[k] for k in r if k != "results"}
    recs = webpush_fake.received()
    assert len(recs) == 150 and all(x["ok"] for x in recs)
    assert {x["id"] for x in recs} == {sid for sid, _ in subs}
    assert all(json.loads(x["plaintext"]) == {"message": "sale", "body": "sale", "n": 1} for x in recs)


def test_vapid_jwt_per_origin_and_cached(start_daemon, webpush_fake, vapid):
    """Two origins (127.0.0.1 and localhost, both the fake): each gets a JWT whose aud is
    its own origin, and the JWT is reused for later sends to the same origin."""
    d = start(start_daemon, webpush_fake, vapid[0])
    subs = webpush_fake.control("POST", "/subscribe", {"count": 2})
    subs[1]["endpoint"] = subs[1]["endpoint"].replace("127.0.0.1", "localhost")
    r = d.call({"cmd": "register", "devices": [
        {"platform": "webpush", "registration_id": s["endpoint"], "p256dh": s["p256dh"], "auth": s["auth"]} for s in subs]})
    ids = [dev["id"] for dev in r["devices"]]
    for text in ("one", "two"):
        assert d.call({"cmd": "send", "ids": ids, "message": text})["sent"] == 2
    a, b = (webpush_fake.received(s["id"]) for s in subs)
    assert all(x["ok"] for x in a + b), [x["error"] for x in a + b]
    assert {x["claims"]["aud"] for x in a} == {webpush_fake.origin}
    assert {x["claims"]["aud"] for x in b} == {webpush_fake.origin.replace("127.0.0.1", "localhost")}
    assert a[0]["headers"]["authorization"] == a[1]["headers"]["authorization"]  # cached
    assert b[0]["headers"]["authorization"] == b[1]["headers"]["authorization"]
    assert a[0]["headers"]["authorization"] != b[0]["headers"]["authorization"]
    assert [json.loads(x["plaintext"])["message"] for x in b] == ["one", "two"]
