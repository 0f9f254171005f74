"""What the benchmark scripts share: reading a process's memory and CPU from /proc, the
ceilings measured against the same sink (h2load, plain C libcurl), and a blocking newline-JSON
connection to the daemon's socket."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def proc_status(pid, field):
    """A `/proc/<pid>/status` field in kB (VmRSS, VmHWM...), or -1."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def settle_and_reset_peak(pid, quiet_s=2.5):
    """Waits until the daemon has been quiet long enough to give burst memory back (it trims
    after 2 s), then resets its VmHWM (`/proc/<pid>/clear_refs` 5), so the next reading of
    VmHWM is the peak of what follows, not of an earlier command. Returns the VmHWM (kB)
    before the reset, so the caller can still report the lifetime peak."""
    time.sleep(quiet_s)
    before = proc_status(pid, "VmHWM")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return before


def cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def ctx_switches(pid):
    """Context switches of a process so far, summed over its threads (voluntary: the thread
    blocked, i.e. waited for a wake-up; involuntary: the scheduler took the CPU away). Returns
    (voluntary, involuntary). Threads that ended meanwhile are not counted, so compare readings
    over a stretch in which the daemon's threads live throughout (they do in the benches)."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # The thread ended meanwhile.
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol


def thread_wakeups(pid):
    """Voluntary context switches per thread-name group of a process so far (grouped as
    `thread_cpu_s` groups): which threads block and wait to be woken."""
    groups = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            text = (task / "status").read_text()
        except OSError:
            continue  # The thread ended meanwhile.
        head, _, tail = name.rpartition("-")
        if head and tail.isdigit():
            name = head
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                groups[name] = groups.get(name, 0) + int(line.split()[1])
    return groups


def thread_wakeups_line(before, after, n):
    """ "pl-http 0.61, pushline-io 0.32, ..." wake-ups per send, largest first."""
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v > 0)


def per_send_line(cpu0, ctx0, cpu1, ctx1, n):
    """ "123 us CPU, 4.1 wake-ups (+0.3 preempted) per send" from readings of `cpu_s` and
    `ctx_switches` before and after `n` sends: CPU time and voluntary context switches (each a
    thread that blocked and had to be woken) per send do not depend on the machine's load the
    way rates do."""
    return (f"{(cpu1 - cpu0) / n * 1e6:.0f} us CPU, {(ctx1[0] - ctx0[0]) / n:.2f} wake-ups "
            f"(+{(ctx1[1] - ctx0[1]) / n:.2f} preempted) per send")


def thread_cpu_s(pid):
    """CPU seconds per thread-name group of a process so far ({"pl-http": 3.1, ...}).

    Threads are grouped by name with a trailing "-<digits>" dropped (the transport loops
    pl-http-0, pl-http-1 count as one group); unnamed Swift concurrency threads keep their name.
    """
    groups = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # The thread ended meanwhile.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        head, _, tail = name.rpartition("-")
        if head and tail.isdigit():
            name = head
        parts = stat.rsplit(")", 1)[1].split()
        groups[name] = groups.get(name, 0.0) + (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    return groups


def thread_cpu_line(before, after, n):
    """ "pl-http 31 us, pushline-db 3 us, ..." per notification, largest first."""
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    parts = [f"{k} {v / n * 1e6:.0f} us" for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v > 0]
    return ", ".join(parts)


def h2load_rate(url, n, conns, body_path, headers=()):
    """h2load's req/s for `n` POSTs of `body_path` with `headers` over `conns` connections x 100
    streams (None if it did not finish), and how many succeeded."""
    cmd = ["h2load", "-n", str(n), "-c", str(conns), "-m", "100", "-d", str(body_path)]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    m = re.search(r"finished in [^,]*, ([0-9.]+) req/s", out)
    ok = re.search(r"requests: .*?(\d+) succeeded", out)
    return (float(m.group(1)) if m else None), (int(ok.group(1)) if ok else 0)


def sink_cpu_s(sink_dir):
    """User + system CPU seconds of the nginx sink's processes (master and workers) so far: on 2
    cores the rates follow the CPU of the daemon and the sink together."""
    master = int((Path(sink_dir) / "nginx.pid").read_text())
    total = cpu_s(master)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    total += cpu_s(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return total


def machine_cpu():
    """(busy, total) clock ticks of the whole machine so far (/proc/stat): how much of the cores a
    part used, whoever used them (daemon, sink, the bench's own client)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


_baseline_bin = None


def libcurl_rate(url, ca, n, conns, body_path, headers=(), window=100):
    """The same POSTs through bench/curl_baseline.c: plain C on the system's libcurl, one thread and
    one connection per connection of the daemon, `window` in flight each, no TCP_CORK. The most a
    libcurl client reaches here, i.e. the daemon's ceiling for its transport library. Returns
    (req/s, CPU us per request) or (None, None) without a C compiler."""
    global _baseline_bin
    if _baseline_bin is None:
        if not shutil.which("cc"):
            return None, None
        out = Path(tempfile.mkdtemp(prefix="pushline-curl-baseline.")) / "curl_baseline"
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(out), str(Path(__file__).parent / "curl_baseline.c"),
                        "-lcurl"], check=True)
        _baseline_bin = out
    total = n - n % conns  # curl_baseline gives each thread total / threads.
    out = subprocess.run([str(_baseline_bin), url, ca, str(total), str(window), str(conns), "0", str(body_path),
                          *headers], capture_output=True, text=True).stdout
    m = re.search(r"([0-9]+) ok of ([0-9]+) in [^:]*: ([0-9]+) req/s, ([0-9.]+) us CPU", out)
    if not m or m.group(1) != m.group(2):
        return None, None
    return float(m.group(3)), float(m.group(4))


_socket_load_bin = None


def socket_load(path, clients, requests):
    """`requests` through bench/socket_load.c: `clients` C connections to the daemon's socket, one
    request in flight each, in one epoll thread (a few µs of CPU a request, where the Python
    selector client of `concurrent_calls` takes about 40). Returns (seconds, answers/s, failed,
    client CPU µs per request, first failed answer or ""), or None without a C compiler."""
    global _socket_load_bin
    if _socket_load_bin is None:
        if not shutil.which("cc"):
            return None
        out = Path(tempfile.mkdtemp(prefix="pushline-socket-load.")) / "socket_load"
        subprocess.run(["cc", "-O2", "-o", str(out), str(Path(__file__).parent / "socket_load.c")], check=True)
        _socket_load_bin = out
    req_file = Path(tempfile.mkdtemp(prefix="pushline-socket-load-req.")) / "requests.jsonl"
    req_file.write_text("".join(json.dumps(r) + "\n" for r in requests))
    run = subprocess.run([str(_socket_load_bin), path, str(clients), str(len(requests)), str(req_file)],
                         capture_output=True, text=True)
    shutil.rmtree(req_file.parent, ignore_errors=True)
    m = re.search(r"answers in ([0-9.]+) s: ([0-9]+)/s, ([0-9]+) failed, ([0-9.]+) us", run.stdout)
    if run.returncode != 0 or not m:
        raise SystemExit(f"socket_load failed: {run.stdout} {run.stderr}")
    first = run.stdout.split("first failed answer: ", 1)[1].strip() if "first failed answer: " in run.stdout else ""
    return float(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4)), first


class Conn:
    """One socket connection: `call` writes a request line and reads its response."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def call(self, obj):
        """Sends one request and returns its parsed response. `received_at` is when the
        response's last byte arrived: benchmarks stop their clock there, so the time Python
        takes to parse a 15 MB response is not counted against the daemon."""
        self.s.sendall(json.dumps(obj).encode() + b"\n")
        parts = [self.buf]  # only new chunks are searched for the newline
        while b"\n" not in parts[-1]:
            chunk = self.s.recv(1 << 22)
            if not chunk:
                raise ConnectionError("daemon closed the connection")
            parts.append(chunk)
        self.received_at = time.time()
        line, self.buf = b"".join(parts).split(b"\n", 1)
        return json.loads(line)


ROOT = Path(__file__).resolve().parents[1]


def start_sink(port, latency_ms=0):
    """Starts bench/sink (nginx) answering as the providers do, each answer `latency_ms` after its
    request; returns (port, ca_file, dir). Stop it with stop_sink(dir)."""
    env = dict(os.environ, LATENCY_MS=str(latency_ms))
    out = subprocess.run([str(ROOT / "bench/sink/start.sh"), str(port)], check=True, capture_output=True,
                         text=True, env=env).stdout.split()
    _, port, ca, d = out[:4]
    return int(port), ca, d


def stop_sink(d):
    subprocess.run([str(ROOT / "bench/sink/stop.sh"), d], check=False)


def apns_key(work):
    """A fresh P-256 provider key (AuthKey.p8) in `work`."""
    key = Path(work) / "AuthKey.p8"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
                   check=True, capture_output=True)
    return key


def outbox_bench_config(work, port, ca):
    """The outbox benchmarks' daemon config: long lines, a deep outbox, and the default app on the
    APNs-style sink at `port` with a fresh key in `work` (2 connections)."""
    return {
        "max_line_bytes": 64 << 20, "max_queued": 100_000_000,
        "apps": {"default": {"apns": {
            "key_path": str(apns_key(work)), "key_id": "BENCHKEY01", "team_id": "BENCHTEAM1",
            "topic": "com.example.bench", "endpoint": f"https://localhost:{port}", "ca_file": ca,
            "max_connections": 2}}},
    }


def start_daemon(binary, work, config):
    """Writes `config` (socket and database in `work` unless given) and starts `pushline serve`;
    returns (process, socket path) once it answers ping. PUSHLINE_BENCH_CONFIG (a JSON object,
    e.g. '{"transport_threads": 1}') is merged over the top level of every bench's config, for
    A/B runs of a setting."""
    work = Path(work)
    config.update(json.loads(os.environ.get("PUSHLINE_BENCH_CONFIG", "{}")))
    config.setdefault("socket", str(work / "p.sock"))
    config.setdefault("database", str(work / "p.db"))
    config.setdefault("log_level", "warning")
    (work / "config.json").write_text(json.dumps(config))
    log = open(work / "daemon.log", "wb")
    proc = subprocess.Popen([binary, "serve", "--config", str(work / "config.json")], stdout=log, stderr=log)
    for _ in range(400):
        try:
            if Conn(config["socket"]).call({"cmd": "ping"})["ok"]:
                return proc, config["socket"]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("daemon did not start: " + (work / "daemon.log").read_text())


def stop_daemon(proc):
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def h2load_run(url, n, conns, streams, body_path, headers=()):
    """h2load -n n -c conns -m streams: (req/s, mean ms per request, succeeded), None where absent."""
    cmd = ["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams), "-d", str(body_path)]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    m = re.search(r"finished in [^,]*, ([0-9.]+) req/s", out)
    ok = re.search(r"requests: .*?(\d+) succeeded", out)
    t = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)

    def ms(v):
        return float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-2]) if v.endswith("ms") else float(v[:-1]) * 1000

    return (float(m.group(1)) if m else None), (ms(t.group(3)) if t else None), (int(ok.group(1)) if ok else 0)


def concurrent_calls(path, clients, requests, window=1):
    """`clients` socket connections, each sending the next of `requests` as soon as an answer
    arrived, with up to `window` requests written ahead of their answers (1: one request in
    flight per client, as many web workers would; more: a pipelining client). One process, one
    selector, so the client costs little. Returns (seconds, responses in order of completion)."""
    import selectors
    sel = selectors.DefaultSelector()
    lines = [json.dumps(r).encode() + b"\n" for r in requests]
    nxt = 0
    out = []
    conns = []
    t0 = time.time()
    for _ in range(min(clients, len(lines))):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        n = max(1, min(window, (len(lines) - nxt) // max(1, clients - len(conns))))
        state = {"sock": s, "buf": b"", "inflight": n}
        conns.append(state)
        s.sendall(b"".join(lines[nxt:nxt + n]))
        nxt += n
        sel.register(s, selectors.EVENT_READ, state)
    pending = len(conns)
    while pending:
        for key, _ in sel.select():
            st = key.data
            chunk = st["sock"].recv(1 << 20)
            if not chunk:
                raise ConnectionError("daemon closed a connection")
            st["buf"] += chunk
            more = []
            while b"\n" in st["buf"]:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                out.append(json.loads(line))
                st["inflight"] -= 1
                if nxt < len(lines):
                    more.append(lines[nxt])
                    nxt += 1
                    st["inflight"] += 1
            if more:
                st["sock"].sendall(b"".join(more))
            if st["inflight"] == 0:
                sel.unregister(st["sock"])
                pending -= 1
    dt = time.time() - t0
    for st in conns:
        st["sock"].close()
    return dt, out


def percentile(sorted_values, p):
    """The p-th percentile (0-100) of an already sorted list (nearest rank)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]
