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
