"""Topics on every platform (issue 16): APNs/WebPush/WNS devices subscribe in the registry,
`topic` reaches them by fan-out (FCM still through Google's topic API), `condition` is
evaluated over the registry's topics. The real daemon against the fake APNs and FCM."""
import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
from fcm_fake import FakeFCMProcess


def tok(i: int) -> str:
    return f"{i:064x}"


def ftok(i: int) -> str:
    return f"fcm-{i:05d}-" + "x" * 120


@pytest.fixture
def apns():
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    yield f
    f.stop()


@pytest.fixture
def fcm(tmp_path):
    f = FakeFCMProcess(tmp_path / "fake", projects=["proj-a"])
    yield f
    f.stop()


def register(d, platform, tokens, **more):
    r = d.call({"cmd": "register", "devices": [{"platform": platform, "registration_id": t, **more} for t in tokens]})
    assert r["ok"], r
    return [x["id"] for x in r["devices"]]


def apns_tokens(fake, since=0):
    return sorted(x["token"] for x in fake.received()[since:] if x["status"] == 200)


def test_subscribe_and_topic_reach_every_platform(start_daemon, apns, fcm):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block(), "fcm": fcm.fcm_block("proj-a")}}})
    a, b = register(d, "apns", [tok(1), tok(2)], user="1")
    [f] = register(d, "fcm", [ftok(1)], user="1")
    r = d.call({"cmd": "subscribe", "topic": "news", "users": ["1"]})
    assert r["ok"] and r["succeeded"] == 3 and r["failed"] == 0, r
    assert {x["id"]: x["status"] for x in r["results"]} == {a: "subscribed", b: "subscribed", f: "subscribed"}
    assert fcm.subscriptions()["news"] == [ftok(1)]  # FCM at Google as before
    t = d.call({"cmd": "topics", "ids": [a, b, f]})
    assert {x["id"]: x["topics"] for x in t["devices"]} == {a: ["news"], b: ["news"], f: ["news"]}
    s = d.call({"cmd": "subscribers", "topic": "news"})
    assert sorted(x["id"] for x in s["devices"]) == [a, b, f]

    r = d.call({"cmd": "topic", "topic": "news", "message": "Extra edition"})
    assert r["ok"] and (r["sent"], r["failed"]) == (3, 0), r
    assert r["results"][0]["registration_id"] == "/topics/news" and r["results"][0]["platform"] == "fcm"
    assert sorted(x["id"] for x in r["results"][1:]) == [a, b]
    assert apns_tokens(apns) == [tok(1), tok(2)]

    # A condition is evaluated over the registry's topics for the APNs devices.
    assert d.call({"cmd": "subscribe", "topic": "sport", "ids": [a]})["succeeded"] == 1
    seen = len(apns.received())
    r = d.call({"cmd": "topic", "condition": "'news' in topics && !('sport' in topics)", "message": "x"})
    assert r["ok"] and [x["id"] for x in r["results"][1:]] == [b], r
    assert apns_tokens(apns, seen) == [tok(2)]
    seen = len(apns.received())
    r = d.call({"cmd": "topic", "condition": "'sport' in topics || 'weather' in topics", "message": "x"})
    assert [x["id"] for x in r["results"][1:]] == [a], r
    assert apns_tokens(apns, seen) == [tok(1)]

    # Unsubscribed and inactive devices are not reached.
    assert d.call({"cmd": "unsubscribe", "topic": "news", "ids": [a]})["results"][0]["status"] == "unsubscribed"
    d.call({"cmd": "update", "device": b, "active": False})
    seen = len(apns.received())
    r = d.call({"cmd": "topic", "topic": "news", "message": "x"})
    assert (r["sent"], len(r["results"])) == (1, 1), r  # only the FCM topic
    assert apns_tokens(apns, seen) == []


def test_topic_without_fcm_credentials_fans_out_to_the_others(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    ids = register(d, "apns", [tok(i) for i in range(1, 8)])
    assert d.call({"cmd": "subscribe", "topic": "deals", "ids": ids[:5]})["succeeded"] == 5
    r = d.call({"cmd": "topic", "topic": "deals", "message": "Sale"})
    assert r["ok"] and (r["sent"], r["failed"]) == (5, 0), r
    assert sorted(x["id"] for x in r["results"]) == ids[:5]
    assert apns_tokens(apns) == sorted(tok(i) for i in range(1, 6))
    # No subscriber and no FCM: as before, provider_not_configured.
    r = d.call({"cmd": "topic", "topic": "empty", "message": "x"})
    assert r["error"]["code"] == "provider_not_configured" and r["error"]["platform"] == "fcm", r
