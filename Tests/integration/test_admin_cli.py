"""The admin commands for people: send-test, devices, check-config, stats, health."""
from __future__ import annotations

import json
import os
import subprocess

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
from harness import binary


def cli(d, *args, **kw):
    env = dict(os.environ, PUSHLINE_SOCKET=d.socket)
    return subprocess.run([binary(), *args], capture_output=True, text=True, env=env, timeout=60, **kw)


def test_send_test_prints_a_readable_line_per_device(start_daemon):
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block()}}})
        good = d.call({"cmd": "register", "platform": "apns", "registration_id": "12" * 32})["device"]["id"]
        fcm = d.call({"cmd": "register", "platform": "fcm", "registration_id": "fcm-device-token"})["device"]["id"]
        r = cli(d, "send-test", str(good))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout == f"device {good} (default/apns, 12121212...): sent\n", r.stdout
        assert "12" * 32 not in r.stdout
        r = cli(d, "send-test", "999")
        assert r.returncode == 1 and r.stdout.strip() == "no device 999", r.stdout + r.stderr
        r = cli(d, "send-test", str(fcm))
        assert r.returncode == 1 and r.stderr == "pushline send-test: app 'default' has no fcm credentials\n", r.stderr
        r = cli(d, "send-test", str(good), "--dry-run")
        assert r.returncode == 0 and "dry run" in r.stdout
        gone = d.call({"cmd": "register", "platform": "apns", "registration_id": "34" * 32})["device"]["id"]
        import time
        fake.control({"unregister": [{"token": "34" * 32, "timestamp": int(time.time() * 1000) + 60000, "reason": "Unregistered"}]})
        r = cli(d, "send-test", str(gone))
        assert r.returncode == 1
        assert r.stdout.startswith(f"device {gone} (default/apns, 34343434...): failed: Unregistered") and "now inactive" in r.stdout, r.stdout
        r = cli(d, "send-test", str(good), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["sent"] == 1
    finally:
        fake.stop()


def test_devices_with_a_bad_platform_prints_the_error_alone(daemon):
    r = cli(daemon, "devices", "--platform", "foo")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("pushline devices: ") and "platform" in r.stderr and "\n" == r.stderr[-1]
    assert len(r.stderr.strip().splitlines()) == 1


def test_stats_for_people(daemon):
    daemon.call({"cmd": "register", "platform": "fcm", "registration_id": "s-token-1"})
    r = cli(daemon, "stats")
    assert r.returncode == 0
    assert "devices: 1 (1 active, 0 inactive)" in r.stdout and "default" in r.stdout and "fcm" in r.stdout
    assert json.loads(cli(daemon, "stats", "--json").stdout)["devices"]["total"] == 1


def check(tmp_path, text: str):
    f = tmp_path / "c.json"
    f.write_text(text)
    return subprocess.run([binary(), "check-config", str(f)], capture_output=True, text=True, timeout=30)


def test_check_config_reports_every_error_with_suggestions(tmp_path):
    notsa = tmp_path / "not-a-service-account.json"
    notsa.write_text('{"type": "authorized_user"}')
    r = check(tmp_path, json.dumps({
        "log_levle": "debug", "socket_mode": "999",
        "apps": {"default": {"gcm": {}}, "shop": {"fcm": {"service_account_path": str(notsa)}}}}))
    assert r.returncode == 1
    errs = r.stderr
    assert "log_levle: unknown key (did you mean 'log_level'?)" in errs
    assert "apps.default.gcm: unknown key (did you mean 'fcm'?)" in errs
    assert "socket_mode: expected an octal mode" in errs
    assert "apps.shop.fcm.service_account_path:" in errs and "service-account" in errs
    assert "4 errors" in errs


def test_check_config_json_syntax_error_has_line_and_column(tmp_path):
    r = check(tmp_path, '{\n  "socket": "/tmp/x.sock",\n  "log_level": ,\n}\n')
    assert r.returncode == 1 and "line 3, column 16: not valid JSON" in r.stderr, r.stderr


def test_check_config_catches_what_apple_would_refuse(tmp_path):
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        p8 = fake.key_path()
        r = check(tmp_path, json.dumps({"apps": {"default": {"apns": {"key_path": p8, "key_id": "ABC123", "team_id": "TEAM12345678"}}}}))
        assert r.returncode == 1
        assert "apps.default.apns.key_id: Apple key ids are 10" in r.stderr and "got 6 characters" in r.stderr
        assert "apps.default.apns.team_id: Apple team ids are 10" in r.stderr
        assert "apps.default.apns.topic: is required with token auth" in r.stderr
        r = check(tmp_path, json.dumps({"apps": {"default": {"apns": {"key_path": p8, "key_id": KEY_ID, "team_id": TEAM, "topic": TOPIC}}}}))
        assert r.returncode == 0, r.stderr
    finally:
        fake.stop()
