"""Protocol 1.1 (issue 16): mistakes that reached the wrong devices are refused, and the
ambiguities a client author met are settled. The real daemon over its socket; sends go to
the fake APNs and FCM (HTTP/2 + TLS)."""
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


def register(d, tokens, platform="apns", **more):
    r = d.call({"cmd": "register", "devices": [{"platform": platform, "registration_id": t, **more} for t in tokens]})
    assert r["ok"], r
    return [x["id"] for x in r["devices"]]


def test_ping_reports_protocol_1_1(daemon):
    assert daemon.call({"cmd": "ping"})["protocol"] == "1.3"


# -- an unknown app is refused, naming the configured apps --------------------------------

def test_register_for_an_unknown_app_is_refused_and_writes_nothing(start_daemon):
    d = start_daemon({"apps": {"default": {}, "shop": {}}})
    r = d.call({"cmd": "register", "platform": "apns", "registration_id": tok(1), "app": "shpo"})
    assert r["ok"] is False
    e = r["error"]
    assert e["code"] == "invalid_argument" and e["field"] == "app", e
    assert e["apps"] == ["default", "shop"] and "default, shop" in e["message"] and "shpo" in e["message"]
    r = d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": tok(2)},
                                               {"platform": "apns", "registration_id": tok(3), "app": "nope"}]})
    assert r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "devices[1].app", r
    assert d.call({"cmd": "devices"})["devices"] == []
    # A configured app without credentials is still accepted (credentials may come later).
    assert d.call({"cmd": "register", "platform": "apns", "registration_id": tok(1), "app": "shop"})["ok"]


@pytest.mark.parametrize("request_, field", [
    ({"cmd": "send", "users": ["1"], "app": "nope", "message": "x"}, "app"),
    ({"cmd": "send", "filter": {"app": "nope"}, "message": "x"}, "filter.app"),
    ({"cmd": "send", "registration_ids": [tok(1)], "platform": "apns", "app": "nope", "message": "x"}, "app"),
    ({"cmd": "bulk", "messages": [{"users": ["1"], "message": "a"},
                                  {"users": ["1"], "app": "nope", "message": "b"}]}, "messages[1].app"),
    ({"cmd": "topic", "topic": "news", "app": "nope", "message": "x"}, "app"),
    ({"cmd": "subscribe", "topic": "news", "users": ["1"], "app": "nope"}, "app"),
])
def test_send_to_an_unknown_app_is_refused(daemon, request_, field):
    register(daemon, [tok(1)], user="1")
    r = daemon.call(request_)
    assert r["ok"] is False, r
    e = r["error"]
    assert e["code"] == "provider_not_configured" and e["field"] == field and e["app"] == "nope", e
    assert e["apps"] == ["default"] and "configured apps: default" in e["message"]


# -- filter: {} is not a broadcast; {"all": true} is --------------------------------------

def test_empty_filter_is_refused_and_all_true_broadcasts(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    register(d, [tok(1), tok(2)], user="1")
    register(d, [tok(3)], user="2")
    r = d.call({"cmd": "send", "filter": {}, "message": "x"})
    assert r["ok"] is False and r["error"]["field"] == "filter" and "all" in r["error"]["message"], r
    for bad in ({"all": False}, {"all": True, "user": "1"}, {"all": "yes"}):
        r = d.call({"cmd": "send", "filter": bad, "message": "x"})
        assert r["ok"] is False and r["error"]["field"] == "filter.all", (bad, r)
    assert apns.received() == []
    r = d.call({"cmd": "send", "filter": {"all": True}, "message": "everyone"})
    assert r["ok"] and r["sent"] == 3, r
    r = d.call({"cmd": "send", "filter": {"user": "2"}, "message": "two"})
    assert r["sent"] == 1 and r["results"][0]["registration_id"] == tok(3)


def test_app_with_ids_is_refused(daemon):
    [i] = register(daemon, [tok(1)])
    r = daemon.call({"cmd": "send", "ids": [i], "app": "default", "message": "x"})
    assert r["ok"] is False and r["error"]["field"] == "app" and "ids" in r["error"]["message"], r
    r = daemon.call({"cmd": "bulk", "messages": [{"ids": [i], "app": "default", "message": "x"}]})
    assert r["ok"] is False and r["error"]["field"] == "messages[0].app", r


# -- update of registration_id keeps the id and the topic subscriptions --------------------

def test_update_registration_id_keeps_id_and_topics(start_daemon, fcm):
    d = start_daemon({"apps": {"default": {"fcm": fcm.fcm_block("proj-a")}}})
    [i, j] = register(d, [ftok(1), ftok(2)], platform="fcm", user="7", name="Pixel")
    assert d.call({"cmd": "subscribe", "topic": "news", "ids": [i]})["succeeded"] == 1
    r = d.call({"cmd": "update", "device": i, "registration_id": ftok(3)})
    assert r["ok"], r
    dev = r["device"]
    assert (dev["id"], dev["registration_id"], dev["user"], dev["name"]) == (i, ftok(3), "7", "Pixel")
    assert r["resubscribed"] == [{"topic": "news", "status": "subscribed"}], r
    assert d.call({"cmd": "topics", "ids": [i]})["devices"] == [{"id": i, "topics": ["news"]}]
    assert ftok(3) in fcm.subscriptions()["news"]
    # The old token names nothing any more; the new one names the same device.
    r = d.call({"cmd": "send", "registration_ids": [ftok(1), ftok(3)], "platform": "fcm", "message": "x"})
    got = sorted((x["registration_id"], x["id"], x["status"]) for x in r["results"])
    assert got == [(ftok(1), None, "failed"), (ftok(3), i, "sent")], r
    # Named by token, the new one is new_registration_id.
    r = d.call({"cmd": "update", "registration_id": ftok(3), "platform": "fcm", "new_registration_id": ftok(4)})
    assert r["ok"] and r["device"]["id"] == i and r["device"]["registration_id"] == ftok(4), r
    # Another device's token: refused, nothing changed.
    r = d.call({"cmd": "update", "device": i, "registration_id": ftok(2)})
    assert r["error"]["code"] == "duplicate_registration" and r["error"]["field"] == "registration_id", r
    assert r["error"]["device"] == j and ftok(2) not in r["error"]["message"]
    r = d.call({"cmd": "update", "device": i, "registration_id": "has space"})
    assert r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "registration_id", r
    assert d.call({"cmd": "devices", "ids": [i]})["devices"][0]["registration_id"] == ftok(4)


def test_update_can_reassign_a_device_to_another_user(daemon):
    [i] = register(daemon, [tok(1)], user="A", name="A's phone")
    r = daemon.call({"cmd": "update", "registration_id": tok(1), "platform": "apns", "user": "B", "name": None})
    assert r["ok"] and r["device"]["user"] == "B" and r["device"]["name"] is None and r["device"]["id"] == i


# -- results: "failed" / "none", reason_class, message_index ------------------------------

def test_results_failed_and_none_keep_the_counts(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    tokens = [tok(i) for i in range(1, 21)]
    register(d, tokens)
    apns.control({"fail": [{"token": tokens[4], "status": 400, "reason": "BadExpirationDate", "count": -1}]})
    base = {"cmd": "send", "platform": "apns", "registration_ids": tokens + [tok(99)], "message": "x"}
    r = d.call({**base, "results": "failed"})
    assert (r["sent"], r["failed"]) == (19, 2), r
    assert sorted(x["registration_id"] for x in r["results"]) == sorted([tokens[4], tok(99)])
    assert all(x["status"] == "failed" for x in r["results"])
    r = d.call({**base, "results": "none"})
    assert (r["sent"], r["failed"], r["results"]) == (19, 2, []), r
    r = d.call({**base, "cmd": "bulk", "results": "all"})
    assert len(r["results"]) == 21
    r = d.call({**base, "results": "some"})
    assert r["error"]["field"] == "results", r
    # A send to users goes through the paged pipeline: the option holds there too.
    register(d, [tok(200 + i) for i in range(5)], user="u")
    r = d.call({"cmd": "send", "users": ["u"], "message": "x", "results": "failed"})
    assert (r["sent"], r["failed"], r["results"]) == (5, 0, []), r


def test_failed_results_carry_a_reason_class(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    tokens = [tok(i) for i in range(1, 6)]
    ids = register(d, tokens)
    apns.control({"fail": [{"token": tokens[0], "status": 400, "reason": "BadDeviceToken", "count": -1},
                           {"token": tokens[1], "status": 429, "reason": "TooManyRequests", "count": -1},
                           {"token": tokens[2], "status": 503, "reason": "ServiceUnavailable", "count": -1},
                           {"token": tokens[3], "status": 400, "reason": "BadExpirationDate", "count": -1}]})
    r = d.call({"cmd": "send", "ids": ids + [999999], "message": "x"})
    by = {x["id"]: x for x in r["results"]}
    assert by[ids[0]]["reason_class"] == "invalid_token"
    assert by[ids[1]]["reason_class"] == "rate_limited"
    assert by[ids[2]]["reason_class"] == "provider_error"
    assert by[ids[3]]["reason_class"] == "bad_request"
    assert by[999999]["reason_class"] == "not_registered"
    # An id that names no device has no platform and no token (DeliveryResult.Target.unknownId).
    assert by[999999]["platform"] is None and by[999999]["registration_id"] is None
    assert "reason_class" not in by[ids[4]] and by[ids[4]]["status"] == "sent"
    r = d.call({"cmd": "send", "ids": [ids[0]], "message": "x"})
    assert r["results"][0]["reason"] == "inactive" and r["results"][0]["reason_class"] == "not_registered"


def test_transport_failure_is_classed_transport(start_daemon):
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}"])
    try:
        d = start_daemon({"apps": {"default": {"apns": f.apns_block(request_timeout_ms=3000)}}})
        ids = register(d, [tok(1)])
    finally:
        f.stop()
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    assert r["results"][0]["reason_class"] == "transport", r


def test_bulk_messages_results_carry_message_index(start_daemon, apns):
    d = start_daemon({"apps": {"default": {"apns": apns.apns_block()}}})
    [a, b] = register(d, [tok(1), tok(2)])
    r = d.call({"cmd": "bulk", "messages": [{"ids": [a], "message": "first"}, {"ids": [b], "message": "second"}]})
    assert r["ok"], r
    got = {x["id"]: (x["message"], x["message_index"]) for x in r["results"]}
    assert got == {a: (0, 0), b: (1, 1)}
