"""Starts a real `pushline serve` on a temporary socket for the client test suites.

Used by the Python and shell suites (the Ruby suite has the same logic in
clients/ruby/test/test_helper.rb). The binary is `$PUSHLINE_BIN`, else
`<repo>/.build/debug/pushline`, else `<repo>/.build/release/pushline`, else
`pushline` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any, Dict, List, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def find_binary() -> str:
    env = os.environ.get("PUSHLINE_BIN")
    if env:
        return env
    for rel in (".build/debug/pushline", ".build/release/pushline"):
        path = os.path.join(REPO, rel)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("pushline")
    if found:
        return found
    raise RuntimeError("no pushline binary: run `swift build` at the repository root or set PUSHLINE_BIN")


def raw_request(sock_path: str, request: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
    """One request on a fresh connection, without the client library (for fixtures)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return json.loads(buf.split(b"\n", 1)[0])


class Daemon:
    """A `pushline serve` process on `<dir>/p.sock` with database `<dir>/p.db`."""

    def __init__(self, directory: str, config: Optional[Dict[str, Any]] = None) -> None:
        self.dir = directory
        self.binary = find_binary()
        self.socket = os.path.join(directory, "p.sock")
        self.database = os.path.join(directory, "p.db")
        self.config_path: Optional[str] = None
        if config is not None:
            self.config_path = os.path.join(directory, "pushline.json")
            with open(self.config_path, "w") as f:
                json.dump(config, f)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = os.path.join(directory, "daemon.log")

    def command(self) -> List[str]:
        cmd = [self.binary, "serve", "--socket", self.socket, "--database", self.database]
        if self.config_path:
            cmd += ["--config", self.config_path]
        return cmd

    def start(self, timeout: float = 20.0) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     cwd=self.dir)
        log.close()
        deadline = time.monotonic() + timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pushline serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                resp = raw_request(self.socket, {"id": 0, "cmd": "ping"}, timeout=1.0)
                if resp.get("ok"):
                    return self
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pushline serve did not answer ping within {timeout} s ({last}):\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def env(self) -> Dict[str, str]:
        """An environment for child processes (the shell client) naming this daemon."""
        env = dict(os.environ)
        env["PUSHLINE_SOCKET"] = self.socket
        env["PUSHLINE_BIN"] = self.binary
        return env
