"""Helpers and fixtures for the WebPush and WNS integration tests: the loopback fakes
(Tests/fakes/fake_webpush.py, fake_wns.py) as processes, their control API, VAPID keys
made with the real `pushline vapid generate`, and the provider config blocks."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import binary

FAKES = Path(__file__).resolve().parents[1] / "fakes"

WNS_CLIENT_ID = "ms-app://s-1-15-2-1111-2222"
WNS_SECRET = "wns-test-secret-value"


class Fake:
    """A fake push service process; `control()` talks to its HTTP/1.1 control port."""

    def __init__(self, script: str, args: list[str] | None = None):
        self.proc = subprocess.Popen([sys.executable, str(FAKES / script), *(args or [])], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 4 or line[0] != "READY":
            self.proc.kill()
            raise RuntimeError(f"{script} did not start: {line}")
        self.port, self.ca_file, self.control_port = int(line[1]), line[2], int(line[3])
        self.origin = f"https://127.0.0.1:{self.port}"

    def control(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def received(self, ident: str | None = None) -> list[dict]:
        return self.control("GET", "/received" + (f"?id={ident}" if ident else ""))

    def script(self, ident: str, responses: list[dict]) -> None:
        self.control("POST", "/script", {"id": ident, "responses": responses})

    def wait_received(self, ident: str, n: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.time() + timeout
        while True:
            r = self.received(ident)
            if len(r) >= n or time.time() > deadline:
                return r
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def webpush_fake():
    f = Fake("fake_webpush.py")
    yield f
    f.stop()


@pytest.fixture
def wns_fake():
    f = Fake("fake_wns.py", ["--client-id", WNS_CLIENT_ID, "--client-secret", WNS_SECRET])
    yield f
    f.stop()


def vapid_generate(directory: Path) -> tuple[str, str]:
    """Runs `pushline vapid generate --out DIR`; returns (private key path, applicationServerKey)."""
    out = subprocess.run([binary(), "vapid", "generate", "--out", str(directory)], capture_output=True, text=True, check=True)
    lines = dict(l.split(": ", 1) for l in out.stdout.strip().splitlines())
    return lines["private key"], lines["applicationServerKey"]


@pytest.fixture
def vapid(tmp_path):
    return vapid_generate(tmp_path)


def webpush_block(fake: Fake, key_path: str, **extra) -> dict:
    return {"vapid_private_key_path": key_path, "subject": "mailto:ops@example.com", "ca_file": fake.ca_file, **extra}


def wns_block(fake: Fake, secret: str = WNS_SECRET) -> dict:
    return {"package_sid": WNS_CLIENT_ID, "client_secret": secret, "token_url": fake.origin + "/accesstoken.srf",
            "ca_file": fake.ca_file}


def register_subscriptions(d, fake: Fake, n: int, user: str | None = None, std_base64: bool = False) -> list[tuple[str, dict]]:
    """Makes n subscriptions at the fake and registers them; returns [(fake id, device)]."""
    import base64

    subs = fake.control("POST", "/subscribe", {"count": n})
    devices = []
    for s in subs:
        p256dh, auth = s["p256dh"], s["auth"]
        if std_base64:  # what django-push-notifications' JavaScript sends (btoa)
            p256dh = base64.b64encode(base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))).decode()
            auth = base64.b64encode(base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4))).decode()
        dev = {"platform": "webpush", "registration_id": s["endpoint"], "p256dh": p256dh, "auth": auth, "browser": "firefox"}
        if user is not None:
            dev["user"] = user
        devices.append(dev)
    r = d.call({"cmd": "register", "devices": devices})
    assert r["ok"], r
    return [(s["id"], dev) for s, dev in zip(subs, r["devices"])]


def register_channels(d, fake: Fake, n: int, user: str | None = None) -> list[tuple[str, dict]]:
    chans = fake.control("POST", "/channel", {"count": n})
    devices = [{"platform": "wns", "registration_id": c["uri"], **({"user": user} if user is not None else {})} for c in chans]
    r = d.call({"cmd": "register", "devices": devices})
    assert r["ok"], r
    return [(c["id"], dev) for c, dev in zip(chans, r["devices"])]
