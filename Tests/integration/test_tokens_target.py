"""The `tokens` target (issue 16): sends to tokens the app keeps in its own tables, without
the registry. The real daemon against the fake APNs and the fake WebPush service."""
import json

import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
from webwns_helpers import vapid, webpush_block, webpush_fake  # noqa: F401  (fixtures)


def tok(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
def apns():
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    yield f
    f.stop()


def test_send_to_unregistered_tokens_writes_nothing(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    dead = tok(3)
    later = 2_000_000_000_000
    apns.control({"unregister": [{"token": dead, "timestamp": later}]})
    apns.control({"fail": [{"token": tok(4), "status": 429, "reason": "TooManyRequests", "count": -1}]})
    tokens = [tok(1), tok(2).upper(), dead, tok(4)]
    r = d.call({"cmd": "send", "tokens": tokens, "platform": "apns", "message": "hi"})
    assert r["ok"] and (r["sent"], r["failed"]) == (2, 2), r
    by = {x["registration_id"]: x for x in r["results"]}
    assert set(by) == {tok(1), tok(2), dead, tok(4)}  # APNs tokens in canonical (lowercase) form
    assert all(x["id"] is None and x["app"] == "default" and x["platform"] == "apns" for x in r["results"])
    assert by[tok(1)]["status"] == "sent" and by[tok(1)]["apns_id"]
    # A dead token is reported (class invalid_token) for the app's own tables; nothing is deactivated.
    assert by[dead]["reason"] == "Unregistered" and by[dead]["reason_class"] == "invalid_token"
    assert by[dead]["deactivated"] is False and "still_active" not in by[dead]
    assert by[tok(4)]["reason_class"] == "rate_limited" and by[tok(4)]["retryable"] is True
    assert sorted(x["token"] for x in apns.received() if x["status"] == 200) == [tok(1), tok(2)]
    # Nothing was written to the registry.
    assert d.call({"cmd": "devices"})["devices"] == []
    assert d.call({"cmd": "stats"})["devices"]["total"] == 0
    # bulk and results options work the same way.
    r = d.call({"cmd": "bulk", "tokens": [tok(5), dead], "platform": "apns", "message": "x", "results": "failed"})
    assert (r["sent"], r["failed"]) == (1, 1) and [x["registration_id"] for x in r["results"]] == [dead], r


@pytest.mark.parametrize("request_, field", [
    ({"tokens": [tok(1)], "message": "x"}, "platform"),
    ({"tokens": "abc", "platform": "apns", "message": "x"}, "tokens"),
    ({"tokens": [tok(1), "nothex"], "platform": "apns", "message": "x"}, "tokens[1]"),
    ({"tokens": [tok(1)], "ids": [1], "platform": "apns", "message": "x"}, "ids"),
    ({"tokens": [{"endpoint": "https://push.example/x", "p256dh": "AAAA", "auth": "A" * 22}], "platform": "webpush",
      "message": "x"},
     "tokens[0].p256dh"),
    ({"tokens": ["https://push.example/x"], "platform": "webpush", "message": "x"}, "tokens[0]"),
])
def test_bad_tokens_are_refused_naming_the_entry(start_daemon, apns, request_, field):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    r = d.call({"cmd": "send", **request_})
    assert r["ok"] is False and r["error"]["code"] == "invalid_argument" and r["error"]["field"] == field, r
    assert apns.received() == []


def test_tokens_need_a_configured_provider_and_no_subscriptions(daemon):
    r = daemon.call({"cmd": "send", "tokens": [tok(1)], "platform": "apns", "message": "x"})
    assert r["error"]["code"] == "provider_not_configured", r
    r = daemon.call({"cmd": "subscribe", "topic": "news", "tokens": [tok(1)], "platform": "apns"})
    assert r["error"]["field"] == "tokens", r


def test_webpush_subscriptions_without_the_registry(start_daemon, webpush_fake, vapid):  # noqa: F811
    d = start_daemon(config={"apps": {"default": {"webpush": webpush_block(webpush_fake, vapid[0])}}})
    subs = webpush_fake.control("POST", "/subscribe", {"count": 2})
    tokens = [{"endpoint": s["endpoint"], "p256dh": s["p256dh"], "auth": s["auth"]} for s in subs]
    r = d.call({"cmd": "send", "tokens": tokens, "platform": "webpush", "message": "Your order shipped"})
    assert r["ok"] and r["sent"] == 2, r
    for s in subs:
        [rec] = webpush_fake.received(s["id"])
        assert rec["ok"] and json.loads(rec["plaintext"])["message"] == "Your order shipped"
    assert d.call({"cmd": "devices"})["devices"] == []


def test_more_tokens_than_a_chunk_go_through_the_pipeline(start_daemon, apns):
    # Over 5,000 tokens: sent chunk by chunk (as registration_ids are), results still complete.
    config = {"apps": {"default": {"apns": apns.apns_block()}}, "max_line_bytes": 4 << 20}
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, 5_502)]
    dead = tokens[5_300]
    apns.control({"fail": [{"token": dead, "status": 400, "reason": "BadDeviceToken", "count": -1}]})
    r = d.call({"cmd": "bulk", "tokens": tokens, "platform": "apns", "message": "big", "results": "failed"})
    assert r["ok"] and (r["sent"], r["failed"]) == (len(tokens) - 1, 1), {k: r.get(k) for k in ("sent", "failed")}
    assert [(x["registration_id"], x["id"], x["reason_class"]) for x in r["results"]] == [(dead, None, "invalid_token")]
    assert d.call({"cmd": "stats"})["devices"]["total"] == 0
