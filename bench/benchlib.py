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


_baseline_bin = None


def libcurl_rate(url, ca, n, conns, body_path, headers=()):
    """The same POSTs through bench/curl_baseline.c: plain C on the system's libcurl, one thread and
    one connection per connection of the daemon, 100 in flight each, no TCP_CORK. The most a
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
    out = subprocess.run([str(_baseline_bin), url, ca, str(total), "100", str(conns), "0", str(body_path),
                          *headers], capture_output=True, text=True).stdout
    m = re.search(r"([0-9]+) ok of ([0-9]+) in [^:]*: ([0-9]+) req/s, ([0-9.]+) us CPU", out)
    if not m or m.group(1) != m.group(2):
        return None, None
    return float(m.group(3)), float(m.group(4))


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
