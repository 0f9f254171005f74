"""Metrics (Prometheus text exposition) and health: the `metrics` and `health` commands,
`metrics_listen` over TCP and a Unix socket, promtool, and a real Prometheus scraping."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness import binary

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def promtool_check(text: str) -> None:
    assert PROMTOOL, "promtool is missing: make deps installs Debian's prometheus package"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    # promtool exits 0 when the text parses; lint problems are printed too and fail here.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def sample(text: str, name: str, **labels) -> float | None:
    """The value of the sample `name{labels}` (labels in any order), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


def metrics_address(d) -> str:
    deadline = time.time() + 10
    while time.time() < deadline:
        m = re.search(r"metrics listening address=(\S+)", d.logs())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(d.logs())


def http_get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def test_metrics_command_counts_commands_and_registry(daemon):
    for i in range(3):
        assert daemon.call({"cmd": "register", "platform": "fcm", "registration_id": f"m-token-{i}", "user": "7"})["ok"]
    assert not daemon.call({"cmd": "register", "platform": "fcm", "registration_id": "m-token-0"})["ok"]
    assert not daemon.call({"cmd": "no-such-command"})["ok"]
    daemon.call({"cmd": "update", "device": 1, "active": False})
    r = daemon.call({"cmd": "metrics"})
    assert r["ok"] and r["format"] == "prometheus-text-0.0.4"
    text = r["text"]
    promtool_check(text)
    assert sample(text, "pushline_requests_total", command="register", outcome="ok") == 3
    assert sample(text, "pushline_requests_total", command="register", outcome="duplicate_registration") == 1
    assert sample(text, "pushline_requests_total", command="unknown", outcome="unknown_command") == 1
    assert sample(text, "pushline_request_duration_seconds_count", command="register") == 4
    assert sample(text, "pushline_registry_devices", app="default", platform="fcm", active="true") == 2
    assert sample(text, "pushline_registry_devices", app="default", platform="fcm", active="false") == 1
    assert sample(text, "pushline_socket_connections") >= 1
    assert sample(text, "pushline_build_info", version=daemon.call({"cmd": "ping"})["version"], protocol=daemon.call({"cmd": "ping"})["protocol"]) == 1
    assert daemon.call({"cmd": "metrics", "extra": 1})["error"]["code"] == "invalid_argument"


def test_metrics_listen_tcp_and_unix(start_daemon, tmp_path):
    d = start_daemon({"metrics_listen": "127.0.0.1:0"})
    addr = metrics_address(d)
    d.call({"cmd": "stats"})
    status, ctype, body = http_get(f"http://{addr}/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    promtool_check(body)
    assert sample(body, "pushline_requests_total", command="stats", outcome="ok") == 1
    assert http_get(f"http://{addr}/other")[0] == 404
    req = urllib.request.Request(f"http://{addr}/metrics", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("POST answered")
    except urllib.error.HTTPError as e:
        assert e.code == 405
    # The same text as the command.
    cmd_text = d.call({"cmd": "metrics"})["text"]
    assert sample(cmd_text, "pushline_requests_total", command="stats", outcome="ok") == 1
    d.stop()

    path = str(Path(d.workdir) / "metrics.sock")
    d2 = start_daemon({"metrics_listen": path})
    assert metrics_address(d2) == path
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"pushline_build_info" in body
    promtool_check(body.decode())
    d2.stop()
    assert not os.path.exists(path)


def test_bad_metrics_listen_is_a_config_error(tmp_path):
    for bad, why in [("9464", "host:port"), ("example.com:9464", "numeric"), ("127.0.0.1:99999", "port")]:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"metrics_listen": bad}))
        r = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True)
        assert r.returncode == 1 and "metrics_listen" in r.stderr and why in r.stderr, r.stderr


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is missing: make deps installs it")
def test_a_real_prometheus_scrapes_the_daemon(start_daemon, tmp_path):
    d = start_daemon({"metrics_listen": "127.0.0.1:0"})
    addr = metrics_address(d)
    for _ in range(7):
        assert d.call({"cmd": "stats"})["ok"]
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pushline\n    static_configs:\n"
        f"      - targets: ['{addr}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=log, stderr=log)
    try:
        query = urllib.parse.quote('pushline_requests_total{command="stats",outcome="ok",job="pushline"}')
        deadline = time.time() + 90
        value = None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}", timeout=5) as r:
                    res = json.loads(r.read())["data"]["result"]
                if res:
                    value = float(res[0]["value"][1])
                    if value == 7:
                        break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        assert value == 7, (tmp_path / "prometheus.log").read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5) as r:
            targets = json.loads(r.read())["data"]["activeTargets"]
        assert targets and targets[0]["health"] == "up", targets
    finally:
        prom.terminate()
        prom.wait(30)


def test_health_command_and_cli(start_daemon, tmp_path):
    d = start_daemon()
    r = d.call({"cmd": "health"})
    assert r["ok"] and r["healthy"] is True and r["database"]["ok"] is True and r["providers"] == []
    env = dict(os.environ, PUSHLINE_SOCKET=d.socket)
    p = subprocess.run([binary(), "health"], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "healthy" in p.stdout and "database: ok" in p.stdout
    # A database nobody can write to: unhealthy, exit 1 (the probe waits out SQLite's busy timeout).
    import sqlite3
    db = sqlite3.connect(d.db_path, timeout=10, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        p = subprocess.run([binary(), "health"], capture_output=True, text=True, env=env, timeout=60)
    finally:
        db.execute("COMMIT")
        db.close()
    assert p.returncode == 1, p.stdout
    assert "NOT healthy" in p.stdout and "database: FAILED" in p.stdout
    # No daemon: not healthy either.
    p = subprocess.run([binary(), "health", "--socket", str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot reach" in p.stderr


def test_provider_metrics_and_health_with_the_fake_apns(start_daemon):
    from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block()}}})
        toks = [f"{i:064x}" for i in (1, 2, 3)]
        assert d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in toks]})["ok"]
        fake.control({"unregister": [{"token": toks[2], "timestamp": int(time.time() * 1000) + 60000, "reason": "Unregistered"}]})
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": toks, "message": "m"})
        assert r["sent"] == 2 and r["failed"] == 1, r
        text = d.call({"cmd": "metrics"})["text"]
        promtool_check(text)
        origin = fake.endpoint
        assert sample(text, "pushline_notifications_total", app="default", platform="apns", outcome="sent") == 2
        assert sample(text, "pushline_notifications_total", app="default", platform="apns", outcome="failed") == 1
        assert sample(text, "pushline_notification_failures_total", app="default", platform="apns", reason="Unregistered") == 1
        assert sample(text, "pushline_deactivations_total", app="default", platform="apns", reason="Unregistered") == 1
        assert sample(text, "pushline_provider_responses_total", origin=origin, status="200") == 2
        assert sample(text, "pushline_provider_responses_total", origin=origin, status="410") == 1
        assert sample(text, "pushline_provider_request_duration_seconds_count", origin=origin) == 3
        assert sample(text, "pushline_provider_requests_in_flight", origin=origin) == 0
        h = d.call({"cmd": "health"})
        assert h["healthy"] is True
        [p] = h["providers"]
        assert p["app"] == "default" and p["platform"] == "apns" and p["last_success"] and p["consecutive_failures"] == 0
        # The provider goes away: connect errors, three in a row make it unhealthy.
        fake.stop()
        for _ in range(3):
            r = d.call({"cmd": "send", "platform": "apns", "registration_ids": toks[:1], "message": "m"})
            assert r["failed"] == 1 and r["results"][0]["retryable"] is True
        h = d.call({"cmd": "health"})
        assert h["healthy"] is False
        [p] = h["providers"]
        assert p["consecutive_failures"] == 3 and p["last_failure_reason"] == "connect_error", p
        env = dict(os.environ, PUSHLINE_SOCKET=d.socket)
        out = subprocess.run([binary(), "health"], capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 1 and "default/apns: FAILING" in out.stdout and "connect_error" in out.stdout, out.stdout
        text = d.call({"cmd": "metrics"})["text"]
        assert sample(text, "pushline_provider_responses_total", origin=origin, status="connect_error") >= 3
    finally:
        fake.stop()


def test_provider_retries_by_app_platform_and_reason(start_daemon):
    """pushline_provider_retries_total counts each notification a provider sends again, labelled
    with the reason: 429 TooManyRequests three times (two retries, then a retryable failure), a
    500 once (one retry, then sent), ExpiredProviderToken on two sends (a new token, each sent again)."""
    from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block()}}})
        toks = [f"{i:064x}" for i in (1, 2, 3)]
        assert d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in toks]})["ok"]
        assert d.call({"cmd": "send", "platform": "apns", "registration_ids": toks[2:], "message": "warm"})["sent"] == 1
        text = d.call({"cmd": "metrics"})["text"]
        assert sample(text, "pushline_provider_retries_total", app="default", platform="apns", reason="TooManyRequests") is None
        fake.control({"fail": [{"token": toks[0], "status": 429, "reason": "TooManyRequests", "count": -1},
                               {"token": toks[1], "status": 500, "reason": "InternalServerError", "count": 1}]})
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": toks[:2], "message": "m"})
        assert r["sent"] == 1 and r["failed"] == 1, r
        fake.control({"expire_current": True})
        r = d.call({"cmd": "send", "platform": "apns", "registration_ids": toks[1:], "message": "n"})
        assert r["sent"] == 2, r
        text = d.call({"cmd": "metrics"})["text"]
        promtool_check(text)
        assert sample(text, "pushline_provider_retries_total", app="default", platform="apns", reason="TooManyRequests") == 2
        assert sample(text, "pushline_provider_retries_total", app="default", platform="apns", reason="InternalServerError") == 1
        assert sample(text, "pushline_provider_retries_total", app="default", platform="apns", reason="ExpiredProviderToken") == 2
    finally:
        fake.stop()


@pytest.mark.parametrize("limit", [1, 3])
def test_open_provider_connections_and_streams_by_origin(start_daemon, limit):
    """The app's block allows `limit` connections and the daemon 10 streams per connection; a bulk
    of 300 to a fake that holds each request 300 ms fills them. While it runs, the metrics show
    `limit` open connections to the fake's origin and between 1 and 10 x `limit` streams in flight;
    after it, the connections stay open (kept for reuse) with no stream, `health` reports them for
    the app's provider, and the fake saw exactly that many connections."""
    import threading
    from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs
    from harness import Conn
    fake = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    try:
        d = start_daemon({"apps": {"default": {"apns": fake.apns_block(max_connections=limit)}},
                          "max_streams_per_connection": 10})
        origin = fake.endpoint
        toks = [f"{i:064x}" for i in range(1, 301)]
        assert d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": t} for t in toks]})["ok"]
        text = d.call({"cmd": "metrics"})["text"]
        assert sample(text, "pushline_provider_open_connections", origin=origin) is None
        fake.control({"delay_ms": 300})
        out = {}
        t = threading.Thread(target=lambda: out.update(r=Conn(d.socket, 120).call(
            {"cmd": "bulk", "platform": "apns", "registration_ids": toks, "message": "x"})))
        t.start()
        seen_streams, seen_conns = 0, 0
        deadline = time.time() + 60
        while t.is_alive() and time.time() < deadline:
            text = d.call({"cmd": "metrics"})["text"]
            seen_streams = max(seen_streams, sample(text, "pushline_provider_streams_in_flight", origin=origin) or 0)
            seen_conns = max(seen_conns, sample(text, "pushline_provider_open_connections", origin=origin) or 0)
            time.sleep(0.05)
        t.join(120)
        assert out["r"]["sent"] == 300, out["r"]
        assert 1 <= seen_streams <= 10 * limit, seen_streams
        assert seen_conns == limit
        assert fake.state()["connections_total"] == limit
        text = d.call({"cmd": "metrics"})["text"]
        promtool_check(text)
        assert sample(text, "pushline_provider_open_connections", origin=origin) == limit
        assert sample(text, "pushline_provider_streams_in_flight", origin=origin) is None
        [p] = d.call({"cmd": "health"})["providers"]
        assert p["open_connections"] == limit, p
        out = subprocess.run([binary(), "health"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, PUSHLINE_SOCKET=d.socket))
        assert f"{limit} connection{'' if limit == 1 else 's'} open" in out.stdout, out.stdout
    finally:
        fake.stop()
