"""Large sends end to end (issue 11): results past a few MB are spooled to an unlinked file next to
the database and streamed from it, whole and in order, to a slow reader; sends to users and filters
page through the registry per user / per (app, platform) group."""
import json
import os
import time

import pytest

from apns_fake import KEY_ID, TEAM, TOPIC, FakeAPNs


def tok(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
def fake():
    f = FakeAPNs.start(["--gen-key", f"{TEAM}:{KEY_ID}", "--topic", TOPIC])
    yield f
    f.stop()


def spool_fds(pid):
    """The daemon's open descriptors on a spooled results file (unlinked: '(deleted)')."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if ".pushline-results-" in target:
            out.append(target)
    return out


def test_large_results_are_spooled_and_streamed_whole_to_a_slow_reader(start_daemon, fake):
    d = start_daemon({"apps": {"default": {"apns": fake.apns_block()}}, "max_line_bytes": 16 << 20})
    n = 60_000  # about 10 MB of dry-run results: past the 8 MB kept in memory
    for k in range(0, n, 10_000):
        r = d.call({"cmd": "register", "devices": [{"platform": "apns", "registration_id": tok(i), "user": f"u{i % 7}"}
                                                   for i in range(k + 1, k + 10_001)]})
        assert r["ok"], r
    c = d.connect(timeout=120)
    c.send({"id": "big", "cmd": "send", "filter": {"platform": "apns"}, "message": "x", "dry_run": True})
    c.send({"id": "after", "cmd": "ping"})
    # The daemon fills the socket and waits; meanwhile its results are in an unlinked file.
    deadline = time.time() + 60
    while not spool_fds(d.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    held = spool_fds(d.proc.pid)
    assert held and all(t.endswith("(deleted)") and t.startswith(str(d.workdir)) for t in held), held
    raw = b""
    while raw.count(b"\n") < 2:
        chunk = c.sock.recv(65536)
        assert chunk, "daemon closed the connection"
        raw += chunk
        time.sleep(0.0002)
    first, second, rest = raw.split(b"\n", 2)
    assert rest == b""
    big = json.loads(first)
    assert big["id"] == "big" and big["ok"] and big["sent"] == n and big["failed"] == 0
    assert len(first) > 8 << 20
    assert sorted(x["registration_id"] for x in big["results"]) == [tok(i) for i in range(1, n + 1)]
    assert json.loads(second)["id"] == "after"
    c.close()
    # The file is gone with the response; nothing is left in the database directory.
    deadline = time.time() + 10
    while spool_fds(d.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert spool_fds(d.proc.pid) == []
    assert not [f for f in os.listdir(d.workdir) if f.startswith(".pushline-results-")]
    # Users and filters page per user / per group: every active device once.
    d.call({"cmd": "update", "registration_id": tok(3), "platform": "apns", "active": False})
    r = d.call({"cmd": "send", "users": ["u3", "u1", "u3", "nobody"], "message": "x", "dry_run": True})
    want = sorted(tok(i) for i in range(1, n + 1) if i % 7 in (1, 3) and i != 3)
    assert r["ok"] and sorted(x["registration_id"] for x in r["results"]) == want
    r = d.call({"cmd": "stats"})
    assert r["devices"]["total"] == n and r["devices"]["active"] == n - 1
