"""What the benchmark scripts share: reading a process's memory and CPU from /proc, and
a blocking newline-JSON connection to the daemon's socket."""
import json
import os
import socket
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
