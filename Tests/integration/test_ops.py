"""Operations: install prerequisites, serve's directories, the commented config file."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from harness import ROOT, Conn, binary


def test_serve_creates_missing_parent_directories_0750(start_daemon, tmp_path):
    d = start_daemon(wait=False)
    d.stop()
    base = d.workdir / "nested"
    sock = base / "run" / "deeper" / "p.sock"
    db = base / "lib" / "more" / "p.db"
    log = open(d.workdir / "serve.log", "wb")
    p = subprocess.Popen([binary(), "serve", "--socket", str(sock), "--database", str(db)], stdout=log, stderr=log)
    try:
        import time
        deadline = time.time() + 20
        while not sock.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        c = Conn(str(sock))
        assert c.call({"cmd": "ping"})["ok"] is True
        c.close()
        for dpath in (base / "run", base / "run" / "deeper", base / "lib", base / "lib" / "more"):
            assert stat.S_IMODE(os.stat(dpath).st_mode) == 0o750, dpath
        assert db.exists()
    finally:
        p.terminate()
        assert p.wait(30) == 0


def test_serve_names_the_directory_it_cannot_create(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = subprocess.run([binary(), "serve", "--socket", str(blocker / "sub" / "p.sock"), "--database", str(tmp_path / "p.db")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot create directory" in r.stderr and str(blocker / "sub") in r.stderr


def test_config_file_with_comment_lines(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('// a comment\n{\n  // "log_level": "debug",\n  "log_level": "warning", // not a comment: trailing\n}\n')
    r = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1  # a trailing // is not a comment line
    cfg.write_text('// a comment\n{\n  // "log_level": "debug",\n    // "socket": "x",\n  "log_level": "warning"\n}\n')
    r = subprocess.run([binary(), "check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # The packaged config is valid as shipped (after its paths are pointed somewhere writable).
    packaged = (ROOT / "contrib" / "deb" / "pushline.json").read_text()
    (tmp_path / "p.json").write_text(packaged)
    r = subprocess.run([binary(), "check-config", str(tmp_path / "p.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "database: /var/lib/pushline/pushline.db" in r.stdout


def make(*args, **kw):
    return subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", *args], capture_output=True, text=True, **kw)


def test_make_says_what_is_missing_without_swift(tmp_path):
    r = make("check-swift", f"SWIFT={tmp_path}/no-swift-here")
    assert r.returncode != 0
    assert "no Swift toolchain" in r.stderr and "https://www.swift.org/install" in r.stderr
    old = tmp_path / "swift"
    old.write_text("#!/bin/sh\necho 'Swift version 5.9.2 (swift-5.9.2-RELEASE)'\n")
    old.chmod(0o755)
    r = make("check-swift", f"SWIFT={old}")
    assert r.returncode != 0 and "Swift 5" in r.stderr and "6.0 or later" in r.stderr
    r = make("check-swift")
    assert r.returncode == 0, r.stderr


def test_make_run_installs_only_build_packages():
    dry = make("-n", "run").stdout
    assert "libcurl4-openssl-dev" in dry and "libsqlite3-dev" in dry
    for test_tool in ("nginx", "ruby", "socat", "pytest", "prometheus", "pip"):
        assert test_tool not in dry, test_tool
    dry_test = make("-n", "test").stdout
    for test_tool in ("nginx", "pytest", "prometheus"):
        assert test_tool in dry_test, test_tool
