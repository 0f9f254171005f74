"""The daemon, its socket protocol and the registry, driven over the real socket."""
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from harness import Conn, Daemon, binary

APNS_TOKEN = "a1" * 32  # 64 hex chars
FCM_TOKEN = "fcm-token-" + "x" * 140


def apns(i: int) -> str:
    return f"{i:064x}"


def test_ping_reports_versions(daemon):
    r = daemon.call({"id": 1, "cmd": "ping"})
    assert r == {"id": 1, "ok": True, "version": r["version"], "protocol": "1.3"}
    assert r["version"].count(".") == 2


def test_register_then_list(daemon):
    r = daemon.call({"id": "r1", "cmd": "register", "platform": "apns", "registration_id": APNS_TOKEN.upper(),
                     "user": 42, "name": "Ann's iPhone"})
    assert r["ok"] and r["created"] is True and r["updated"] is False
    dev = r["device"]
    assert dev["registration_id"] == APNS_TOKEN  # stored lowercase
    assert dev["user"] == "42" and dev["app"] == "default" and dev["active"] is True
    listed = daemon.call({"cmd": "devices", "user": "42"})
    assert listed["ok"] and [d["id"] for d in listed["devices"]] == [dev["id"]]
    assert listed["next"] is None


def test_duplicate_registration_is_an_error_and_changes_nothing(daemon):
    assert daemon.call({"cmd": "register", "platform": "fcm", "registration_id": FCM_TOKEN, "name": "a"})["ok"]
    r = daemon.call({"id": 2, "cmd": "register", "platform": "fcm", "registration_id": FCM_TOKEN, "name": "b"})
    assert r["ok"] is False and r["error"]["code"] == "duplicate_registration"
    assert r["error"]["field"] == "registration_id" and not r["error"]["message"].startswith("devices[")
    assert FCM_TOKEN not in r["error"]["message"]
    r = daemon.call({"cmd": "register", "devices": [{"platform": "fcm", "registration_id": "other"},
                                                    {"platform": "fcm", "registration_id": FCM_TOKEN}]})
    assert r["error"]["code"] == "duplicate_registration" and r["error"]["field"] == "devices[1].registration_id"
    d = daemon.call({"cmd": "devices"})["devices"]
    assert len(d) == 1 and d[0]["name"] == "a"


def test_update_on_duplicate_reg_id(start_daemon):
    d = start_daemon(config={"update_on_duplicate_reg_id": True})
    first = d.call({"cmd": "register", "platform": "fcm", "registration_id": FCM_TOKEN, "name": "a"})
    assert first["created"] is True
    d.call({"cmd": "update", "device": first["device"]["id"], "active": False})
    again = d.call({"cmd": "register", "platform": "fcm", "registration_id": FCM_TOKEN, "name": "b"})
    assert again["ok"] and again["created"] is False and again["updated"] is True
    assert again["device"]["id"] == first["device"]["id"]
    assert again["device"]["name"] == "b" and again["device"]["active"] is True


def test_batch_register_is_all_or_nothing(daemon):
    bad = daemon.call({"cmd": "register", "devices": [
        {"platform": "apns", "registration_id": apns(1)},
        {"platform": "apns", "registration_id": "nothex"},
    ]})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_argument"
    assert bad["error"]["field"] == "devices[1].registration_id"
    assert daemon.call({"cmd": "devices"})["devices"] == []
    good = daemon.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": apns(i)} for i in range(1, 501)]})
    assert good["ok"] and good["created"] == 500 and len(good["devices"]) == 500
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == 500


@pytest.mark.parametrize("device,field", [
    ({"registration_id": apns(1)}, "platform"),
    ({"platform": "blackberry", "registration_id": "x"}, "platform"),
    ({"platform": "apns"}, "registration_id"),
    ({"platform": "apns", "registration_id": "ab" * 20}, "registration_id"),
    ({"platform": "apns", "registration_id": "abc" * 21}, "registration_id"),
    ({"platform": "fcm", "registration_id": "has space"}, "registration_id"),
    ({"platform": "fcm", "registration_id": "x" * 4097}, "registration_id"),
    ({"platform": "webpush", "registration_id": "http://push.example/x", "p256dh": "x", "auth": "y"}, "registration_id"),
    ({"platform": "webpush", "registration_id": "https://push.example/x", "p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "p256dh"),
    ({"platform": "wns", "registration_id": "ftp://x"}, "registration_id"),
    ({"platform": "fcm", "registration_id": "ok", "device_id": "not-a-uuid"}, "device_id"),
    ({"platform": "fcm", "registration_id": "ok", "colour": "red"}, "colour"),
    ({"platform": "fcm", "registration_id": "ok", "app": "bad app!"}, "app"),
])
def test_register_validation_names_the_field(daemon, device, field):
    r = daemon.call({"id": 9, "cmd": "register", **device})
    assert r["id"] == 9 and r["ok"] is False
    assert r["error"]["code"] == "invalid_argument", r
    assert r["error"]["field"] == field, r
    assert field in r["error"]["message"]
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == 0


def test_webpush_device_round_trip(daemon):
    import base64
    p256 = base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).rstrip(b"=").decode()
    auth = base64.urlsafe_b64encode(b"\x02" * 16).rstrip(b"=").decode()
    r = daemon.call({"cmd": "register", "platform": "webpush", "registration_id": "https://push.example/abc",
                     "p256dh": p256, "auth": auth, "browser": "firefox"})
    assert r["ok"], r
    assert r["device"]["p256dh"] == p256 and r["device"]["auth"] == auth and r["device"]["browser"] == "firefox"


def test_bad_input_keeps_connection_usable(daemon):
    c = daemon.connect()
    c.send_raw(b"{not json}\n")
    assert c.recv()["error"]["code"] == "bad_json"
    c.send_raw(b"[1,2]\n")
    assert c.recv()["error"]["code"] == "bad_json"
    c.send_raw(b'{"id": 3, "cmd": "frobnicate"}\n')
    r = c.recv()
    assert r["id"] == 3 and r["error"]["code"] == "unknown_command"
    c.send_raw(b'{"id": 4}\n')
    r = c.recv()
    assert r["id"] == 4 and r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "cmd"
    c.send_raw(b'{"id": 5, "cmd": "devices", "limit": "ten"}\n')
    r = c.recv()
    assert r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "limit"
    c.send_raw(b'{"id": 6, "cmd": "devices", "bogus": 1}\n')
    r = c.recv()
    assert r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "bogus"
    c.send_raw(b'\xff\xfe{"cmd":"ping"}\n')
    assert c.recv()["error"]["code"] == "bad_json"
    c.send_raw(b'{"id": 7, "cmd": "ping"}\r\n\n')
    assert c.recv() == {"id": 7, "ok": True, "version": c.call({"cmd": "ping"})["version"], "protocol": "1.3"}


def test_line_too_long_is_discarded(start_daemon):
    d = start_daemon(config={"max_line_bytes": 4096})
    c = d.connect()
    long_line = json.dumps({"id": 1, "cmd": "register", "platform": "fcm", "registration_id": "a" * 10000}).encode()
    # Sent in pieces so the daemon sees the limit crossed mid-line.
    c.send_raw(long_line[:3000])
    time.sleep(0.05)
    c.send_raw(long_line[3000:] + b"\n" + b'{"id": 2, "cmd": "ping"}\n')
    r = c.recv()
    assert r["ok"] is False and r["error"]["code"] == "line_too_long" and r["error"]["limit"] == 4096
    assert c.recv()["id"] == 2
    assert d.call({"cmd": "stats"})["devices"]["total"] == 0


def test_pipelined_responses_keep_request_order(daemon):
    c = daemon.connect()
    reqs = []
    for i in range(2000):
        if i % 3 == 0:
            reqs.append({"id": i, "cmd": "register", "platform": "apns", "registration_id": apns(i + 1)})
        elif i % 3 == 1:
            reqs.append({"id": i, "cmd": "ping"})
        else:
            reqs.append({"id": i, "cmd": "devices", "limit": 1})
    c.send_raw(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
    ids = [c.recv()["id"] for _ in reqs]
    assert ids == list(range(2000))


def test_256_concurrent_clients(daemon):
    errors = []
    results = []

    def client(n):
        try:
            c = daemon.connect()
            for k in range(5):
                r = c.call({"id": k, "cmd": "register", "platform": "apns", "registration_id": apns(n * 10 + k + 1), "user": str(n)})
                assert r["ok"], r
            r = c.call({"cmd": "devices", "user": str(n)})
            results.append(len(r["devices"]))
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    # Open all 256 connections before any finishes.
    conns = [daemon.connect() for _ in range(256)]
    threads = [threading.Thread(target=client, args=(n,)) for n in range(256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        assert c.call({"cmd": "ping"})["ok"]
        c.close()
    assert errors == []
    assert results == [5] * 256
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == 1280


def test_restart_keeps_every_device(start_daemon):
    d = start_daemon()
    d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": apns(i), "user": "u"} for i in range(1, 1001)]})
    assert d.stop() == 0
    assert not os.path.exists(d.socket), "socket removed on clean shutdown"
    d._spawn()
    assert d.call({"cmd": "stats"})["devices"]["total"] == 1000
    page = d.call({"cmd": "devices", "limit": 1000})["devices"]
    assert sorted(x["registration_id"] for x in page) == sorted(apns(i) for i in range(1, 1001))


def test_paging_update_unregister_prune(daemon):
    ids = [d["id"] for d in daemon.call({"cmd": "register", "devices": [
        {"platform": "fcm", "registration_id": f"tok{i}", "user": "p"} for i in range(7)]})["devices"]]
    seen, after = [], None
    while True:
        req = {"cmd": "devices", "limit": 3}
        if after is not None:
            req["after"] = after
        r = daemon.call(req)
        seen += [d["id"] for d in r["devices"]]
        after = r["next"]
        if after is None:
            break
    assert seen == ids
    r = daemon.call({"cmd": "update", "device": ids[0], "name": "renamed", "active": False})
    assert r["ok"] and r["device"]["name"] == "renamed" and r["device"]["active"] is False
    assert r["device"]["inactive_reason"] == "deactivated by client"
    assert daemon.call({"cmd": "update", "device": 999999, "name": "x"})["error"]["code"] == "not_found"
    assert daemon.call({"cmd": "devices", "active": False})["devices"][0]["id"] == ids[0]
    r = daemon.call({"cmd": "unregister", "ids": [ids[1], 999999]})
    assert r == {"id": None, "ok": True, "deleted": 1, "not_found": [999999]}
    r = daemon.call({"cmd": "unregister", "registration_id": "tok2", "platform": "fcm"})
    assert r["deleted"] == 1
    assert daemon.call({"cmd": "prune", "inactive_before": "2000-01-01"})["deleted"] == 0
    assert daemon.call({"cmd": "prune"})["deleted"] == 1
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == 4
    assert daemon.call({"cmd": "prune", "inactive_before": "yesterday"})["error"]["field"] == "inactive_before"


def test_stats_counts_by_app_and_platform(start_daemon):
    # Protocol 1.1: a device's app must be configured (here without credentials).
    daemon = start_daemon({"apps": {"default": {}, "shop": {}}})
    daemon.call({"cmd": "register", "devices": [
        {"platform": "fcm", "registration_id": "a"}, {"platform": "fcm", "registration_id": "b", "active": False},
        {"platform": "apns", "registration_id": apns(5), "app": "shop"}]})
    s = daemon.call({"cmd": "stats"})
    assert s["devices"]["total"] == 3 and s["devices"]["active"] == 2 and s["devices"]["inactive"] == 1
    assert s["devices"]["by_app"]["default"]["fcm"] == {"active": 1, "inactive": 1}
    assert s["devices"]["by_app"]["shop"]["apns"] == {"active": 1, "inactive": 0}
    assert s["uptime_s"] >= 0 and s["connections"] >= 1


def test_send_without_credentials_is_provider_not_configured(daemon):
    daemon.call({"cmd": "register", "platform": "apns", "registration_id": APNS_TOKEN, "user": "u1"})
    for req in [
        {"cmd": "send", "users": ["u1"], "message": "hi"},
        {"cmd": "send", "registration_ids": ["abc"], "platform": "wns", "message": "hi"},
        {"cmd": "bulk", "ids": [1], "message": "hi"},
        {"cmd": "topic", "topic": "news", "message": "hi"},
    ]:
        r = daemon.call(req)
        assert r["ok"] is False and r["error"]["code"] == "provider_not_configured", (req, r)
        assert "credentials" in r["error"]["message"] or "fcm" in r["error"]["message"]


def test_send_argument_errors(daemon):
    r = daemon.call({"cmd": "send", "message": "no target"})
    assert r["error"]["code"] == "invalid_argument" and r["error"]["field"] == "ids"
    r = daemon.call({"cmd": "send", "ids": [1], "users": ["a"], "message": "x"})
    assert r["error"]["code"] == "invalid_argument"
    r = daemon.call({"cmd": "send", "ids": [1], "badge": -1})
    assert r["error"]["field"] == "badge"
    r = daemon.call({"cmd": "send", "ids": [1], "mesage": "typo"})
    assert r["error"]["field"] == "mesage"
    r = daemon.call({"cmd": "bulk", "messages": [{"ids": [1], "message": "a"}, {"ids": [1], "priority": "urgent"}]})
    assert r["error"]["field"] == "messages[1].priority"


def test_users_target_with_no_devices_is_empty(daemon):
    r = daemon.call({"cmd": "send", "users": ["nobody"], "message": "hi"})
    assert r["ok"] and r["results"] == [] and r["sent"] == 0 and r["failed"] == 0


def test_refuses_to_steal_a_live_socket(start_daemon):
    d = start_daemon()
    p = subprocess.run([binary(), "serve", "--socket", d.socket, "--database", d.db_path + "2"],
                       capture_output=True, timeout=20)
    assert p.returncode != 0
    assert b"another daemon" in p.stderr
    assert d.call({"cmd": "ping"})["ok"], "the first daemon still serves"


def test_removes_stale_socket_and_applies_mode(tmp_path_factory, start_daemon):
    d = start_daemon(wait=False)
    d.kill()
    # Leave a stale socket file behind: bind without listening.
    work = tmp_path_factory.mktemp("stale")
    sock_path = str(work / "s.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock_path)
    s.close()
    assert os.path.exists(sock_path)
    d2 = start_daemon(config={"socket": sock_path, "socket_mode": "0600"})
    # --socket from the harness wins over config; start one on the stale path explicitly.
    d2.stop()
    cfg = work / "c.json"
    cfg.write_text(json.dumps({"socket": sock_path, "database": str(work / "x.db"), "socket_mode": "0600"}))
    p = subprocess.Popen([binary(), "serve", "--config", str(cfg)], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                c = Conn(sock_path, 2)
                if c.call({"cmd": "ping"})["ok"]:
                    break
            except OSError:
                time.sleep(0.05)
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
    assert not os.path.exists(sock_path)


def test_sigterm_finishes_in_flight_requests(start_daemon):
    d = start_daemon()
    c = d.connect()
    batch = [{"platform": "apns", "registration_id": apns(i)} for i in range(1, 8001)]
    c.send({"id": "big", "cmd": "register", "devices": batch})
    time.sleep(0.02)
    d.proc.send_signal(signal.SIGTERM)
    r = c.recv()
    assert r["id"] == "big" and r["ok"] is True and r["created"] == 8000
    assert d.proc.wait(30) == 0
    assert not os.path.exists(d.socket)
    d._spawn()
    assert d.call({"cmd": "stats"})["devices"]["total"] == 8000


def test_logs_never_hold_a_full_token(start_daemon):
    d = start_daemon(extra_args=["--log-level", "trace"])
    d.call({"cmd": "register", "platform": "apns", "registration_id": APNS_TOKEN})
    d.call({"cmd": "register", "platform": "apns", "registration_id": APNS_TOKEN})
    d.call({"cmd": "send", "registration_ids": [APNS_TOKEN], "platform": "apns", "message": "x"})
    d.stop()
    assert APNS_TOKEN not in d.logs()
    assert "ready" in d.logs()


def test_call_cli_pipes_lines_and_sets_exit_code(daemon):
    env = dict(os.environ, PUSHLINE_SOCKET=daemon.socket)
    # Pipelined requests run concurrently (protocol.md section 1): the device `devices` must
    # list is registered before, not by a line that may still be in flight.
    assert daemon.call({"cmd": "register", "platform": "fcm", "registration_id": "cli-token"})["ok"]
    lines = b'{"id":1,"cmd":"ping"}\n{"id":2,"cmd":"register","platform":"fcm","registration_id":"cli-token-2"}\n{"id":3,"cmd":"devices"}\n'
    p = subprocess.run([binary(), "call"], input=lines, capture_output=True, env=env, timeout=20)
    assert p.returncode == 0, p.stderr
    out = [json.loads(l) for l in p.stdout.splitlines()]
    assert [o["id"] for o in out] == [1, 2, 3]
    assert out[2]["devices"][0]["registration_id"] == "cli-token"
    p = subprocess.run([binary(), "call", "--socket", daemon.socket], input=b'{"cmd":"nope"}\n{"cmd":"ping"}\n',
                       capture_output=True, timeout=20)
    assert p.returncode == 1 and len(p.stdout.splitlines()) == 2
    p = subprocess.run([binary(), "call", "--socket", daemon.socket + ".missing"], input=b'{"cmd":"ping"}\n',
                       capture_output=True, timeout=20)
    assert p.returncode == 2 and b"cannot connect" in p.stderr


def test_devices_cli_lists_a_table(daemon):
    daemon.call({"cmd": "register", "platform": "apns", "registration_id": APNS_TOKEN, "user": "ann", "name": "phone"})
    p = subprocess.run([binary(), "devices", "--socket", daemon.socket], capture_output=True, timeout=20)
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "ann" in out and "phone" in out and APNS_TOKEN not in out and APNS_TOKEN[:8] in out


@pytest.mark.parametrize("config,path", [
    ({"socket_mode": 660}, "socket_mode"),
    ({"max_line_bytes": 10}, "max_line_bytes"),
    ({"apps": {"shop": {"apns": {"key_id": "K"}}}}, "apps.shop.apns"),
    ({"apps": {"shop": {"fcm": {}}}}, "apps.shop.fcm.service_account_path"),
    ({"apps": {"shop": {"apns": {"key_path": "/nonexistent.p8", "key_id": "K", "team_id": "T"}}}}, "apps.shop.apns.key_path"),
    ({"apps": {"shop": {"wns": {"client_id": "a", "client_secret": "b", "colour": 1}}}}, "apps.shop.wns.colour"),
    ({"sockett": "x"}, "sockett"),
])
def test_check_config_names_the_key_path(tmp_path, config, path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(config))
    p = subprocess.run([binary(), "check-config", str(f)], capture_output=True, timeout=20)
    assert p.returncode == 1
    assert path in p.stderr.decode(), p.stderr


def test_check_config_accepts_a_good_file(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"socket": "/tmp/x.sock", "apps": {"default": {}, "shop": {}}}))
    p = subprocess.run([binary(), "check-config", str(f)], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert b"OK" in p.stdout and b"app shop" in p.stdout
    f.write_text("{bad json")
    p = subprocess.run([binary(), "check-config", str(f)], capture_output=True, timeout=20)
    assert p.returncode == 1 and b"not valid JSON" in p.stderr


def test_request_is_carried_out_when_the_client_hangs_up(daemon):
    c = daemon.connect()
    c.send({"cmd": "register", "devices": [{"platform": "apns", "registration_id": apns(i)} for i in range(1, 5001)]})
    c.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        if daemon.call({"cmd": "stats"})["devices"]["total"] == 5000:
            break
        time.sleep(0.05)
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == 5000
    # The daemon is idle again (no busy loop on the dead connection).
    time.sleep(0.3)
    t0 = os.times()
    pid = daemon.proc.pid
    def cpu():
        parts = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(parts[11]) + int(parts[12])
    before = cpu()
    time.sleep(1.0)
    assert cpu() - before < 20, "daemon burns CPU while idle"


def sigterm_blocked(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)) != 0
    except FileNotFoundError:
        pass
    return False


def test_sigterm_during_startup_still_exits_cleanly(tmp_path):
    # A signal that arrives before the daemon is ready must not kill it uncleanly.
    for delay in (0.02, 0.05, 0.1):
        sock = str(tmp_path / f"s{delay}.sock")
        p = subprocess.Popen([binary(), "serve", "--socket", sock, "--database", str(tmp_path / f"d{delay}.db")],
                             stderr=subprocess.DEVNULL)
        # Until the dynamic loader has mapped the daemon's libraries and run its first
        # constructor (which blocks SIGTERM), a SIGTERM kills any process: wait for that, so
        # the test measures the daemon's own startup and not the loader's (tens of ms under load).
        deadline = time.time() + 20
        while not sigterm_blocked(p.pid) and time.time() < deadline:
            time.sleep(0.001)
        assert sigterm_blocked(p.pid)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert not os.path.exists(sock)
