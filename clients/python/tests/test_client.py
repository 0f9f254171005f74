"""The shared client scenario (register, list, send, bad input), run against a real daemon."""

import os
import socket
import threading
import time

import pytest

import pushline
from conftest import apns_token


def test_ping_reports_protocol_1(client):
    info = client.ping()
    assert info["protocol"].split(".")[0] == "1"
    assert isinstance(info["version"], str) and info["version"]
    assert client.server["protocol"] == info["protocol"]


def test_socket_path_from_environment(daemon, monkeypatch):
    monkeypatch.setenv("PUSHLINE_SOCKET", daemon.socket)
    with pushline.Client() as c:
        assert c.socket_path == daemon.socket
        assert c.ping()["protocol"].startswith("1.")


def test_register_then_list(client):
    r = client.register(platform="apns", registration_id=apns_token(1).upper(), user=42, name="Ann's iPhone")
    assert r["created"] is True
    dev = r["device"]
    assert dev["platform"] == "apns" and dev["app"] == "default"
    assert dev["registration_id"] == apns_token(1)          # stored lowercase
    assert dev["user"] == "42" and dev["name"] == "Ann's iPhone" and dev["active"] is True
    client.register(platform="fcm", registration_id="fcm-token-for-someone-else", user="7")
    page = client.devices(user="42")
    assert [d["id"] for d in page["devices"]] == [dev["id"]]
    assert page["next"] is None


def test_register_batch_and_page_through(client):
    r = client.register(devices=[{"platform": "fcm", "registration_id": f"tok-{i}", "user": "9"} for i in range(5)])
    assert r["created"] == 5 and len(r["devices"]) == 5
    first = client.devices(user="9", limit=2)
    assert len(first["devices"]) == 2 and first["next"] == first["devices"][-1]["id"]
    ids = [d["id"] for d in client.iter_devices(user="9", page_size=2)]
    assert ids == sorted(d["id"] for d in r["devices"])


def test_send_to_unconfigured_provider(client):
    client.register(platform="apns", registration_id=apns_token(2), user="42")
    with pytest.raises(pushline.ProviderNotConfigured) as e:
        client.send(users=["42"], message="Your order shipped", badge=1, extra={"order": 981})
    assert e.value.code == "provider_not_configured"
    assert e.value.platform == "apns" and e.value.app == "default"
    assert isinstance(e.value, pushline.PushlineError)


def test_invalid_argument_names_field(client):
    with pytest.raises(pushline.InvalidArgument) as e:
        client.register(platform="apns", registration_id="not-hex")
    assert e.value.field == "registration_id"
    with pytest.raises(pushline.InvalidArgument) as e:
        client.register(devices=[{"platform": "fcm", "registration_id": "good"},
                                 {"platform": "fcm", "registration_id": "bad token"}])
    assert e.value.field == "devices[1].registration_id"
    # All or none: the good one of the rejected batch was not registered.
    assert client.devices(registration_id="good")["devices"] == []


def test_unknown_argument_is_invalid(client):
    with pytest.raises(pushline.InvalidArgument) as e:
        client.call("update", device=1, nmae="Work phone")
    assert e.value.field == "nmae"


def test_duplicate_registration(client):
    client.register(platform="fcm", registration_id="dup-token")
    with pytest.raises(pushline.DuplicateRegistration) as e:
        client.register(platform="fcm", registration_id="dup-token")
    assert e.value.code == "duplicate_registration" and e.value.field == "registration_id"
    assert len(client.devices(registration_id="dup-token")["devices"]) == 1


def test_not_found(client):
    with pytest.raises(pushline.NotFound):
        client.update(device=987654, name="nobody")


def test_unknown_command(client):
    with pytest.raises(pushline.UnknownCommand):
        client.call("pong")


def test_update_sets_and_clears(client):
    dev = client.register(platform="fcm", registration_id="upd-token", name="old", user="5")["device"]
    d = client.update(device=dev["id"], name="new")["device"]
    assert d["name"] == "new" and d["user"] == "5"
    d = client.update(device=dev["id"], name=None, active=False)["device"]
    assert d["name"] is None and d["active"] is False
    assert client.devices(active=False)["devices"][0]["id"] == dev["id"]


def test_unregister_lists_missing(client):
    dev = client.register(platform="fcm", registration_id="gone-token")["device"]
    r = client.unregister(ids=[dev["id"], 99999])
    assert r["deleted"] == 1 and r["not_found"] == [99999]
    assert client.devices(ids=[dev["id"]])["devices"] == []


def test_stats_and_prune(client):
    client.register(devices=[{"platform": "fcm", "registration_id": f"s-{i}"} for i in range(3)])
    client.update(registration_id="s-0", platform="fcm", active=False)
    s = client.stats()
    assert s["devices"]["total"] == 3 and s["devices"]["active"] == 2
    assert client.prune()["deleted"] == 1
    assert client.stats()["devices"]["total"] == 2


def test_line_too_long_keeps_connection(client):
    with pytest.raises(pushline.LineTooLong):
        client.register(platform="fcm", registration_id="x" * (1 << 21))
    assert client.ping()["protocol"].startswith("1.")


def test_many_threads_share_one_client(client):
    errors = []

    def work(n):
        try:
            for i in range(20):
                client.register(platform="fcm", registration_id=f"t{n}-{i}", user=str(n))
            assert len(list(client.iter_devices(user=str(n), page_size=7))) == 20
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.stats()["devices"]["total"] == 160


def test_reconnects_after_daemon_restart(daemon, client):
    dev = client.register(platform="fcm", registration_id="survivor")["device"]
    daemon.restart()
    # The old connection is dead; the client notices before writing and reconnects once.
    assert client.devices(ids=[dev["id"]])["devices"][0]["registration_id"] == "survivor"
    r = client.register(platform="fcm", registration_id="after-restart")
    assert r["created"] is True


def test_connection_error_when_daemon_is_down(daemon, client):
    client.ping()
    daemon.stop()
    with pytest.raises(pushline.ConnectionError):
        client.ping()
    with pytest.raises(pushline.ConnectionError) as e:
        pushline.Client(daemon.socket).stats()
    assert daemon.socket in str(e.value)


def test_bulk_send_pipelines_and_merges(client):
    ids = [d["id"] for d in client.register(
        devices=[{"platform": "fcm", "registration_id": f"b-{i}"} for i in range(30)])["devices"]]
    r = client.bulk_send(iter(ids), chunk=7, message="Sale!")
    # No provider is configured: every request fails as a whole, nothing is sent.
    assert r.requests == 5 and r.sent == 0 and not r.ok
    assert [e.index for e in r.errors] == [0, 1, 2, 3, 4]
    assert all(isinstance(e.error, pushline.ProviderNotConfigured) for e in r.errors)
    assert sorted(t for e in r.errors for t in e.targets) == ids
    # A small line limit splits chunks further.
    r = client.bulk_send(ids, chunk=30, max_line_bytes=120, message="Sale!")
    assert r.requests > 1 and sorted(t for e in r.errors for t in e.targets) == ids


def test_bulk_single_request(client):
    client.register(platform="apns", registration_id=apns_token(3), user="1")
    with pytest.raises(pushline.ProviderNotConfigured):
        client.bulk(messages=[{"users": ["1"], "message": "a"}])


def test_timeout_when_daemon_does_not_answer(workdir):
    # A socket that accepts and never answers: not a Pushline daemon, just silence.
    path = os.path.join(workdir, "silent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        c = pushline.Client(path, timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(pushline.ConnectionTimeout):
            c.ping()
        assert time.monotonic() - t0 < 3
    finally:
        srv.close()


def test_protocol_major_mismatch(workdir):
    # A one-shot responder claiming protocol 2.0 (the real daemon speaks 1.x).
    path = os.path.join(workdir, "v2.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\n" not in data:
                data += conn.recv(4096)
            import json
            rid = json.loads(data.split(b"\n")[0])["id"]
            conn.sendall(json.dumps({"id": rid, "ok": True, "version": "9.0.0", "protocol": "2.0"}).encode() + b"\n")
            time.sleep(0.2)

    t = threading.Thread(target=answer)
    t.start()
    try:
        with pytest.raises(pushline.ProtocolVersionError) as e:
            pushline.Client(path, timeout=2).devices()
        assert "2.0" in str(e.value)
    finally:
        t.join()
        srv.close()


def test_unknown_error_code_maps_to_internal_error():
    e = pushline.error_from_response({"code": "brand_new_code", "message": "m", "x": 1})
    assert type(e) is pushline.InternalError and e.code == "brand_new_code" and e.details == {"x": 1}
    b = pushline.error_from_response({"code": "busy", "message": "later", "retry_after_ms": 50})
    assert isinstance(b, pushline.Busy) and b.retry_after_ms == 50
