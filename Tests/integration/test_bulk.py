"""`bulk` with `messages` under provider latency: every message's devices are in flight together,
as for one `send` (issue 17). The fakes answer each request only after a delay, as a distant
provider does; bounds leave several times the expected duration as headroom."""
import time

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs  # noqa: F401
from fcm_fake import FakeFCMProcess
from test_apns import by_token, cfg, fake, register, start_fake, tok  # noqa: F401  (fixtures)


def test_bulk_of_100_messages_delayed_1s_each_runs_them_concurrently(start_daemon, fake):
    # Before: each message was a chunk of the pipeline, two in flight, so 100 messages answered
    # 1 s later each took about 51 s. Now they are packed into one chunk and sent together (~1 s).
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 101)]
    ids = register(d, tokens)
    fake.control({"delay_ms": 1000})
    started = time.monotonic()
    r = d.connect(timeout=120).call({"cmd": "bulk", "messages": [
        {"ids": [i], "message": f"order {k} shipped", "badge": k} for k, i in enumerate(ids)]})
    took = time.monotonic() - started
    assert r["ok"], r
    assert r["sent"] == 100 and r["failed"] == 0
    # Results in message order, each with its index, device and own notification.
    assert [(x["message"], x["id"]) for x in r["results"]] == list(enumerate(ids))
    got = {x["token"]: x["payload"]["aps"] for x in fake.received()}
    assert all(got[t] == {"alert": f"order {k} shipped", "badge": k} for k, t in enumerate(tokens))
    assert took < 5, f"100 messages delayed 1 s each took {took:.1f} s"


def test_mixed_platform_bulk_under_latency(start_daemon, fake, tmp_path):
    # APNs and FCM messages (and an unknown token, and a message to two devices) in one bulk,
    # both providers answering after 1 s: all in flight together, results in message order.
    fcm = FakeFCMProcess(tmp_path / "fcm")
    try:
        config = cfg(fake)
        config["apps"]["default"]["fcm"] = fcm.fcm_block()
        d = start_daemon(config)
        apns_ids = register(d, [tok(i) for i in range(1, 41)])
        r = d.call({"cmd": "register", "devices": [{"platform": "fcm", "registration_id": f"fcm-{i}"} for i in range(40)]})
        assert r["ok"], r
        fcm_ids = [x["id"] for x in r["devices"]]
        # A token first, so the OAuth token is not part of the timing.
        assert d.call({"cmd": "send", "ids": [fcm_ids[0]], "message": "warm"})["sent"] == 1
        fake.control({"delay_ms": 1000})
        fcm.control(op="send_delay_ms", ms=1000)
        messages = []
        expect = []
        for k in range(40):
            messages.append({"ids": [apns_ids[k]], "message": f"a{k}"})
            expect.append((len(messages) - 1, apns_ids[k]))
            messages.append({"ids": [fcm_ids[k]], "message": f"f{k}"})
            expect.append((len(messages) - 1, fcm_ids[k]))
        messages.append({"ids": [apns_ids[0], fcm_ids[1]], "message": "both"})
        expect += [(len(messages) - 1, apns_ids[0]), (len(messages) - 1, fcm_ids[1])]
        messages.append({"registration_ids": [tok(999)], "platform": "apns", "message": "nobody"})
        started = time.monotonic()
        r = d.connect(timeout=120).call({"cmd": "bulk", "messages": messages})
        took = time.monotonic() - started
        assert r["ok"], r
        assert r["sent"] == 82 and r["failed"] == 1
        assert [(x["message"], x["id"]) for x in r["results"][:-1]] == expect
        last = r["results"][-1]
        assert last["message"] == len(messages) - 1 and last["reason"] == "not_registered"
        assert took < 6, f"mixed bulk took {took:.1f} s"
    finally:
        fcm.stop()


def test_bulk_messages_retries_deactivations_and_dry_runs_per_message(start_daemon, fake):
    # The messages of a bulk share transport batches; each device still gets its own outcome:
    # a 503 retried, a 410 deactivating its device, a dry-run message not sent at all.
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 7)]
    ids = register(d, tokens)
    fake.control({"fail": [{"token": tokens[1], "status": 503, "reason": "ServiceUnavailable", "count": 1}],
                  "unregister": [{"token": tokens[2], "timestamp": int(time.time() * 1000) + 60_000}]})
    r = d.call({"cmd": "bulk", "messages": [
        {"ids": [ids[0]], "message": "a"},
        {"ids": [ids[1], ids[2]], "message": "b"},
        {"ids": [ids[3]], "message": "c", "dry_run": True},
        {"registration_ids": [tokens[4], tokens[5]], "platform": "apns", "message": "d"},
    ]})
    assert r["ok"], r
    res = {(x["message"], x["registration_id"]): x for x in r["results"]}
    assert [(x["message"], x["registration_id"]) for x in r["results"]] == [
        (0, tokens[0]), (1, tokens[1]), (1, tokens[2]), (2, tokens[3]), (3, tokens[4]), (3, tokens[5])]
    assert res[(1, tokens[1])]["status"] == "sent"
    gone = res[(1, tokens[2])]
    assert gone["status"] == "failed" and gone["reason"] == "Unregistered" and gone["deactivated"] is True
    assert res[(2, tokens[3])]["status"] == "sent" and res[(2, tokens[3])]["dry_run"] is True
    assert r["sent"] == 5 and r["failed"] == 1
    got = by_token(fake.received())
    assert tokens[3] not in got
    assert [x["status"] for x in got[tokens[1]]] == [503, 200]
    assert {got[t][-1]["payload"]["aps"]["alert"] for t in (tokens[4], tokens[5])} == {"d"}
    assert d.call({"cmd": "devices", "registration_id": tokens[2], "platform": "apns"})["devices"][0]["active"] is False


def test_fcm_bulk_messages_share_batches_with_retries_and_deactivation(start_daemon, tmp_path):
    # FCM messages of a bulk go to the transport together; a 503 (with a 1 s Retry-After) is
    # retried, an unregistered token is deactivated, an expired access token refreshed once.
    fcm = FakeFCMProcess(tmp_path / "fcm")
    try:
        d = start_daemon({"apps": {"default": {"fcm": fcm.fcm_block()}}})
        r = d.call({"cmd": "register", "devices": [{"platform": "fcm", "registration_id": f"tok-{i}"} for i in range(8)]})
        ids = [x["id"] for x in r["devices"]]
        assert d.call({"cmd": "send", "ids": [ids[0]], "message": "warm"})["sent"] == 1
        fcm.control(op="unregister", tokens=["tok-3"])
        fcm.control(op="fail", count=2, status=503, code="UNAVAILABLE", retry_after=1)
        fcm.control(op="expire_tokens")
        r = d.call({"cmd": "bulk", "messages": [{"ids": [i], "message": f"m{k}"} for k, i in enumerate(ids)]})
        assert r["ok"], r
        assert [(x["message"], x["id"]) for x in r["results"]] == list(enumerate(ids))
        gone = r["results"][3]
        assert gone["status"] == "failed" and gone["reason"] == "UNREGISTERED" and gone["deactivated"] is True
        assert r["sent"] == 7 and r["failed"] == 1, r["results"]
        assert all(x["message_id"] for x in r["results"] if x["status"] == "sent")
    finally:
        fcm.stop()
