"""APNs end to end: the real `pushline` daemon, over its socket, against the fake APNs (HTTP/2 + TLS)."""
import json
import time

import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs


def tok(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
def start_fake():
    fakes = []

    def start(*args, workdir=None):
        f = FakeAPNs.start(list(args), workdir=workdir)
        fakes.append(f)
        return f

    yield start
    for f in fakes:
        f.stop()


@pytest.fixture
def fake(start_fake):
    return start_fake("--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC)


def cfg(fake, **over):
    return {"apps": {"default": {"apns": fake.apns_block(**over)}}}


def register(d, tokens, app="default"):
    r = d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t, "app": app} for t in tokens]})
    assert r["ok"], r
    return [x["id"] for x in r["devices"]]


def daemon_with_many(start_daemon, fake, n, **apps):
    """A daemon whose default app has `n` devices (registered in batches), with long lines
    allowed for big bulks; `apps` adds more app blocks. Returns (daemon, tokens, ids)."""
    config = cfg(fake)
    config["apps"].update(apps)
    config["max_line_bytes"] = 16 << 20
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, n + 1)]
    ids = []
    for k in range(0, n, 4000):
        ids += register(d, tokens[k:k + 4000])
    return d, tokens, ids


def send(d, tokens, **note):
    r = d.call({"cmd": "send", "platform": "apns", "registration_ids": tokens, **note})
    assert r["ok"], r
    return r


def by_token(received):
    out = {}
    for x in received:
        out.setdefault(x["token"], []).append(x)
    return out


def test_send_one_device(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1)])
    r = send(d, [tok(1)], message="Hello", title="Hi", badge=3, sound="default", extra={"order": 981},
             thread_id="t1", category="c1")
    assert r["sent"] == 1 and r["failed"] == 0
    res = r["results"][0]
    assert res["status"] == "sent" and res["registration_id"] == tok(1) and res["platform"] == "apns"
    [req] = fake.received()
    assert res["apns_id"] == req["apns_id"]
    assert req["status"] == 200
    assert req["payload"] == {"aps": {"alert": {"title": "Hi", "body": "Hello"}, "badge": 3, "sound": "default",
                                      "category": "c1", "thread-id": "t1"}, "order": 981}
    h = req["headers"]
    assert h["apns-topic"] == TOPIC and h["apns-push-type"] == "alert" and h["apns-priority"] == "10"
    assert h["authorization"].startswith("bearer ")


def test_bulk_per_device_results_and_deactivation(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 41)]
    ids = register(d, tokens)
    later = int(time.time() * 1000) + 60_000  # Apple says invalid as of after the registration
    fake.control({"unregister": [{"token": tokens[3], "timestamp": later},
                                 {"token": tokens[4], "timestamp": later, "reason": "ExpiredToken"}]})
    fake.control({"fail": [{"token": tokens[5], "status": 400, "reason": "BadDeviceToken", "count": -1},
                           {"token": tokens[6], "status": 400, "reason": "DeviceTokenNotForTopic", "count": -1},
                           {"token": tokens[7], "status": 503, "reason": "ServiceUnavailable", "count": 2},
                           {"token": tokens[8], "status": 400, "reason": "BadExpirationDate", "count": -1}]})
    badges = {tokens[0]: 7, tokens[1]: 0}
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "bulk", "badge": 1,
                "badges": badges})
    assert r["ok"], r
    res = r["results"]
    assert [x["registration_id"] for x in res] == tokens
    assert [x["id"] for x in res] == ids
    assert r["failed"] == 5 and r["sent"] == 35
    for i, x in enumerate(res):
        if i in (3, 4, 5, 6, 8):
            assert x["status"] == "failed" and x["retryable"] is False, x
        else:
            assert x["status"] == "sent" and len(x["apns_id"]) == 36, x
    assert res[3]["reason"] == "Unregistered" and res[3]["deactivated"] is True
    assert res[4]["reason"] == "ExpiredToken" and res[4]["deactivated"] is True
    assert res[5]["reason"] == "BadDeviceToken" and res[5]["deactivated"] is True
    assert res[6]["reason"] == "DeviceTokenNotForTopic" and res[6]["deactivated"] is True
    assert res[8]["reason"] == "BadExpirationDate" and res[8]["deactivated"] is False
    got = by_token(fake.received())
    assert len(got[tokens[7]]) == 3  # two 503s, then 200
    assert got[tokens[0]][0]["payload"]["aps"]["badge"] == 7
    assert got[tokens[1]][0]["payload"]["aps"]["badge"] == 0
    assert got[tokens[2]][0]["payload"]["aps"]["badge"] == 1
    # The registry shows why each went inactive.
    devs = {x["registration_id"]: x for x in d.call({"cmd": "devices", "limit": 1000})["devices"]}
    assert devs[tokens[3]]["active"] is False and devs[tokens[3]]["inactive_reason"] == "Unregistered"
    assert devs[tokens[5]]["active"] is False and devs[tokens[5]]["inactive_reason"] == "BadDeviceToken"
    assert devs[tokens[8]]["active"] is True and devs[tokens[0]]["active"] is True
    assert "inactive_at" in devs[tokens[3]]
    # An inactive device named again is reported, not sent to.
    again = send(d, [tokens[3]], message="x")
    assert again["results"][0]["status"] == "failed" and again["results"][0]["reason"] == "inactive"


def test_410_before_registration_keeps_the_device(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1)])
    earlier = int(time.time() * 1000) - 3_600_000  # Apple's verdict predates the (re-)registration
    fake.control({"unregister": [{"token": tok(1), "timestamp": earlier}]})
    r = send(d, [tok(1)], message="x")
    x = r["results"][0]
    assert x["status"] == "failed" and x["reason"] == "Unregistered"
    assert x["deactivated"] is False and x["still_active"] is True
    assert d.call({"cmd": "devices"})["devices"][0]["active"] is True


def test_retries_then_retryable_failure(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1), tok(2)])
    fake.control({"fail": [{"token": tok(1), "status": 429, "reason": "TooManyRequests", "count": -1},
                           {"token": tok(2), "status": 500, "reason": "InternalServerError", "count": 1}]})
    r = send(d, [tok(1), tok(2)], message="x")
    a, b = r["results"]
    assert a["status"] == "failed" and a["reason"] == "TooManyRequests" and a["retryable"] is True
    assert a["deactivated"] is False
    assert b["status"] == "sent"
    got = by_token(fake.received())
    assert len(got[tok(1)]) == 3 and len(got[tok(2)]) == 2


def test_transport_failure_is_retryable(start_daemon, start_fake):
    # A fake that stops: connection refused is a retryable transport failure, not a hang.
    f = start_fake("--gen-key", f"{TEAM}:{KEY_ID}")
    d = start_daemon(cfg(f, request_timeout_ms=3000))
    register(d, [tok(1)])
    f.stop()
    t0 = time.time()
    r = send(d, [tok(1)], message="x")
    x = r["results"][0]
    assert x["status"] == "failed" and x["retryable"] is True and x["deactivated"] is False
    assert x["reason"] in ("connect_error", "connection_lost"), x
    assert tok(1) not in x.get("error", "")
    assert time.time() - t0 < 15


def test_goaway_and_dropped_connection_reconnect(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 301)]
    register(d, tokens)
    assert send(d, tokens[:1], message="warm")["sent"] == 1
    fake.control({"goaway_after": 25, "goaway_times": 3})
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "x"})
    assert r["sent"] == 300, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:5]
    assert fake.state()["goaways_sent"] == 3
    fake.control({"drop_after": 10, "drop_times": 1})
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens[:100], "message": "y"})
    assert r["sent"] == 100, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:5]
    assert fake.state()["drops"] == 1
    assert fake.state()["connections_total"] >= 5


@pytest.mark.parametrize("limit", [1, 3])
def test_max_connections_of_the_block_caps_its_connections(start_daemon, fake, limit):
    # Another app's block allows 4 connections (the transport is sized for it: 2 loops x 2);
    # this app's block allows `limit`, and a burst that would fill 4 connections of 10 streams
    # (the fake holds each request 50 ms) must still use only `limit`.
    config = cfg(fake, max_connections=limit)
    config["apps"]["other"] = {"apns": fake.apns_block(max_connections=4)}
    config["max_streams_per_connection"] = 10
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, 401)]
    register(d, tokens)
    fake.control({"delay_ms": 50})
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "x"})
    assert r["sent"] == 400, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:5]
    st = fake.state()
    assert st["connections_total"] == limit
    assert st["max_active_streams"] <= 10 * limit


def test_expired_provider_token_is_refreshed_and_retried_once(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1), tok(2)])
    assert send(d, [tok(1)], message="a")["sent"] == 1
    fake.control({"expire_current": True})
    r = send(d, [tok(1), tok(2)], message="b")
    assert r["sent"] == 2, r
    team = fake.state()["teams"][TEAM]
    assert team["updates"] == 1 and len(team["jwts"]) == 2 and team["rejected_updates"] == 0
    reasons = [x["reason"] for x in fake.received() if x["status"] != 200]
    assert reasons == ["ExpiredProviderToken", "ExpiredProviderToken"]


def test_invalid_provider_token_names_key_and_team_and_stops_sending(start_daemon, start_fake):
    f = start_fake("--gen-key", f"{TEAM}:{KEY_ID}", "--gen-key", f"{TEAM}:OTHERKEY99")
    # Signed with another key than the one Apple knows for KEY_ID.
    d = start_daemon(cfg(f, key_path=f.key_path("OTHERKEY99")))
    register(d, [tok(1), tok(2)])
    r = send(d, [tok(1)], message="x")
    x = r["results"][0]
    assert x["status"] == "failed" and x["retryable"] is False and x["deactivated"] is False
    assert "InvalidProviderToken" in x["reason"] and KEY_ID in x["reason"] and TEAM in x["reason"]
    n = len(f.received())
    r = send(d, [tok(1), tok(2)], message="y")
    assert all(y["reason"] == x["reason"] for y in r["results"])
    assert len(f.received()) == n  # failed fast: Apple is not hammered
    assert d.call({"cmd": "devices"})["devices"][0]["active"] is True


def _write_p8(tmp_path):
    """A .p8 (PKCS#8 P-256) and its public key, as files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    k = ec.generate_private_key(ec.SECP256R1())
    p8 = tmp_path / "AuthKey.p8"
    p8.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    pub = tmp_path / "AuthKey.pub.pem"
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(p8), str(pub)


def test_token_is_reused_across_a_restart(start_daemon, start_fake, tmp_path):
    # A 20-minute refresh floor: a new token after the restart would get TooManyProviderTokenUpdates.
    # The fake knows only the public key (as Apple does).
    p8, pub = _write_p8(tmp_path)
    f = start_fake("--key", f"{TEAM}:{KEY_ID}:{pub}", "--min-token-refresh-s", "1200")
    d = start_daemon(cfg(f, key_path=p8))
    register(d, [tok(1)])
    assert send(d, [tok(1)], message="before")["sent"] == 1
    d.restart()
    assert send(d, [tok(1)], message="after")["sent"] == 1
    team = f.state()["teams"][TEAM]
    assert len(team["jwts"]) == 1 and team["updates"] == 0 and team["rejected_updates"] == 0
    auth = {x["headers"]["authorization"] for x in f.received()}
    assert len(auth) == 1


def test_apps_of_one_team_share_one_token(start_daemon, start_fake):
    fake = start_fake("--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC, "--topic", "com.example.news")
    block = fake.apns_block()
    d = start_daemon({"apps": {"shop": {"apns": block}, "news": {"apns": dict(block, topic="com.example.news")}}})
    register(d, [tok(1)], app="shop")
    register(d, [tok(2)], app="news")
    a = d.call({"cmd": "send", "platform": "apns", "app": "shop", "registration_ids": [tok(1)], "message": "a"})
    b = d.call({"cmd": "send", "platform": "apns", "app": "news", "registration_ids": [tok(2)], "message": "b"})
    assert a["sent"] == 1 and b["sent"] == 1, (a, b)
    got = fake.received()
    assert {x["headers"]["apns-topic"] for x in got} == {"com.example.app", "com.example.news"}
    assert len({x["headers"]["authorization"] for x in got}) == 1


def test_certificate_auth_with_encrypted_key(start_daemon, start_fake):
    f = start_fake("--cert-mode", "--client-key-password", "s3cret", "--topic", TOPIC)
    pem = f"{f.workdir}/client.pem"
    assert b"ENCRYPTED" in open(pem, "rb").read()
    block = {"certificate_path": pem, "certificate_password": "s3cret", "topic": TOPIC, "endpoint": f.endpoint,
             "ca_file": f.ca}
    d = start_daemon({"apps": {"default": {"apns": block}}})
    register(d, [tok(1)])
    r = send(d, [tok(1)], message="cert")
    assert r["sent"] == 1, r
    [req] = f.received()
    assert "authorization" not in req["headers"]


def test_certificate_with_wrong_password_is_a_config_error(start_daemon, start_fake):
    f = start_fake("--cert-mode", "--client-key-password", "s3cret")
    block = {"certificate_path": f"{f.workdir}/client.pem", "certificate_password": "wrong", "topic": TOPIC,
             "endpoint": f.endpoint, "ca_file": f.ca}
    d = start_daemon({"apps": {"default": {"apns": block}}}, wait=False)
    with pytest.raises(RuntimeError) as e:
        d.wait_ready(timeout=10)
    assert "apps.default.apns.certificate_password" in str(e.value) and "s3cret" not in str(e.value)


def test_dry_run_sends_nothing(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1), tok(2)])
    r = send(d, [tok(1), tok(2)], message="x", dry_run=True)
    assert r["sent"] == 2 and all(x["dry_run"] is True for x in r["results"])
    assert fake.received() == []


def test_payload_too_large_is_refused_before_sending(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1)])
    r = d.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(1)], "message": "x" * 5000})
    assert r["ok"] is False and r["error"]["code"] == "payload_too_large"
    assert r["error"]["limit"] == 4096 and r["error"]["size"] > 5000
    assert str(r["error"]["size"]) in r["error"]["message"]
    # VoIP allows 5120 bytes.
    r = send(d, [tok(1)], message="x" * 4500, push_type="voip")
    assert r["sent"] == 1
    assert fake.received()[0]["headers"]["apns-topic"] == TOPIC + ".voip"


def test_invalid_apns_fields_are_invalid_argument(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1)])
    for note, field in [({"collapse_id": "c" * 65}, "collapse_id"),
                        ({"interruption_level": "loud"}, "interruption_level"),
                        ({"push_type": "fax"}, "push_type")]:
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(1)], "message": "x", **note})
        assert r["ok"] is False and r["error"]["code"] == "invalid_argument", r
        assert field in r["error"]["message"]
    assert fake.received() == []


def test_headers_and_payload_fields(start_daemon, fake):
    d = start_daemon(cfg(fake))
    register(d, [tok(1)])
    exp = int(time.time()) + 3600
    send(d, [tok(1)], message={"title": "T", "body": "B", "loc_key": "K", "loc_args": ["a"]}, subtitle="S",
         expiration=exp, collapse_id="grp", priority=5, apns_id="123e4567-e89b-12d3-a456-426614174000",
         interruption_level="time-sensitive", relevance_score=0.5, mutable_content=True,
         apns={"headers": {"apns-expiration": 0}, "payload": {"aps": {"sound": "x.caf"}, "k": "v"}})
    send(d, [tok(1)], content_available=True, extra={"sync": 1})
    send(d, [tok(1)], push_type="liveactivity", event="update", timestamp=1700000000, content_state={"s": 1})
    a, b, c = fake.received()
    assert all(x["status"] == 200 for x in (a, b, c)), [x["reason"] for x in (a, b, c)]
    assert a["payload"]["aps"]["alert"] == {"title": "T", "subtitle": "S", "body": "B", "loc-key": "K", "loc-args": ["a"]}
    assert a["payload"]["aps"]["sound"] == "x.caf" and a["payload"]["k"] == "v"
    assert a["payload"]["aps"]["interruption-level"] == "time-sensitive"
    assert a["payload"]["aps"]["mutable-content"] == 1
    assert a["headers"]["apns-expiration"] == "0" and a["headers"]["apns-collapse-id"] == "grp"
    assert a["headers"]["apns-priority"] == "5" and a["headers"]["apns-id"] == "123e4567-e89b-12d3-a456-426614174000"
    assert b["headers"]["apns-push-type"] == "background" and b["headers"]["apns-priority"] == "5"
    assert b["payload"] == {"aps": {"content-available": 1}, "sync": 1}
    assert c["headers"]["apns-topic"] == TOPIC + ".push-type.liveactivity"
    assert c["payload"]["aps"]["content-state"] == {"s": 1}


def test_one_slow_or_failing_device_never_fails_the_others(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 21)]
    register(d, tokens)
    fake.control({"fail": [{"token": tokens[0], "status": 400, "reason": "BadTopic", "count": -1},
                           {"token": "*", "status": 500, "reason": "InternalServerError", "count": 3}]})
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "x"})
    assert r["ok"] and r["results"][0]["reason"] == "BadTopic"
    assert r["sent"] == 19, [x.get("reason") for x in r["results"]]


def _kv(db, key, value=None):
    if db.startswith("postgresql://"):  # the PostgreSQL pass of make test: the same row through psql
        import subprocess
        uri = db.split("&application_name")[0]
        if value is None:
            out = subprocess.run(["psql", "-X", "-At", uri, "-v", f"k={key}"], input="SELECT value FROM kv WHERE key = :'k';",
                                 check=True, capture_output=True, text=True).stdout
            return out.rstrip("\n") if out else None
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", uri, "-v", f"k={key}", "-v", f"v={value}"],
                       input="INSERT INTO kv (key, value) VALUES (:'k', :'v') ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
                       check=True, capture_output=True, text=True)
        return None
    import sqlite3
    con = sqlite3.connect(db)
    try:
        if value is None:
            row = con.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None
        con.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
        con.commit()
    finally:
        con.close()


def _sign_jwt(p8_path, kid, team, iat):
    import base64
    import json as _json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    key = serialization.load_pem_private_key(open(p8_path, "rb").read(), None)
    h = b64(_json.dumps({"alg": "ES256", "kid": kid}).encode())
    c = b64(_json.dumps({"iss": team, "iat": iat}).encode())
    r, s = decode_dss_signature(key.sign(f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{h}.{c}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


KV_KEY = f"apns.jwt.{TEAM}.{KEY_ID}"


def test_persisted_token_older_than_50_minutes_is_replaced(start_daemon, start_fake):
    f = start_fake("--gen-key", f"{TEAM}:{KEY_ID}", "--min-token-refresh-s", "0")
    d = start_daemon(cfg(f))
    register(d, [tok(1)])
    assert send(d, [tok(1)], message="a")["sent"] == 1
    iat, jwt = _kv(d.db_path, KV_KEY).split(":", 1)
    assert abs(int(iat) - time.time()) < 30
    d.stop()
    _kv(d.db_path, KV_KEY, f"{int(time.time()) - 51 * 60}:{jwt}")  # as if saved 51 minutes ago
    d.restart()
    assert send(d, [tok(1)], message="b")["sent"] == 1
    new_iat, new_jwt = _kv(d.db_path, KV_KEY).split(":", 1)
    # Stored as "R<iat>:<jwt>": a token that replaced another (kept 20 minutes by the whole fleet).
    assert new_iat.startswith("R")
    assert new_jwt != jwt and abs(int(new_iat[1:]) - time.time()) < 30
    assert f.state()["teams"][TEAM]["jwts"] == [jwt, new_jwt]


def test_token_apple_finds_older_than_an_hour_is_refreshed(start_daemon, start_fake):
    # The stored issue time says "fresh" but the JWT's iat is 62 minutes old: Apple (the fake) answers
    # ExpiredProviderToken; the daemon mints a new token and retries once.
    f = start_fake("--gen-key", f"{TEAM}:{KEY_ID}")
    d = start_daemon(cfg(f))
    d.stop()
    old = _sign_jwt(f.key_path(), KEY_ID, TEAM, int(time.time()) - 62 * 60)
    _kv(d.db_path, KV_KEY, f"{int(time.time()) - 60}:{old}")
    d.restart()
    register(d, [tok(1)])
    r = send(d, [tok(1)], message="x")
    assert r["sent"] == 1, r
    got = f.received()
    assert [x["reason"] for x in got] == ["ExpiredProviderToken", None]
    assert got[0]["headers"]["authorization"] == f"bearer {old}"
    assert _kv(d.db_path, KV_KEY).split(":", 1)[1] != old


def test_expired_again_after_refresh_is_a_config_error(start_daemon, start_fake):
    # Apple finds even a brand-new token expired (a wrong clock): one refresh, then a clear failure
    # and no more requests for a while, instead of minting a token per request.
    fake = start_fake("--gen-key", f"{TEAM}:{KEY_ID}", "--min-token-refresh-s", "0")
    d = start_daemon(cfg(fake))
    register(d, [tok(1), tok(2)])
    fake.control({"fail": [{"token": "*", "status": 403, "reason": "ExpiredProviderToken", "count": -1}]})
    r = send(d, [tok(1)], message="x")
    x = r["results"][0]
    assert x["status"] == "failed" and x["retryable"] is False
    assert "ExpiredProviderToken" in x["reason"] and "clock" in x["reason"] and KEY_ID in x["reason"]
    assert len(fake.received()) == 2  # the first try and one retry with a new token
    n = len(fake.received())
    send(d, [tok(1), tok(2)], message="y")
    assert len(fake.received()) == n


def test_busy_when_more_is_queued_than_max_pending(start_daemon, fake):
    import threading
    config = cfg(fake)
    config["max_pending"] = 10
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, 21)]
    register(d, tokens)
    fake.control({"delay_ms": 1500})
    slow = {}

    def first():
        c = d.connect()
        slow["r"] = c.call({"cmd": "send", "platform": "apns", "registration_ids": tokens[:8], "message": "slow"})
        c.close()

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.5)  # the 8 notifications are in flight
    c = d.connect()
    t0 = time.time()
    r = c.call({"id": "b", "cmd": "send", "platform": "apns", "registration_ids": tokens[8:13], "message": "more"})
    assert time.time() - t0 < 1.0, "busy is answered at once, not after a stall"
    assert r["id"] == "b" and r["ok"] is False and r["error"]["code"] == "busy", r
    assert r["error"]["retry_after_ms"] > 0
    # Something that still fits is accepted meanwhile.
    small = c.call({"cmd": "send", "platform": "apns", "registration_ids": tokens[13:15], "message": "fits"})
    assert small["ok"] and small["sent"] == 2
    t.join()
    assert slow["r"]["sent"] == 8
    fake.control({"delay_ms": 0})
    # Once the queue drains, the same command goes through.
    again = c.call({"cmd": "send", "platform": "apns", "registration_ids": tokens[8:13], "message": "more"})
    assert again["ok"] and again["sent"] == 5
    # A single command larger than max_pending is not refused forever: alone, it runs.
    alone = c.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "all"})
    assert alone["ok"] and alone["sent"] == 20
    c.close()


def test_large_bulk_by_tokens_is_pipelined_in_chunks(start_daemon, fake):
    # More tokens than one chunk (5000): resolution, sending and results overlap chunk by chunk.
    d, tokens, _ = daemon_with_many(start_daemon, fake, 12_000)
    d.call({"cmd": "update", "registration_id": tokens[7000], "platform": "apns", "active": False})
    dead = tokens[11_000]
    fake.control({"unregister": [{"token": dead, "timestamp": int(time.time() * 1000) + 60_000}]})
    unknown = [tok(i) for i in range(50_001, 50_004)]
    r = d.call({"cmd": "bulk", "platform": "apns", "registration_ids": tokens + unknown, "message": "big"})
    assert r["ok"], r
    assert len(r["results"]) == len(tokens) + len(unknown)
    assert r["sent"] == len(tokens) - 2 and r["failed"] == 2 + len(unknown)
    by = {x["registration_id"]: x for x in r["results"]}
    assert by[dead]["status"] == "failed" and by[dead]["deactivated"] is True
    assert by[tokens[7000]]["reason"] == "inactive"
    assert all(by[t]["reason"] == "not_registered" and by[t]["id"] is None for t in unknown)
    assert all(by[t]["status"] == "sent" and by[t]["apns_id"] for t in tokens[:7000])
    assert len({x["registration_id"] for x in r["results"]}) == len(r["results"])
    assert d.call({"cmd": "devices", "registration_id": dead})["devices"][0]["active"] is False
    assert len(fake.received()) >= len(tokens) - 1


def test_send_to_users_and_filters_reads_devices_page_by_page(start_daemon, fake):
    d = start_daemon(cfg(fake))
    tokens = [tok(i) for i in range(1, 6_101)]
    for k in range(0, len(tokens), 3000):
        r = d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t, "user": "u"}
                                                   for t in tokens[k:k + 3000]]})
        assert r["ok"], r
    d.call({"cmd": "register", "devices": [{"platform": "fcm", "registration_id": f"f{i}", "user": "u"} for i in range(3)]})
    d.call({"cmd": "update", "registration_id": tokens[10], "platform": "apns", "active": False})
    # Every group is checked before anything is sent.
    big = d.call({"cmd": "send", "users": ["u"], "message": "x" * 5000})
    assert big["ok"] is False and big["error"]["code"] == "payload_too_large"
    assert fake.received() == []
    r = d.call({"cmd": "send", "users": ["u"], "message": "to everyone"})
    assert r["ok"], r
    assert r["sent"] == len(tokens) - 1 and r["failed"] == 3
    assert len(r["results"]) == len(tokens) - 1 + 3
    assert {x["reason"] for x in r["results"] if x["status"] == "failed"} == {"provider_not_configured"}
    assert len({x["id"] for x in r["results"]}) == len(r["results"])
    # A filter that selects only devices of an unconfigured platform is refused as a whole.
    r = d.call({"cmd": "send", "filter": {"platform": "fcm"}, "message": "x"})
    assert r["ok"] is False and r["error"]["code"] == "provider_not_configured"
    r = d.call({"cmd": "send", "filter": {"platform": "apns", "user": "nobody"}, "message": "x"})
    assert r["ok"] and r["results"] == []


def test_bulk_messages_results_carry_their_message_index(start_daemon, fake):
    d = start_daemon(cfg(fake))
    ids = register(d, [tok(1), tok(2), tok(3)])
    r = d.call({"cmd": "bulk", "messages": [
        {"ids": [ids[0], ids[1]], "message": "first"},
        {"registration_ids": [tok(3), tok(99)], "platform": "apns", "message": "second", "badge": 7},
    ]})
    assert r["ok"], r
    assert r["sent"] == 3 and r["failed"] == 1
    assert [(x["message"], x["registration_id"]) for x in r["results"]] == [
        (0, tok(1)), (0, tok(2)), (1, tok(3)), (1, tok(99))]
    assert r["results"][3]["reason"] == "not_registered"
    got = {x["token"]: x["payload"]["aps"] for x in fake.received()}
    assert got[tok(1)]["alert"] == "first" and got[tok(3)] == {"alert": "second", "badge": 7}


def test_large_response_to_a_slow_reader_arrives_whole_and_in_order(start_daemon, fake):
    # A bulk's results are written as the chunks' own buffers (segments); a reader slower than
    # the daemon makes the socket push back (EAGAIN) in the middle of them.
    d, tokens, _ = daemon_with_many(start_daemon, fake, 12_000)
    c = d.connect()
    c.send({"id": "big", "cmd": "bulk", "platform": "apns", "registration_ids": tokens, "message": "x", "dry_run": True})
    c.send({"id": "after", "cmd": "ping"})
    time.sleep(0.5)  # let the daemon fill the socket buffer and wait
    raw = b""
    while raw.count(b"\n") < 2:
        chunk = c.sock.recv(4096)
        assert chunk, "daemon closed the connection"
        raw += chunk
        time.sleep(0.0005)
    first, second, rest = raw.split(b"\n", 2)
    assert rest == b""
    big = json.loads(first)
    assert big["id"] == "big" and big["ok"] and big["sent"] == len(tokens) and len(first) > 1_000_000
    assert [x["registration_id"] for x in big["results"]] == tokens
    assert json.loads(second)["id"] == "after"
    c.close()


def test_large_bulk_by_ids_is_pipelined_in_chunks(start_daemon, fake):
    # More ids than one chunk (5000): the groups are checked first, then ids are resolved and
    # sent chunk by chunk; unknown and inactive ids are still reported, dead devices deactivated.
    d, tokens, ids = daemon_with_many(start_daemon, fake, 11_000, other={})  # "other": an app without credentials
    d.call({"cmd": "update", "registration_id": tokens[6000], "platform": "apns", "active": False})
    dead = tokens[9000]
    fake.control({"unregister": [{"token": dead, "timestamp": int(time.time() * 1000) + 60_000}]})
    unknown = [10_000_001, 10_000_002]
    r = d.call({"cmd": "bulk", "ids": ids + unknown, "message": "big"})
    assert r["ok"], r
    assert len(r["results"]) == len(ids) + len(unknown)
    assert r["sent"] == len(ids) - 2 and r["failed"] == 2 + len(unknown)
    by = {x["id"]: x for x in r["results"] if x["id"] is not None}
    assert by[ids[9000]]["status"] == "failed" and by[ids[9000]]["deactivated"] is True
    assert by[ids[6000]]["reason"] == "inactive"
    assert sum(1 for x in r["results"] if x.get("reason") == "not_registered") == 2
    assert all(by[i]["status"] == "sent" and by[i]["apns_id"] for i in ids[:6000])
    assert d.call({"cmd": "devices", "registration_id": dead})["devices"][0]["active"] is False
    # Ids whose devices have no credentials: refused before anything is sent.
    other = d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": tok(50_000 + i), "app": "other"}
                                                   for i in range(6000)]})
    before = len(fake.received())
    r = d.call({"cmd": "bulk", "ids": [x["id"] for x in other["devices"]], "message": "x"})
    assert not r["ok"] and r["error"]["code"] == "provider_not_configured", r
    assert len(fake.received()) == before
