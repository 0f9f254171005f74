"""Issue 16: arguments that reached the wrong devices are refused, timeouts fit the daemon's
deadline, results are typed, every exception says whether to retry. Against a real daemon."""

import json
import os
import socket
import threading
import time

import pytest

import pushline
from conftest import apns_token

import apns  # clients/testsupport/apns.py
from daemon import Daemon


@pytest.fixture
def apns_client(workdir):
    """A client of a daemon whose app `default` sends to the fake APNs; app `bare` has no credentials."""
    fake = apns.FakeAPNs(workdir).start()
    config = fake.config()
    config["apps"]["bare"] = {}
    d = Daemon(workdir, config=config)
    try:
        d.start()
        with pushline.Client(d.socket) as c:
            yield c
    finally:
        d.stop()
        fake.stop()


@pytest.mark.parametrize("kwargs, field", [
    ({"users": "42"}, "users"),
    ({"users": 42}, "users"),
    ({"registration_ids": "abc", "platform": "fcm"}, "registration_ids"),
    ({"ids": 1}, "ids"),
    ({"ids": "17"}, "ids"),
    ({"ids": [1, "2"]}, "ids[1]"),
    ({"users": {"42": 1}}, "users"),
    ({"filter": "user=42"}, "filter"),
    ({"filter": {}}, "filter"),
])
def test_a_lone_value_where_a_list_is_expected_is_refused_before_sending(client, kwargs, field):
    for user in ("4", "2", "42"):
        client.register(platform="apns", registration_id=apns_token(int(user) + 100), user=user)
    with pytest.raises(pushline.InvalidArgument) as e:
        client.send(message="for user 42 only", dry_run=True, **kwargs)
    assert e.value.field == field and isinstance(e.value, TypeError)
    assert field.split("[")[0] in str(e.value)
    # Nothing reached the daemon: its counters are untouched.
    assert client.stats()["notifications"] == {"sent": 0, "failed": 0}


def test_other_methods_check_their_lists(client):
    with pytest.raises(pushline.ArgumentTypeError) as e:
        client.unregister(ids=5)
    assert e.value.field == "ids"
    with pytest.raises(pushline.ArgumentTypeError):
        client.subscribe(topic="news", users="42")
    with pytest.raises(pushline.ArgumentTypeError) as e:
        client.bulk(messages=[{"users": "42", "message": "x"}])
    assert e.value.field == "messages[0].users"
    with pytest.raises(pushline.ArgumentTypeError) as e:
        client.bulk_send("12345", message="x")
    assert e.value.field == "targets"
    with pytest.raises(pushline.ArgumentTypeError) as e:
        client.register(devices={"platform": "apns"})
    assert e.value.field == "devices"
    # The right shapes still work; numbers in users become strings as before.
    client.register(platform="apns", registration_id=apns_token(1), user=42)
    assert [d["user"] for d in client.devices(user=42)["devices"]] == ["42"]


def test_typed_results_still_behave_as_dicts(apns_client):
    client = apns_client
    reg = client.register(platform="apns", registration_id=apns_token(7), user="7", name="Ann")
    assert isinstance(reg, pushline.RegisterResult) and reg.created is True and reg.device.name == "Ann"
    assert reg["device"]["id"] == reg.device.id and json.loads(json.dumps(reg)) == reg
    bare = client.register(platform="apns", registration_id=apns_token(8), app="bare").device
    r = client.send(ids=[reg.device.id, bare.id, 999999], message="x")
    assert isinstance(r, pushline.SendResult) and isinstance(r, dict)
    assert (r.sent, r.failed) == (r["sent"], r["failed"]) == (1, 2)
    by = {x.id: x for x in r.results}
    assert by[reg.device.id].ok and by[reg.device.id].status == "sent" and by[reg.device.id].reason_class is None
    assert by[999999].reason == "not_registered" and by[999999].reason_class == "not_registered"
    assert by[bare.id].reason_class == "configuration" and not by[bare.id].ok
    assert sorted(x.id for x in r.failures) == sorted([bare.id, 999999])
    page = client.devices(user="7")
    assert page.devices[0].registration_id == apns_token(7) and page.next is None
    upd = client.update(device=reg.device.id, name=None)
    assert upd.device.name is None and upd["device"]["name"] is None


def test_results_option_and_update_of_a_rotated_token(apns_client):
    client = apns_client
    ids = [client.register(platform="apns", registration_id=apns_token(i), user="u").device.id for i in (1, 2)]
    r = client.send(users=["u"], message="x", results="failed")
    assert r.results == [] and r.sent == 2
    new = client.update(device=ids[0], new_registration_id=apns_token(3))
    assert new.device.id == ids[0] and new.device.registration_id == apns_token(3)
    r = client.send(registration_ids=[apns_token(3)], platform="apns", message="x")
    assert r.results[0].id == ids[0] and r.sent == 1


def test_default_timeout_outlasts_the_daemons_provider_deadline():
    assert pushline.Client("/nonexistent").timeout > 30
    assert pushline.DEFAULT_TIMEOUT > 30


def _ping_then_silent(path):
    """A socket that answers ping and nothing after: a slow daemon."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    conns = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conns.append(conn)
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data:
                rid = json.loads(data.split(b"\n")[0])["id"]
                conn.sendall(json.dumps({"id": rid, "ok": True, "version": "x", "protocol": "1.1"}).encode() + b"\n")

    threading.Thread(target=serve, daemon=True).start()
    return srv, conns


def test_per_call_timeout_is_not_sent_to_the_daemon(client):
    # Before: timeout= went into the request and the daemon refused it as an unknown argument.
    client.register(platform="apns", registration_id=apns_token(9), user="9")
    with pytest.raises(pushline.ProviderNotConfigured):  # the daemon's answer, not "unknown argument 'timeout'"
        client.send(users=["9"], message="x", dry_run=True, timeout=20)
    assert client.devices(user="9", timeout=5).devices
    with pytest.raises(pushline.ArgumentTypeError):
        client.stats(timeout=-1)


def test_per_call_timeout_bounds_that_call_only(workdir):
    path = os.path.join(workdir, "slow.sock")
    srv, conns = _ping_then_silent(path)
    try:
        c = pushline.Client(path, timeout=60)
        t0 = time.monotonic()
        with pytest.raises(pushline.ConnectionTimeout) as e:
            c.send(users=["1"], message="x", timeout=0.3)
        assert time.monotonic() - t0 < 10
        assert e.value.request_sent is True and e.value.retryable is False
    finally:
        srv.close()
        for x in conns:
            x.close()


def test_every_exception_says_whether_to_retry(client, workdir):
    with pytest.raises(pushline.InvalidArgument) as e:
        client.register(platform="apns", registration_id="nothex")
    assert e.value.retryable is False
    assert pushline.error_from_response({"code": "busy", "message": "", "retry_after_ms": 5}).retryable is True
    assert pushline.error_from_response({"code": "shutting_down", "message": ""}).retryable is True
    assert pushline.error_from_response({"code": "not_found", "message": ""}).retryable is False
    with pytest.raises(pushline.ConnectionError) as e:
        pushline.Client(os.path.join(workdir, "none.sock")).ping()
    assert e.value.retryable is True and e.value.request_sent is False
    for cls in (pushline.PushlineError, pushline.ProtocolVersionError, pushline.ConnectionTimeout):
        assert isinstance(cls("m").retryable if cls is pushline.ConnectionTimeout else cls().retryable, bool)


def test_unknown_app_names_the_configured_apps(workdir):
    d = Daemon(workdir, config={"apps": {"default": {}, "shop": {}}}).start()
    try:
        with pushline.Client(d.socket) as c:
            with pytest.raises(pushline.InvalidArgument) as e:
                c.register(platform="apns", registration_id=apns_token(1), app="shpo")
            assert e.value.details["apps"] == ["default", "shop"] and e.value.field == "app"
            with pytest.raises(pushline.ProviderNotConfigured) as e:
                c.send(users=["1"], app="nope", message="x")
            assert e.value.app == "nope" and "default, shop" in e.value.message
    finally:
        d.stop()
