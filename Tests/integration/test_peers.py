"""Who may connect (issue 12): peer credentials (SO_PEERCRED) against allowed_uids and
allowed_gids, and max_connections. A second uid is created with `useradd -r` when missing
and the client runs as it through `setpriv` (the tests run as root, here and in CI)."""
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from harness import Conn, Daemon, binary

PEER_USER = "pushline-peer"

# Connects, optionally sends a ping, and prints every line it gets until a successful reply
# or until the daemon closes the connection; and its own pid and uid.
CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
s.connect(sys.argv[1])
if sys.argv[2] == "ping":
    try:
        s.sendall(b'{"id":7,"cmd":"ping"}\n')
    except (BrokenPipeError, ConnectionResetError):
        pass  # already refused and closed: the reason is still there to read
buf = b""
closed = False
while b'"ok":true' not in buf:
    try:
        c = s.recv(65536)
    except ConnectionResetError:
        c = b""
    if not c:
        closed = True
        break
    buf += c
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "lines": buf.decode().splitlines(), "closed": closed}))
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run a client as a second uid")


@pytest.fixture(scope="module")
def peer():
    """The second user: (uid, gid)."""
    try:
        pw = pwd.getpwnam(PEER_USER)
    except KeyError:
        subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", PEER_USER], check=True)
        pw = pwd.getpwnam(PEER_USER)
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def open_daemon(tmp_path_factory):
    """Factory: a daemon whose socket lives in a directory every user can reach."""
    started = []

    def start(config):
        sockdir = tempfile.mkdtemp(prefix="plpeer", dir="/tmp")
        os.chmod(sockdir, 0o755)
        d = Daemon(tmp_path_factory.mktemp("peer"), config, [], None)
        d.socket = os.path.join(sockdir, "p.sock")
        d._spawn(True)
        started.append((d, sockdir))
        return d

    yield start
    for d, sockdir in started:
        try:
            d.stop()
        except Exception:
            d.kill()
        shutil.rmtree(sockdir, ignore_errors=True)


def run_as(uid: int, gid: int, sock: str, mode: str, groups=None) -> dict:
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    cmd += [f"--groups={','.join(str(g) for g in groups)}"] if groups else ["--clear-groups"]
    p = subprocess.run(cmd + [sys.executable, "-c", CLIENT, sock, mode], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def assert_forbidden(r: dict, uid: int):
    assert r["closed"], "the daemon kept a refused connection open"
    assert len(r["lines"]) == 1, r["lines"]
    reply = json.loads(r["lines"][0])
    assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
    assert str(uid) in reply["error"]["message"]


def test_another_uid_is_refused_with_forbidden_and_logged(open_daemon, peer):
    uid, gid = peer
    # 0666: the kernel lets anyone open the socket; the daemon's default admits only its own uid
    # (and the socket's group, root's here, which the peer is not in).
    d = open_daemon({"socket_mode": "0666"})
    r = run_as(uid, gid, d.socket, "listen")
    assert_forbidden(r, uid)
    assert r["uid"] == uid
    logs = d.logs()
    assert "connection refused" in logs and f"pid={r['pid']}" in logs and f"uid={uid}" in logs, logs[-2000:]
    # The same request from the daemon's own uid is served.
    assert d.call({"id": 1, "cmd": "ping"})["ok"]
    # A refused client that sent a request gets the same single line.
    assert_forbidden(run_as(uid, gid, d.socket, "ping"), uid)


def test_socket_group_is_admitted_by_default_when_the_mode_gives_it_access(open_daemon, peer):
    uid, gid = peer
    sock_gid = os.getegid()  # the group the daemon's socket gets
    d = open_daemon({"socket_mode": "0666"})
    assert os.stat(d.socket).st_gid == sock_gid
    # Primary group = the socket's group.
    r = run_as(uid, sock_gid, d.socket, "ping")
    assert json.loads(r["lines"][0])["ok"] is True
    # A supplementary group (SO_PEERGROUPS) counts as well.
    r = run_as(uid, gid, d.socket, "ping", groups=[sock_gid])
    assert json.loads(r["lines"][0])["ok"] is True


def test_socket_group_is_not_admitted_when_the_mode_gives_it_no_access(open_daemon, peer):
    uid, gid = peer
    # 0606: the group may not write, others may: the daemon's default then admits no group.
    d = open_daemon({"socket_mode": "0606"})
    assert_forbidden(run_as(uid, gid, d.socket, "ping"), uid)


def test_allowed_uids_by_name_and_allowed_gids_by_number(open_daemon, peer):
    uid, gid = peer
    d = open_daemon({"socket_mode": "0666", "allowed_uids": [PEER_USER]})
    r = run_as(uid, gid, d.socket, "ping")
    assert json.loads(r["lines"][0]) == {"id": 7, "ok": True, "version": json.loads(r["lines"][0])["version"],
                                         "protocol": json.loads(r["lines"][0])["protocol"]}
    assert d.call({"cmd": "ping"})["ok"], "the daemon's own uid is always allowed"
    d2 = open_daemon({"socket_mode": "0666", "allowed_uids": [], "allowed_gids": [gid]})
    assert json.loads(run_as(uid, gid, d2.socket, "ping")["lines"][0])["ok"] is True
    d3 = open_daemon({"socket_mode": "0666", "allowed_uids": [uid + 1], "allowed_gids": [gid + 1]})
    assert_forbidden(run_as(uid, gid, d3.socket, "ping"), uid)


@pytest.mark.parametrize("config,path", [
    ({"allowed_uids": ["no-such-user-pushline"]}, "allowed_uids[0]"),
    ({"allowed_gids": [0, "no-such-group-pushline"]}, "allowed_gids[1]"),
    ({"allowed_uids": [-1]}, "allowed_uids[0]"),
    ({"allowed_uids": "root"}, "allowed_uids"),
    ({"max_connections": 0}, "max_connections"),
    ({"max_reply_buffer_bytes": 10}, "max_reply_buffer_bytes"),
])
def test_bad_access_config_names_the_key(tmp_path, config, path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(config))
    p = subprocess.run([binary(), "check-config", str(f)], capture_output=True, timeout=20)
    assert p.returncode == 1
    assert path in p.stderr.decode(), p.stderr


def test_max_connections_refuses_one_more_with_busy(start_daemon):
    d = start_daemon(config={"max_connections": 3})
    # Wait until the harness's readiness probe is gone: then only the shared connection is open.
    deadline = time.time() + 10
    while d.call({"cmd": "stats"})["connections"] != 1 and time.time() < deadline:
        time.sleep(0.05)
    conns = [d._conn] + [d.connect() for _ in range(2)]
    for i, c in enumerate(conns):
        assert c.call({"id": i, "cmd": "ping"})["ok"]
    extra = Conn(d.socket, timeout=10)
    line = extra.recv_line()
    reply = json.loads(line)
    assert reply["ok"] is False and reply["error"]["code"] == "busy" and reply["error"]["limit"] == 3
    assert extra.sock.recv(100) == b"", "the refused connection was not closed"
    extra.close()
    assert "max_connections reached" in d.logs()
    # The three served connections are unaffected; once one leaves, a new one is served.
    assert conns[1].call({"id": "still", "cmd": "ping"})["id"] == "still"
    conns[0].close()
    deadline = time.time() + 10
    while True:
        c = Conn(d.socket, timeout=10)
        c.send({"id": "new", "cmd": "ping"})
        r = c.recv()
        if r["ok"] or time.time() > deadline:
            break
        c.close()
        time.sleep(0.05)
    assert r["ok"] and r["id"] == "new"
    c.close()
    for x in conns[1:]:
        x.close()
    d._conn = None
