"""Runs the repository's fake APNs (Tests/fakes/fake_apns.py: real HTTP/2 + TLS on
loopback) for the client suites' "send through a provider" scenario.

`available()` is false until that fake exists in the tree (it comes with the APNs
work); the suites skip the scenario then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any, Dict, List, Optional

from daemon import REPO

FAKE = os.environ.get("PUSHLINE_FAKE_APNS") or os.path.join(REPO, "Tests", "fakes", "fake_apns.py")
TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.shop"


def available() -> bool:
    if not os.path.exists(FAKE):
        return False
    try:
        import cryptography  # noqa: F401
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


class FakeAPNs:
    """`fake_apns.py --gen-key TEAM:KEYID` in `<dir>/apns`; `config()` is the daemon's app block."""

    def __init__(self, directory: str) -> None:
        self.workdir = os.path.join(directory, "apns")
        os.makedirs(self.workdir, exist_ok=True)
        self.proc: Optional[subprocess.Popen[str]] = None

    def start(self) -> "FakeAPNs":
        self.proc = subprocess.Popen([sys.executable, FAKE, "--workdir", self.workdir, "--gen-key", f"{TEAM}:{KEY_ID}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) < 5 or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"fake APNs did not start: {line!r}")
        self.port, self.ca_path, self.admin_port = int(line[1]), line[2], int(line[3])
        return self

    def config(self) -> Dict[str, Any]:
        """The daemon config naming this fake as the `default` app's APNs."""
        return {"apps": {"default": {"apns": {
            "key_path": os.path.join(self.workdir, f"AuthKey_{KEY_ID}.p8"), "key_id": KEY_ID, "team_id": TEAM,
            "topic": TOPIC, "environment": "sandbox",
            "endpoint": f"https://127.0.0.1:{self.port}", "ca_file": self.ca_path}}}}

    def received(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/received", timeout=5) as r:
            data = json.loads(r.read())
        return data if isinstance(data, list) else data.get("received", [])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
