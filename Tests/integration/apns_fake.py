"""Start Tests/fakes/fake_apns.py for integration tests and drive its admin port.

    fake = FakeAPNs.start(["--gen-key", "TEAM123456:KEY1234567"])
    fake.control({"unregister": [{"token": tok, "timestamp": 1700000000000}]})
    fake.received()   # every request the fake got (headers, parsed payload, answer)
    fake.stop()
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_apns.py"
TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.app"


class FakeAPNs:
    def __init__(self, proc, port, ca, admin_port, workdir):
        self.proc = proc
        self.port = port
        self.ca = ca
        self.admin_port = admin_port
        self.workdir = workdir

    @classmethod
    def start(cls, args: list[str], workdir: str | None = None) -> "FakeAPNs":
        cmd = [sys.executable, str(FAKE)] + args + (["--workdir", workdir] if workdir else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        line = proc.stdout.readline().split()
        if len(line) != 5 or line[0] != "READY":
            proc.kill()
            raise RuntimeError(f"fake APNs did not start: {line}")
        return cls(proc, int(line[1]), line[2], int(line[3]), line[4])

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    def key_path(self, key_id: str = KEY_ID) -> str:
        return f"{self.workdir}/AuthKey_{key_id}.p8"

    def apns_block(self, **over) -> dict:
        """An app's apns block aimed at this fake (token auth by default)."""
        b = {"key_path": self.key_path(), "key_id": KEY_ID, "team_id": TEAM, "topic": TOPIC,
             "endpoint": self.endpoint, "ca_file": self.ca}
        b.update(over)
        return {k: v for k, v in b.items() if v is not None}

    def _admin(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def control(self, c: dict) -> None:
        assert self._admin("POST", "/control", c)["ok"]

    def received(self) -> list[dict]:
        return self._admin("GET", "/received")

    def state(self) -> dict:
        return self._admin("GET", "/state")

    def clear(self) -> None:
        self._admin("POST", "/clear", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
