"""WNS over the daemon socket against the fake WNS (Tests/fakes/fake_wns.py), and a send
to a user whose devices span several platforms."""
import time
import xml.etree.ElementTree as ET

from webwns_helpers import (  # noqa: F401  (fixtures)
    WNS_SECRET, register_channels, register_subscriptions, vapid, webpush_block, webpush_fake, wns_block, wns_fake,
)


def start(start_daemon, fake, **kw):
    return start_daemon(config={"apps": {"default": {"wns": wns_block(fake, **kw)}}})


def test_toast_is_sent_with_status_in_result(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake)
    chans = register_channels(d, wns_fake, 3)
    r = d.call({"cmd": "send", "ids": [dev["id"] for _, dev in chans], "message": "Tom & Jerry <3", "title": "Hi",
                "time_to_live": 120, "collapse_id": "score"})
    assert r["ok"] and r["sent"] == 3, r
    for x in r["results"]:
        assert x["wns_status"] == "received" and x["wns_msg_id"]
    rec = wns_fake.received(chans[0][0])[0]
    assert rec["ok"], rec["error"]
    assert rec["type"] == "wns/toast" and rec["content_type"] == "text/xml"
    texts = [t.text for t in ET.fromstring(rec["body"]).iter("text")]
    assert texts == ["Hi", "Tom & Jerry <3"]
    assert rec["headers"]["x-wns-ttl"] == "120" and rec["headers"]["x-wns-tag"] == "score"
    # One token for all three (cached, single flight).
    assert wns_fake.control("GET", "/stats")["token_requests"] == 1


def test_types_and_payloads(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake)
    (cid, dev), = register_channels(d, wns_fake, 1)
    tile = '<tile><visual><binding template="TileMedium"><text>7</text></binding></visual></tile>'
    for n in ({"wns_type": "raw", "wns_payload": "raw!"}, {"wns_type": "badge", "badge": 4},
              {"wns_type": "tile", "wns_payload": tile}, {"message": "x", "wns": {"group": "g1", "suppress_popup": True}}):
        r = d.call({"cmd": "send", "ids": [dev["id"]], **n})
        assert r["sent"] == 1, (n, r)
    recs = wns_fake.received(cid)
    assert [x["type"] for x in recs] == ["wns/raw", "wns/badge", "wns/tile", "wns/toast"]
    assert all(x["ok"] for x in recs)
    assert recs[0]["body"] == "raw!" and recs[0]["content_type"] == "application/octet-stream"
    assert recs[1]["body"] == '<badge value="4"/>' and recs[2]["body"] == tile
    assert recs[3]["headers"]["x-wns-group"] == "g1" and recs[3]["headers"]["x-wns-suppresspopup"] == "true"
    bad = d.call({"cmd": "send", "ids": [dev["id"]], "wns_type": "toast", "wns_payload": "<tile/>"})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_argument"


def test_statuses_deactivation_and_retries(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake)
    chans = register_channels(d, wns_fake, 5, user="9")
    wns_fake.script(chans[0][0], [{"status": 200, "wns_status": "dropped"}])
    wns_fake.script(chans[1][0], [{"status": 200, "wns_status": "channelthrottled"}])
    wns_fake.control("POST", "/expire", {"id": chans[2][0], "status": 410})
    wns_fake.control("POST", "/expire", {"id": chans[3][0], "status": 404})
    wns_fake.script(chans[4][0], [{"status": 406}, {"status": 429, "headers": {"retry-after": "1"}}, {"status": 500}])
    t0 = time.time()
    r = d.call({"cmd": "send", "users": ["9"], "message": "m"})
    res = {x["id"]: x for x in r["results"]}
    dropped, throttled, expired, missing, retried = (res[dev["id"]] for _, dev in chans)
    assert dropped["status"] == "failed" and dropped["reason"] == "dropped" and dropped["retryable"] is True
    assert dropped["wns_status"] == "dropped" and not dropped.get("deactivated")
    assert throttled["reason"] == "channelthrottled" and throttled["retryable"] is True
    assert expired["status"] == "failed" and expired["deactivated"] is True and expired["wns_error"] == "channel expired"
    assert missing["deactivated"] is True
    assert retried["status"] == "sent" and time.time() - t0 >= 1.0
    assert [x["status"] for x in wns_fake.received(chans[4][0])] == [406, 429, 500, 200]
    active = {x["id"]: x["active"] for x in d.call({"cmd": "devices", "user": "9"})["devices"]}
    assert active == {chans[0][1]["id"]: True, chans[1][1]["id"]: True, chans[2][1]["id"]: False,
                      chans[3][1]["id"]: False, chans[4][1]["id"]: True}


def test_401_refreshes_the_token_once(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake)
    chans = register_channels(d, wns_fake, 4)
    ids = [dev["id"] for _, dev in chans]
    assert d.call({"cmd": "send", "ids": ids, "message": "a"})["sent"] == 4
    wns_fake.control("POST", "/revoke", {})
    r = d.call({"cmd": "send", "ids": ids, "message": "b"})
    assert r["sent"] == 4, r
    assert wns_fake.control("GET", "/stats")["token_requests"] == 2
    assert [x["status"] for x in wns_fake.received(chans[0][0])] == [200, 401, 200]
    # A channel that keeps answering 401 fails after one refresh, not in a loop.
    wns_fake.script(chans[1][0], [{"status": 401}, {"status": 401}])
    r = d.call({"cmd": "send", "ids": [ids[1]], "message": "c"})
    assert r["results"][0]["status"] == "failed" and r["results"][0]["reason"].startswith("unauthorized")


def test_bad_credentials_fail_without_leaking_the_secret(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake, secret="not-the-secret")
    chans = register_channels(d, wns_fake, 2)
    r = d.call({"cmd": "send", "ids": [dev["id"] for _, dev in chans], "message": "m"})
    assert r["failed"] == 2 and all(x["reason"].startswith("token_error") for x in r["results"])
    assert "not-the-secret" not in str(r) and WNS_SECRET not in str(r)
    assert wns_fake.received() == []


def test_user_send_reaches_every_platform_in_one_response(start_daemon, wns_fake, webpush_fake, vapid):
    d = start_daemon(config={"apps": {"default": {
        "wns": wns_block(wns_fake), "webpush": webpush_block(webpush_fake, vapid[0])}}})
    subs = register_subscriptions(d, webpush_fake, 2, user="42")
    chans = register_channels(d, wns_fake, 1, user="42")
    fcm = d.call({"cmd": "register", "platform": "fcm", "registration_id": "fcm-token-" + "y" * 140, "user": "42"})
    assert fcm["ok"], fcm
    register_subscriptions(d, webpush_fake, 1, user="other")
    r = d.call({"id": 77, "cmd": "send", "users": ["42"], "message": "Hello everywhere", "title": "T"})
    assert r["id"] == 77 and r["ok"], r
    assert len(r["results"]) == 4
    by_platform = {}
    for x in r["results"]:
        by_platform.setdefault(x["platform"], []).append(x)
    assert sorted(x["id"] for x in by_platform["webpush"]) == sorted(dev["id"] for _, dev in subs)
    assert all(x["status"] == "sent" for x in by_platform["webpush"])
    assert by_platform["wns"][0]["status"] == "sent" and by_platform["wns"][0]["wns_status"] == "received"
    assert by_platform["fcm"][0]["status"] == "failed" and by_platform["fcm"][0]["reason"] == "provider_not_configured"
    assert r["sent"] == 3 and r["failed"] == 1
    for sid, _ in subs:
        assert [json_msg(x) for x in webpush_fake.received(sid)] == ["Hello everywhere"]
    assert [t.text for t in ET.fromstring(wns_fake.received(chans[0][0])[0]["body"]).iter("text")] == ["T", "Hello everywhere"]


def json_msg(rec):
    import json
    return json.loads(rec["plaintext"])["message"]


def test_dry_run_checks_credentials_and_sends_nothing(start_daemon, wns_fake):
    d = start(start_daemon, wns_fake)
    (cid, dev), = register_channels(d, wns_fake, 1)
    r = d.call({"cmd": "send", "ids": [dev["id"]], "message": "m", "dry_run": True})
    assert r["ok"] and r["results"][0]["status"] == "sent" and r["results"][0]["dry_run"] is True
    assert wns_fake.control("GET", "/stats")["token_requests"] == 1 and wns_fake.received() == []
