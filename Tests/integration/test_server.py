"""The socket server against careless or hostile local clients (issue 12): a huge line,
a client that never reads its replies, one that hangs up with replies queued."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

from harness import Conn


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_sockets(pid: int) -> int:
    """Sockets the daemon holds (the listening one and its connections)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def socket_report(pid: int) -> str:
    """The daemon's sockets as `ss` sees them (queues, peer) and its epoll interests, for a
    failure message (without `ss` when iproute2 is not installed)."""
    try:
        out = subprocess.run(["ss", "-xpe"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    lines = [l for l in out.splitlines() if f"pid={pid}," in l]
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "eventpoll" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    lines += [l.strip() for l in f if l.startswith("tfd:")]
        except OSError:
            pass
    return "\n".join(lines)


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def huge_badges_line() -> bytes:
    """A 979 KB `send` whose `badges` object has 90,000 keys (issue 12, defect 1)."""
    badges = {f"{i:05x}": i % 100 for i in range(90_000)}
    line = json.dumps({"id": "big", "cmd": "send", "tokens": ["ab" * 32], "platform": "apns",
                       "message": "x", "badges": badges}, separators=(",", ":")).encode() + b"\n"
    assert 900_000 < len(line) < 1 << 20
    return line


def test_a_huge_line_does_not_delay_other_connections(daemon):
    big = daemon.connect(timeout=120)
    pinger = daemon.connect()
    assert pinger.call({"id": 0, "cmd": "ping"})["ok"]
    line = huge_badges_line()
    big.send_raw(line)
    # Ping on the other connection until the huge line is answered (at least 2 s), noting
    # the slowest ping. Before the fix the first ping waited for the whole parse (14 s).
    got: dict = {}

    def read_big():
        got["reply"] = big.recv()

    t = threading.Thread(target=read_big)
    t.start()
    slowest = 0.0
    pings = 0
    started = time.monotonic()
    while t.is_alive() or time.monotonic() - started < 2:
        t0 = time.monotonic()
        r = pinger.call({"id": pings, "cmd": "ping"})
        slowest = max(slowest, time.monotonic() - t0)
        assert r["ok"] and r["id"] == pings
        pings += 1
        if time.monotonic() - started > 110:
            break
        time.sleep(0.005)
    t.join(10)
    assert "reply" in got, "the huge line was never answered"
    assert got["reply"]["id"] == "big"
    assert pings > 10
    # Parsed on the I/O thread the line held every ping for 14 s. Off it, a ping takes under
    # 20 ms even at load 19 (bench/server_abuse_bench.py measures it), but a debug build at load
    # 15-28 on 2 cores took 383 ms once (the scheduler, not the line): 2 s is 5x that and 7x
    # under the defect.
    assert slowest < 2.0, f"a ping took {slowest * 1000:.0f} ms while a 979 KB line was handled"
    big.close()
    pinger.close()


def test_a_huge_ping_line_is_answered(daemon):
    # A ping padded past the inline-parse limit goes the long way and still answers in order.
    c = daemon.connect()
    pad = " " * 200_000
    c.send_raw(b'{"id":1,"cmd":"ping"}\n' + ('{"id":2,' + pad + '"cmd":"ping"}\n').encode() + b'{"id":3,"cmd":"ping"}\n')
    assert [c.recv()["id"] for _ in range(3)] == [1, 2, 3]
    c.send_raw(("[" + "1," * 300_000 + "1\n").encode())
    r = c.recv()
    assert r["ok"] is False and r["error"]["code"] == "bad_json"
    c.close()


def pipeline_pings_without_reading(path: str, count: int, give_up_after: float, half_close: bool = False) -> int:
    """Writes `count` pings and never reads; stops when the daemon stops taking them, then
    closes (with `half_close`, first shuts its sending side and waits a second).
    Returns the bytes written."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(give_up_after)
    data = b'{"cmd":"ping"}\n' * count
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + (1 << 20)])
    except socket.timeout:
        pass
    if half_close:
        s.shutdown(socket.SHUT_WR)
        time.sleep(1)
    s.close()
    return sent


def test_hanging_up_with_replies_queued_frees_the_connection_and_shutdown_finishes(daemon):
    pid = daemon.proc.pid
    assert daemon.call({"cmd": "ping"})["ok"]
    fds_before = open_sockets(pid)
    for half_close in (False, True, False, True):  # it leaked in 1 run of 3; always after a half-close
        pipeline_pings_without_reading(daemon.socket, 1_000_000, give_up_after=3, half_close=half_close)
    assert wait_until(lambda: open_sockets(pid) <= fds_before, 20), \
        f"{open_sockets(pid) - fds_before} connection(s) still open after their clients hung up\n{socket_report(pid)}"
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        rc = daemon.proc.wait(30)
    except Exception:
        raise AssertionError("the daemon did not exit after SIGTERM:\n" + daemon.logs()[-2000:])
    assert rc == 0


def pipeline_behind_a_slow_request(path: str, pings: int, wait_ms: int) -> None:
    """Sends an `events` call that waits `wait_ms` (nothing is logged yet), then `pings` pings,
    never reads, and hangs up once the daemon stops taking them (blocked for a second)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(1)
    data = b'{"id":"slow","cmd":"events","after":0,"wait_ms":%d}\n' % wait_ms + b'{"cmd":"ping"}\n' * pings
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + 65536])
    except socket.timeout:
        pass
    s.close()


def test_hanging_up_behind_a_running_request_frees_the_connection(daemon):
    # Behind a request still running, replies wait for its answer; after 8,192 requests in
    # flight the daemon stops reading the connection. The client hangs up then, with more
    # pings unread. Before the fix the hang-up dropped the places of the waiting replies, so
    # the requests in flight never drained: the connection stayed paused and open for good
    # and its hang-up woke the event loop without end (deterministic, no load needed).
    pid = daemon.proc.pid
    assert daemon.call({"cmd": "ping"})["ok"]
    fds_before = open_sockets(pid)
    for _ in range(2):
        pipeline_behind_a_slow_request(daemon.socket, 40_000, wait_ms=1500)
    assert wait_until(lambda: open_sockets(pid) <= fds_before, 60), \
        f"{open_sockets(pid) - fds_before} connection(s) still open after their clients hung up\n{socket_report(pid)}"
    # The daemon still serves.
    c = daemon.connect()
    assert [c.call({"id": i, "cmd": "ping"})["id"] for i in range(3)] == [0, 1, 2]
    c.close()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        rc = daemon.proc.wait(30)
    except Exception:
        raise AssertionError("the daemon did not exit after SIGTERM:\n" + daemon.logs()[-2000:])
    assert rc == 0


def test_requests_sent_before_hanging_up_all_run(daemon):
    # Registers pipelined without reading until the daemon stops reading (unread replies at
    # the cap, the rest of a read kept by the framer), then a hang-up. Every complete line the
    # client sent runs, replies dropped. Before the fix the lines the framer kept were glued
    # to the next read as one line, and the registers in it were lost (`bad_json`, unseen).
    pid = daemon.proc.pid
    line = b'{"id":"%07d","cmd":"register","platform":"fcm","registration_id":"hangup-%07d-' + b"x" * 40 + b'"}\n'
    width = len(line % (0, 0))
    data = b"".join(line % (i, i) for i in range(40_000))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.socket)
    s.settimeout(2)
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + 65536])
    except socket.timeout:
        pass
    assert sent < len(data), "the daemon read every request without its replies being read"
    s.close()
    want = sent // width
    total = -1

    def all_registered() -> bool:
        nonlocal total
        total = daemon.call({"cmd": "stats"})["devices"]["total"]
        return total >= want

    assert wait_until(all_registered, 60, step=0.2), f"{total} of the {want} registers sent before the hang-up ran"
    time.sleep(0.5)
    assert daemon.call({"cmd": "stats"})["devices"]["total"] == want  # and not one more (the cut line)
    assert wait_until(lambda: open_sockets(pid) <= 2, 20)  # the listener and the stats connection


def test_shutdown_finishes_while_a_client_never_reads(daemon):
    # A client that stays connected and never reads must not hold the daemon up forever.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.socket)
    s.settimeout(3)
    try:
        s.sendall(b'{"cmd":"ping"}\n' * 1_000_000)
    except socket.timeout:
        pass
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        rc = daemon.proc.wait(60)
    finally:
        s.close()
    assert rc == 0
    assert "do not read their replies" in daemon.logs()


def test_unread_replies_are_capped_and_all_delivered_later(daemon):
    pid = daemon.proc.pid
    main = daemon.connect()
    assert main.call({"cmd": "ping"})["ok"]
    time.sleep(0.3)
    rss_before = rss_bytes(pid)
    n = 1_500_000
    c = Conn(daemon.socket, timeout=300)
    data = b"".join(b'{"id":%d,"cmd":"ping"}\n' % i for i in range(n))
    progress = {"sent": 0}

    def writer():
        view = memoryview(data)
        while progress["sent"] < len(data):
            progress["sent"] += c.sock.send(view[progress["sent"]:progress["sent"] + 65536])

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    # Until the writer is stuck (the daemon stopped reading) or done, note the daemon's RSS.
    peak = rss_bytes(pid)
    last, still_since = -1, time.monotonic()
    while w.is_alive() and time.monotonic() - still_since < 3:
        time.sleep(0.1)
        peak = max(peak, rss_bytes(pid))
        if progress["sent"] != last:
            last, still_since = progress["sent"], time.monotonic()
    peak = max(peak, rss_bytes(pid))
    grew = peak - rss_before
    # The other connection is still served while this one is held.
    assert main.call({"id": "other", "cmd": "ping"})["id"] == "other"
    # Now read every reply, in order, while the writer finishes.
    for i in range(n):
        r = c.recv()
        assert r["id"] == i, f"reply {i} has id {r['id']}"
    w.join(60)
    assert progress["sent"] == len(data)
    c.close()
    main.close()
    # Unbounded, 1.5M unread pings grew the daemon by about 80 MB; capped at 1 MiB, a few MB.
    assert grew < 40 << 20, f"RSS grew by {grew >> 20} MB while the client read nothing"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accepting_without_spinning(tmp_path):
    # With its descriptor limit at 48 the daemon cannot accept 60 connections. The ones it
    # cannot accept wait in the backlog (the loop does not spin on the listening socket)
    # and are served once others close.
    import subprocess
    from harness import binary
    sock = str(tmp_path / "p.sock")
    p = subprocess.Popen(["prlimit", "--nofile=48:48", binary(), "serve", "--socket", sock,
                          "--database", str(tmp_path / "p.db")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: os.path.exists(sock), 20)
        conns = []
        for i in range(60):
            c = Conn(sock, timeout=30)
            c.send({"id": i, "cmd": "ping"})
            conns.append(c)
        answered, waiting = [], []
        for c in conns:
            c.sock.settimeout(0.5 if answered else 10)
            try:
                c.recv()
                answered.append(c)
            except (socket.timeout, ConnectionError):
                waiting.append(c)
        assert answered and waiting, (len(answered), len(waiting))
        before = cpu_seconds(p.pid)
        time.sleep(2)
        spent = cpu_seconds(p.pid) - before
        assert spent < 0.5, f"the daemon used {spent:.2f} s of CPU in 2 s while it could not accept"
        for c in answered:
            c.close()
        for c in waiting:
            c.sock.settimeout(30)
            assert c.recv()["ok"]
            c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
