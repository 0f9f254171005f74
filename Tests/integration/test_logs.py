"""Logs an operator can act on: provider outages logged at warning with the cause, one line
per origin per minute with a count; refused credentials; log_format json."""
from __future__ import annotations

import json
import re

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
from fcm_fake import FakeFCMProcess


def test_fcm_oauth_connect_failure_is_logged_once_per_minute_with_a_count(start_daemon, tmp_path):
    fake = FakeFCMProcess(tmp_path / "fcm")
    try:
        sa = json.loads(open(fake.service_account()).read())
        sa["token_uri"] = "https://127.0.0.1:1/token"    # nothing listens: as with no network
        sa_path = tmp_path / "sa-offline.json"
        sa_path.write_text(json.dumps(sa))
        d = start_daemon({"apps": {"default": {"fcm": fake.fcm_block(service_account_path=str(sa_path))}}})
        assert d.call({"cmd": "register", "platform": "fcm", "registration_id": "offline-token-1"})["ok"]
        for _ in range(4):
            r = d.call({"cmd": "send", "platform": "fcm", "registration_ids": ["offline-token-1"], "message": "m"})
            assert r["failed"] == 1 and r["results"][0]["retryable"] is True, r
        lines = [l for l in d.logs().splitlines() if "provider request failed" in l and "127.0.0.1:1" in l]
        assert len(lines) == 1, lines   # one line per origin per minute
        assert " warning " in lines[0] and "reason=connect_error" in lines[0] and "error=" in lines[0]
    finally:
        fake.stop()


def test_refused_provider_token_is_a_warning(start_daemon, tmp_path):
    # The fake knows another key: the daemon's token is refused (403 InvalidProviderToken).
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:OTHERKEY01", "--topic", TOPIC])
    own = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block(key_path=own.key_path())}}})
        token = "ab" * 32
        assert d.call({"cmd": "register", "platform": "apns", "registration_id": token})["ok"]
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": [token], "message": "m"})
        assert r["failed"] == 1 and r["results"][0]["reason"].startswith("InvalidProviderToken")
        lines = [l for l in d.logs().splitlines() if "provider refused the credentials" in l]
        assert len(lines) == 1 and " warning " in lines[0] and "reason=InvalidProviderToken" in lines[0], d.logs()
        assert token not in d.logs()
    finally:
        fake.stop()
        own.stop()


def test_log_format_json(start_daemon):
    d = start_daemon({"log_format": "json"})
    d.call({"cmd": "ping"})
    d.stop()
    lines = [l for l in d.logs().splitlines() if l.strip()]
    assert lines
    objs = [json.loads(l) for l in lines]   # every line is one JSON object
    ready = next(o for o in objs if o["msg"] == "ready")
    assert ready["level"] == "info" and ready["logger"] == "pushline" and re.match(r"\d{4}-\d\d-\d\dT", ready["ts"])
    assert "pid" in ready and "version" in ready


def test_provider_block_proxy_tunnels_with_connect_and_never_logs_the_password(start_daemon, tmp_path):
    from connect_proxy import ConnectProxy
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    proxy = ConnectProxy(auth=("pl", "pr0xy-s3cret")).start()
    try:
        good = f"http://pl:pr0xy-s3cret@127.0.0.1:{proxy.port}"
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block(proxy=good)},
                                   "bad": {"apns": fake.apns_block(proxy=f"http://pl:wrong-pass@127.0.0.1:{proxy.port}")}}},
                         extra_args=["--log-level", "trace"])
        toks = ["cd" * 32, "ef" * 32]
        assert d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": toks[0]},
                                                       {"platform": "apns", "registration_id": toks[1], "app": "bad"}]})["ok"]
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": toks[:1], "message": "via proxy"})
        assert r["sent"] == 1, r
        assert proxy.tunnels and proxy.tunnels[0]["target"] == f"localhost:{fake.port}" and proxy.tunnels[0]["user"] == "pl"
        assert proxy.tunnels[0]["up"] > 0 and proxy.tunnels[0]["down"] > 0
        assert fake.received()[-1]["token"] == toks[0]
        # A wrong password: the proxy answers 407; the send fails as retryable, the cause is logged.
        r = d.call({"cmd": "send", "platform": "apns", "app": "bad", "registration_ids": toks[1:], "message": "m"})
        assert r["failed"] == 1 and r["results"][0]["retryable"] is True, r
        assert proxy.refused and proxy.refused[0]["reason"] == "auth"
        d.stop()
        logs = d.logs()
        assert "provider request failed" in logs
        assert "pr0xy-s3cret" not in logs and "wrong-pass" not in logs
    finally:
        proxy.stop()
        fake.stop()


def test_bad_proxy_value_is_a_config_error_without_the_password(tmp_path):
    import subprocess
    from harness import binary
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"apps": {"default": {"fcm": {"service_account_path": "/dev/null",
                                                          "proxy": "socks5://u:hidden-pass@127.0.0.1:1080"}}}}))
    r = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and "apps.default.fcm.proxy" in r.stderr and "hidden-pass" not in r.stderr, r.stderr
