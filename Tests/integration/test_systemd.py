"""systemd protocols spoken by the daemon itself, tested without systemd as PID 1:
a datagram socket bound by the test is $NOTIFY_SOCKET (sd_notify), and a listening socket
the test holds is passed in as fd 3 with LISTEN_FDS=1 / LISTEN_PID (socket activation)."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import Conn, binary


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(path)
        self.path = path
        self.messages: list[dict] = []

    def read(self, timeout: float) -> list[dict]:
        """Messages that arrive within `timeout` seconds (all kept in self.messages)."""
        out = []
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return out
            msg = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            out.append(msg)
            self.messages.append(msg)

    def wait_for(self, key: str, timeout: float = 20.0) -> dict:
        deadline = time.time() + timeout
        for m in self.messages:
            if key in m:
                return m
        while time.time() < deadline:
            for m in self.read(min(0.5, deadline - time.time())):
                if key in m:
                    return m
        raise AssertionError(f"no {key} in {self.messages}")


def spawn(workdir: Path, *, env: dict, listen_fd: int | None = None, socket_path: str | None = None,
          extra: list[str] | None = None) -> subprocess.Popen:
    """Starts `pushline serve`; with listen_fd, that socket becomes the child's fd 3 and
    LISTEN_PID is the daemon's own pid (set by the sh that execs it)."""
    args = [binary(), "serve", "--socket", socket_path or str(workdir / "own.sock"), "--database", str(workdir / "p.db")]
    args += extra or []
    full_env = dict(os.environ, **env)
    log = open(workdir / "daemon.log", "ab")
    if listen_fd is None:
        return subprocess.Popen(args, env=full_env, stdout=log, stderr=log)
    full_env.setdefault("LISTEN_FDS", "1")
    full_env.setdefault("LISTEN_FDNAMES", "pushline")
    return subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *args],
                            env=full_env, stdout=log, stderr=log, pass_fds=(3,),
                            preexec_fn=lambda: os.dup2(listen_fd, 3))


def ping(path: str, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            c = Conn(path, 5)
            r = c.call({"cmd": "ping"})
            c.close()
            return r
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def listening_socket(path: str, backlog: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(backlog)
    return s


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_ready_status_reloading_stopping(tmp_path, abstract):
    path = f"@pushline-test-{os.getpid()}-{time.time_ns()}" if abstract else str(tmp_path / "notify")
    n = NotifySocket(path)
    p = spawn(tmp_path, env={"NOTIFY_SOCKET": path})
    try:
        ready = n.wait_for("READY")
        assert ready["READY"] == "1" and ready["MAINPID"] == str(p.pid)
        assert "serving" in ready["STATUS"]
        # READY=1 means the socket answers.
        assert ping(str(tmp_path / "own.sock"), timeout=2)["ok"] is True
        before = time.monotonic()
        p.send_signal(signal.SIGHUP)
        reload = n.wait_for("RELOADING")
        after = time.monotonic()
        assert reload["RELOADING"] == "1"
        # MONOTONIC_USEC is CLOCK_MONOTONIC (the clock time.monotonic reads on Linux), in µs.
        assert before * 1e6 - 1000 <= int(reload["MONOTONIC_USEC"]) <= after * 1e6 + 1000
        # Reloading ends with READY=1 again; the daemon still serves.
        ready_again = [m for m in n.read(1.0) + n.messages if m.get("READY") == "1"]
        assert len(ready_again) >= 2
        assert ping(str(tmp_path / "own.sock"), timeout=2)["ok"] is True
        p.send_signal(signal.SIGTERM)
        stopping = n.wait_for("STOPPING")
        assert stopping["STOPPING"] == "1" and "stopping" in stopping["STATUS"]
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_no_notify_socket_no_messages_and_bad_one_is_harmless(tmp_path):
    # A NOTIFY_SOCKET nobody listens on must not stop the daemon.
    p = spawn(tmp_path, env={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    try:
        assert ping(str(tmp_path / "own.sock"))["ok"] is True
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_watchdog_pets_only_while_the_database_makes_progress(tmp_path):
    n = NotifySocket(str(tmp_path / "notify"))
    p = spawn(tmp_path, env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "400000"})
    try:
        n.wait_for("READY")
        pets = [m for m in n.read(2.0) if m.get("WATCHDOG") == "1"]
        assert len(pets) >= 4, n.messages   # every 200 ms: about 10 in 2 s
        # Lock the database against writers: the daemon's write probe cannot finish, so
        # the watchdog must not be petted (systemd would restart a daemon stuck like this).
        db = sqlite3.connect(str(tmp_path / "p.db"), timeout=10, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        n.read(0.6)  # the period that was under way may still pet once
        stalled = [m for m in n.read(1.6) if m.get("WATCHDOG") == "1"]
        db.execute("COMMIT")
        db.close()
        assert stalled == [], stalled
        # Progress again: petting resumes (the blocked probe ends within the 5 s busy timeout).
        resumed = []
        deadline = time.time() + 15
        while not resumed and time.time() < deadline:
            resumed = [m for m in n.read(0.5) if m.get("WATCHDOG") == "1"]
        assert resumed
        assert "watchdog: no progress" in (tmp_path / "daemon.log").read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_watchdog_for_another_pid_is_ignored(tmp_path):
    n = NotifySocket(str(tmp_path / "notify"))
    p = spawn(tmp_path, env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    try:
        n.wait_for("READY")
        assert [m for m in n.read(1.0) if "WATCHDOG" in m] == []
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_serves_the_passed_in_socket_and_leaves_it_in_place(tmp_path):
    sock_path = str(tmp_path / "activated.sock")
    ls = listening_socket(sock_path)
    p = spawn(tmp_path, env={}, listen_fd=ls.fileno())
    try:
        assert ping(sock_path)["ok"] is True
        # Its own socket path (--socket) is not created: the passed-in one is served.
        assert not (tmp_path / "own.sock").exists()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    # systemd owns the socket: the file stays, and connections queue for the next daemon.
    assert os.path.exists(sock_path)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock_path)
    c.close()
    ls.close()


def test_listen_fds_for_another_process_are_ignored(tmp_path):
    p = spawn(tmp_path, env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    try:
        assert ping(str(tmp_path / "own.sock"))["ok"] is True
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_passed_fd_that_is_not_a_listening_socket_is_an_error(tmp_path):
    f = open(tmp_path / "plain-file", "w")
    p = spawn(tmp_path, env={}, listen_fd=f.fileno())
    assert p.wait(30) == 1
    log = (tmp_path / "daemon.log").read_text()
    assert "socket activation failed" in log and "none is a listening Unix stream socket" in log


def test_1000_requests_across_a_restart_through_an_activated_socket(tmp_path):
    """The test holds the listening socket (as systemd does) and passes it to daemon #1,
    stops #1 while clients keep connecting, waits, then starts #2 on the same socket:
    every request is answered ok, none refused, none lost."""
    sock_path = str(tmp_path / "activated.sock")
    ls = listening_socket(sock_path)
    d1 = spawn(tmp_path, env={}, listen_fd=ls.fileno())
    assert ping(sock_path)["ok"] is True
    total, workers = 1000, 8
    results: dict[int, dict] = {}
    errors: list[str] = []
    done_count = [0]
    lock = threading.Lock()
    done_at: dict[int, float] = {}

    def worker(w: int):
        for i in range(w, total, workers):
            try:
                c = Conn(sock_path, timeout=60)   # a new connection per request
                r = c.call({"id": i, "cmd": "register", "platform": "fcm", "registration_id": f"restart-token-{i}"})
                c.close()
                with lock:
                    results[i] = r
                    done_count[0] += 1
                    done_at[i] = time.time()
            except Exception as e:  # refused, reset, closed without an answer
                with lock:
                    errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    d2 = None
    try:
        while done_count[0] < 300 and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        d1.send_signal(signal.SIGTERM)
        assert d1.wait(30) == 0
        stopped_at = time.time()
        served_by_1 = done_count[0]
        time.sleep(0.5)   # clients keep connecting: they wait in the backlog
        d2 = spawn(tmp_path, env={}, listen_fd=ls.fileno())
        for t in threads:
            t.join(120)
        assert errors == [], errors[:5]
        assert len(results) == total
        bad = [r for r in results.values() if not r.get("ok")]
        assert bad == [], bad[:3]
        assert sorted(r["id"] for r in results.values()) == list(range(total))
        assert 300 <= served_by_1 < total
        # Requests made during the gap were answered by #2 after it started.
        assert any(t > stopped_at + 0.4 for t in done_at.values())
        stats = Conn(sock_path).call({"cmd": "stats"})
        assert stats["devices"]["total"] == total
    finally:
        for d in (d1, d2):
            if d is not None and d.poll() is None:
                d.send_signal(signal.SIGTERM)
                d.wait(30)
        ls.close()


def test_metrics_listener_passed_in_by_socket_activation(tmp_path):
    """systemd passes two sockets (LISTEN_FDS=2, LISTEN_FDNAMES=pushline:metrics): the protocol's
    Unix socket as fd 3 and a TCP listener named `metrics` as fd 4. Without any metrics_listen in
    the config, the daemon serves GET /metrics on the passed-in TCP socket; the text passes
    promtool and counts the requests the test made."""
    from test_metrics import http_get, promtool_check, sample
    sock_path = str(tmp_path / "activated.sock")
    ls = listening_socket(sock_path)
    ms = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ms.bind(("127.0.0.1", 0))
    ms.listen(16)
    port = ms.getsockname()[1]
    args = [binary(), "serve", "--socket", str(tmp_path / "own.sock"), "--database", str(tmp_path / "p.db")]
    env = dict(os.environ, LISTEN_FDS="2", LISTEN_FDNAMES="pushline:metrics")

    def fds():
        os.dup2(ls.fileno(), 3)
        os.dup2(ms.fileno(), 4)

    log = open(tmp_path / "daemon.log", "ab")
    p = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *args],
                         env=env, stdout=log, stderr=log, pass_fds=(3, 4), preexec_fn=fds)
    try:
        assert ping(sock_path)["ok"] is True
        c = Conn(sock_path, 10)
        for _ in range(3):
            assert c.call({"cmd": "stats"})["ok"] is True
        c.close()
        status, ctype, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        promtool_check(body)
        assert sample(body, "pushline_requests_total", command="stats", outcome="ok") == 3
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    ls.close()
    ms.close()
