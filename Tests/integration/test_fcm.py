"""FCM HTTP v1 end to end: the real `pushline` daemon over its socket, against Tests/fakes/fake_fcm.py
(HTTP/2 + TLS on loopback, OAuth2 assertion checked with the service account's public key)."""
import threading
import time

import pytest

from fcm_fake import FakeFCMProcess


def tok(i, prefix="fcm"):
    return f"{prefix}-{i:05d}-" + "x" * 120


@pytest.fixture
def fake(tmp_path):
    f = FakeFCMProcess(tmp_path / "fake", projects=["proj-a", "proj-b"])
    yield f
    f.stop()


@pytest.fixture
def d(start_daemon, fake):
    return start_daemon(config={"apps": {"default": {"fcm": fake.fcm_block("proj-a")},
                                         "other": {"fcm": fake.fcm_block("proj-b")}}})


def register(d, tokens, app="default", user=None):
    devs = [{"platform": "fcm", "registration_id": t, "app": app, **({"user": user} if user else {})} for t in tokens]
    r = d.call({"cmd": "register", "devices": devs})
    assert r["ok"], r
    return [x["id"] for x in r["devices"]]


def device(d, i):
    r = d.call({"cmd": "devices", "ids": [i]})
    assert r["ok"], r
    return r["devices"][0]


def test_send_maps_notification_and_data(d, fake):
    ids = register(d, [tok(1), tok(2)], user="42")
    r = d.call({"id": 1, "cmd": "send", "users": ["42"], "message": "Your order shipped", "title": "Shop",
                "badge": 2, "extra": {"order": 981, "gift": True, "tags": ["a"]}, "time_to_live": 3600,
                "priority": "high", "collapse_id": "orders"})
    assert r["ok"] and r["sent"] == 2 and r["failed"] == 0, r
    assert sorted(x["id"] for x in r["results"]) == sorted(ids)
    for x in r["results"]:
        assert x["status"] == "sent" and x["platform"] == "fcm"
        assert x["message_id"].startswith("projects/proj-a/messages/")
    msgs = fake.messages()
    assert len(msgs) == 2
    m = msgs[0]["message"]
    assert m["notification"] == {"title": "Shop", "body": "Your order shipped"}
    assert m["data"] == {"order": "981", "gift": "true", "tags": '["a"]'}
    assert m["android"]["ttl"] == "3600s" and m["android"]["priority"] == "HIGH"
    assert m["android"]["collapse_key"] == "orders"
    assert m["apns"]["headers"]["apns-priority"] == "10"
    assert m["apns"]["payload"]["aps"]["badge"] == 2
    assert {x["message"]["token"] for x in msgs} == {tok(1), tok(2)}
    assert fake.stats()["token_requests"] == 1


def test_data_only_message(d, fake):
    register(d, [tok(1)])
    r = d.call({"cmd": "send", "registration_ids": [tok(1)], "platform": "fcm", "message": "hi",
                "use_fcm_notifications": False, "extra": {"k": 1}})
    assert r["ok"] and r["sent"] == 1, r
    m = fake.messages()[0]["message"]
    assert "notification" not in m
    assert m["data"] == {"k": "1", "message": "hi"}


def test_bulk_results_and_deactivation(d, fake):
    tokens = [tok(i) for i in range(300)]
    ids = register(d, tokens)
    fake.control(op="unregister", tokens=[tokens[5]])
    fake.control(op="invalid", tokens=[tokens[6]])
    fake.control(op="sender_mismatch", tokens=[tokens[7]])
    r = d.call({"cmd": "bulk", "ids": ids, "message": "bulk"})
    assert r["ok"] and r["sent"] == 297 and r["failed"] == 3, {k: r[k] for k in ("sent", "failed")}
    by_id = {x["id"]: x for x in r["results"]}
    assert len(by_id) == 300
    for i, reason in ((5, "UNREGISTERED"), (6, "INVALID_ARGUMENT"), (7, "SENDER_ID_MISMATCH")):
        x = by_id[ids[i]]
        assert x["status"] == "failed" and x["reason"] == reason and x["deactivated"] is True, x
        assert x["retryable"] is False
        dev = device(d, ids[i])
        assert dev["active"] is False and dev["inactive_reason"] == reason and dev["inactive_at"]
    assert device(d, ids[8])["active"] is True
    # Deactivated devices are not sent to again.
    r2 = d.call({"cmd": "send", "filter": {"platform": "fcm"}, "message": "again"})
    assert r2["sent"] == 297, r2["sent"]


def test_bad_message_fails_without_deactivating(d, fake):
    ids = register(d, [tok(1)])
    # Pushline does not check Android colors; Google (and the fake) answer INVALID_ARGUMENT about the message.
    r = d.call({"cmd": "send", "ids": ids, "message": "x", "android": {"notification": {"color": "red"}}})
    assert r["ok"] and r["failed"] == 1, r
    x = r["results"][0]
    assert x["reason"] == "INVALID_ARGUMENT" and x.get("deactivated") is not True, x
    assert device(d, ids[0])["active"] is True


def test_payload_too_large_sends_nothing(d, fake):
    ids = register(d, [tok(1)])
    r = d.call({"cmd": "send", "ids": ids, "extra": {"blob": "x" * 5000}})
    assert r["ok"] is False and r["error"]["code"] == "payload_too_large", r
    assert r["error"]["limit"] == 4096 and r["error"]["size"] > 4096
    assert fake.stats()["sends"] == 0


def test_bad_override_block_names_the_field(d, fake):
    ids = register(d, [tok(1)])
    r = d.call({"cmd": "send", "ids": ids, "message": "x", "android": {"ttl": "one hour"}})
    assert r["ok"] is False and r["error"]["code"] == "invalid_argument"
    assert r["error"]["field"] == "android.ttl"
    r = d.call({"cmd": "send", "ids": ids, "message": "x", "extra": {"from": "me"}})
    assert r["ok"] is False and r["error"]["field"] == "extra.from"
    assert fake.stats()["sends"] == 0


def test_raw_blocks_pass_through(d, fake):
    ids = register(d, [tok(1)])
    r = d.call({"cmd": "send", "ids": ids, "message": "x", "priority": "high",
                "android": {"priority": "NORMAL", "restricted_package_name": "com.example"},
                "apns": {"payload": {"aps": {"sound": "default"}}},
                "webpush": {"fcm_options": {"link": "https://example.com"}},
                "fcm_options": {"analytics_label": "spring"}})
    assert r["ok"] and r["sent"] == 1, r
    m = fake.messages()[0]["message"]
    assert m["android"]["priority"] == "NORMAL" and m["android"]["restricted_package_name"] == "com.example"
    assert m["apns"]["payload"]["aps"]["sound"] == "default"
    assert m["webpush"]["fcm_options"]["link"] == "https://example.com"
    assert m["fcm_options"] == {"analytics_label": "spring"}


def test_unavailable_is_retried(d, fake):
    ids = register(d, [tok(1)])
    fake.control(op="fail", count=2, status=503, retry_after=1)
    t0 = time.time()
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    assert r["ok"] and r["sent"] == 1, r
    assert fake.stats()["sends"] == 3
    assert time.time() - t0 >= 2.0  # Retry-After honoured twice


def test_internal_errors_give_up_retryable(d, fake):
    ids = register(d, [tok(1)])
    fake.control(op="fail", count=50, status=500)
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    x = r["results"][0]
    assert x["status"] == "failed" and x["reason"] == "INTERNAL" and x["retryable"] is True
    assert x.get("deactivated") is not True
    assert 2 <= fake.stats()["sends"] <= 5  # bounded attempts


def test_quota_backs_off_that_project_only(d, fake):
    ids = register(d, [tok(1), tok(2)])
    other = register(d, [tok(3)], app="other")
    fake.control(op="quota", count=1, retry_after=61)
    r = d.call({"cmd": "send", "ids": [ids[0]], "message": "x"})
    x = r["results"][0]
    assert x["reason"] == "QUOTA_EXCEEDED" and x["retryable"] is True
    assert x["retry_after_ms"] >= 60000
    sends = fake.stats()["sends"]
    t0 = time.time()
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    assert time.time() - t0 < 2.0  # fails fast instead of holding the command for a minute
    assert all(x["reason"] == "QUOTA_EXCEEDED" and x["retryable"] for x in r["results"])
    assert fake.stats()["sends"] == sends  # Google not called during the backoff
    r = d.call({"cmd": "send", "ids": other, "message": "x"})
    assert r["sent"] == 1, r  # the other app (project) is not blocked


def test_third_party_auth_error_points_at_apns_credentials(d, fake):
    ids = register(d, [tok(1)])
    fake.control(op="third_party_auth", tokens=[tok(1)])
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    x = r["results"][0]
    assert x["reason"] == "THIRD_PARTY_AUTH_ERROR" and x.get("deactivated") is not True
    assert "APNs" in x["error"] and "Firebase console" in x["error"]
    assert device(d, ids[0])["active"] is True


def test_token_refresh_single_flight_under_concurrent_load(d, fake):
    tokens = [tok(i) for i in range(500)]
    ids = register(d, tokens)
    fake.control(op="token_delay_ms", ms=300)
    r = d.call({"cmd": "bulk", "ids": ids, "message": "x"})
    assert r["sent"] == 500, r["sent"]
    assert fake.stats()["token_requests"] == 1
    # Every access token revoked: the 401s share one refresh, and every message is retried once.
    fake.control(op="expire_tokens")
    r = d.call({"cmd": "bulk", "ids": ids, "message": "y"})
    assert r["sent"] == 500, r["sent"]
    st = fake.stats()
    assert st["token_requests"] == 2 and st["unauthenticated"] >= 1


@pytest.mark.parametrize("limit", [1, 3])
def test_max_connections_of_the_block_caps_its_connections(start_daemon, fake, limit):
    # The other app's block allows 4 connections (the transport is sized for it: 2 loops x 2);
    # this app's allows `limit`. A bulk that would fill 4 connections of 10 streams (the fake
    # holds each send 50 ms) must use only `limit`, the token request included (same origin).
    d = start_daemon(config={"apps": {"default": {"fcm": fake.fcm_block("proj-a", max_connections=limit)},
                                      "other": {"fcm": fake.fcm_block("proj-b", max_connections=4)}},
                             "max_streams_per_connection": 10})
    ids = register(d, [tok(i) for i in range(400)])
    fake.control(op="send_delay_ms", ms=50)
    r = d.call({"cmd": "bulk", "ids": ids, "message": "x"})
    assert r["sent"] == 400, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:5]
    st = fake.stats()
    assert st["connections"] == limit
    assert st["max_concurrent_streams"] <= 10 * limit


def test_concurrent_commands_share_one_token(d, fake):
    ids = register(d, [tok(i) for i in range(40)])
    fake.control(op="token_delay_ms", ms=300)
    out = []

    def one(i):
        c = d.connect()
        out.append(c.call({"cmd": "send", "ids": [ids[i]], "message": "x"}))
        c.close()

    th = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    assert sum(r["sent"] for r in out) == 40
    assert fake.stats()["token_requests"] == 1


def test_dry_run_validates_only(d, fake):
    ids = register(d, [tok(1), tok(2)])
    fake.control(op="unregister", tokens=[tok(2)])
    r = d.call({"cmd": "send", "ids": ids, "message": "x", "dry_run": True})
    assert r["ok"], r
    by = {x["id"]: x for x in r["results"]}
    assert by[ids[0]]["status"] == "sent" and by[ids[0]]["dry_run"] is True
    assert fake.stats()["delivered"] == 0
    assert all(m["validate_only"] for m in fake.messages())
    assert device(d, ids[1])["active"] is True  # a dry run changes nothing


def test_topic_send(d, fake):
    r = d.call({"cmd": "topic", "topic": "/topics/news", "message": "Extra edition", "extra": {"n": 1}})
    assert r["ok"] and r["sent"] == 1, r
    x = r["results"][0]
    assert x["id"] is None and x["platform"] == "fcm" and "news" in x["registration_id"]
    assert x["message_id"].startswith("projects/proj-a/messages/")
    m = fake.messages()[0]["message"]
    assert m["topic"] == "news" and m["data"] == {"n": "1"}


def test_condition_send(d, fake):
    cond = "'a' in topics && ('b' in topics || 'c' in topics)"
    r = d.call({"cmd": "topic", "condition": cond, "message": "x"})
    assert r["ok"] and r["sent"] == 1, r
    assert r["results"][0]["registration_id"] == cond
    assert fake.messages()[0]["message"]["condition"] == cond


def test_bad_topic_and_condition(d, fake):
    r = d.call({"cmd": "topic", "topic": "bad topic", "message": "x"})
    assert r["ok"] is False and r["error"]["code"] == "invalid_argument"
    r = d.call({"cmd": "topic", "condition": "'a' in topics &&", "message": "x"})
    assert r["ok"] is False and r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "condition"
    six = " && ".join(f"'t{i}' in topics" for i in range(6))
    r = d.call({"cmd": "topic", "condition": six, "message": "x"})
    assert r["ok"] is False and "at most 5" in r["error"]["message"]
    assert fake.stats()["sends"] == 0


def test_topic_on_other_app_uses_its_project(d, fake):
    r = d.call({"cmd": "topic", "app": "other", "topic": "news", "message": "x"})
    assert r["ok"] and r["results"][0]["message_id"].startswith("projects/proj-b/")


def test_subscribe_unsubscribe_topics_subscribers(d, fake):
    ids = register(d, [tok(1), tok(2), tok(3)], user="7")
    fake.control(op="unregister", tokens=[tok(3)])
    r = d.call({"cmd": "subscribe", "topic": "news", "users": ["7"]})
    assert r["ok"], r
    by = {x["id"]: x for x in r["results"]}
    assert by[ids[0]]["status"] == "subscribed" and by[ids[1]]["status"] == "subscribed"
    assert by[ids[2]]["status"] == "failed" and by[ids[2]]["reason"] == "NOT_FOUND"
    # Instance ID does not know the token: the device is gone, as for UNREGISTERED.
    assert by[ids[2]]["deactivated"] is True and device(d, ids[2])["active"] is False
    assert sorted(fake.subscriptions()["news"]) == [tok(1), tok(2)]
    d.call({"cmd": "subscribe", "topic": "/topics/sport", "ids": [ids[0]]})

    t = d.call({"cmd": "topics", "ids": [ids[0], ids[1]]})
    assert t["ok"], t
    assert {x["id"]: x["topics"] for x in t["devices"]} == {ids[0]: ["news", "sport"], ids[1]: ["news"]}
    s = d.call({"cmd": "subscribers", "topic": "news"})
    assert sorted(x["id"] for x in s["devices"]) == [ids[0], ids[1]]

    u = d.call({"cmd": "unsubscribe", "topic": "news", "ids": [ids[0]]})
    assert u["ok"] and u["results"][0]["status"] == "unsubscribed", u
    assert fake.subscriptions()["news"] == [tok(2)]
    s = d.call({"cmd": "subscribers", "topic": "news"})
    assert [x["id"] for x in s["devices"]] == [ids[1]]


def test_a_topic_the_registry_would_refuse_never_reaches_google(d, fake):
    # Issue 12, defect 4: a 300-byte topic was subscribed at FCM, then refused by the registry
    # (256 bytes): the client got invalid_argument with the subscription made at Google.
    ids = register(d, [tok(1)])
    long_topic = "t" * 300
    for cmd in ("subscribe", "unsubscribe"):
        r = d.call({"cmd": cmd, "topic": long_topic, "ids": ids})
        assert r["ok"] is False and r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "topic", r
        assert "256" in r["error"]["message"]
    r = d.call({"cmd": "topic", "topic": "/topics/" + long_topic, "message": "x"})
    assert r["ok"] is False and r["error"]["code"] == "invalid_argument", r
    r = d.call({"cmd": "subscribers", "topic": long_topic})
    assert r["ok"] is False and r["error"]["field"] == "topic", r
    st = fake.stats()
    assert st["iid_calls"] == 0 and st["sends"] == 0, st
    assert fake.subscriptions() == {}
    assert d.call({"cmd": "topics", "ids": ids})["devices"][0]["topics"] == []
    # The longest name both accept works end to end.
    edge = "e" * 256
    r = d.call({"cmd": "subscribe", "topic": "/topics/" + edge, "ids": ids})
    assert r["ok"] and r["succeeded"] == 1, r
    assert fake.subscriptions()[edge] == [tok(1)]
    assert d.call({"cmd": "topics", "ids": ids})["devices"][0]["topics"] == [edge]


def test_subscribe_many_is_batched_by_1000(d, fake):
    ids = register(d, [tok(i) for i in range(2500)])
    r = d.call({"cmd": "subscribe", "topic": "big", "ids": ids})
    assert r["ok"] and r["succeeded"] == 2500, {k: r.get(k) for k in ("succeeded", "failed")}
    assert fake.stats()["iid_calls"] == 3
    assert len(fake.subscriptions()["big"]) == 2500


def test_restart_reuses_the_stored_token_and_keeps_sending(d, fake):
    # The access token is kept in the database (shared by a fleet): a restart uses it while it is
    # good, and fetches a new one once Google refuses it.
    ids = register(d, [tok(1)])
    assert d.call({"cmd": "send", "ids": ids, "message": "x"})["sent"] == 1
    d.restart()
    assert d.call({"cmd": "send", "ids": ids, "message": "x"})["sent"] == 1
    assert fake.stats()["token_requests"] == 1
    fake.control(op="expire_tokens")
    d.restart()
    assert d.call({"cmd": "send", "ids": ids, "message": "x"})["sent"] == 1
    assert fake.stats()["token_requests"] == 2


def test_bad_service_account_stops_startup(start_daemon, fake, tmp_path):
    bad = tmp_path / "bad-sa.json"
    bad.write_text('{"type": "service_account", "project_id": "p"}')
    with pytest.raises(RuntimeError) as e:
        start_daemon(config={"apps": {"default": {"fcm": {"service_account_path": str(bad)}}}})
    assert "apps.default.fcm.service_account_path" in str(e.value)


def test_logs_never_show_tokens_or_keys(start_daemon, fake):
    d = start_daemon(config={"log_level": "trace", "apps": {"default": {"fcm": fake.fcm_block("proj-a")}}})
    ids = register(d, [tok(1), tok(2)])
    fake.control(op="unregister", tokens=[tok(2)])
    fake.control(op="quota", count=1, tokens=[tok(1)])
    d.call({"cmd": "send", "ids": ids, "message": "x"})
    fake.control(op="expire_tokens")
    d.call({"cmd": "topic", "topic": "news", "message": "x"})
    d.stop()
    logs = d.logs()
    assert "ya29.fake-" not in logs  # access tokens
    assert "PRIVATE KEY" not in logs and "eyJ" not in logs  # key, signed assertion
    assert tok(1) not in logs and tok(2) not in logs  # full registration tokens


@pytest.mark.parametrize("form", ["retry_after", "retry_after_date"])
def test_long_retry_after_is_not_waited_for(d, fake, form):
    # RFC 9110: Retry-After is delay-seconds or an HTTP-date; two minutes is too long to wait:
    # the result says when to retry.
    ids = register(d, [tok(1)])
    fake.control(op="fail", count=1, status=503, **{form: 120})
    t0 = time.time()
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    assert time.time() - t0 < 5
    x = r["results"][0]
    assert x["reason"] == "UNAVAILABLE" and x["retryable"] is True
    assert 110000 <= x["retry_after_ms"] <= 125000, x


def test_short_retry_after_date_is_waited_for(d, fake):
    ids = register(d, [tok(1)])
    fake.control(op="fail", count=1, status=503, retry_after_date=2)
    t0 = time.time()
    r = d.call({"cmd": "send", "ids": ids, "message": "x"})
    assert r["sent"] == 1, r
    assert time.time() - t0 >= 0.9


def test_apps_sharing_a_service_account_share_the_token(start_daemon, fake):
    block = fake.fcm_block("proj-a")
    d = start_daemon(config={"apps": {"shop": {"fcm": block}, "news": {"fcm": block}}})
    a = register(d, [tok(1)], app="shop")
    b = register(d, [tok(2)], app="news")
    assert d.call({"cmd": "send", "ids": a + b, "message": "x"})["sent"] == 2
    assert fake.stats()["token_requests"] == 1
