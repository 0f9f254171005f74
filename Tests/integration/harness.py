"""Start the real `pushline` binary on a temporary socket and talk to it.

Used by every integration test (and by the provider tests with their fakes):

    d = Daemon.start(tmp_path, config={"apps": {"default": {}}})
    assert d.call({"cmd": "ping"})["ok"]
    d.stop()
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    b = os.environ.get("PUSHLINE_BIN") or str(ROOT / ".build" / "debug" / "pushline")
    if not os.path.exists(b):
        raise RuntimeError(f"pushline binary not found at {b}: run `swift build` or set PUSHLINE_BIN")
    return b


_pg_counter = 0


def postgres_backend() -> Optional[str]:
    """The PostgreSQL socket directory when the suite runs on PostgreSQL (`make test` sets
    PUSHLINE_TEST_BACKEND=postgres and PUSHLINE_TEST_PG_HOST for its second pass), else None."""
    if os.environ.get("PUSHLINE_TEST_BACKEND") != "postgres":
        return None
    host = os.environ.get("PUSHLINE_TEST_PG_HOST")
    if not host:
        raise RuntimeError("PUSHLINE_TEST_BACKEND=postgres needs PUSHLINE_TEST_PG_HOST (a cluster's socket directory)")
    return host


def create_pg_database(host: str) -> str:
    """A fresh database on the test cluster (superuser `pushline`); its URI. The URI ends with
    `application_name=pushline` so that a test appending to the path (`db_path + "2"`) still
    names a valid, separate location."""
    global _pg_counter
    _pg_counter += 1
    name = f"it_{os.getpid()}_{_pg_counter}_{time.monotonic_ns() % 1000000}"
    subprocess.run(["psql", "-X", "-q", "-h", host, "-U", "pushline", "-d", "postgres", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True, timeout=60)
    return f"postgresql://pushline@/{name}?host={host}&application_name=pushline"


class Conn:
    """One socket connection speaking newline-delimited JSON."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv_line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv(self) -> dict:
        return json.loads(self.recv_line())

    def call(self, obj: Any) -> dict:
        self.send(obj)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


class Daemon:
    def __init__(self, workdir: Path, config: Optional[dict], extra_args: list[str], env: Optional[dict],
                 database: Optional[str] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.workdir / "p.sock")
        pg = postgres_backend()
        self.db_path = database or (create_pg_database(pg) if pg else str(self.workdir / "p.db"))
        self.config = config
        self.config_path: Optional[str] = None
        self.extra_args = extra_args
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / "daemon.log"
        self._conn: Optional[Conn] = None

    @classmethod
    def start(cls, workdir, config: Optional[dict] = None, extra_args: Optional[list[str]] = None,
              env: Optional[dict] = None, wait: bool = True, database: Optional[str] = None) -> "Daemon":
        d = cls(Path(workdir), config, extra_args or [], env, database)
        d._spawn(wait)
        return d

    def _spawn(self, wait: bool = True) -> None:
        args = [binary(), "serve", "--socket", self.socket, "--database", self.db_path]
        if self.config is not None:
            cfg = dict(self.config)
            self.config_path = str(self.workdir / "config.json")
            Path(self.config_path).write_text(json.dumps(cfg))
            args += ["--config", self.config_path]
        args += self.extra_args
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env, cwd=self.workdir)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"pushline exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                c = Conn(self.socket, timeout=2)
                ok = c.call({"cmd": "ping"}).get("ok")
                c.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"pushline did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connect(self, timeout: float = 30.0) -> Conn:
        return Conn(self.socket, timeout)

    def call(self, obj: Any) -> dict:
        """One request and its response on a shared connection."""
        if self._conn is None:
            self._conn = self.connect()
        return self._conn.call(obj)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self._conn:
            self._conn.close()
            self._conn = None
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"pushline did not stop on signal {sig}:\n{self.logs()}")

    def restart(self) -> None:
        self.stop()
        self._spawn(True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
