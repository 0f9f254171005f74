"""What the client re-sends when a connection breaks after a request was written.

The real daemon never drops a connection between reading a request and answering it
(except when it is killed), so this uses a scripted peer on a Unix socket: it answers
the version check, reads one request, and hangs up without answering.
"""

import json
import os
import socket
import threading

import pytest

import pushline


class HangUpPeer:
    """Answers ping; on the first connection, hangs up after reading the next request."""

    def __init__(self, path):
        self.path = path
        self.seen = []          # (connection number, cmd)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        n = 0
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            n += 1
            threading.Thread(target=self.handle, args=(conn, n), daemon=True).start()

    def handle(self, conn, n):
        buf = b""
        with conn:
            while True:
                while b"\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                self.seen.append((n, req["cmd"]))
                if req["cmd"] == "ping":
                    resp = {"id": req["id"], "ok": True, "version": "x", "protocol": "1.0"}
                elif n == 1:
                    return          # hang up: the response is lost
                else:
                    resp = {"id": req["id"], "ok": True, "devices": [], "next": None}
                conn.sendall(json.dumps(resp).encode() + b"\n")

    def close(self):
        self.srv.close()


@pytest.fixture
def peer(workdir):
    p = HangUpPeer(os.path.join(workdir, "hangup.sock"))
    yield p
    p.close()


def test_read_only_command_is_resent_once(peer):
    c = pushline.Client(peer.path, timeout=5)
    assert c.devices() == {"devices": [], "next": None}
    assert peer.seen == [(1, "ping"), (1, "devices"), (2, "ping"), (2, "devices")]


def test_send_is_not_resent(peer):
    c = pushline.Client(peer.path, timeout=5)
    with pytest.raises(pushline.ConnectionError) as e:
        c.send(users=["42"], message="only once")
    assert e.value.request_sent is True
    assert [cmd for _, cmd in peer.seen].count("send") == 1
    # The next request works on a new connection.
    assert c.devices()["devices"] == []
