"""APNs provider token refresh against the fake's per-connection rule (issue 11, point 3).

The fake (as Apple's engineers describe APNs) answers 429 TooManyProviderTokenUpdates when a
connection that carried one token less than `--conn-token-window-s` (default 20 minutes) earlier
sees another. The daemon must send a new token on new connections only, close the connections
that carried the old one once their streams end, and replace a key's token at most once per
20 minutes.

Every app block here has `max_connections: 1`, so all of its requests share one connection
(per token): on today's code the refreshed token then lands on the connection that carried the
old one, whatever the round-robin.
"""
import threading
import time

from apns_fake import KEY_ID, TEAM, TOPIC
from test_apns import cfg, fake, register, send, start_fake, tok  # noqa: F401 (fixtures)


def auth(x):
    return x["headers"]["authorization"]


def wait_for(cond, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    return cond()


def test_refreshed_token_goes_out_on_new_connections_and_is_kept_20_minutes(start_daemon, fake):
    d = start_daemon(cfg(fake, max_connections=1))
    tokens = [tok(i) for i in range(1, 201)]
    register(d, tokens)
    assert send(d, tokens, message="before")["sent"] == 200
    before = fake.received()
    old_conns = {x["conn"] for x in before}
    [old_jwt] = {auth(x) for x in before}
    fake.clear()

    fake.control({"expire_current": True})
    r = send(d, tokens, message="after")
    got = fake.received()
    assert r["sent"] == 200 and r["failed"] == 0, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:3]
    assert not [x for x in got if x["status"] == 429]
    expired = [x for x in got if x["reason"] == "ExpiredProviderToken"]
    ok = [x for x in got if x["status"] == 200]
    assert len(expired) == 200 and all(auth(x) == old_jwt for x in expired)
    assert len(ok) == 200
    [new_jwt] = {auth(x) for x in ok}
    assert new_jwt != old_jwt
    assert not {x["conn"] for x in ok} & old_conns  # the new token only on new connections

    # Later sends: the new token, on its connections, no 429, no further token.
    fake.clear()
    for k in range(3):
        assert send(d, tokens[:50], message=f"later {k}")["sent"] == 50
    later = fake.received()
    assert {auth(x) for x in later} == {new_jwt}
    assert all(x["status"] == 200 for x in later)
    assert not {x["conn"] for x in later} & old_conns
    st = fake.state()
    assert st["conn_rejected_updates"] == 0
    assert st["teams"][TEAM]["updates"] == 1 and len(st["teams"][TEAM]["jwts"]) == 2

    # Apple calling the new token expired too, minutes after it replaced the old one: no second
    # refresh within 20 minutes (a clock off by more than 40 minutes); a configuration failure.
    fake.clear()
    fake.control({"expire_current": True})
    r = send(d, [tokens[0]], message="again")
    x = r["results"][0]
    assert x["status"] == "failed" and x["retryable"] is False
    assert "ExpiredProviderToken" in x["reason"] and "clock" in x["reason"] and "20 minutes" in x["reason"]
    assert KEY_ID in x["reason"] and TEAM in x["reason"]
    assert [y["reason"] for y in fake.received()] == ["ExpiredProviderToken"]
    assert len(fake.state()["teams"][TEAM]["jwts"]) == 2
    r = send(d, tokens[1:3], message="blocked")  # fails fast: Apple is not asked again
    assert r["failed"] == 2 and len(fake.received()) == 1


def test_connection_that_carried_the_old_token_closes_when_its_last_stream_ends(start_daemon, fake):
    d = start_daemon(cfg(fake, max_connections=1))
    register(d, [tok(1), tok(2), tok(3)])
    assert send(d, [tok(1)], message="warm")["sent"] == 1
    [old_conn] = {x["conn"] for x in fake.received()}
    fake.clear()
    fake.control({"expire_current": True, "slow": [{"token": tok(2), "delay_ms": 5000}]})

    # tok(2)'s request is in flight on the old connection (answered after 5 s; the switch below
    # takes milliseconds) while tok(3)'s ExpiredProviderToken makes the daemon switch tokens.
    slow = {}
    other = d.connect()  # a second client: its own socket

    def send_slow():
        slow["r"] = other.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(2)], "message": "slow"})

    t = threading.Thread(target=send_slow)
    t.start()
    assert wait_for(lambda: fake.state()["streams_pending"] >= 1), "tok(2) never reached the fake"
    fast = send(d, [tok(3)], message="fast")
    assert fast["sent"] == 1, fast
    assert fake.state()["connection_log"][str(old_conn)]["closed"] is None  # tok(2) still in flight on it
    t.join(20)
    other.close()
    assert slow["r"]["sent"] == 1, slow["r"]

    got = fake.received()
    assert not [x for x in got if x["status"] == 429]
    slow_expired = [x for x in got if x["token"] == tok(2) and x["reason"] == "ExpiredProviderToken"]
    assert len(slow_expired) == 1 and slow_expired[0]["conn"] == old_conn
    assert all(x["conn"] != old_conn for x in got if x["status"] == 200)
    # The old connection is closed once its last stream (tok(2)'s) ended, not left for reuse.
    closed = wait_for(lambda: fake.state()["connection_log"][str(old_conn)]["closed"], timeout=5)
    assert closed and closed >= slow_expired[0]["time"] - 0.05
    assert len(fake.state()["teams"][TEAM]["jwts"]) == 2


def test_too_many_provider_token_updates_moves_the_token_to_new_connections(start_daemon, fake):
    d = start_daemon(cfg(fake, max_connections=1))
    tokens = [tok(i) for i in range(1, 21)]
    register(d, tokens)
    assert send(d, tokens[:1], message="warm")["sent"] == 1
    [jwt] = {auth(x) for x in fake.received()}
    [refusing] = {x["conn"] for x in fake.received()}
    fake.clear()
    # As if the connection had just carried another token: it refuses ours for 20 minutes.
    fake.control({"conn_saw_other_token": True})
    r = send(d, tokens, message="x")
    assert r["sent"] == 20 and r["failed"] == 0, [x.get("reason") for x in r["results"] if x["status"] != "sent"][:3]
    got = fake.received()
    refused = [x for x in got if x["status"] == 429]
    assert refused and all(x["reason"] == "TooManyProviderTokenUpdates" and x["conn"] == refusing for x in refused)
    ok = [x for x in got if x["status"] == 200]
    assert len(ok) == 20 and all(x["conn"] != refusing for x in ok)
    assert {auth(x) for x in got} == {jwt}  # the same token: a refusal is no reason to mint another
    assert fake.state()["teams"][TEAM]["updates"] == 0
    # And later sends stay off the refusing connection.
    fake.clear()
    assert send(d, tokens[:5], message="y")["sent"] == 5
    assert all(x["status"] == 200 and x["conn"] != refusing for x in fake.received())
