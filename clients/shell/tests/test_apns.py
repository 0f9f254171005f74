"""pushline-send through the repository's fake APNs (HTTP/2 + TLS on loopback), when it exists."""

import json
import time
import urllib.request

import pytest

import apns  # clients/testsupport/apns.py
from conftest import Runner
from daemon import Daemon

TOKEN_OK = "a1" * 32
TOKEN_DEAD = "b2" * 32


@pytest.fixture
def run_apns(workdir):
    if not apns.available():
        pytest.skip("Tests/fakes/fake_apns.py (the APNs work) is not in this tree")
    fake = apns.FakeAPNs(workdir).start()
    d = Daemon(workdir, config=fake.config())
    try:
        d.start()
        yield Runner(d), fake
    finally:
        d.stop()
        fake.stop()


def test_send_and_dead_token(run_apns):
    run, fake = run_apns
    reg = [{"cmd": "register", "platform": "apns", "registration_id": t, "user": "42"} for t in (TOKEN_OK, TOKEN_DEAD)]
    assert run("--ndjson", stdin="".join(json.dumps(r) + "\n" for r in reg)).returncode == 0
    r = run("--token", TOKEN_OK, "--platform", "apns", "--message", "Deploy done", "--badge", "2")
    resp = json.loads(r.stdout)
    reasons = [x.get("reason", "") for x in resp.get("results", [])]
    if reasons and all("not implemented" in x for x in reasons):
        pytest.skip(f"the daemon cannot send yet: {reasons[0]}")
    assert r.returncode == 0, r.stderr
    assert resp["sent"] == 1
    got = [x for x in fake.received() if x["token"] == TOKEN_OK]
    assert len(got) == 1 and got[0]["payload"]["aps"]["badge"] == 2

    body = json.dumps({"unregister": [{"token": TOKEN_DEAD, "timestamp": int(time.time() * 1000) + 60_000,
                                       "reason": "Unregistered"}]}).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{fake.admin_port}/control", data=body,
                                                  method="POST"), timeout=5).read()
    # The response is ok (exit 0) with one failed device; --strict turns that into exit 3.
    r = run("--user", "42", "--message", "again")
    assert r.returncode == 0 and "1 device(s) failed (Unregistered x1)" in r.stderr
    r = run("--strict", "--user", "42", "--message", "again")   # the dead device is now inactive: not chosen
    assert r.returncode == 0
    r = run("--strict", "--token", TOKEN_DEAD, "--platform", "apns", "--message", "again")
    assert r.returncode == 3 and "inactive" in r.stderr
