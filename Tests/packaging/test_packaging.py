"""`make install` and `make deb`, tried as an operator would (run by `make test-packaging`,
which .ci/run calls; needs root for dpkg -i and the release build from `make release`).

The .deb is installed with dpkg -i on this machine, the daemon is started from it as the
`pushline` user on the packaged config, answers a ping, and the package is purged again.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, check=True, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def ping(path: str, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(path)
            s.sendall(b'{"id":1,"cmd":"ping"}\n')
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            s.close()
            return json.loads(buf.split(b"\n")[0])
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"no answer on {path}: {last}")


def dpkg(*args):
    """dpkg, waiting for the lock other apt/dpkg runs on this machine may hold."""
    for _ in range(120):
        r = run("dpkg", *args, check=False)
        if r.returncode == 0 or "lock" not in (r.stderr + r.stdout):
            return r
        time.sleep(2)
    return r


def test_make_install_into_prefix(tmp_path):
    prefix = tmp_path / "prefix"
    run("make", "-C", str(ROOT), "install", f"PREFIX={prefix}")
    binary = prefix / "bin" / "pushline"
    assert os.access(binary, os.X_OK)
    assert os.access(prefix / "bin" / "pushline-send", os.X_OK)
    # The Swift runtime is linked in: no libswift*.so from the toolchain is loaded.
    ldd = run("ldd", str(binary)).stdout
    assert "libswiftCore" not in ldd and "libFoundation" not in ldd, ldd
    help_text = (prefix / "share" / "doc" / "pushline" / "pushline-help.txt").read_text()
    for section in ("pushline serve", "pushline check-config", "pushline devices", "pushline vapid generate"):
        assert section in help_text
    # The installed binary runs with nothing from the toolchain on its path.
    sock = tmp_path / "s" / "deep" / "p.sock"   # parents made by serve
    env = {"PATH": f"{prefix}/bin:/usr/bin:/bin"}
    p = subprocess.Popen([str(binary), "serve", "--socket", str(sock), "--database", str(tmp_path / "db" / "p.db")],
                         env=env, stderr=subprocess.PIPE)
    try:
        assert ping(str(sock))["ok"] is True
        r = run("pushline", "call", "--socket", str(sock), input='{"id":2,"cmd":"stats"}\n', env=env)
        assert json.loads(r.stdout)["ok"] is True
    finally:
        p.terminate()
        assert p.wait(30) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg -i needs root")
def test_deb_installs_runs_as_pushline_user_and_purges(tmp_path):
    out = run("make", "-C", str(ROOT), "--no-print-directory", "deb").stdout.strip().splitlines()[-1]
    deb = ROOT / out if not out.startswith("/") else Path(out)
    assert deb.exists(), out
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    for f in ("./usr/bin/pushline", "./etc/pushline/pushline.json", "./lib/systemd/system/pushline.service",
              "./lib/systemd/system/pushline.socket", "./var/lib/pushline/", "./usr/lib/tmpfiles.d/pushline.conf"):
        assert f in listing, f
    assert run("dpkg-deb", "-f", str(deb), "Package").stdout.strip() == "pushline"
    ctrl = tmp_path / "ctrl"
    run("dpkg-deb", "-e", str(deb), str(ctrl))
    assert (ctrl / "conffiles").read_text().split() == ["/etc/pushline/pushline.json"]

    r = dpkg("-i", str(deb))
    assert r.returncode == 0, r.stderr
    proc = None
    try:
        pw = pwd.getpwnam("pushline")
        st = os.stat("/var/lib/pushline")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (pw.pw_uid, pw.pw_gid, 0o750)
        # The packaged config (with its comment lines) is valid as shipped.
        r = run("/usr/bin/pushline", "check-config", "/etc/pushline/pushline.json")
        assert "OK" in r.stdout
        # The units are clean for systemd-analyze (warnings count as failures).
        if shutil.which("systemd-analyze"):
            r = run("systemd-analyze", "verify", "/lib/systemd/system/pushline.socket",
                    "/lib/systemd/system/pushline.service", check=False)
            assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stdout + r.stderr
        # Started as the pushline user on the packaged config, as the unit does.
        log = open(tmp_path / "daemon.log", "wb")
        proc = subprocess.Popen(["setpriv", "--reuid=pushline", "--regid=pushline", "--init-groups", "--",
                                 "/usr/bin/pushline", "serve", "--config", "/etc/pushline/pushline.json"],
                                stdout=log, stderr=log)
        resp = ping("/run/pushline/pushline.sock")
        assert resp["ok"] is True, resp
        # The serving process runs as pushline and the database it made is pushline's.
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(l for l in status.splitlines() if l.startswith("Uid:"))
        assert uid_line.split()[1] == str(pw.pw_uid), uid_line
        assert os.stat("/var/lib/pushline/pushline.db").st_uid == pw.pw_uid
        proc.terminate()
        assert proc.wait(30) == 0, (tmp_path / "daemon.log").read_text()
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        r = dpkg("-P", "pushline")
    assert r.returncode == 0, r.stderr
    assert run("dpkg", "-s", "pushline", check=False).returncode != 0
    for p in ("/usr/bin/pushline", "/etc/pushline", "/var/lib/pushline", "/lib/systemd/system/pushline.service"):
        assert not os.path.exists(p), p
